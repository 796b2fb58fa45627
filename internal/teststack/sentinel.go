package teststack

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/parleyhq/parley/internal/backend"
)

// SentinelMasterName is the name a SentinelGroup's Sentinels monitor its primary under.
const SentinelMasterName = "parley"

// Sentinel timings: a primary silent for a second is down, and a failover that stalls is
// retried after a few seconds, so a test sees a failover within seconds instead of the
// production defaults' 30 s and 3 min.
const (
	sentinelDownAfter       = time.Second
	sentinelFailoverTimeout = 3 * time.Second
)

// SentinelGroup is a Redis primary, one replica and three Sentinels (quorum 2) of the
// installed redis-server, started for one test on loopback ports with their files in the
// test's temporary directory, and killed by PID when the test ends. It is separate from the
// shared stack's Redis, so a test may kill its primary without disturbing anyone.
type SentinelGroup struct {
	// Primary and Replica are the addresses of the two servers as started; after a failover
	// the roles are swapped (ask CurrentPrimary).
	Primary, Replica string
	// Sentinels are the Sentinels' addresses.
	Sentinels []string

	t     testing.TB
	dir   string
	mu    sync.Mutex
	procs map[string]*exec.Cmd // by address, until killed
}

// StartSentinelGroup starts a SentinelGroup and waits until the replica is in sync and every
// Sentinel knows the replica and the two other Sentinels (so a failover can happen); it
// fails the test if that takes longer than connectTimeout.
func StartSentinelGroup(t testing.TB) *SentinelGroup {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server not installed (Debian package redis-server): %v", err)
	}
	g := &SentinelGroup{t: t, dir: t.TempDir(), procs: map[string]*exec.Cmd{}}
	t.Cleanup(g.stopAll)
	ports := freePorts(t, 5)
	g.Primary, g.Replica = addr(ports[0]), addr(ports[1])
	for _, p := range ports[2:] {
		g.Sentinels = append(g.Sentinels, addr(p))
	}
	server := func(port int) []string {
		return []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
			"--repl-diskless-sync-delay", "0", "--dir", g.dir, "--dbfilename", "dump-" + strconv.Itoa(port) + ".rdb"}
	}
	g.start(g.Primary, server(ports[0])...)
	g.start(g.Replica, append(server(ports[1]), "--replicaof", "127.0.0.1", strconv.Itoa(ports[0]))...)
	// Sentinels learn of replicas from the primary's INFO, which they read every 10 s: start
	// them once the replica is attached, so that the first INFO lists it.
	if !Eventually(t, connectTimeout, g.replicaInSync) {
		t.Fatalf("replica %s not in sync with %s within %v", g.Replica, g.Primary, connectTimeout)
	}
	for i, s := range g.Sentinels {
		conf := filepath.Join(g.dir, fmt.Sprintf("sentinel-%d.conf", i))
		body := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\n"+
			"sentinel monitor %s 127.0.0.1 %d 2\n"+
			"sentinel down-after-milliseconds %[3]s %[5]d\n"+
			"sentinel failover-timeout %[3]s %[6]d\n"+
			"sentinel parallel-syncs %[3]s 1\n",
			ports[2+i], g.dir, SentinelMasterName, ports[0], sentinelDownAfter.Milliseconds(), sentinelFailoverTimeout.Milliseconds())
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		g.start(s, conf, "--sentinel")
	}
	if !Eventually(t, connectTimeout, g.ready) {
		t.Fatalf("sentinel group not ready within %v (replica in sync, each sentinel knowing 1 replica and 2 sentinels)", connectTimeout)
	}
	return g
}

// Config is the Redis configuration that reaches the group's primary through its Sentinels.
func (g *SentinelGroup) Config() backend.RedisConfig {
	return backend.RedisConfig{Sentinels: g.Sentinels, MasterName: SentinelMasterName}
}

