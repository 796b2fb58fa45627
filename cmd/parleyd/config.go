package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/parleyhq/parley/delivery"
	"github.com/parleyhq/parley/delivery/ingest"
	"github.com/parleyhq/parley/edge"
	"github.com/parleyhq/parley/httpapi"
	"github.com/parleyhq/parley/internal/admin"
	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/backend"
	"github.com/parleyhq/parley/internal/breaker"
	"github.com/parleyhq/parley/internal/cli"
	"github.com/parleyhq/parley/internal/cursor"
	"github.com/parleyhq/parley/internal/origin"
	"github.com/parleyhq/parley/internal/revocation"
	"github.com/parleyhq/parley/internal/schema"
	"github.com/parleyhq/parley/presence"
)

// Roles a process can run. "all" is the union.
const (
	roleEdge     = "edge"
	roleDelivery = "delivery"
	roleAPI      = "api"
)

var allRoles = []string{roleEdge, roleDelivery, roleAPI}

// roleSet is the parsed --roles value.
type roleSet map[string]bool

func parseRoles(s string) (roleSet, error) {
	rs := roleSet{}
	for _, r := range strings.Split(s, ",") {
		r = strings.TrimSpace(r)
		switch {
		case r == "all":
			for _, a := range allRoles {
				rs[a] = true
			}
		case slices.Contains(allRoles, r):
			rs[r] = true
		default:
			return nil, fmt.Errorf("unknown role %q (want all, or a comma-separated list of %s)", r, strings.Join(allRoles, ", "))
		}
	}
	return rs, nil
}

func (rs roleSet) String() string {
	var out []string
	for _, r := range allRoles {
		if rs[r] {
			out = append(out, r)
		}
	}
	return strings.Join(out, ",")
}

// Dependencies each role needs (DESIGN.md section 2): the edge never touches Cassandra.
func (rs roleSet) needsRedis() bool { return rs[roleEdge] || rs[roleAPI] }

// needsCassandra: the edge reads conversation membership before accepting a send (through an
// interface; the edge package itself links no Cassandra code).
func (rs roleSet) needsCassandra() bool { return rs[roleEdge] || rs[roleDelivery] || rs[roleAPI] }

// logConfig is shared by every subcommand.
type logConfig struct{ level string }

func (c *logConfig) register(fs *flag.FlagSet) {
	cli.Enum(fs, &c.level, "log-level", "info", []string{"debug", "info", "warn", "error"},
		"Log level; logs are JSON lines on stderr.")
}

func (c *logConfig) logger(w interface{ Write([]byte) (int, error) }) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(c.level))
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l}))
}

// cassandraFlags registers the Cassandra connection settings.
func cassandraFlags(fs *flag.FlagSet, c *backend.CassandraConfig) {
	cli.Value(fs, &c.Hosts, "cassandra-hosts", []string{backend.DefaultCassandraHost}, func(s string) ([]string, error) {
		hosts := strings.Split(s, ",")
		if err := (backend.CassandraConfig{Hosts: hosts}).Validate(); err != nil {
			return nil, err
		}
		return hosts, nil
	}, func(h []string) string { return strings.Join(h, ",") },
		"Comma-separated Cassandra contact points, host or host:port (port 9042 when omitted).")
	cli.String(fs, &c.Keyspace, "cassandra-keyspace", backend.DefaultCassandraKeyspace, func(s string) error {
		if !backend.ValidKeyspaceName(s) {
			return errors.New("want a letter, then letters, digits or _ (at most 48)")
		}
		return nil
	}, "Keyspace holding Parley's tables.")
	cli.Enum(fs, &c.Consistency, "cassandra-consistency", backend.DefaultCassandraConsistency,
		[]string{"ONE", "LOCAL_ONE", "QUORUM", "LOCAL_QUORUM", "EACH_QUORUM", "ALL"},
		"Consistency level of reads and writes.")
	cli.String(fs, &c.LocalDC, "cassandra-local-dc", "", nil,
		"Data centre to prefer (set it with NetworkTopologyStrategy); empty: any host.")
	cli.String(fs, &c.Username, "cassandra-username", "", nil, "Username for PasswordAuthenticator; empty: none.")
	cli.String(fs, &c.Password, "cassandra-password", "", nil, "Password for PasswordAuthenticator.")
	cli.Duration(fs, &c.Timeout, "cassandra-timeout", backend.DefaultCassandraTimeout, time.Millisecond, time.Minute,
		"Deadline of one Cassandra query.")
	cli.Duration(fs, &c.ConnectTimeout, "cassandra-connect-timeout", backend.DefaultCassandraConnectTimeout,
		time.Millisecond, time.Minute, "Deadline of connecting to a Cassandra host.")
	cli.Duration(fs, &c.ReconnectInterval, "cassandra-reconnect-interval", backend.DefaultCassandraReconnectInterval,
		100*time.Millisecond, 5*time.Minute, "How often hosts marked down are retried.")
	cli.Int(fs, &c.NumConns, "cassandra-conns-per-host", backend.DefaultCassandraNumConns, 1, 64,
		"Connections per Cassandra host.")
}

