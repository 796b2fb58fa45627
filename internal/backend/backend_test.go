package backend_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/parleyhq/parley/internal/backend"
	"github.com/parleyhq/parley/internal/teststack"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		err  error
	}{
		{"redis defaults", backend.RedisConfig{}.Validate()},
		{"nats defaults", backend.NATSConfig{}.Validate()},
		{"cassandra defaults", backend.CassandraConfig{}.Validate()},
	}
	for _, tt := range tests {
		if tt.err != nil {
			t.Errorf("%s: Validate() = %v; want nil", tt.name, tt.err)
		}
	}
	bad := []struct {
		name string
		err  error
		want string
	}{
		{"redis addr", backend.RedisConfig{Addr: "nohostport"}.Validate(), "redis address"},
		{"redis db", backend.RedisConfig{DB: 16}.Validate(), "redis db"},
		{"redis timeout", backend.RedisConfig{ReadTimeout: -time.Second}.Validate(), "timeouts"},
		{"nats url", backend.NATSConfig{URL: "::"}.Validate(), "nats url"},
		{"nats timeout", backend.NATSConfig{RequestTimeout: -1}.Validate(), "timeouts"},
		{"cassandra host", backend.CassandraConfig{Hosts: []string{"a b"}}.Validate(), "cassandra host"},
		{"cassandra keyspace", backend.CassandraConfig{Keyspace: "drop table;"}.Validate(), "keyspace"},
		{"cassandra consistency", backend.CassandraConfig{Consistency: "MOST"}.Validate(), "consistency"},
		{"cassandra conns", backend.CassandraConfig{NumConns: 100}.Validate(), "connections"},
	}
	for _, tt := range bad {
		if tt.err == nil || !strings.Contains(tt.err.Error(), tt.want) {
			t.Errorf("%s: Validate() = %v; want an error mentioning %q", tt.name, tt.err, tt.want)
		}
	}
}

func TestValidKeyspaceName(t *testing.T) {
	for s, want := range map[string]bool{
		"parley": true, "p_1": true, "P2": true, "": false, "1abc": false, "_a": false,
		"a-b": false, "a;b": false, strings.Repeat("k", 48): true, strings.Repeat("k", 49): false,
	} {
		if got := backend.ValidKeyspaceName(s); got != want {
			t.Errorf("ValidKeyspaceName(%q) = %v; want %v", s, got, want)
		}
	}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestRedisAgainstStack(t *testing.T) {
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := backend.OpenRedis(ctx, teststack.RedisConfig(), reg, quiet())
	if err != nil {
		t.Fatalf("OpenRedis: %v", err)
	}
	defer c.Close()
	key := teststack.ID(t)
	if err := c.Set(ctx, key, "v", time.Minute).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	if got, err := c.Get(ctx, key).Result(); err != nil || got != "v" {
		t.Fatalf("GET = %q, %v; want v", got, err)
	}
	if n := testutil.CollectAndCount(reg, "parley_redis_command_duration_seconds"); n == 0 {
		t.Error("no parley_redis_command_duration_seconds series after commands")
	}
	if n := testutil.CollectAndCount(reg, "parley_redis_pool_connections"); n != 1 {
		t.Errorf("parley_redis_pool_connections series = %d; want 1", n)
	}
}

func TestNATSAgainstStack(t *testing.T) {
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n, err := backend.OpenNATS(ctx, teststack.NATSConfig(), reg, quiet())
	if err != nil {
		t.Fatalf("OpenNATS: %v", err)
	}
	defer n.Close()
	if err := n.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if got := testutil.ToFloat64(collectorFor(t, reg, "parley_nats_connected")); got != 1 {
		t.Errorf("parley_nats_connected = %v; want 1", got)
	}
}

func TestCassandraAgainstStack(t *testing.T) {
	reg := prometheus.NewRegistry()
	c, err := backend.NewCassandra(teststack.CassandraConfig(), reg, quiet())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := c.Open(ctx, "")
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	if err := backend.PingCassandra(ctx, s); err != nil {
		t.Fatalf("PingCassandra: %v", err)
	}
	if n := testutil.CollectAndCount(reg, "parley_cassandra_query_duration_seconds"); n == 0 {
		t.Error("no parley_cassandra_query_duration_seconds series after a query")
	}
}

// A dependency that is not there makes Open give up when its context ends, naming it.
func TestOpenGivesUpNamingTheDependency(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
	defer cancel()
	// Port 1 on loopback: nothing listens there, connections are refused at once.
	_, err := backend.OpenRedis(ctx, backend.RedisConfig{Addr: "127.0.0.1:1"}, prometheus.NewRegistry(), quiet())
	if err == nil || !strings.Contains(err.Error(), "redis not reachable") {
		t.Errorf("OpenRedis(closed port) = %v; want 'redis not reachable'", err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 600*time.Millisecond)
	defer cancel2()
	_, err = backend.OpenNATS(ctx2, backend.NATSConfig{URL: "nats://127.0.0.1:1"}, prometheus.NewRegistry(), quiet())
	if err == nil || !strings.Contains(err.Error(), "nats not reachable") {
		t.Errorf("OpenNATS(closed port) = %v; want 'nats not reachable'", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) && !strings.Contains(err.Error(), "deadline") {
		t.Errorf("OpenNATS error %v does not say why it gave up", err)
	}
}

// collectorFor returns a collector that yields only the named metric from reg.
func collectorFor(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: "copy"})
			g.Set(mf.GetMetric()[0].GetGauge().GetValue())
			return g
		}
	}
	t.Fatalf("metric %s not found", name)
	return nil
}

