package backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	gocql "github.com/apache/cassandra-gocql-driver/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// CassandraConfig configures the Cassandra session. Zero values take the defaults below.
type CassandraConfig struct {
	// Hosts are contact points, host or host:port. Default ["127.0.0.1:19042"].
	Hosts []string
	// Keyspace holds Parley's tables. Default "parley".
	Keyspace string
	// Consistency for reads and writes. Default LOCAL_QUORUM.
	Consistency string
	// LocalDC, when set, routes queries to that data centre first (production with
	// NetworkTopologyStrategy). Empty: round robin over all hosts.
	LocalDC string
	// Username and Password for PasswordAuthenticator; empty for none.
	Username string
	Password string
	// Timeout bounds each query. Default 5s.
	Timeout time.Duration
	// ConnectTimeout bounds dialing and connection setup. Default 5s.
	ConnectTimeout time.Duration
	// ReconnectInterval is how often hosts marked down are retried. Default 2s, so a restarted
	// node is used again within seconds without restarting Parley.
	ReconnectInterval time.Duration
	// NumConns is the number of connections per host. Default 2.
	NumConns int
}

// Defaults for CassandraConfig.
const (
	DefaultCassandraHost              = "127.0.0.1:19042"
	DefaultCassandraKeyspace          = "parley"
	DefaultCassandraConsistency       = "LOCAL_QUORUM"
	DefaultCassandraTimeout           = 5 * time.Second
	DefaultCassandraConnectTimeout    = 5 * time.Second
	DefaultCassandraReconnectInterval = 2 * time.Second
	DefaultCassandraNumConns          = 2
)

func (c CassandraConfig) withDefaults() CassandraConfig {
	if len(c.Hosts) == 0 {
		c.Hosts = []string{DefaultCassandraHost}
	}
	if c.Keyspace == "" {
		c.Keyspace = DefaultCassandraKeyspace
	}
	if c.Consistency == "" {
		c.Consistency = DefaultCassandraConsistency
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultCassandraTimeout
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultCassandraConnectTimeout
	}
	if c.ReconnectInterval == 0 {
		c.ReconnectInterval = DefaultCassandraReconnectInterval
	}
	if c.NumConns == 0 {
		c.NumConns = DefaultCassandraNumConns
	}
	return c
}

// Validate reports the first invalid setting.
func (c CassandraConfig) Validate() error {
	c = c.withDefaults()
	for _, h := range c.Hosts {
		if h == "" || strings.ContainsAny(h, " /") {
			return fmt.Errorf("cassandra host %q: want host or host:port", h)
		}
		if strings.Contains(h, ":") {
			if _, _, err := net.SplitHostPort(h); err != nil {
				return fmt.Errorf("cassandra host %q: want host or host:port", h)
			}
		}
	}
	if !ValidKeyspaceName(c.Keyspace) {
		return fmt.Errorf("cassandra keyspace %q: want a letter then letters, digits or _, at most 48", c.Keyspace)
	}
	if _, err := gocql.ParseConsistencyWrapper(c.Consistency); err != nil {
		return fmt.Errorf("cassandra consistency %q: want ONE, LOCAL_ONE, QUORUM, LOCAL_QUORUM, EACH_QUORUM or ALL", c.Consistency)
	}
	if c.Timeout < 0 || c.ConnectTimeout < 0 || c.ReconnectInterval < 0 {
		return errors.New("cassandra timeouts must not be negative")
	}
	if c.NumConns < 0 || c.NumConns > 64 {
		return fmt.Errorf("cassandra connections per host %d out of range [1, 64]", c.NumConns)
	}
	return nil
}

// ValidKeyspaceName reports whether s is a valid unquoted Cassandra keyspace name (it is
// interpolated into DDL, so anything else is refused).
func ValidKeyspaceName(s string) bool {
	if len(s) == 0 || len(s) > 48 {
		return false
	}
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case i > 0 && (r >= '0' && r <= '9' || r == '_'):
		default:
			return false
		}
	}
	return true
}

// Cassandra builds gocql cluster configurations with Parley's settings, metrics and logging.
type Cassandra struct {
	cfg     CassandraConfig
	metrics *cassandraMetrics
	logger  *slog.Logger
}

// NewCassandra validates cfg and registers the Cassandra metrics on reg.
func NewCassandra(cfg CassandraConfig, reg prometheus.Registerer, logger *slog.Logger) (*Cassandra, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := newCassandraMetrics()
	if err := m.register(reg); err != nil {
		return nil, fmt.Errorf("register cassandra metrics: %w", err)
	}
	return &Cassandra{cfg: cfg.withDefaults(), metrics: m, logger: logger}, nil
}

// Keyspace is the configured keyspace.
func (c *Cassandra) Keyspace() string { return c.cfg.Keyspace }