// migrationFlags registers the keyspace creation settings.
func migrationFlags(fs *flag.FlagSet, repl *schema.Replication) {
	cli.Value(fs, repl, "cassandra-replication", schema.Replication{Strategy: "SimpleStrategy", Factor: 1},
		schema.ParseReplication, replicationString,
		"Replication of the keyspace when it is created: SimpleStrategy:N, or NetworkTopologyStrategy:dc1=N,dc2=N (production: RF 3).")
}

func replicationString(r schema.Replication) string {
	if r.Strategy == "SimpleStrategy" {
		return fmt.Sprintf("SimpleStrategy:%d", r.Factor)
	}
	dcs := make([]string, 0, len(r.DCs))
	for dc, n := range r.DCs {
		dcs = append(dcs, fmt.Sprintf("%s=%d", dc, n))
	}
	slices.Sort(dcs)
	return r.Strategy + ":" + strings.Join(dcs, ",")
}

// authFlags registers token settings. jwksFile receives --auth-jwks-file (loaded by the caller).
func authFlags(fs *flag.FlagSet, c *auth.Config, jwksFile *string) {
	if jwksFile != nil {
		cli.String(fs, jwksFile, "auth-jwks-file", "", nil,
			"JSON Web Key Set file with the RS256 and EdDSA public keys that verify tokens (with or instead of the HS256 secret).")
	}
	cli.Value(fs, &c.HS256Secret, "auth-hs256-secret", nil, func(s string) ([]byte, error) {
		if len(s) < auth.MinSecretLen {
			return nil, fmt.Errorf("secret is %d bytes, at least %d required", len(s), auth.MinSecretLen)
		}
		return []byte(s), nil
	}, func([]byte) string { return "" }, // never print a secret, not even its default
		fmt.Sprintf("Shared secret of HS256 tokens, at least %d bytes. Required.", auth.MinSecretLen))
	cli.String(fs, &c.Issuer, "auth-issuer", "", nil, "Token issuer (iss): written when minting, required when verifying; empty: not checked.")
	cli.String(fs, &c.Audience, "auth-audience", "", nil, "Token audience (aud): written when minting, required when verifying; empty: not checked.")
	cli.Duration(fs, &c.Leeway, "auth-leeway", auth.DefaultLeeway, 0, 5*time.Minute, "Clock skew tolerated on exp, nbf and iat.")
}

// jwksURLFlags registers the key set fetched from an identity provider's HTTPS URL.
func jwksURLFlags(fs *flag.FlagSet, c *auth.RemoteJWKSConfig) {
	cli.String(fs, &c.URL, "auth-jwks-url", "", func(s string) error {
		if !strings.HasPrefix(s, "https://") {
			return errors.New("want an https:// URL")
		}
		return nil
	}, "HTTPS URL of a JSON Web Key Set (an identity provider's jwks_uri) with RS256/EdDSA keys; with or instead of the file and the HS256 secret.")
	cli.Duration(fs, &c.RefreshInterval, "auth-jwks-refresh-interval", auth.DefaultJWKSRefreshInterval, time.Second, 24*time.Hour,
		"How often the key set of --auth-jwks-url is fetched again (rotated keys in, removed keys out).")
	cli.Duration(fs, &c.UnknownKIDInterval, "auth-jwks-unknown-kid-interval", auth.DefaultJWKSUnknownKIDInterval, time.Second, 24*time.Hour,
		"Least time between two fetches of --auth-jwks-url caused by a token with an unknown kid; meanwhile such tokens are refused without a fetch.")
	cli.Duration(fs, &c.Timeout, "auth-jwks-timeout", auth.DefaultJWKSTimeout, 100*time.Millisecond, time.Minute,
		"Deadline of one fetch of --auth-jwks-url.")
	cli.String(fs, &c.CAFile, "auth-jwks-ca-file", "", nil,
		"PEM file of the certificate authorities trusted for --auth-jwks-url instead of the system's.")
}

// runConfig is everything `parleyd run` reads.
type runConfig struct {
	log             logConfig
	roles           roleSet
	listenAddr      string
	auth            auth.Config
	jwksFile        string
	jwksURL         auth.RemoteJWKSConfig
	cursorKeys      *cursor.Keys // nil: derived from the HS256 secret (see cursors)
	edge            edge.Config
	trustedProxies  []netip.Prefix // the public listener's PROXY protocol peers
	rebalance       rebalanceConfig
	delivery        delivery.Config
	reconciler      delivery.ReconcilerConfig
	admin           admin.Config
	adminTokenFile  string
	revocation      revocation.Config
	redis           backend.RedisConfig
	nats            backend.NATSConfig
	cassandra       backend.CassandraConfig
	breaker         breaker.Config
	presence        presence.Config
	presencePolicy  string
	replication     schema.Replication
	migrate         bool
	natsReplicas    int
	startupTimeout  time.Duration
	shutdownTimeout time.Duration
	dev             devConfig
}

// devConfig is development mode (--dev; docs/operations.md, "Development mode").
type devConfig struct {
	on       bool
	demoDir  string
	tokenTTL time.Duration
	origins  []string // the public listener's own origins, added to the allowed origins
}

