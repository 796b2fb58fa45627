package backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// RedisConfig configures the Redis client. Zero values take the defaults below.
//
// There are two ways to find Redis: one server at Addr, or the primary of a Sentinel-managed
// group (Sentinels and MasterName), which the client follows through failovers. They are
// exclusive: a configuration that sets both is refused rather than one silently ignored.
type RedisConfig struct {
	// Addr is host:port of a single Redis. Default "127.0.0.1:16379" (the local stack's port)
	// when Sentinels is empty; must be empty when Sentinels is set.
	Addr string
	// Sentinels are host:port addresses of Redis Sentinels. When set, the client asks them
	// for the primary of MasterName, dials only that primary, and moves to the new primary
	// when they announce a failover (+switch-master). The Sentinels tell the client about
	// each other, so a few seeds are enough.
	Sentinels []string
	// MasterName is the name the Sentinels monitor the primary under ("sentinel monitor
	// <name> ..."). Required with Sentinels; there is no default, because a name that does
	// not match the Sentinels' configuration fails only later and less clearly.
	MasterName string
	// SentinelPassword authenticates to the Sentinels (their requirepass); empty for none.
	// Password is for the Redis servers themselves.
	SentinelPassword string
	// Password for AUTH; empty for none.
	Password string
	// DB is the logical database number. Default 0.
	DB int
	// DialTimeout bounds connecting. Default 2s.
	DialTimeout time.Duration
	// ReadTimeout and WriteTimeout bound each command's socket I/O. Default 1s each.
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	// PoolSize is the maximum number of connections. Default 10 per CPU (go-redis's default).
	PoolSize int
}

// Defaults for RedisConfig.
const (
	DefaultRedisAddr         = "127.0.0.1:16379"
	DefaultRedisDialTimeout  = 2 * time.Second
	DefaultRedisReadTimeout  = time.Second
	DefaultRedisWriteTimeout = time.Second
)

func (c RedisConfig) withDefaults() RedisConfig {
	if c.Addr == "" && len(c.Sentinels) == 0 {
		c.Addr = DefaultRedisAddr
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultRedisDialTimeout
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = DefaultRedisReadTimeout
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultRedisWriteTimeout
	}
	return c
}

// Validate reports the first invalid setting.
func (c RedisConfig) Validate() error {
	if len(c.Sentinels) > 0 {
		if c.Addr != "" {
			return fmt.Errorf("redis address %q and redis sentinels both set: set one (with sentinels the primary's address comes from them)", c.Addr)
		}
		if c.MasterName == "" {
			return errors.New("redis sentinels set without a master name: set the name the sentinels monitor the primary under")
		}
		seen := map[string]bool{}
		for _, a := range c.Sentinels {
			if err := checkHostPort(a); err != nil {
				return fmt.Errorf("redis sentinel address %q: %w", a, err)
			}
			if seen[a] {
				return fmt.Errorf("redis sentinel address %q listed twice", a)
			}
			seen[a] = true
		}
	} else if c.MasterName != "" || c.SentinelPassword != "" {
		return errors.New("redis master name or sentinel password set without redis sentinels")
	}
	c = c.withDefaults()
	if len(c.Sentinels) == 0 {
		if err := checkHostPort(c.Addr); err != nil {
			return fmt.Errorf("redis address %q: %w", c.Addr, err)
		}
	}
	if c.DB < 0 || c.DB > 15 {
		return fmt.Errorf("redis db %d out of range [0, 15]", c.DB)
	}
	if c.DialTimeout < 0 || c.ReadTimeout < 0 || c.WriteTimeout < 0 {
		return errors.New("redis timeouts must not be negative")
	}
	if c.PoolSize < 0 {
		return fmt.Errorf("redis pool size %d must not be negative", c.PoolSize)
	}
	return nil
}

func checkHostPort(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return errors.New("want host:port")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port %q out of range [1, 65535]", port)
	}
	return nil
}

// Describe names where the configuration finds Redis, for error messages: the address, or
// the master name and the sentinels.
func (c RedisConfig) Describe() string {
	c = c.withDefaults()
	if len(c.Sentinels) == 0 {
		return c.Addr
	}
	return fmt.Sprintf("master %q of sentinels %s", c.MasterName, strings.Join(c.Sentinels, ","))
}

