package edge

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/parleyhq/parley/internal/teststack"
	"github.com/parleyhq/parley/protocol"
)

func TestShedCount(t *testing.T) {
	for _, c := range []struct {
		own     int
		others  []int
		slack   float64
		maxShed int
		want    int
	}{
		{200, nil, 0.1, 1000, 0},           // alone: nobody to shed to
		{200, []int{0}, 0.1, 1000, 50},     // fair 100: half the excess of 100
		{200, []int{0}, 0.1, 20, 20},       // bounded by the rate
		{150, []int{50}, 0.1, 1000, 25},    // fair 100, excess 50
		{110, []int{90}, 0.1, 1000, 0},     // within the slack (110 <= 100 x 1.1)
		{112, []int{88}, 0.1, 1000, 6},     // just above it
		{50, []int{150}, 0.1, 1000, 0},     // below the fair share: the other sheds
		{300, []int{0, 0}, 0.1, 1000, 100}, // three edges: fair 100, excess 200
		{2, []int{1}, 0.1, 1000, 0},        // less than one connection over fair: no flapping
		{3, []int{0}, 0.1, 1000, 1},
		{0, []int{0}, 0.1, 1000, 0},
		{100, []int{-5}, 0.1, 1000, 25}, // a nonsense count counts as 0
	} {
		if got := shedCount(c.own, c.others, c.slack, c.maxShed); got != c.want {
			t.Errorf("shedCount(%d, %v, %g, %d) = %d; want %d", c.own, c.others, c.slack, c.maxShed, got, c.want)
		}
	}
}

// An edge sheds only when it has been above its share two rounds in a row and is not still
// gaining connections: a burst between two rounds, or a ramp that lands on every edge (the
// others' counts are a round old), moves nobody.
func TestRebalanceSheddingIsSteady(t *testing.T) {
	var r rebalancer
	for i, c := range []struct{ in, own, want int }{
		{5, 100, 0}, // first round over (and growing): wait
		{0, 100, 0}, // even again: nothing, and the streak ends
		{5, 100, 0}, // over again: wait
		{5, 100, 5}, // still over, not growing: shed
		{3, 95, 3},  // and on while it stays over
		{4, 120, 0}, // gaining connections (a ramp): nothing
		{4, 140, 0}, // still gaining
		{4, 140, 4}, // stopped gaining, still over: shed
		{0, 130, 0},
		{4, 130, 0},
	} {
		if got := r.steady(c.in, c.own); got != c.want {
			t.Errorf("round %d: steady(%d, own %d) = %d; want %d", i+1, c.in, c.own, got, c.want)
		}
	}
}

// rebalanceClient is a client that follows the edge's hints: when its connection ends it
// waits the hinted after_ms and reconnects through dial (the load balancer).
type rebalanceClient struct {
	te   *testEdge
	user string
}

func (c rebalanceClient) run(ctx context.Context, first *testEdge, dial func() *testEdge, wg *sync.WaitGroup) {
	defer wg.Done()
	te := first
	for ctx.Err() == nil {
		tok := te.token(c.user, "d", time.Hour)
		d := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}, HandshakeTimeout: 5 * time.Second}
		ws, _, err := d.DialContext(ctx, te.url, http.Header{"Authorization": {"Bearer " + tok}})
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			te = dial()
			continue
		}
		stop := context.AfterFunc(ctx, func() { ws.Close() })
		var hint time.Duration
		for {
			var f protocol.Frame
			if err := ws.ReadJSON(&f); err != nil {
				var ce *websocket.CloseError
				if !errors.As(err, &ce) {
					hint = max(hint, 50*time.Millisecond)
				}
				break
			}
			if f.Type == protocol.TypeReconnect {
				hint = time.Duration(f.AfterMS) * time.Millisecond
			}
		}
		stop()
		ws.Close()
		select {
		case <-ctx.Done():
		case <-time.After(hint):
		}
		te = dial()
	}
}

// Two edges share the rebalance bucket on the real NATS; 200 clients are all on edge A and B
// is empty, as after B restarted. A asks half its excess (about 100) to move, its clients
// reconnect through a least-connections dialer (HAProxy's balance leastconn), and the counts
// even out within the slack; B asks nobody to move.
func TestRebalanceAcrossEdges(t *testing.T) {
	n := teststack.NATS(t)
	bucket := teststack.ID(t)
	t.Cleanup(func() { _ = n.JetStream.DeleteKeyValue(context.Background(), bucket) })
	cfg := Config{} // the defaults: every 2 s, slack 10%, at most 100 a second
	enable := func(s *Server) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.EnableRebalance(ctx, n.JetStream, bucket, 1); err != nil {
			t.Fatal(err)
		}
	}
	a := newTestEdgeSetup(t, cfg, n.Conn, time.Millisecond, enable)
	b := newTestEdgeSetup(t, cfg, n.Conn, time.Millisecond, enable)
	var mu sync.Mutex
	leastconn := func() *testEdge {
		mu.Lock()
		defer mu.Unlock()
		ca, cb := a.s.connCount(), b.s.connCount()
		switch {
		case ca < cb:
			return a
		case cb < ca:
			return b
		}
		if rand.IntN(2) == 0 {
			return a
		}
		return b
	}
	const clients = 200
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() }) // before the edges' cleanups
	for i := range clients {
		wg.Add(1)
		go rebalanceClient{te: a, user: fmt.Sprintf("u%03d", i)}.run(ctx, a, leastconn, &wg)
	}
	if !teststack.Eventually(t, 20*time.Second, func() bool { return a.s.connCount() == clients }) {
		t.Fatalf("edge A holds %d of the %d clients", a.s.connCount(), clients)
	}
	start := time.Now()
	within := func(n int) bool { return n >= 90 && n <= 110 } // fair 100, slack 10%
	converged := teststack.Eventually(t, 90*time.Second, func() bool {
		ca, cb := a.s.connCount(), b.s.connCount()
		return ca+cb == clients && within(ca) && within(cb)
	})
	took := time.Since(start)
	hintsA := testutil.ToFloat64(a.s.metrics.rebalanceHints)
	hintsB := testutil.ToFloat64(b.s.metrics.rebalanceHints)
	t.Logf("converged %v after %v: A %d, B %d; hints A %v, B %v; edges seen %v",
		converged, took.Round(100*time.Millisecond), a.s.connCount(), b.s.connCount(), hintsA, hintsB,
		testutil.ToFloat64(a.s.metrics.rebalancePeers))
	if !converged {
		t.Fatalf("no convergence within 90s: A %d, B %d; hints A %v, B %v", a.s.connCount(), b.s.connCount(), hintsA, hintsB)
	}
	if hintsA < 90 || hintsA > 130 {
		t.Errorf("edge A sent %v rebalance hints; want about half the excess of 200 (100)", hintsA)
	}
	if hintsB > 10 {
		t.Errorf("edge B sent %v rebalance hints; want few or none (it was the empty one)", hintsB)
	}
	if got := testutil.ToFloat64(a.s.metrics.rebalancePeers); got != 2 {
		t.Errorf("edge A sees %v edges; want 2", got)
	}
	// A draining edge (Shutdown stops its rebalancing first) deletes its key: the other stops
	// counting it at its next look, not after the key's TTL.
	b.s.stopRebalance()
	if !teststack.Eventually(t, 2*cfg.withDefaults().RebalanceInterval+time.Second, func() bool {
		return testutil.ToFloat64(a.s.metrics.rebalancePeers) == 1
	}) {
		t.Errorf("edge A still sees %v edges after B stopped", testutil.ToFloat64(a.s.metrics.rebalancePeers))
	}
}