func (c *runConfig) register(fs *flag.FlagSet) {
	cli.Value(fs, &c.roles, "roles", roleSet{roleEdge: true, roleDelivery: true, roleAPI: true}, parseRoles,
		func(rs roleSet) string {
			if len(rs) == len(allRoles) {
				return "all"
			}
			return rs.String()
		}, "Roles of this process: all, or a comma-separated list of edge, delivery, api.")
	c.log.register(fs)
	cli.String(fs, &c.listenAddr, "listen-addr", cli.DefaultListenAddr, cli.HostPort,
		"Public listen address: the WebSocket endpoint /v1/ws (edge role) and the REST API (api role).")
	// One list for both doors a browser uses: the edge's handshake and the API's CORS.
	cli.Value(fs, &c.edge.AllowedOrigins, "allowed-origins", nil, func(s string) ([]string, error) {
		origins := strings.Split(s, ",")
		if err := origin.Validate(origins); err != nil {
			return nil, err
		}
		return origins, nil
	}, func(o []string) string { return strings.Join(o, ",") },
		"Comma-separated browser origins (https://app.example.com), or *, allowed to open the WebSocket and granted CORS by the REST API; empty: no browser.")
	authFlags(fs, &c.auth, &c.jwksFile)
	jwksURLFlags(fs, &c.jwksURL)
	cli.Value(fs, &c.cursorKeys, "cursor-keys", nil, cursor.ParseKeys, func(*cursor.Keys) string { return "" }, // never print a secret
		fmt.Sprintf("Keys that sign since-tokens and page cursors: id=secret[,id=secret...], secrets of at least %d bytes; "+
			"the first signs, the others still verify (rotation). The same on every process. Empty: one key derived from --auth-hs256-secret (id %q).",
			cursor.MinSecretLen, derivedCursorKeyID))
	edgeFlags(fs, &c.edge)
	cli.Value(fs, &c.trustedProxies, "edge-trusted-proxies", nil, edge.ParseTrustedProxies, func(ps []netip.Prefix) string {
		out := make([]string, len(ps))
		for i, p := range ps {
			out[i] = p.String()
		}
		return strings.Join(out, ",")
	}, "Comma-separated addresses or CIDR prefixes of the proxies in front of the public listener (10.0.0.0/8); each must open every connection with a PROXY protocol v1 or v2 header (HAProxy send-proxy-v2), which gives the client's address to the per-IP limits and logs. Any other peer sending one is refused. Empty: trust nobody, read no header.")
	cli.Bool(fs, &c.rebalance.on, "edge-rebalance", true,
		"Even out the edges' connections: each publishes its count to --edge-rebalance-bucket, and one above its fair share asks some clients to reconnect (through the load balancer) elsewhere. A lone edge never does.")
	cli.String(fs, &c.rebalance.bucket, "edge-rebalance-bucket", edge.DefaultRebalanceBucket, func(s string) error {
		if s == "" || strings.ContainsAny(s, " .*>\t/") {
			return errors.New("want a NATS KV bucket name: letters, digits, - and _")
		}
		return nil
	}, "NATS KV bucket of the edges' connection counts (in memory; keys expire after three --edge-rebalance-interval).")
	deliveryFlags(fs, &c.delivery)
	cli.Duration(fs, &c.reconciler.Interval, "reconciler-interval", time.Minute, time.Second, 24*time.Hour,
		"How often the delivery role's reconciler checks the recent log against Cassandra (one node at a time holds its lease).")
	cli.Duration(fs, &c.reconciler.Lookback, "reconciler-lookback", 15*time.Minute, time.Minute, 365*24*time.Hour,
		"How far back each reconciler pass reads the log.")
	cli.String(fs, &c.admin.Addr, "admin-addr", admin.DefaultAddr, cli.HostPort,
		"Listen address of /healthz, /readyz, /metrics and /debug/pprof.")
	cli.Value(fs, &c.admin.Token, "admin-token", nil, func(s string) ([]byte, error) {
		if len(s) < admin.MinTokenLen {
			return nil, fmt.Errorf("token is %d bytes, at least %d required", len(s), admin.MinTokenLen)
		}
		return []byte(s), nil
	}, func([]byte) string { return "" }, // never print a secret
		fmt.Sprintf("Admin API credential (Authorization: Bearer on /admin/v1/...), at least %d bytes; prefer --admin-token-file. Empty: the admin API is refused.", admin.MinTokenLen))
	cli.String(fs, &c.adminTokenFile, "admin-token-file", "", nil,
		"File holding the admin API credential (surrounding whitespace ignored); instead of --admin-token.")
	revocationFlags(fs, &c.revocation)
	cli.Duration(fs, &c.admin.CheckTimeout, "readiness-check-timeout", admin.DefaultCheckTimeout,
		10*time.Millisecond, time.Minute, "Deadline of each dependency check behind /readyz.")
	cli.Duration(fs, &c.startupTimeout, "startup-timeout", 2*time.Minute, time.Second, time.Hour,
		"How long to wait at start for Redis, NATS and Cassandra to answer before giving up.")
	cli.Duration(fs, &c.shutdownTimeout, "shutdown-timeout", 30*time.Second, time.Second, 10*time.Minute,
		"Deadline of the graceful shutdown after SIGINT or SIGTERM.")

	cli.String(fs, &c.redis.Addr, "redis-addr", "", cli.HostPort,
		"Redis address (host:port) of a single Redis; empty: "+backend.DefaultRedisAddr+", or none with --redis-sentinels (set one of the two).")
	cli.Value(fs, &c.redis.Sentinels, "redis-sentinels", nil, func(s string) ([]string, error) {
		addrs := strings.Split(s, ",")
		for i, a := range addrs {
			addrs[i] = strings.TrimSpace(a)
			if err := cli.HostPort(addrs[i]); err != nil {
				return nil, fmt.Errorf("sentinel %q: %w", addrs[i], err)
			}
		}
		return addrs, nil
	}, func(a []string) string { return strings.Join(a, ",") },
		"Comma-separated host:port addresses of Redis Sentinels: Redis is then the primary they name for --redis-master-name, followed through failovers.")
	cli.String(fs, &c.redis.MasterName, "redis-master-name", "", func(s string) error {
		if s == "" || strings.ContainsAny(s, " \t\r\n") {
			return errors.New("want the name of a 'sentinel monitor' line: not empty, no spaces")
		}
		return nil
	}, "Name the Sentinels monitor Parley's Redis primary under; required with --redis-sentinels.")
	cli.String(fs, &c.redis.SentinelPassword, "redis-sentinel-password", "", nil,
		"Password of the Sentinels (their requirepass); empty: none. --redis-password is the servers'.")
	cli.String(fs, &c.redis.Password, "redis-password", "", nil, "Redis password; empty: none.")
	cli.Int(fs, &c.redis.DB, "redis-db", 0, 0, 15, "Redis logical database.")
	cli.Duration(fs, &c.redis.DialTimeout, "redis-dial-timeout", backend.DefaultRedisDialTimeout, time.Millisecond, time.Minute,
		"Deadline of connecting to Redis.")
	cli.Duration(fs, &c.redis.ReadTimeout, "redis-read-timeout", backend.DefaultRedisReadTimeout, time.Millisecond, time.Minute,
		"Deadline of reading one Redis reply.")
	cli.Duration(fs, &c.redis.WriteTimeout, "redis-write-timeout", backend.DefaultRedisWriteTimeout, time.Millisecond, time.Minute,
		"Deadline of writing one Redis command.")
	cli.Int(fs, &c.redis.PoolSize, "redis-pool-size", 0, 0, 10000, "Maximum Redis connections; 0: 10 per CPU.")

	cli.String(fs, &c.nats.URL, "nats-url", backend.DefaultNATSURL, func(s string) error {
		return (backend.NATSConfig{URL: s}).Validate()
	}, "NATS server URL(s), comma-separated.")
	cli.Duration(fs, &c.nats.ConnectTimeout, "nats-connect-timeout", backend.DefaultNATSConnectTimeout, time.Millisecond, time.Minute,
		"Deadline of one connection attempt to NATS.")
	cli.Duration(fs, &c.nats.ReconnectWait, "nats-reconnect-wait", backend.DefaultNATSReconnectWait, 10*time.Millisecond, time.Minute,
		"Pause between reconnect attempts to NATS (reconnects never give up).")
	cli.Duration(fs, &c.nats.RequestTimeout, "nats-request-timeout", backend.DefaultNATSRequestTimeout, time.Millisecond, time.Minute,
		"Deadline of JetStream API calls and publish acknowledgements.")
	cli.Int(fs, &c.natsReplicas, "nats-replicas", 1, 1, 5,
		"Replicas of every JetStream stream and KV bucket parleyd creates: 1 for one NATS server, 3 for a cluster (at most its servers).")

	cassandraFlags(fs, &c.cassandra)
	migrationFlags(fs, &c.replication)
	cli.Duration(fs, &c.breaker.Window, "cassandra-breaker-window", 10*time.Second, time.Second, 10*time.Minute,
		"Window over which Cassandra failures are counted by the circuit breaker.")
	cli.Int(fs, &c.breaker.MinRequests, "cassandra-breaker-min-requests", 10, 1, 1000000,
		"Calls the window needs before the breaker may open.")
	cli.Float(fs, &c.breaker.FailureRatio, "cassandra-breaker-failure-ratio", 0.5, 0.01, 1,
		"Share of failed calls in the window that opens the breaker (calls then fail fast with 503/unavailable).")
	cli.Duration(fs, &c.breaker.OpenFor, "cassandra-breaker-open-for", 5*time.Second, 100*time.Millisecond, 10*time.Minute,
		"How long the breaker stays open before a trial call.")
	cli.Duration(fs, &c.presence.TTL, "presence-ttl", presence.DefaultTTL, 200*time.Millisecond, time.Hour,
		"How long a device session stays online without a heartbeat (an edge that dies takes its users offline within TTL + heartbeat).")
	cli.Duration(fs, &c.presence.Heartbeat, "presence-heartbeat", presence.DefaultHeartbeat, 100*time.Millisecond, 30*time.Minute,
		"How often an edge renews its sessions in Redis (batched); at most half the TTL.")
	cli.Duration(fs, &c.presence.Grace, "presence-grace", presence.DefaultGrace, time.Millisecond, time.Hour,
		"How long a user whose last device disconnected stays online (no flapping on a quick reconnect).")
	cli.String(fs, &c.presencePolicy, "presence-policy", "members", func(s string) error {
		if s != "members" && s != "anyone" {
			return errors.New(`want "members" (users who share a conversation) or "anyone"`)
		}
		return nil
	}, `Whose presence a user may watch: "members" (users they share a conversation with) or "anyone".`)
	cli.Bool(fs, &c.migrate, "cassandra-migrate", true,
		"Apply pending schema migrations at start; false: refuse to start unless the schema is current.")
	devFlags(fs, &c.dev)
}

