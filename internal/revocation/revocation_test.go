package revocation

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/teststack"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// proxy forwards TCP connections to upstream until cut; restore listens again on its address.
type proxy struct {
	t        *testing.T
	addr     string
	upstream string
	mu       sync.Mutex
	ln       net.Listener
	conns    []net.Conn
	wg       sync.WaitGroup
}

func newProxy(t *testing.T, upstream string) *proxy {
	p := &proxy{t: t, upstream: upstream}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(func() { p.cut(); p.wg.Wait() })
	return p
}

func (p *proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", p.upstream)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			p.wg.Add(2)
			go func() { defer p.wg.Done(); _, _ = io.Copy(u, c); u.Close() }()
			go func() { defer p.wg.Done(); _, _ = io.Copy(c, u); c.Close() }()
		}
	}()
}

// cut closes the listener and every forwarded connection: the client sees NATS unreachable.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) restore() {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatalf("listen again on %s: %v", p.addr, err)
	}
	p.serve(ln)
}

// The store on real NATS: a revocation written by one process reaches another's copy and
// matches by user (tokens issued until then), device and jti. When NATS becomes unreachable
// the copy keeps answering (what it knows stays revoked, the rest is admitted and counted as
// stale); a revocation made meanwhile reaches it once NATS is back.
func TestStoreOnNATSAndWhenUnreachable(t *testing.T) {
	id := teststack.ID(t)
	bucket := "T_" + id + "_REV"
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	writerNATS := teststack.NATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := Config{Bucket: bucket, TTL: time.Hour}
	writer, err := Open(ctx, writerNATS.JetStream, writerNATS.Conn, cfg, prometheus.NewRegistry(), logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = writerNATS.JetStream.DeleteKeyValue(context.Background(), bucket) })
	upstream := strings.TrimPrefix(os.Getenv("PARLEY_NATS_URL"), "nats://")
	if upstream == "" {
		upstream = "127.0.0.1:14222"
	}
	px := newProxy(t, upstream)
	nc, err := nats.Connect("nats://"+px.addr, nats.ReconnectWait(50*time.Millisecond), nats.MaxReconnects(-1), nats.Timeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	reg := prometheus.NewRegistry()
	reader, err := Open(ctx, js, nc, cfg, reg, logger)
	if err != nil {
		t.Fatal(err)
	}
	applied := make(chan auth.Revocation, 16)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- reader.Run(runCtx, func(r auth.Revocation) { applied <- r }) }()
	defer func() { stop(); <-done }()
	if err := reader.Loaded(ctx); err != nil {
		t.Fatal(err)
	}
	wait := func(what string, within time.Duration) auth.Revocation {
		t.Helper()
		select {
		case r := <-applied:
			return r
		case <-time.After(within):
			t.Fatalf("%s: no revocation applied within %v", what, within)
		}
		return auth.Revocation{}
	}

	u1, u2 := chat.UserID(id+"_u1"), chat.UserID(id+"_u2")
	issued := time.Now().Add(-time.Minute)
	tok := func(u chat.UserID, jti string, iat time.Time) auth.Identity {
		return auth.Identity{User: u, TokenID: jti, IssuedAt: iat}
	}
	if _, err := writer.Revoke(ctx, auth.Revocation{User: u1}); err != nil {
		t.Fatal(err)
	}
	if r := wait("by user", 5*time.Second); r.User != u1 {
		t.Fatalf("applied %+v; want u1's", r)
	}
	if _, err := writer.Revoke(ctx, auth.Revocation{TokenID: "jti-" + id}); err != nil {
		t.Fatal(err)
	}
	wait("by jti", 5*time.Second)
	if _, err := writer.Revoke(ctx, auth.Revocation{Device: "phone"}); err == nil {
		t.Error("a revocation naming a device without its user was stored")
	}
	tests := []struct {
		name   string
		id     auth.Identity
		device chat.DeviceID
		want   bool
	}{
		{"user, issued before", tok(u1, "", issued), "phone", true},
		{"user, no iat", tok(u1, "", time.Time{}), "phone", true},
		{"user, issued after", tok(u1, "", time.Now().Add(2*time.Second)), "phone", false},
		{"another user", tok(u2, "", issued), "phone", false},
		{"jti", tok(u2, "jti-"+id, time.Now().Add(time.Hour)), "tablet", true},
	}
	for _, tt := range tests {
		if got := reader.Revoked(tt.id, tt.device); got != tt.want {
			t.Errorf("%s: Revoked = %v; want %v", tt.name, got, tt.want)
		}
	}
	if s := testutil.ToFloat64(reader.stale); s != 0 {
		t.Errorf("stale checks while connected: %v", s)
	}

	px.cut()
	if !teststack.Eventually(t, 10*time.Second, func() bool { return !nc.IsConnected() }) {
		t.Fatal("the reader's NATS connection never noticed the cut")
	}
	if !reader.Revoked(tok(u1, "", issued), "phone") {
		t.Error("while NATS is unreachable a known revocation no longer applies")
	}
	if reader.Revoked(tok(u2, "", issued), "phone") {
		t.Error("while NATS is unreachable an unrevoked token is refused")
	}
	if s := testutil.ToFloat64(reader.stale); s != 2 {
		t.Errorf("stale checks = %v; want 2", s)
	}
	if _, err := writer.Revoke(ctx, auth.Revocation{User: u2, Device: "phone"}); err != nil {
		t.Fatal(err)
	}
	px.restore()
	if r := wait("after NATS came back", 30*time.Second); r.User != u2 || r.Device != "phone" {
		t.Fatalf("applied %+v; want u2's phone", r)
	}
	if !reader.Revoked(tok(u2, "", issued), "phone") || reader.Revoked(tok(u2, "", issued), "tablet") {
		t.Error("the revocation of u2's phone does not match as it should after catching up")
	}
	revs, err := writer.List(ctx)
	if err != nil || len(revs) != 3 {
		t.Errorf("List = %v, %v; want 3 revocations", revs, err)
	}
}
