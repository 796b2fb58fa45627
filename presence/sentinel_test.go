package presence_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/parleyhq/parley/internal/breaker"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/teststack"
	"github.com/parleyhq/parley/presence"
	"github.com/parleyhq/parley/protocol"
)

// On Redis with Sentinel, a failover (the primary killed, the replica promoted) makes presence
// answer "unknown" while it lasts, never a wrong "offline"; afterwards the heartbeats write
// this edge's sessions to the new primary, so a user online before it is online again, and a
// user who connected during it is online too, within one TTL. No offline event is published.
func TestConvergesAfterSentinelFailover(t *testing.T) {
	g := teststack.StartSentinelGroup(t)
	rdb := g.Redis(t)
	n := teststack.NATS(t)
	// The TTL outlasts the failover (a few seconds), as the default 30 s does.
	cfg := presence.Config{TTL: 10 * time.Second, Heartbeat: 500 * time.Millisecond, Grace: 500 * time.Millisecond,
		KeyPrefix: teststack.ID(t) + ":"}
	br, err := breaker.New("redis", breaker.Config{OpenFor: time.Second}, presence.IsRedisFailure, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	p, err := presence.New(cfg, rdb, n.Conn, br, prometheus.NewRegistry(), quiet)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = p.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })

	alice, carol := chat.UserID(teststack.ID(t)+"_alice"), chat.UserID(teststack.ID(t)+"_carol")
	ch := events(t, n.Conn, alice)
	p.Connected(alice, "a1")
	expect(t, ch, alice, protocol.PresenceOnline, 2*time.Second)
	ch = events(t, n.Conn, alice, carol)

	g.Kill(g.Primary)
	killed := time.Now()
	p.Connected(carol, "c1") // its connect script fails: the heartbeats must register it
	seen := map[string]int{}
	var promoted time.Time
	for deadline := killed.Add(30 * time.Second); ; {
		st := p.States(context.Background(), []chat.UserID{alice})[0]
		seen[st.State]++
		if st.State == protocol.PresenceOffline {
			t.Fatalf("during the failover alice is %+v (%v after the kill); want unknown, or online", st, time.Since(killed))
		}
		if a, ok := g.CurrentPrimary(context.Background()); ok && a == g.Replica {
			promoted = time.Now()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sentinels did not promote the replica within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("replica promoted %v after the kill; states read meanwhile: %v", promoted.Sub(killed).Round(10*time.Millisecond), seen)
	if seen[protocol.PresenceUnknown] == 0 {
		t.Error("presence never answered unknown while the primary was gone")
	}

	online := func(u chat.UserID) bool {
		st := p.States(context.Background(), []chat.UserID{u})[0]
		if st.State == protocol.PresenceOffline && u == alice {
			t.Errorf("after the failover alice is %+v; want unknown until online", st)
		}
		return st.State == protocol.PresenceOnline
	}
	if !teststack.Eventually(t, cfg.TTL, func() bool { return online(alice) && online(carol) }) {
		t.Fatalf("alice %+v, carol %+v one TTL (%v) after the promotion; want both online",
			p.States(context.Background(), []chat.UserID{alice})[0], p.States(context.Background(), []chat.UserID{carol})[0], cfg.TTL)
	}
	t.Logf("alice and carol online %v after the kill", time.Since(killed).Round(10*time.Millisecond))

	// Their sessions on the new primary come from heartbeats made after the promotion, not
	// only from what was replicated before it (which the asynchronous replication may lose).
	direct := redis.NewClient(&redis.Options{Addr: g.Replica})
	defer direct.Close()
	if !teststack.Eventually(t, cfg.TTL, func() bool {
		for _, u := range []chat.UserID{alice, carol} {
			zs, err := direct.ZRangeWithScores(context.Background(), cfg.KeyPrefix+"s:"+string(u), 0, -1).Result()
			if err != nil || len(zs) != 1 || int64(zs[0].Score) < promoted.Add(cfg.TTL).UnixMilli() {
				return false
			}
		}
		return true
	}) {
		t.Errorf("sessions on the new primary not renewed by a heartbeat after the promotion (promoted at %s)",
			strconv.FormatInt(promoted.UnixMilli(), 10))
	}
	for end := time.After(3 * cfg.Heartbeat); ; {
		select {
		case st := <-ch:
			if st.State != protocol.PresenceOnline {
				t.Errorf("event %+v after the failover; want no one offline", st)
			}
			continue
		case <-end:
		}
		break
	}
}