// devFlags registers development mode's settings.
func devFlags(fs *flag.FlagSet, c *devConfig) {
	cli.Bool(fs, &c.on, "dev", false,
		"Development mode (make run), never in production: POST /dev/token mints a token for any user to clients on this machine, "+
			"--dev-demo-dir is served at /demo/, and the public listener's own origins (http://127.0.0.1:PORT, http://localhost:PORT) may open the WebSocket. "+
			"Refused unless --listen-addr is a loopback address with a fixed port and tokens are HS256 only (--auth-hs256-secret, no JWKS, no trusted proxies).")
	cli.String(fs, &c.demoDir, "dev-demo-dir", "", nil,
		"Directory of the browser demo (index.html and its bundle, built by make demo-build) served at /demo/ with --dev; empty: no /demo/.")
	cli.Duration(fs, &c.tokenTTL, "dev-token-ttl", httpapi.DefaultDevTokenTTL, time.Minute, 24*time.Hour,
		"Lifetime of the tokens POST /dev/token mints with --dev.")
}

// validateDev refuses development mode anywhere but on this machine with development
// settings, checks the demo directory, and adds the listener's own origins to the allowed
// ones (the demo served at /demo/ opens the WebSocket from there).
func (c *runConfig) validateDev() error {
	if !c.dev.on {
		if c.dev.demoDir != "" {
			return errors.New("--dev-demo-dir (PARLEY_DEV_DEMO_DIR) is served in development mode only: it needs --dev (PARLEY_DEV)")
		}
		return nil
	}
	switch {
	case !c.roles[roleEdge] && !c.roles[roleAPI]:
		return errors.New("--dev (PARLEY_DEV) serves on the public listener: it needs the edge or api role in --roles (PARLEY_ROLES)")
	case c.auth.HS256Secret == nil:
		return errors.New("--dev (PARLEY_DEV) mints HS256 tokens: set --auth-hs256-secret (PARLEY_AUTH_HS256_SECRET)")
	case c.jwksFile != "" || c.jwksURL.URL != "":
		return errors.New("--dev (PARLEY_DEV) is HS256 only: --auth-jwks-file and --auth-jwks-url (an identity provider's keys) are production settings; unset them")
	case len(c.trustedProxies) > 0:
		return errors.New("--dev (PARLEY_DEV) answers this machine only: --edge-trusted-proxies (a proxy in front, carrying other machines' clients) is a production setting; unset it")
	}
	host, port, err := net.SplitHostPort(c.listenAddr)
	if err != nil {
		return fmt.Errorf("--listen-addr (PARLEY_LISTEN_ADDR) %q: %w", c.listenAddr, err)
	}
	if !httpapi.LoopbackHost(host) {
		return fmt.Errorf("--dev (PARLEY_DEV) answers on loopback only: --listen-addr (PARLEY_LISTEN_ADDR) %q is not a loopback address; use 127.0.0.1:PORT, [::1]:PORT or localhost:PORT", c.listenAddr)
	}
	if port == "0" {
		return fmt.Errorf("--dev (PARLEY_DEV) needs a fixed port in --listen-addr (PARLEY_LISTEN_ADDR), not %q: the listener's own origin http://127.0.0.1:PORT is allowed by its number", c.listenAddr)
	}
	if c.dev.demoDir != "" {
		fi, err := os.Stat(c.dev.demoDir)
		switch {
		case err != nil:
			return fmt.Errorf("--dev-demo-dir (PARLEY_DEV_DEMO_DIR): %w", err)
		case !fi.IsDir():
			return fmt.Errorf("--dev-demo-dir (PARLEY_DEV_DEMO_DIR) %s is not a directory", c.dev.demoDir)
		}
		if _, err := os.Stat(filepath.Join(c.dev.demoDir, "index.html")); err != nil {
			return fmt.Errorf("--dev-demo-dir (PARLEY_DEV_DEMO_DIR) %s has no index.html (build the demo: make demo-build): %w", c.dev.demoDir, err)
		}
	}
	c.dev.origins = httpapi.OwnOrigins(host, port)
	for _, o := range c.dev.origins {
		if !slices.Contains(c.edge.AllowedOrigins, o) {
			c.edge.AllowedOrigins = append(c.edge.AllowedOrigins, o)
		}
	}
	return nil
}

