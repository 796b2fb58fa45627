package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	gocql "github.com/apache/cassandra-gocql-driver/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"
	"sigs.k8s.io/yaml"

	"github.com/parleyhq/parley/delivery"
	"github.com/parleyhq/parley/delivery/ingest"
	"github.com/parleyhq/parley/docs"
	"github.com/parleyhq/parley/edge"
	"github.com/parleyhq/parley/history"
	"github.com/parleyhq/parley/httpapi"
	"github.com/parleyhq/parley/inbox"
	"github.com/parleyhq/parley/internal/admin"
	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/backend"
	"github.com/parleyhq/parley/internal/breaker"
	"github.com/parleyhq/parley/internal/cli"
	"github.com/parleyhq/parley/internal/origin"
	"github.com/parleyhq/parley/internal/revocation"
	"github.com/parleyhq/parley/internal/schema"
	"github.com/parleyhq/parley/presence"
	"github.com/parleyhq/parley/protocol"
)

// deps are the open connections of a process; nil when its roles do not need one.
type deps struct {
	redis     *redis.Client
	nats      *backend.NATS
	cassandra *gocql.Session
	logger    *slog.Logger
}

// checks are the readiness checks of the open dependencies.
func (d *deps) checks() []admin.Check {
	var cs []admin.Check
	if d.redis != nil {
		cs = append(cs, admin.Check{Name: "redis", Func: func(ctx context.Context) error { return backend.PingRedis(ctx, d.redis) }})
	}
	if d.nats != nil {
		cs = append(cs, admin.Check{Name: "nats", Func: d.nats.Ping})
	}
	if d.cassandra != nil {
		cs = append(cs, admin.Check{Name: "cassandra", Func: func(ctx context.Context) error { return backend.PingCassandra(ctx, d.cassandra) }})
	}
	return cs
}

// close closes in reverse dependency order: NATS first (drains pending publishes), then the
// stores.
func (d *deps) close() {
	if d.nats != nil {
		d.nats.Close()
	}
	if d.redis != nil {
		_ = d.redis.Close()
	}
	if d.cassandra != nil && !backend.CloseCassandra(d.cassandra, 5*time.Second) {
		d.logger.Warn("the Cassandra driver did not close within 5s; going on")
	}
}