// Redis returns a client of the group's primary opened by backend.OpenRedis through the
// Sentinels, with half-second timeouts (a dead primary shows quickly), closed when the test
// ends.
func (g *SentinelGroup) Redis(t testing.TB) *redis.Client {
	t.Helper()
	cfg := g.Config()
	cfg.DialTimeout, cfg.ReadTimeout, cfg.WriteTimeout = 500*time.Millisecond, 500*time.Millisecond, 500*time.Millisecond
	c, err := backend.OpenRedis(ctx(t), cfg, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("redis through sentinels %v: %v", g.Sentinels, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Kill sends SIGKILL to the server or Sentinel at addr and waits for it to exit.
func (g *SentinelGroup) Kill(addr string) {
	g.t.Helper()
	g.mu.Lock()
	cmd := g.procs[addr]
	delete(g.procs, addr)
	g.mu.Unlock()
	if cmd == nil {
		g.t.Fatalf("no process of the sentinel group at %s", addr)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}

// CurrentPrimary is the primary's address as the Sentinels agree on it: every Sentinel still
// running names the same one. ok is false while they disagree or do not answer.
func (g *SentinelGroup) CurrentPrimary(ctx context.Context) (primary string, ok bool) {
	for _, s := range g.Sentinels {
		if g.running(s) {
			a, err := g.sentinelMaster(ctx, s)
			if err != nil || (primary != "" && a != primary) {
				return "", false
			}
			primary = a
		}
	}
	return primary, primary != ""
}

func (g *SentinelGroup) sentinelMaster(ctx context.Context, sentinel string) (string, error) {
	c := redis.NewSentinelClient(&redis.Options{Addr: sentinel, DialTimeout: time.Second, MaxRetries: -1})
	defer c.Close()
	hp, err := c.GetMasterAddrByName(ctx, SentinelMasterName).Result()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(hp[0], hp[1]), nil
}

func (g *SentinelGroup) running(addr string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.procs[addr] != nil
}

func (g *SentinelGroup) replicaInSync() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	r := redis.NewClient(&redis.Options{Addr: g.Replica, MaxRetries: -1})
	defer r.Close()
	info, err := r.Info(ctx, "replication").Result()
	return err == nil && strings.Contains(info, "master_link_status:up")
}

func (g *SentinelGroup) ready() bool {
	if !g.replicaInSync() {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, s := range g.Sentinels {
		c := redis.NewSentinelClient(&redis.Options{Addr: s, MaxRetries: -1})
		replicas, err1 := c.Replicas(ctx, SentinelMasterName).Result()
		others, err2 := c.Sentinels(ctx, SentinelMasterName).Result()
		_ = c.Close()
		if err1 != nil || err2 != nil || len(replicas) != 1 || len(others) != 2 {
			return false
		}
		if f := replicas[0]["flags"]; f != "slave" {
			return false // s_down or disconnected: not promotable yet
		}
	}
	return true
}

func (g *SentinelGroup) start(addr string, args ...string) {
	g.t.Helper()
	name := strings.ReplaceAll(addr, ":", "_")
	logf, err := os.Create(filepath.Join(g.dir, name+".log"))
	if err != nil {
		g.t.Fatal(err)
	}
	defer logf.Close() // the child has its own copy
	cmd := exec.Command("redis-server", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		g.t.Fatalf("start redis-server %s: %v", strings.Join(args, " "), err)
	}
	g.mu.Lock()
	g.procs[addr] = cmd
	g.mu.Unlock()
}

// stopAll kills what is still running, by PID, and on failure shows the logs' ends.
func (g *SentinelGroup) stopAll() {
	g.mu.Lock()
	procs := g.procs
	g.procs = map[string]*exec.Cmd{}
	g.mu.Unlock()
	for _, cmd := range procs {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	if !g.t.Failed() {
		return
	}
	logs, _ := filepath.Glob(filepath.Join(g.dir, "*.log"))
	for _, l := range logs {
		data, _ := os.ReadFile(l)
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		g.t.Logf("--- %s (last lines)\n%s", filepath.Base(l), strings.Join(lines[max(0, len(lines)-25):], "\n"))
	}
}

func addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// Ports for processes a test starts itself come from PARLEY_TEST_PORTS (lo-hi), default
// 22000-22999, below the kernel's ephemeral range so that they do not collide with outgoing
// connections.
func testPortRange(t testing.TB) (lo, hi int) {
	lo, hi = 22000, 22999
	if v := os.Getenv("PARLEY_TEST_PORTS"); v != "" {
		a, b, ok := strings.Cut(v, "-")
		l, err1 := strconv.Atoi(a)
		h, err2 := strconv.Atoi(b)
		if !ok || err1 != nil || err2 != nil || l < 1 || h > 65535 || l > h {
			t.Fatalf("PARLEY_TEST_PORTS=%q: want lo-hi, as in 22000-22999", v)
		}
		lo, hi = l, h
	}
	return lo, hi
}

// freePorts returns n distinct ports of the test port range free at the time of the call.
// Ports are tried in random order, so concurrent test binaries rarely pick the same one.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	lo, hi := testPortRange(t)
	var out []int
	for _, p := range rand.Perm(hi - lo + 1) {
		port := lo + p
		ln, err := net.Listen("tcp", addr(port))
		if err != nil {
			continue
		}
		_ = ln.Close()
		out = append(out, port)
		if len(out) == n {
			return out
		}
	}
	t.Fatalf("fewer than %d free ports in %d-%d", n, lo, hi)
	return nil
}