// loopbackListener is the backstop of validateDev: the address the public listener got
// (localhost resolved) must be a loopback one.
func loopbackListener(a net.Addr) error {
	if t, ok := a.(*net.TCPAddr); ok && t.IP.IsLoopback() {
		return nil
	}
	return fmt.Errorf("--dev (PARLEY_DEV) answers on loopback only: the public listener is on %s, not a loopback address", a)
}

// validate is the backstop behind the per-flag checks: each component's own Validate, and
// the settings that only some roles need. It loads the JWKS file.
func (c *runConfig) validate() error {
	// One setting for every stream and bucket: a cluster replicates them all alike.
	c.delivery.Ingest.Replicas, c.revocation.Replicas, c.rebalance.replicas = c.natsReplicas, c.natsReplicas, c.natsReplicas
	// The Redis settings that go together, named by their flags (RedisConfig.Validate checks
	// the same, without knowing the flags).
	switch r := c.redis; {
	case len(r.Sentinels) > 0 && r.Addr != "":
		return errors.New("set one of --redis-addr (PARLEY_REDIS_ADDR) and --redis-sentinels (PARLEY_REDIS_SENTINELS): with sentinels the primary's address comes from them")
	case len(r.Sentinels) > 0 && r.MasterName == "":
		return errors.New("--redis-sentinels needs --redis-master-name (PARLEY_REDIS_MASTER_NAME), the name the sentinels monitor the primary under")
	case len(r.Sentinels) == 0 && (r.MasterName != "" || r.SentinelPassword != ""):
		return errors.New("--redis-master-name and --redis-sentinel-password need --redis-sentinels (PARLEY_REDIS_SENTINELS)")
	}
	if err := c.validateDev(); err != nil {
		return err
	}
	for _, err := range []error{c.redis.Validate(), c.nats.Validate(), c.cassandra.Validate(), c.edge.Validate(), c.delivery.Validate(), c.presence.Validate()} {
		if err != nil {
			return err
		}
	}
	if err := c.breaker.Validate(); err != nil {
		return err
	}
	if c.adminTokenFile != "" {
		if c.admin.Token != nil {
			return errors.New("set one of --admin-token (PARLEY_ADMIN_TOKEN) and --admin-token-file (PARLEY_ADMIN_TOKEN_FILE)")
		}
		data, err := os.ReadFile(c.adminTokenFile)
		if err != nil {
			return fmt.Errorf("--admin-token-file: %w", err)
		}
		c.admin.Token = bytes.TrimSpace(data)
	}
	if err := c.admin.Validate(); err != nil {
		return fmt.Errorf("--admin-token-file: %w", err)
	}
	if c.jwksFile != "" {
		ks, err := auth.LoadJWKS(c.jwksFile)
		if err != nil {
			return fmt.Errorf("--auth-jwks-file: %w", err)
		}
		c.auth.PublicKeys = ks
	}
	if (c.roles[roleEdge] || c.roles[roleAPI]) && c.auth.HS256Secret == nil && c.auth.PublicKeys == nil && c.jwksURL.URL == "" {
		return errors.New("the edge and api roles verify tokens: set --auth-hs256-secret (PARLEY_AUTH_HS256_SECRET), --auth-jwks-file (PARLEY_AUTH_JWKS_FILE) or --auth-jwks-url (PARLEY_AUTH_JWKS_URL)")
	}
	if (c.roles[roleEdge] || c.roles[roleAPI]) && c.cursorKeys == nil && c.auth.HS256Secret == nil {
		return errors.New("the edge and api roles sign cursors: set --cursor-keys (PARLEY_CURSOR_KEYS), or --auth-hs256-secret to derive a key from it")
	}
	return nil
}