// openDeps opens what the roles need, each waiting for its service until ctx ends.
func openDeps(ctx context.Context, cfg runConfig, reg prometheus.Registerer, logger *slog.Logger) (_ *deps, err error) {
	d := &deps{logger: logger}
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	if d.nats, err = backend.OpenNATS(ctx, cfg.nats, reg, logger); err != nil {
		return nil, unreachable("NATS", redactURLs(cfg.nats.URL), err)
	}
	if cfg.roles.needsRedis() {
		if d.redis, err = backend.OpenRedis(ctx, cfg.redis, reg, logger); err != nil {
			return nil, unreachable("Redis", cfg.redis.Describe(), err)
		}
	}
	if cfg.roles.needsCassandra() {
		cass, err := backend.NewCassandra(cfg.cassandra, reg, logger)
		if err != nil {
			return nil, err
		}
		open := openCassandra(cass, strings.Join(cfg.cassandra.Hosts, ","))
		if cfg.migrate {
			res, err := schema.Migrate(ctx, open, schema.Config{Keyspace: cass.Keyspace(), Replication: cfg.replication}, logger)
			if err != nil {
				return nil, fmt.Errorf("migrate: %w", err)
			}
			logger.Info("cassandra schema", "keyspace", cass.Keyspace(), "version", res.To, "applied", res.Applied)
		}
		if d.cassandra, err = open(ctx, cass.Keyspace()); err != nil {
			return nil, err
		}
		// Also when migrations just ran: another process may have migrated further meanwhile.
		if err := schema.Check(ctx, d.cassandra); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// serve runs the process until ctx is cancelled (a signal) or a part fails, then shuts down
// in order within cfg.shutdownTimeout: readiness goes to "draining" first so load balancers
// stop sending traffic, the edge drains its connections, the public listener stops, the
// connections to the services close, and the admin server stops last.
func serve(ctx context.Context, cfg runConfig, logger *slog.Logger) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector(),
	)
	adm := admin.New(cfg.admin, reg, logger)
	ln, err := adm.Listen()
	if err != nil {
		return err
	}
	logger.Info("parleyd starting", "version", version(), "roles", cfg.roles.String(), "admin", ln.Addr().String())

	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()
	g, gctx := errgroup.WithContext(runCtx)
	g.Go(func() error { return adm.Serve(ln) })
	// abort stops what runs so far when start-up fails.
	abort := func(d *deps, err error) error {
		cancelRun()
		if d != nil {
			d.close()
		}
		_ = adm.Shutdown(context.Background())
		_ = g.Wait()
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted during start-up: %w", err)
		}
		return err
	}

	startCtx, cancelStart := context.WithTimeout(gctx, cfg.startupTimeout)
	d, err := openDeps(startCtx, cfg, reg, logger)
	cancelStart()
	if err != nil {
		return abort(nil, err)
	}
	var (
		store *history.Store
		inb   *inbox.Inbox
	)
	if d.cassandra != nil {
		// The history store and the inbox each have their own breaker (their own metric), on
		// the same settings.
		hb, err := breaker.New("cassandra", cfg.breaker, history.IsCassandraFailure, reg)
		if err != nil {
			return abort(d, err)
		}
		if store, err = history.New(d.cassandra, history.Config{Breaker: hb}); err != nil {
			return abort(d, err)
		}
		ib, err := breaker.New("cassandra_inbox", cfg.breaker, history.IsCassandraFailure, reg)
		if err != nil {
			return abort(d, err)
		}
		icfg := inbox.Config{Breaker: ib}
		if cfg.roles[roleEdge] || cfg.roles[roleAPI] {
			icfg.Cursors = cfg.cursors()
		}
		inb = inbox.New(d.cassandra, store, icfg)
	}
	{ // every role publishes to or consumes the pipeline's streams
		ectx, cancel := context.WithTimeout(gctx, cfg.startupTimeout)
		err := delivery.EnsureStreams(ectx, d.nats.JetStream, cfg.delivery)
		cancel()
		if err != nil {
			return abort(d, err)
		}
	}
	// Revocations: every process serves the admin routes; edges watch the bucket.
	var revs *revocation.Store
	{
		rctx, cancel := context.WithTimeout(gctx, cfg.startupTimeout)
		revs, err = revocation.Open(rctx, d.nats.JetStream, d.nats.Conn, cfg.revocation, reg, logger.With("component", "revocation"))
		cancel()
		if err != nil {
			return abort(d, err)
		}
		adm.HandleAPI("POST /admin/v1/revocations", http.HandlerFunc(revs.ServeRevoke))
		adm.HandleAPI("GET /admin/v1/revocations", http.HandlerFunc(revs.ServeList))
	}
	// workerDone is closed when the delivery worker has stopped (at once without the role).
	workerDone := make(chan struct{})
	if cfg.roles[roleDelivery] {
		worker, err := delivery.NewWorker(cfg.delivery, d.nats.JetStream, d.nats.Conn, store, inb, reg, logger.With("component", "delivery"))
		if err != nil {
			return abort(d, err)
		}
		g.Go(func() error {
			defer close(workerDone)
			return worker.Run(gctx)
		})
		g.Go(func() error { return worker.RunReconciler(gctx, cfg.reconciler) })
	} else {
		close(workerDone)
	}

	// Presence (Redis): the edge registers sessions and serves subscriptions; the API reads.
	var pres *presence.Presence
	if cfg.roles[roleEdge] || cfg.roles[roleAPI] {
		breaker, err := breaker.New("redis", cfg.breaker, presence.IsRedisFailure, reg)
		if err != nil {
			return abort(d, err)
		}
		if pres, err = presence.New(cfg.presence, d.redis, d.nats.Conn, breaker, reg, logger.With("component", "presence")); err != nil {
			return abort(d, err)
		}
	}
	var policy inbox.WatchPolicy
	if inb != nil {
		policy = inb.WatchPolicy(cfg.presencePolicy == "anyone")
	}

	// The public listener carries the edge's WebSocket endpoint and the REST API.
	var (
		public *http.Server
		edgeSv *edge.Server
	)
	if cfg.roles[roleEdge] || cfg.roles[roleAPI] {
		if cfg.jwksURL.URL != "" {
			jc := cfg.jwksURL
			jc.Logger = logger.With("component", "auth")
			// The first fetch is bounded by jc.Timeout; the refreshes run until the process stops.
			if cfg.auth.RemoteKeys, err = auth.NewRemoteJWKS(runCtx, jc); err != nil {
				return abort(d, err)
			}
		}
		authority, err := auth.New(cfg.auth, time.Now)
		if err != nil {
			return abort(d, cli.Usage(err))
		}
		in, err := ingest.New(d.nats.JetStream, cfg.delivery.Ingest)
		if err != nil {
			return abort(d, err)
		}
		mux := http.NewServeMux()
		if cfg.roles[roleEdge] {
			edgeSv, err = edge.New(cfg.edge, authority, d.nats.Conn, reg, logger.With("component", "edge"))
			if err != nil {
				return abort(d, err)
			}
			edgeSv.EnableSend(store, in)
			edgeSv.EnableSync(inb)
			edgeSv.EnableRead(inb, store)
			edgeSv.EnableAck(inb, store)
			edgeSv.EnablePresence(pres, policy)
			edgeSv.EnableTyping(store)
			edgeSv.EnableRevocations(revs)
			if cfg.rebalance.on {
				rctx, cancel := context.WithTimeout(gctx, cfg.startupTimeout)
				err := edgeSv.EnableRebalance(rctx, d.nats.JetStream, cfg.rebalance.bucket, cfg.rebalance.replicas)
				cancel()
				if err != nil {
					return abort(d, err)
				}
			}
			mux.Handle(protocol.Path, edgeSv)
			g.Go(func() error { return edgeSv.Run(gctx) })
			g.Go(func() error { return pres.Run(gctx) })
		}
		if cfg.roles[roleAPI] {
			openapi, err := yaml.YAMLToJSON(docs.OpenAPIYAML)
			if err != nil {
				return abort(d, fmt.Errorf("embedded openapi.yaml: %w", err))
			}
			api, err := httpapi.New(httpapi.Config{MaxBodyBytes: cfg.edge.MaxBodyBytes, Cursors: cfg.cursors()}, store, inb, authority, in,
				reg, logger.With("component", "api"))
			if err != nil {
				return abort(d, err)
			}
			api.EnableReceipts(d.nats.Conn)
			api.EnablePresence(pres, policy)
			api.EnableRevocations(revs)
			api.Register(mux)
			mux.HandleFunc("GET /v1/openapi.json", func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write(openapi)
			})
		}
		if cfg.dev.on {
			dev, err := httpapi.NewDev(httpapi.DevConfig{Tokens: authority, TTL: cfg.dev.tokenTTL, DemoDir: cfg.dev.demoDir},
				logger.With("component", "dev"))
			if err != nil {
				return abort(d, err)
			}
			dev.Register(mux)
		}
		// Both roles check tokens against this process's copy of the revocations; the edge also
		// closes the connections a new revocation names. No handshake and no REST request is
		// served before the whole list is known.
		sv := edgeSv
		g.Go(func() error {
			return revs.Run(gctx, func(r auth.Revocation) {
				if sv != nil {
					sv.Revoke(r)
				}
			})
		})
		lctx, cancel := context.WithTimeout(gctx, cfg.startupTimeout)
		err = revs.Loaded(lctx)
		cancel()
		if err != nil {
			return abort(d, err)
		}
		public = &http.Server{
			// CORS for the allowed origins, and JSON errors for what no route takes.
			Handler:           httpapi.Public(mux, httpapi.CORS{AllowedOrigins: cfg.edge.AllowedOrigins}),
			MaxHeaderBytes:    edge.MaxHeaderBytes,
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       30 * time.Second, // hijacked WebSockets are not affected
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
			ConnContext:       edge.ConnContext,
		}
		pln, err := net.Listen("tcp", cfg.listenAddr)
		if err != nil {
			return abort(d, fmt.Errorf("public listener: %w", err))
		}
		if cfg.dev.on {
			if err := loopbackListener(pln.Addr()); err != nil {
				_ = pln.Close()
				return abort(d, cli.Usage(err))
			}
			logDevMode(logger, cfg, pln.Addr().String())
		}
		logger.Info("public listener", "addr", pln.Addr().String(), "websocket", cfg.roles[roleEdge], "api", cfg.roles[roleAPI],
			"allowed_origins", origin.Describe(cfg.edge.AllowedOrigins), "trusted_proxies", len(cfg.trustedProxies))
		g.Go(func() error {
			ln := edge.Listener(edge.ProxyListener(pln, edge.ProxyConfig{Trusted: cfg.trustedProxies,
				HeaderTimeout: public.ReadHeaderTimeout, Logger: logger.With("component", "edge"),
				LogPerSecond: cfg.edge.SecurityLogPerSecond}))
			if err := public.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
	// Ready only now that every listener and component runs: a load balancer must not send
	// traffic before the public listener accepts it.
	adm.AddCheck(d.checks()...)
	logger.Info("parleyd running", "roles", cfg.roles.String())

	<-gctx.Done()
	logger.Info("parleyd shutting down", "cause", context.Cause(gctx))
	adm.SetDraining()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
	defer cancel()
	if edgeSv != nil {
		// Hijacked WebSockets are not tracked by http.Server: the edge drains its own registry
		// (reconnect hints spread over the drain window, then 1001).
		if err := edgeSv.Shutdown(shutdownCtx); err != nil {
			logger.Warn("edge drain incomplete", "err", err)
		}
	}
	if public != nil {
		if err := public.Shutdown(shutdownCtx); err != nil {
			logger.Warn("public listener shutdown", "err", err)
		}
	}
	// The worker stops at its next message boundary; a message it was handling is redelivered.
	select {
	case <-workerDone:
	case <-shutdownCtx.Done():
		logger.Warn("delivery worker did not stop before the shutdown deadline")
	}
	d.close()
	if err := adm.Shutdown(shutdownCtx); err != nil {
		logger.Warn("admin shutdown", "err", err)
	}
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	logger.Info("parleyd stopped")
	return nil
}

// logDevMode is development mode's banner: one loud line that says what the mode exposes.
func logDevMode(logger *slog.Logger, cfg runConfig, addr string) {
	demo := "off: no --dev-demo-dir"
	if cfg.dev.demoDir != "" {
		demo = "http://" + addr + httpapi.DemoPath + " (files of " + cfg.dev.demoDir + ")"
	}
	logger.Warn("DEVELOPMENT MODE (--dev): never in production; it mints a token for any user to any client on this machine",
		"demo", demo,
		"token_endpoint", "POST http://"+addr+httpapi.DevTokenPath+" (loopback clients only)",
		"token_ttl", cfg.dev.tokenTTL.String(),
		"origins_added", strings.Join(cfg.dev.origins, ","))
}