func TestRedisSentinelConfigValidate(t *testing.T) {
	ok := backend.RedisConfig{Sentinels: []string{"10.0.0.1:26379", "sentinel-b:26379"}, MasterName: "parley"}
	if err := ok.Validate(); err != nil {
		t.Errorf("sentinels with a master name: Validate() = %v; want nil", err)
	}
	for _, tt := range []struct {
		name string
		cfg  backend.RedisConfig
		want string
	}{
		{"no master name", backend.RedisConfig{Sentinels: []string{"127.0.0.1:26379"}}, "without a master name"},
		{"addr and sentinels", backend.RedisConfig{Addr: "127.0.0.1:6379", Sentinels: []string{"127.0.0.1:26379"}, MasterName: "m"}, "both set"},
		{"sentinel without port", backend.RedisConfig{Sentinels: []string{"127.0.0.1"}, MasterName: "m"}, `sentinel address "127.0.0.1": want host:port`},
		{"sentinel port 0", backend.RedisConfig{Sentinels: []string{"h:0"}, MasterName: "m"}, "out of range"},
		{"empty sentinel", backend.RedisConfig{Sentinels: []string{"h:1", ""}, MasterName: "m"}, `sentinel address ""`},
		{"duplicate sentinel", backend.RedisConfig{Sentinels: []string{"h:1", "h:1"}, MasterName: "m"}, "listed twice"},
		{"master name alone", backend.RedisConfig{MasterName: "m"}, "without redis sentinels"},
	} {
		if err := tt.cfg.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Validate() = %v; want an error mentioning %q", tt.name, err, tt.want)
		}
	}
}