// revocationFlags registers the revocation bucket's settings.
func revocationFlags(fs *flag.FlagSet, c *revocation.Config) {
	cli.String(fs, &c.Bucket, "revocation-bucket", revocation.DefaultBucket, func(s string) error {
		if s == "" || strings.ContainsAny(s, " .*>\t/") {
			return errors.New("want a NATS KV bucket name: letters, digits, - and _")
		}
		return nil
	}, "NATS KV bucket of token revocations.")
	cli.Duration(fs, &c.TTL, "revocation-ttl", revocation.DefaultTTL, time.Minute, 3650*24*time.Hour,
		"How long a revocation is kept: at least the longest token lifetime (a token outliving it is accepted again).")
}

// rebalanceConfig is the edge's rebalancing: whether, and its bucket.
type rebalanceConfig struct {
	on       bool
	bucket   string
	replicas int
}

// derivedCursorKeyID is the id of the cursor key derived from the HS256 secret.
const derivedCursorKeyID = "hs256"

// cursors is the key set of since-tokens and page cursors: --cursor-keys, or else one key
// derived from the HS256 token secret. Every process of a deployment must sign and verify
// with the same keys (a client's next request may reach any of them), so the default is
// derived from a secret they all share already, never made up per process; validate has
// refused a configuration with neither.
func (c *runConfig) cursors() *cursor.Keys {
	if c.cursorKeys != nil {
		return c.cursorKeys
	}
	ks, err := cursor.NewKeys(cursor.Derive(derivedCursorKeyID, c.auth.HS256Secret))
	if err != nil {
		panic(err) // a derived key is always valid
	}
	return ks
}