// OpenRedis returns a Redis client and waits until the server answers PING or ctx ends. The
// client reconnects by itself after a Redis restart; commands fail fast (within the dial and
// I/O timeouts) while Redis is away.
//
// With Sentinels it is go-redis's failover client (a *redis.Client all the same): every new
// connection is dialled to the primary the Sentinels name, and when they announce a failover
// the client closes its connections to any other address. A connection that still reaches a
// demoted primary gets READONLY on writes; go-redis closes such a connection and retries the
// command once (MaxRetries below) on a fresh one, which dials the new primary. During the
// failover itself (until the Sentinels agree the primary is down and promote a replica)
// commands fail, and presence, the only user, answers "unknown" (presence/).
func OpenRedis(ctx context.Context, cfg RedisConfig, reg prometheus.Registerer, logger *slog.Logger) (*redis.Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	var client *redis.Client
	if len(cfg.Sentinels) > 0 {
		client = redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName:       cfg.MasterName,
			SentinelAddrs:    cfg.Sentinels,
			SentinelPassword: cfg.SentinelPassword,
			Password:         cfg.Password,
			DB:               cfg.DB,
			DialTimeout:      cfg.DialTimeout,
			ReadTimeout:      cfg.ReadTimeout,
			WriteTimeout:     cfg.WriteTimeout,
			PoolSize:         cfg.PoolSize,
			MaxRetries:       redisMaxRetries,
			MinRetryBackoff:  redisMinRetryBackoff,
			MaxRetryBackoff:  redisMaxRetryBackoff,
		})
	} else {
		client = redis.NewClient(&redis.Options{
			Addr:            cfg.Addr,
			Password:        cfg.Password,
			DB:              cfg.DB,
			DialTimeout:     cfg.DialTimeout,
			ReadTimeout:     cfg.ReadTimeout,
			WriteTimeout:    cfg.WriteTimeout,
			PoolSize:        cfg.PoolSize,
			MaxRetries:      redisMaxRetries,
			MinRetryBackoff: redisMinRetryBackoff,
			MaxRetryBackoff: redisMaxRetryBackoff,
		})
	}
	m := newRedisMetrics(client)
	if err := reg.Register(m); err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("register redis metrics: %w", err)
	}
	client.AddHook(m)
	ping := func(ctx context.Context) error {
		err := PingRedis(ctx, client)
		if len(cfg.Sentinels) > 0 && errors.Is(err, redis.Nil) {
			// Every Sentinel answered GET-MASTER-ADDR-BY-NAME with nil: go-redis calls that
			// "all sentinels unreachable", which sends the operator looking in the wrong place.
			return fmt.Errorf("the sentinels do not know master %q (the name of their 'sentinel monitor' line)", cfg.MasterName)
		}
		return err
	}
	if err := waitUntil(ctx, logger, "redis", ping); err != nil {
		_ = client.Close()
		return nil, err
	}
	return client, nil
}

// Presence and rate limits are soft state: one retry is enough, the caller degrades. The one
// retry also carries a write across a READONLY reply from a demoted primary (see OpenRedis).
const (
	redisMaxRetries      = 1
	redisMinRetryBackoff = 10 * time.Millisecond
	redisMaxRetryBackoff = 100 * time.Millisecond
)

// PingRedis reports whether Redis answers.
func PingRedis(ctx context.Context, c *redis.Client) error {
	return c.Ping(ctx).Err()
}

// redisMetrics exports the connection pool's counters and times every command. It is both a
// prometheus.Collector (pool statistics, read at scrape time) and a redis.Hook.
type redisMetrics struct {
	client   *redis.Client
	duration *prometheus.HistogramVec

	hits, misses, timeouts, total, idle, stale *prometheus.Desc
}

func newRedisMetrics(c *redis.Client) *redisMetrics {
	return &redisMetrics{
		client: c,
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "parley_redis_command_duration_seconds",
			Help:    "Time to run a Redis command or pipeline, by kind (command, pipeline) and result (ok, error).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}, []string{"kind", "result"}),
		hits:     prometheus.NewDesc("parley_redis_pool_hits_total", "Connections taken from the pool.", nil, nil),
		misses:   prometheus.NewDesc("parley_redis_pool_misses_total", "Times the pool had no free connection and dialed.", nil, nil),
		timeouts: prometheus.NewDesc("parley_redis_pool_timeouts_total", "Times waiting for a pool connection timed out.", nil, nil),
		total:    prometheus.NewDesc("parley_redis_pool_connections", "Open connections in the pool.", nil, nil),
		idle:     prometheus.NewDesc("parley_redis_pool_idle_connections", "Idle connections in the pool.", nil, nil),
		stale:    prometheus.NewDesc("parley_redis_pool_stale_connections_total", "Connections closed as stale.", nil, nil),
	}
}

func (m *redisMetrics) Describe(ch chan<- *prometheus.Desc) {
	m.duration.Describe(ch)
	for _, d := range []*prometheus.Desc{m.hits, m.misses, m.timeouts, m.total, m.idle, m.stale} {
		ch <- d
	}
}

func (m *redisMetrics) Collect(ch chan<- prometheus.Metric) {
	m.duration.Collect(ch)
	s := m.client.PoolStats()
	ch <- prometheus.MustNewConstMetric(m.hits, prometheus.CounterValue, float64(s.Hits))
	ch <- prometheus.MustNewConstMetric(m.misses, prometheus.CounterValue, float64(s.Misses))
	ch <- prometheus.MustNewConstMetric(m.timeouts, prometheus.CounterValue, float64(s.Timeouts))
	ch <- prometheus.MustNewConstMetric(m.total, prometheus.GaugeValue, float64(s.TotalConns))
	ch <- prometheus.MustNewConstMetric(m.idle, prometheus.GaugeValue, float64(s.IdleConns))
	ch <- prometheus.MustNewConstMetric(m.stale, prometheus.CounterValue, float64(s.StaleConns))
}

func (m *redisMetrics) DialHook(next redis.DialHook) redis.DialHook { return next }

func (m *redisMetrics) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmd)
		m.duration.WithLabelValues("command", redisResult(err)).Observe(time.Since(start).Seconds())
		return err
	}
}

func (m *redisMetrics) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmds)
		m.duration.WithLabelValues("pipeline", redisResult(err)).Observe(time.Since(start).Seconds())
		return err
	}
}

// redisResult treats redis.Nil (key not found) as success: it is an answer, not a failure.
func redisResult(err error) string {
	if err == nil || errors.Is(err, redis.Nil) {
		return "ok"
	}
	return "error"
}
