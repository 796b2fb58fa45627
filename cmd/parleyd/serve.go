package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	gocql "github.com/apache/cassandra-gocql-driver/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/parleyhq/parley/internal/admin"
	"github.com/parleyhq/parley/internal/backend"
	"github.com/parleyhq/parley/internal/schema"
)

// deps are the open connections of a process; nil when its roles do not need one.
type deps struct {
	redis     *redis.Client
	nats      *backend.NATS
	cassandra *gocql.Session
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
	if d.cassandra != nil {
		d.cassandra.Close()
	}
}

// openDeps opens what the roles need, each waiting for its service until ctx ends.
func openDeps(ctx context.Context, cfg runConfig, reg prometheus.Registerer, logger *slog.Logger) (_ *deps, err error) {
	d := &deps{}
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	if d.nats, err = backend.OpenNATS(ctx, cfg.nats, reg, logger); err != nil {
		return nil, err
	}
	if cfg.roles.needsRedis() {
		if d.redis, err = backend.OpenRedis(ctx, cfg.redis, reg, logger); err != nil {
			return nil, err
		}
	}
	if cfg.roles.needsCassandra() {
		cass, err := backend.NewCassandra(cfg.cassandra, reg, logger)
		if err != nil {
			return nil, err
		}
		if cfg.migrate {
			res, err := schema.Migrate(ctx, cass.Open, schema.Config{Keyspace: cass.Keyspace(), Replication: cfg.replication}, logger)
			if err != nil {
				return nil, fmt.Errorf("migrate: %w", err)
			}
			logger.Info("cassandra schema", "keyspace", cass.Keyspace(), "version", res.To, "applied", res.Applied)
		}
		if d.cassandra, err = cass.Open(ctx, cass.Keyspace()); err != nil {
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
// stop sending traffic, then the roles stop, then the connections close, the admin server last.
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

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return adm.Serve(ln) })

	startCtx, cancelStart := context.WithTimeout(gctx, cfg.startupTimeout)
	d, err := openDeps(startCtx, cfg, reg, logger)
	cancelStart()
	if err != nil {
		_ = adm.Shutdown(context.Background())
		_ = g.Wait()
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted during start-up: %w", err)
		}
		return err
	}
	adm.AddCheck(d.checks()...)
	// The role components (edge, delivery, api) are started here under g as they are built.
	logger.Info("parleyd running", "roles", cfg.roles.String())

	<-gctx.Done()
	logger.Info("parleyd shutting down", "cause", context.Cause(gctx))
	adm.SetDraining()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
	defer cancel()
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
