package main

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/teststack"
	"github.com/parleyhq/parley/protocol"
)

// The handshake limits are set from the environment (or flags) of a whole parleyd: the
// third handshake of a user allowed a burst of two gets 429 with Retry-After, and the edge's
// close and handshake series are all on /metrics from the start.
func TestHandshakeLimitsOfParleyd(t *testing.T) {
	id := teststack.ID(t)
	admin, public := startParleyd(t, map[string]string{
		"PARLEY_AUTH_HS256_SECRET": testSecret, "PARLEY_LOG_LEVEL": "warn", "PARLEY_EDGE_DRAIN_WINDOW": "200ms",
		"PARLEY_CASSANDRA_KEYSPACE": teststack.Keyspace, "PARLEY_CASSANDRA_CONSISTENCY": "ONE",
		"PARLEY_DELIVERY_STREAM": "T_" + id, "PARLEY_DELIVERY_SUBJECT_PREFIX": "test." + id + ".",
		"PARLEY_EDGE_HANDSHAKE_RATE_PER_USER": "0.05", "PARLEY_EDGE_HANDSHAKE_BURST_PER_USER": "2",
	}, nil)
	a, _ := auth.New(auth.Config{HS256Secret: []byte(testSecret)}, nil)
	user := chat.UserID(id + "_hasty")
	dialEdge(t, a, public, user, "a")
	dialEdge(t, a, public, user, "b")
	tok, _ := a.Mint(user, "c", time.Hour)
	d := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}}
	ws, resp, err := d.Dial("ws://"+public+protocol.Path, http.Header{"Authorization": {"Bearer " + tok}})
	if err == nil {
		ws.Close()
	}
	if resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("third handshake of the user: %v, %v; want 429", resp, err)
	}
	if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 || ra > 20 {
		t.Errorf("Retry-After %q; want 1 to 20 seconds (a token every 20 s)", resp.Header.Get("Retry-After"))
	}
	mresp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	for _, m := range []string{`parley_edge_handshakes_total{result="rate_limited_user"} 1`,
		`parley_edge_closes_total{code="1002"} 0`, `parley_edge_closes_total{code="4009"} 0`} {
		if !bytes.Contains(metrics, []byte(m)) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
}