// Cluster returns a cluster configuration bound to keyspace ("" for none, as needed to create
// the keyspace itself).
func (c *Cassandra) Cluster(keyspace string) *gocql.ClusterConfig {
	cfg := c.cfg
	cl := gocql.NewCluster(cfg.Hosts...)
	cl.Keyspace = keyspace
	cl.Consistency = gocql.ParseConsistency(cfg.Consistency)
	cl.SerialConsistency = gocql.LocalSerial
	cl.Timeout = cfg.Timeout
	cl.ConnectTimeout = cfg.ConnectTimeout
	cl.ReconnectInterval = cfg.ReconnectInterval
	cl.ReconnectionPolicy = &gocql.ExponentialReconnectionPolicy{
		MaxRetries: 10, InitialInterval: 200 * time.Millisecond, MaxInterval: 2 * time.Second,
	}
	cl.NumConns = cfg.NumConns
	cl.ProtoVersion = 5
	fallback := gocql.RoundRobinHostPolicy()
	if cfg.LocalDC != "" {
		fallback = gocql.DCAwareRoundRobinPolicy(cfg.LocalDC)
	}
	cl.PoolConfig.HostSelectionPolicy = gocql.TokenAwareHostPolicy(fallback, gocql.ShuffleReplicas())
	// Only statements marked idempotent are ever retried.
	cl.RetryPolicy = &gocql.ExponentialBackoffRetryPolicy{NumRetries: 2, Min: 50 * time.Millisecond, Max: 500 * time.Millisecond}
	if cfg.Username != "" {
		cl.Authenticator = gocql.PasswordAuthenticator{Username: cfg.Username, Password: cfg.Password}
	}
	cl.QueryObserver = c.metrics
	cl.BatchObserver = c.metrics
	cl.ConnectObserver = c.metrics
	cl.Logger = slogCQL{c.logger.With("component", "gocql")}
	return cl
}

// Open creates a session bound to keyspace, waiting until Cassandra answers or ctx ends. The
// session survives a restart of Cassandra: down hosts are retried every ReconnectInterval.
func (c *Cassandra) Open(ctx context.Context, keyspace string) (*gocql.Session, error) {
	var s *gocql.Session
	err := waitUntil(ctx, c.logger, "cassandra", func(ctx context.Context) error {
		var err error
		s, err = c.Cluster(keyspace).CreateSession()
		if err != nil {
			return err
		}
		if err = PingCassandra(ctx, s); err != nil {
			s.Close()
		}
		return err
	})
	return s, err
}

// PingCassandra reports whether Cassandra answers a query.
func PingCassandra(ctx context.Context, s *gocql.Session) error {
	var version string
	return s.Query("SELECT release_version FROM system.local").Idempotent(true).
		Consistency(gocql.One).ScanContext(ctx, &version)
}

// cassandraMetrics observes every query, batch and connection attempt.
type cassandraMetrics struct {
	duration *prometheus.HistogramVec
	connects *prometheus.CounterVec
}

func newCassandraMetrics() *cassandraMetrics {
	return &cassandraMetrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "parley_cassandra_query_duration_seconds",
			Help:    "Time of one Cassandra request attempt, by kind (query, batch) and result (ok, error).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"kind", "result"}),
		connects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_cassandra_connects_total",
			Help: "Connection attempts to Cassandra hosts, by result (ok, error).",
		}, []string{"result"}),
	}
}

func (m *cassandraMetrics) register(reg prometheus.Registerer) error {
	if err := reg.Register(m.duration); err != nil {
		return err
	}
	return reg.Register(m.connects)
}

func (m *cassandraMetrics) ObserveQuery(_ context.Context, q gocql.ObservedQuery) {
	m.duration.WithLabelValues("query", result(q.Err)).Observe(q.End.Sub(q.Start).Seconds())
}

func (m *cassandraMetrics) ObserveBatch(_ context.Context, b gocql.ObservedBatch) {
	m.duration.WithLabelValues("batch", result(b.Err)).Observe(b.End.Sub(b.Start).Seconds())
}

func (m *cassandraMetrics) ObserveConnect(c gocql.ObservedConnect) {
	m.connects.WithLabelValues(result(c.Err)).Inc()
}

func result(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}

// slogCQL sends the driver's log lines to slog. The driver's "info" lines (topology events)
// are logged at debug level: they are frequent and rarely actionable.
type slogCQL struct{ l *slog.Logger }

func (s slogCQL) log(level slog.Level, msg string, fields []gocql.LogField) {
	if !s.l.Enabled(context.Background(), level) {
		return
	}
	attrs := make([]slog.Attr, 0, len(fields))
	for _, f := range fields {
		attrs = append(attrs, slog.Any(f.Name, f.Value.Any()))
	}
	s.l.LogAttrs(context.Background(), level, msg, attrs...)
}

func (s slogCQL) Error(msg string, f ...gocql.LogField)   { s.log(slog.LevelError, msg, f) }
func (s slogCQL) Warning(msg string, f ...gocql.LogField) { s.log(slog.LevelWarn, msg, f) }
func (s slogCQL) Info(msg string, f ...gocql.LogField)    { s.log(slog.LevelDebug, msg, f) }
func (s slogCQL) Debug(msg string, f ...gocql.LogField)   { s.log(slog.LevelDebug, msg, f) }

// CloseCassandra closes a session, waiting at most timeout. gocql v2.1.2's Session.Close can
// block for ever when Cassandra restarted and the control connection is reconnecting (it
// sends on a channel its heartbeat goroutine no longer reads; seen in the outage test, and in
// upstream issues #1687 and #1752): a stuck close is left behind (it ends with the process)
// and reported false, so shutdown stays within its deadline.
func CloseCassandra(s *gocql.Session, timeout time.Duration) bool {
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Close()
	}()
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		return false
	}
}