// edgeFlags registers the edge's limits and timings.
func edgeFlags(fs *flag.FlagSet, c *edge.Config) {
	cli.Int(fs, &c.MaxFrameBytes, "edge-max-frame-bytes", edge.DefaultMaxFrameBytes, 1024, 16<<20,
		"Largest client frame; larger closes the connection with 1009.")
	cli.Int(fs, &c.MaxBodyBytes, "edge-max-body-bytes", edge.DefaultMaxBodyBytes, 1, 8<<20,
		"Largest message body in send (at most half of --edge-max-frame-bytes); larger gets body_too_large.")
	cli.Int(fs, &c.FramesPerSecond, "edge-frames-per-second", edge.DefaultFramesPerSecond, 1, 100000,
		"Sustained client frames per second per connection; above it rate_limited.")
	cli.Int(fs, &c.FrameBurst, "edge-frame-burst", edge.DefaultFrameBurst, 1, 100000,
		"Frames a connection may send at once above the sustained rate.")
	cli.Int(fs, &c.RateStrikes, "edge-rate-strikes", edge.DefaultRateStrikes, 1, 1000000,
		"rate_limited errors in a row before the connection is closed with 4008.")
	cli.Int(fs, &c.MaxSubscriptions, "edge-max-subscriptions", edge.DefaultMaxSubscriptions, 1, 100000,
		"Users one connection may watch (presence).")
	cli.Int(fs, &c.MaxConns, "edge-max-conns", edge.DefaultMaxConns, 1, 10000000,
		"Connections this process holds; above it handshakes get 503 with Retry-After (mind the open-files limit).")
	cli.Int(fs, &c.MaxConnsPerUser, "edge-max-conns-per-user", edge.DefaultMaxConnsPerUser, 1, 10000,
		"Connections of one user on this edge; above it 429.")
	cli.Int(fs, &c.MaxConnsPerIP, "edge-max-conns-per-ip", edge.DefaultMaxConnsPerIP, 1, 10000000,
		"Connections from one IP address; above it 429.")
	cli.Float(fs, &c.HandshakeRatePerUser, "edge-handshake-rate-per-user", edge.DefaultHandshakeRatePerUser, 0.001, 1e6,
		"Sustained handshakes per second of one user on this edge (token bucket); above it 429 with Retry-After.")
	cli.Int(fs, &c.HandshakeBurstPerUser, "edge-handshake-burst-per-user", edge.DefaultHandshakeBurstPerUser, 1, 1000000,
		"Handshakes one user may make at once above the sustained rate.")
	cli.Float(fs, &c.HandshakeRatePerIP, "edge-handshake-rate-per-ip", edge.DefaultHandshakeRatePerIP, 0.001, 1e6,
		"Sustained handshakes per second from one client address (the TCP peer; IPv6 by /64); above it 429 with Retry-After. Behind a proxy that hides client addresses, size it for all clients.")
	cli.Int(fs, &c.HandshakeBurstPerIP, "edge-handshake-burst-per-ip", 0, 0, 10000000,
		"Handshakes one address may make at once above the sustained rate (0: --edge-max-conns-per-ip).")
	cli.Int(fs, &c.HandshakeRateKeys, "edge-handshake-rate-keys", edge.DefaultHandshakeRateKeys, 16, 10000000,
		"Users, and addresses, whose handshake buckets are remembered (least recently used forgotten first; about 250 bytes each).")
	cli.Int(fs, &c.SecurityLogPerSecond, "edge-security-log-rate", edge.DefaultSecurityLogPerSecond, 1, 100000,
		"Security event log records per second of each kind (refused handshakes, rate-limit closes...); the rest are counted and the count logged.")
	cli.Bool(fs, &c.AllowNoOrigin, "edge-allow-no-origin", true,
		"Accept handshakes without an Origin header (native apps and servers; browsers always send one).")
	cli.Duration(fs, &c.HeartbeatInterval, "edge-heartbeat-interval", edge.DefaultHeartbeatInterval, 100*time.Millisecond, 10*time.Minute,
		"A connection silent this long is pinged; silent twice as long, closed.")
	cli.Duration(fs, &c.WriteTimeout, "edge-write-timeout", edge.DefaultWriteTimeout, time.Millisecond, time.Minute,
		"Deadline of one batch of writes to a client.")
	cli.Int(fs, &c.QueueLen, "edge-queue-len", edge.DefaultQueueLen, 4, 100000,
		"Frames queued per connection before ephemeral frames are dropped and then the client is closed as slow (4009).")
	cli.Int(fs, &c.QueueBytes, "edge-queue-bytes", edge.DefaultQueueBytes, 64<<10, 1<<30,
		"Bytes queued (and being written) per connection before the same overflow policy applies.")
	cli.Int(fs, &c.SyncPageBytes, "edge-sync-page-bytes", edge.DefaultSyncPageBytes, 16<<10, 512<<20,
		"Bytes of one sync.result page, its conversations and messages included (at most half of --edge-queue-bytes); a full page has more: true.")
	cli.Duration(fs, &c.DrainWindow, "edge-drain-window", edge.DefaultDrainWindow, 0, 10*time.Minute,
		"On shutdown, reconnect hints are spread over this long before connections are closed with 1001.")
	cli.Duration(fs, &c.DrainDelay, "edge-drain-delay", edge.DefaultDrainDelay, 0, 5*time.Minute,
		"On shutdown, the pause after /readyz turns 503 before handshakes are refused and reconnect hints sent, so the load balancer takes the edge out of rotation first (at least its check interval times fall, plus a check's timeout; 0: none).")
	cli.Duration(fs, &c.RebalanceInterval, "edge-rebalance-interval", edge.DefaultRebalanceInterval, 100*time.Millisecond, time.Hour,
		"How often an edge publishes its connection count and, above its fair share, sheds half its excess.")
	cli.Float(fs, &c.RebalanceSlack, "edge-rebalance-slack", edge.DefaultRebalanceSlack, 0.01, 10,
		"How far above the fair share (total / edges) an edge may hold before it sheds: 0.1 is 110%.")
	cli.Float(fs, &c.RebalanceRate, "edge-rebalance-rate", edge.DefaultRebalanceRate, 0.001, 1e6,
		"Connections an edge asks to move a second at most.")
	cli.Bool(fs, &c.GoroutineReads, "edge-goroutine-reads", false,
		"Read each connection with a goroutine of its own instead of the event-driven (epoll) reader; always so off Linux.")
}

