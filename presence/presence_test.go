package presence_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/parleyhq/parley/internal/breaker"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/routing"
	"github.com/parleyhq/parley/internal/teststack"
	"github.com/parleyhq/parley/presence"
	"github.com/parleyhq/parley/protocol"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// edgeSim is one edge's presence: a Presence running until stop.
type edgeSim struct {
	*presence.Presence
	stop func()
	reg  *prometheus.Registry
}

func newEdge(t *testing.T, cfg presence.Config, rdb *redis.Client, nc *nats.Conn) *edgeSim {
	t.Helper()
	reg := prometheus.NewRegistry()
	br, err := breaker.New("redis", breaker.Config{OpenFor: 5 * time.Second}, presence.IsRedisFailure, reg)
	if err != nil {
		t.Fatal(err)
	}
	p, err := presence.New(cfg, rdb, nc, br, reg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = p.Run(ctx); close(done) }()
	e := &edgeSim{Presence: p, reg: reg}
	e.stop = func() { cancel(); <-done }
	t.Cleanup(e.stop)
	return e
}

// events collects the presence transitions published for users.
func events(t *testing.T, nc *nats.Conn, users ...chat.UserID) <-chan protocol.PresenceState {
	t.Helper()
	ch := make(chan protocol.PresenceState, 64)
	for _, u := range users {
		sub, err := nc.Subscribe(routing.PresenceSubject(u), func(m *nats.Msg) {
			var st protocol.PresenceState
			if json.Unmarshal(m.Data, &st) == nil {
				ch <- st
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	_ = nc.Flush()
	return ch
}

func expect(t *testing.T, ch <-chan protocol.PresenceState, user chat.UserID, state string, within time.Duration) protocol.PresenceState {
	t.Helper()
	select {
	case st := <-ch:
		if st.User != string(user) || st.State != state {
			t.Fatalf("event %+v; want %s %s", st, user, state)
		}
		return st
	case <-time.After(within):
		t.Fatalf("no %s event for %s within %v", state, user, within)
	}
	return protocol.PresenceState{}
}

func quietFor(t *testing.T, ch <-chan protocol.PresenceState, d time.Duration) {
	t.Helper()
	select {
	case st := <-ch:
		t.Fatalf("unexpected event %+v", st)
	case <-time.After(d):
	}
}

func state(t *testing.T, p *presence.Presence, u chat.UserID) protocol.PresenceState {
	t.Helper()
	return p.States(context.Background(), []chat.UserID{u})[0]
}

func config(t *testing.T) presence.Config {
	return presence.Config{TTL: time.Second, Heartbeat: 200 * time.Millisecond, Grace: 300 * time.Millisecond,
		KeyPrefix: teststack.ID(t) + ":"}
}

// Connect makes a user online; the last device's disconnect makes them offline after the
// grace period, with a last-seen time; a second device or a quick reconnect changes nothing.
func TestTransitions(t *testing.T) {
	rdb, n := teststack.Redis(t), teststack.NATS(t)
	cfg := config(t)
	e := newEdge(t, cfg, rdb, n.Conn)
	alice := chat.UserID(teststack.ID(t) + "_alice")
	ch := events(t, n.Conn, alice)

	if st := state(t, e.Presence, alice); st.State != protocol.PresenceOffline || st.LastSeen != 0 {
		t.Errorf("never seen: %+v; want offline without last seen", st)
	}
	e.Connected(alice, "s1")
	expect(t, ch, alice, protocol.PresenceOnline, 2*time.Second)
	if st := state(t, e.Presence, alice); st.State != protocol.PresenceOnline {
		t.Errorf("after connect: %+v", st)
	}
	e.Connected(alice, "s2") // a second device: already online
	e.Disconnected(alice, "s1")
	quietFor(t, ch, 2*cfg.Grace)

	e.Disconnected(alice, "s2")
	e.Connected(alice, "s3") // back within the grace period: no flap
	quietFor(t, ch, 2*cfg.Grace)

	before := time.Now()
	e.Disconnected(alice, "s3")
	st := expect(t, ch, alice, protocol.PresenceOffline, cfg.Grace+2*time.Second)
	if st.LastSeen < before.UnixMilli()-1000 || st.LastSeen > time.Now().UnixMilli() {
		t.Errorf("offline event last seen %d; want about %d", st.LastSeen, before.UnixMilli())
	}
	if got := state(t, e.Presence, alice); got.State != protocol.PresenceOffline || got.LastSeen != st.LastSeen {
		t.Errorf("state after going offline: %+v; want offline, last seen %d", got, st.LastSeen)
	}
	e.Connected(alice, "s4")
	expect(t, ch, alice, protocol.PresenceOnline, 2*time.Second)
}

// An edge that stops heartbeating (it died) leaves its users online only until their sessions
// expire: another edge's sweeper takes them offline within TTL + heartbeat.
func TestDeadEdgeSessionsExpire(t *testing.T) {
	rdb, n := teststack.Redis(t), teststack.NATS(t)
	cfg := config(t)
	dying, survivor := newEdge(t, cfg, rdb, n.Conn), newEdge(t, cfg, rdb, n.Conn)
	bob := chat.UserID(teststack.ID(t) + "_bob")
	ch := events(t, n.Conn, bob)
	dying.Connected(bob, "s1")
	expect(t, ch, bob, protocol.PresenceOnline, 2*time.Second)
	time.Sleep(2 * cfg.TTL) // heartbeats keep the session alive past its first TTL
	if st := state(t, survivor.Presence, bob); st.State != protocol.PresenceOnline {
		t.Fatalf("with heartbeats, after 2 TTLs: %+v; want online", st)
	}
	dying.stop() // no disconnect, no more heartbeats
	died := time.Now()
	st := expect(t, ch, bob, protocol.PresenceOffline, cfg.TTL+cfg.Heartbeat+2*time.Second)
	if d := time.Since(died); d > cfg.TTL+cfg.Heartbeat+time.Second {
		t.Errorf("offline %v after the edge died; want within TTL + heartbeat (+ a sweep)", d)
	}
	// Last seen is the edge's last heartbeat (at most one interval before it died), not the
	// time the sweeper noticed, a TTL later.
	const slack = 50 * time.Millisecond // clocks read a moment apart
	seen := time.UnixMilli(st.LastSeen)
	if seen.Before(died.Add(-cfg.Heartbeat-slack)) || seen.After(died.Add(slack)) {
		t.Errorf("last seen %v after the edge died; want its last heartbeat, within %v before it", seen.Sub(died), cfg.Heartbeat)
	}
	if got := state(t, survivor.Presence, bob); got.State != protocol.PresenceOffline || got.LastSeen != st.LastSeen {
		t.Errorf("state after the sweep: %+v; want offline, last seen %d", got, st.LastSeen)
	}
}

// A Redis that lost everything (restarted empty) is rebuilt by the next heartbeat, without
// flapping anyone's presence.
func TestStateRebuiltAfterRedisLosesIt(t *testing.T) {
	rdb, n := teststack.Redis(t), teststack.NATS(t)
	cfg := config(t)
	e := newEdge(t, cfg, rdb, n.Conn)
	carol := chat.UserID(teststack.ID(t) + "_carol")
	ch := events(t, n.Conn, carol)
	e.Connected(carol, "s1")
	expect(t, ch, carol, protocol.PresenceOnline, 2*time.Second)

	ctx := context.Background()
	keys, err := rdb.Keys(ctx, cfg.KeyPrefix+"*").Result()
	if err != nil || len(keys) == 0 {
		t.Fatalf("keys under %s: %v %v", cfg.KeyPrefix, keys, err)
	}
	if err := rdb.Del(ctx, keys...).Err(); err != nil {
		t.Fatal(err)
	}
	lost := time.Now()
	if !teststack.Eventually(t, 2*time.Second, func() bool { return state(t, e.Presence, carol).State == protocol.PresenceOnline }) {
		t.Fatal("state not rebuilt")
	}
	if d := time.Since(lost); d > cfg.Heartbeat+400*time.Millisecond { // one heartbeat, plus polling and scheduling
		t.Errorf("rebuilt after %v; want within one heartbeat (%v)", d, cfg.Heartbeat)
	}
	quietFor(t, ch, cfg.TTL) // no offline/online flap was published
}

// Heartbeats are pipelined: 2,500 sessions with batches of 1,000 take 3 round trips.
func TestHeartbeatsAreBatched(t *testing.T) {
	rdb, n := teststack.Redis(t), teststack.NATS(t)
	cfg := config(t)
	cfg.BatchSize = 1000
	e := newEdge(t, cfg, rdb, n.Conn)
	for i := 0; i < 2500; i++ {
		e.Connected(chat.UserID(fmt.Sprintf("%s_u%d", teststack.ID(t), i%500)), fmt.Sprintf("s%d", i))
	}
	var count uint64
	var sum float64
	teststack.Eventually(t, 5*time.Second, func() bool {
		mfs, _ := e.reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "parley_presence_heartbeat_batch_sessions" {
				h := mf.GetMetric()[0].GetHistogram()
				count, sum = h.GetSampleCount(), h.GetSampleSum()
			}
		}
		return count >= 3 && sum >= 2500
	})
	// A heartbeat covers the 2,500 sessions in batches of 1,000, 1,000 and 500 (one round trip
	// each), not one round trip per session.
	if count < 3 || sum/float64(count) < 500 {
		t.Errorf("heartbeat batches: %d round trips for %.0f session renewals; want batches of 500-1000", count, sum)
	}
}

// With Redis unreachable, presence answers "unknown" at once (and the breaker opens).
func TestUnknownWhileRedisIsDown(t *testing.T) {
	n := teststack.NATS(t)
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", DialTimeout: 100 * time.Millisecond, MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	e := newEdge(t, config(t), rdb, n.Conn)
	for i := 0; i < 20; i++ {
		st := e.States(context.Background(), []chat.UserID{"dave", "erin"})
		if st[0].State != protocol.PresenceUnknown || st[1].State != protocol.PresenceUnknown {
			t.Fatalf("with Redis down: %+v; want unknown", st)
		}
	}
	// The breaker has opened: further calls fail fast instead of dialling.
	mfs, _ := e.reg.Gather()
	open := false
	for _, mf := range mfs {
		if mf.GetName() == "parley_breaker_state" && mf.GetMetric()[0].GetGauge().GetValue() == 2 {
			open = true
		}
	}
	if !open {
		t.Error("the redis breaker is not open after 20 failed reads")
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (presence.Config{}).Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	for name, c := range map[string]presence.Config{
		"ttl below 2 heartbeats": {TTL: 10 * time.Second, Heartbeat: 6 * time.Second},
		"tiny heartbeat":         {Heartbeat: time.Millisecond},
		"grace over ttl":         {Grace: time.Minute},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}
