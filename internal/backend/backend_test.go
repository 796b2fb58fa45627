package backend_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

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