// Through Sentinels, OpenRedis reaches the primary; when the primary is killed, the Sentinels
// promote the replica and the same client's writes are accepted again, on the new primary.
func TestRedisSentinelFailover(t *testing.T) {
	g := teststack.StartSentinelGroup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c := g.Redis(t) // backend.OpenRedis with g.Config(): Sentinels and MasterName
	if err := c.Set(ctx, "k", "before", 0).Err(); err != nil {
		t.Fatalf("SET before the failover: %v", err)
	}
	if role := serverRole(t, c); role != "master" {
		t.Fatalf("client connected to a %q; want the primary", role)
	}
	// The write reached the server at g.Primary, not the replica.
	if got := directGet(t, g.Primary, "k"); got != "before" {
		t.Fatalf("GET k on %s = %q; want the client's write", g.Primary, got)
	}

	g.Kill(g.Primary)
	killed := time.Now()
	var failures int
	var lastErr error
	const bound = 30 * time.Second // failure detection (1 s) + election + promotion, generously
	for {
		err := c.Set(ctx, "k", "after", 0).Err()
		if err == nil {
			break
		}
		failures, lastErr = failures+1, err
		if time.Since(killed) > bound {
			t.Fatalf("writes still failing %v after the primary was killed (%d failures): %v", bound, failures, lastErr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("writes accepted again %v after SIGKILL of the primary (%d failed writes in between, the last: %v)",
		time.Since(killed).Round(10*time.Millisecond), failures, lastErr)
	if failures == 0 {
		t.Error("no write failed after the primary was killed: the test did not see a failover")
	}
	if role := serverRole(t, c); role != "master" {
		t.Errorf("after the failover the client talks to a %q; want the new primary", role)
	}
	if got := directGet(t, g.Replica, "k"); got != "after" {
		t.Errorf("GET k on the promoted replica %s = %q; want the write made after the failover", g.Replica, got)
	}
}

// A failover the Sentinels are asked for (the old primary alive and demoted, as after a
// network partition heals) moves the client too: writes are accepted by the new primary,
// none is left failing with READONLY on a connection to the demoted one.
func TestRedisSentinelManualFailover(t *testing.T) {
	g := teststack.StartSentinelGroup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c, err := backend.OpenRedis(ctx, g.Config(), prometheus.NewRegistry(), quiet())
	if err != nil {
		t.Fatalf("OpenRedis(sentinels): %v", err)
	}
	defer c.Close()
	// Several pooled connections to the primary, all of which must move.
	for i := 0; i < 20; i++ {
		if err := c.Set(ctx, fmt.Sprintf("k%d", i), "before", 0).Err(); err != nil {
			t.Fatalf("SET: %v", err)
		}
	}
	s := redis.NewSentinelClient(&redis.Options{Addr: g.Sentinels[0]})
	defer s.Close()
	if err := s.Failover(ctx, teststack.SentinelMasterName).Err(); err != nil {
		t.Fatalf("SENTINEL FAILOVER: %v", err)
	}
	start := time.Now()
	if !teststack.Eventually(t, 30*time.Second, func() bool {
		p, ok := g.CurrentPrimary(ctx)
		return ok && p == g.Replica && directRole(g.Primary) == "slave"
	}) {
		t.Fatal("the sentinels did not promote the replica and demote the primary within 30s")
	}
	t.Logf("failover done %v after SENTINEL FAILOVER", time.Since(start).Round(10*time.Millisecond))
	var errs []string
	for i := 0; i < 200; i++ {
		if err := c.Set(ctx, fmt.Sprintf("k%d", i%20), "after", 0).Err(); err != nil {
			errs = append(errs, err.Error())
		}
	}
	// A write or two may fail while connections move; then none does.
	if len(errs) > 2 {
		t.Errorf("%d of 200 writes after the failover failed, e.g. %q", len(errs), errs[0])
	}
	for i := 0; i < 20; i++ {
		if err := c.Set(ctx, fmt.Sprintf("k%d", i), "final", 0).Err(); err != nil {
			t.Fatalf("write after the failover settled: %v", err)
		}
	}
	if got := directGet(t, g.Replica, "k0"); got != "final" {
		t.Errorf("GET k0 on the new primary = %q; want final", got)
	}
}

func serverRole(t *testing.T, c *redis.Client) string {
	t.Helper()
	info, err := c.Info(context.Background(), "replication").Result()
	if err != nil {
		t.Fatalf("INFO: %v", err)
	}
	return infoField(info, "role")
}

func directRole(addr string) string {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	info, err := c.Info(context.Background(), "replication").Result()
	if err != nil {
		return ""
	}
	return infoField(info, "role")
}

func directGet(t *testing.T, addr, key string) string {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	v, err := c.Get(context.Background(), key).Result()
	if err != nil {
		t.Fatalf("GET %s on %s: %v", key, addr, err)
	}
	return v
}

func infoField(info, name string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return ""
}

// A master name the Sentinels do not monitor is reported as that, not as unreachable
// Sentinels.
func TestRedisSentinelUnknownMasterName(t *testing.T) {
	g := teststack.StartSentinelGroup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	cfg := g.Config()
	cfg.MasterName = "nope"
	_, err := backend.OpenRedis(ctx, cfg, prometheus.NewRegistry(), quiet())
	if err == nil || !strings.Contains(err.Error(), `sentinels do not know master "nope"`) || strings.Contains(err.Error(), "\n") {
		t.Errorf("OpenRedis(unknown master name) = %q; want one line saying the sentinels do not know the name", err)
	}
}
