// Package teststack gives integration tests the real Redis, NATS with JetStream and Cassandra
// that `make test` (deploy/local/stack.sh) starts. It finds them through the same PARLEY_*
// variables and defaults as parleyd, gives each test its own names, and fails the test, never
// skips it, when a service is missing: a green run must mean the integration tests ran.
package teststack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	gocql "github.com/apache/cassandra-gocql-driver/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/parleyhq/parley/internal/backend"
	"github.com/parleyhq/parley/internal/schema"
)

// Keyspace is the keyspace integration tests share: PARLEY_TEST_KEYSPACE, default
// parley_test. Tests isolate their data with fresh ids (see ID), not with their own
// keyspaces: creating tables is slow on Cassandra. A run that migrates the schema further
// (a branch with a new migration) sets its own keyspace, so parleyd processes of other runs
// sharing the stack, which refuse a schema newer than theirs, keep working on parley_test.
var Keyspace = testKeyspace()

// DefaultKeyspace is the test keyspace when PARLEY_TEST_KEYSPACE is unset.
const DefaultKeyspace = "parley_test"

func testKeyspace() string {
	ks := os.Getenv("PARLEY_TEST_KEYSPACE")
	if ks == "" {
		return DefaultKeyspace
	}
	if !backend.ValidKeyspaceName(ks) {
		// Every test of the package would fail on it: say why once, at start.
		panic(fmt.Sprintf("PARLEY_TEST_KEYSPACE=%q: want a letter then letters, digits or _, at most 48", ks))
	}
	return ks
}

// connectTimeout bounds how long a test waits for a service that is not there.
const connectTimeout = 20 * time.Second

const hint = "; start the local stack with `make up` (make test does it for you)"

// RedisConfig is the Redis configuration tests use: PARLEY_REDIS_ADDR or the default.
func RedisConfig() backend.RedisConfig {
	return backend.RedisConfig{Addr: os.Getenv("PARLEY_REDIS_ADDR")}
}

// NATSConfig is the NATS configuration tests use: PARLEY_NATS_URL or the default.
func NATSConfig() backend.NATSConfig {
	return backend.NATSConfig{URL: os.Getenv("PARLEY_NATS_URL"), Name: "parley-test"}
}

// CassandraConfig is the Cassandra configuration tests use: PARLEY_CASSANDRA_HOSTS or the
// default, the test keyspace, consistency ONE (one local node).
func CassandraConfig() backend.CassandraConfig {
	var hosts []string
	if h := os.Getenv("PARLEY_CASSANDRA_HOSTS"); h != "" {
		hosts = strings.Split(h, ",")
	}
	return backend.CassandraConfig{Hosts: hosts, Keyspace: Keyspace, Consistency: "ONE"}
}

// Logger returns a logger that writes to the test's log.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), connectTimeout)
	t.Cleanup(cancel)
	return c
}

// Redis returns a client of the stack's Redis, closed when the test ends.
func Redis(t testing.TB) *redis.Client {
	t.Helper()
	c, err := backend.OpenRedis(ctx(t), RedisConfig(), prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("redis: %v%s", err, hint)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// NATS returns a connection to the stack's NATS with JetStream, closed when the test ends.
func NATS(t testing.TB) *backend.NATS {
	t.Helper()
	n, err := backend.OpenNATS(ctx(t), NATSConfig(), prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("nats: %v%s", err, hint)
	}
	t.Cleanup(n.Close)
	return n
}

var migrateOnce sync.Mutex
var migrated bool

// Cassandra returns a session bound to the migrated test keyspace, closed when the test ends.
func Cassandra(t testing.TB) *gocql.Session {
	t.Helper()
	c, err := backend.NewCassandra(CassandraConfig(), prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	migrateOnce.Lock()
	if !migrated {
		_, err := schema.Migrate(ctx(t), c.Open, schema.Config{
			Keyspace:    Keyspace,
			Replication: schema.Replication{Strategy: "SimpleStrategy", Factor: 1},
		}, Logger(t))
		if err != nil {
			migrateOnce.Unlock()
			t.Fatalf("cassandra: migrate %s: %v%s", Keyspace, err, hint)
		}
		migrated = true
	}
	migrateOnce.Unlock()
	s, err := c.Open(ctx(t), Keyspace)
	if err != nil {
		t.Fatalf("cassandra: %v%s", err, hint)
	}
	t.Cleanup(s.Close)
	return s
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9_]+`)

// ID returns a name unique to this test run and test, usable as a Redis key prefix, a NATS
// stream name, a user id or a keyspace suffix: letters, digits and underscores only.
func ID(t testing.TB) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := unsafeName.ReplaceAllString(t.Name(), "_")
	if len(name) > 24 {
		name = name[:24]
	}
	return "t_" + name + "_" + hex.EncodeToString(b[:])
}

// Eventually polls cond every 50ms until it is true or timeout passes, and reports which.
// Tests use it instead of sleeping.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool) bool {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Ready reports whether the parleyd whose admin server listens on addr answers /readyz with
// 200 (every dependency reachable).
func Ready(addr string) bool {
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// BuildParleyd builds cmd/parleyd into a temporary directory, for the TestMain of packages
// that run it as a process, and returns the binary's path and a cleanup that removes it.
func BuildParleyd() (bin string, cleanup func(), err error) {
	dir, err := os.MkdirTemp("", "parleyd-test")
	if err != nil {
		return "", nil, err
	}
	bin = filepath.Join(dir, "parleyd")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/parleyhq/parley/cmd/parleyd").CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("build parleyd: %v\n%s", err, out)
	}
	return bin, func() { os.RemoveAll(dir) }, nil
}

// RunWithParleyd is a TestMain's body for packages that run parleyd as a process: it builds
// parleyd, sets *bin to the binary, runs the tests, removes the binary and returns m.Run's
// code (2 if the build failed, after printing why).
func RunWithParleyd(m *testing.M, bin *string) int {
	b, cleanup, err := BuildParleyd()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer cleanup()
	*bin = b
	return m.Run()
}

// FreeAddr returns a loopback address with a port free at the time of the call.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// DeleteStreams deletes the streams of a test's delivery pipeline on the ingest stream name
// (the ingest stream, its sequenced log, its dead letters and its workers and leases KV
// buckets: the names delivery gives them).
func DeleteStreams(t testing.TB, ingestStream string) {
	n := NATS(t)
	for _, s := range []string{ingestStream, ingestStream + "_LOG", ingestStream + "_DEAD",
		"KV_" + ingestStream + "_WORKERS", "KV_" + ingestStream + "_LEASES"} {
		_ = n.JetStream.DeleteStream(context.Background(), s)
	}
}