// deliveryFlags registers the ingest stream and worker settings.
func deliveryFlags(fs *flag.FlagSet, c *delivery.Config) {
	cli.String(fs, &c.Ingest.Stream, "delivery-stream", ingest.DefaultStream, func(s string) error {
		if s == "" || strings.ContainsAny(s, " .*>\t") {
			return errors.New("want a JetStream stream name: no spaces, '.', '*' or '>'")
		}
		return nil
	}, "JetStream stream of accepted sends.")
	cli.String(fs, &c.Ingest.SubjectPrefix, "delivery-subject-prefix", ingest.DefaultSubjectPrefix, func(s string) error {
		if !strings.HasSuffix(s, ".") || strings.ContainsAny(s, " *>") || strings.HasPrefix(s, ".") {
			return errors.New("want NATS subject tokens ending with a dot (as in parley.ingest.)")
		}
		return nil
	}, "Subject prefix of the ingest stream's partitions (prefix + partition number).")
	cli.Int(fs, &c.Ingest.Partitions, "delivery-partitions", ingest.DefaultPartitions, 1, 1024,
		"Partitions of the ingest stream (ordered, one active worker each); fixed once the stream holds messages.")
	cli.Duration(fs, &c.Ingest.DuplicateWindow, "delivery-duplicate-window", ingest.DefaultDuplicateWindow, 100*time.Millisecond, 24*time.Hour,
		"JetStream's dedupe window for resent sends (later resends are caught by the client_msg_id map).")
	cli.Duration(fs, &c.Ingest.PublishTimeout, "delivery-publish-timeout", ingest.DefaultPublishTimeout, time.Millisecond, time.Minute,
		"Deadline of making a send durable before answering accepted.")
	cli.Duration(fs, &c.AckWait, "delivery-ack-wait", delivery.DefaultAckWait, time.Second, 10*time.Minute,
		"How long a worker may hold a message before it is redelivered.")
	cli.Int(fs, &c.MaxDeliver, "delivery-max-deliver", delivery.DefaultMaxDeliver, 2, 100000,
		"Deliveries of one message before it is given up.")
	cli.Duration(fs, &c.PinnedTTL, "delivery-pinned-ttl", delivery.DefaultPinnedTTL, time.Second, 10*time.Minute,
		"A worker silent this long loses its partitions to another (failover time, with the ack wait).")
	cli.Duration(fs, &c.HandoverSpacing, "delivery-handover-spacing", delivery.DefaultHandoverSpacing, 10*time.Millisecond, time.Minute,
		"Time between two partitions handed over by a worker holding more than its fair share (a worker joined).")
	cli.Int(fs, &c.Batch, "delivery-batch", delivery.DefaultBatch, 1, 1000,
		"Messages of a partition a worker takes at once (1: one at a time).")
	cli.Duration(fs, &c.Log.MaxAge, "delivery-log-max-age", delivery.DefaultLogMaxAge, time.Hour, 3650*24*time.Hour,
		"How long the sequenced log keeps entries: the longest Cassandra outage or loss the projection can repair from it.")
	cli.Int(fs, &c.Log.MaxMiB, "delivery-log-max-mib", 0, 0, 1<<30,
		"Size bound of the sequenced log in MiB (0: none but its max age); when full, sends wait in the ingest stream.")
	cli.Duration(fs, &c.Log.DuplicateWindow, "delivery-log-duplicate-window", delivery.DefaultLogDuplicateWindow, time.Minute, 24*time.Hour,
		"How long the log refuses a second copy of an entry; fresh UUIDv7 sends are deduplicated by it alone while Cassandra is down.")
}
