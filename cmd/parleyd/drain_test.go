package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/teststack"
	"github.com/parleyhq/parley/protocol"
)

// readyzStatus is the status code and body status of /readyz.
func readyzStatus(admin string) (int, string) {
	resp, err := http.Get("http://" + admin + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	var body struct{ Status string }
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body.Status
}

// A stopping edge leaves the load balancer's rotation before it moves its clients: /readyz
// answers 503 draining at once, while for --edge-drain-delay the open connections hear nothing
// and new handshakes (the balancer has not noticed yet) are still admitted; only then come the
// reconnect hints, and the close with 1001 at the end of the drain window.
func TestDrainLeavesRotationBeforeHints(t *testing.T) {
	id := teststack.ID(t)
	admin, public := teststack.FreeAddr(t), teststack.FreeAddr(t)
	vars := map[string]string{
		"PARLEY_ADMIN_ADDR": admin, "PARLEY_LISTEN_ADDR": public,
		"PARLEY_AUTH_HS256_SECRET": testSecret, "PARLEY_LOG_LEVEL": "warn",
		"PARLEY_CASSANDRA_KEYSPACE": teststack.Keyspace, "PARLEY_CASSANDRA_CONSISTENCY": "ONE",
		"PARLEY_DELIVERY_STREAM": "T_" + id, "PARLEY_DELIVERY_SUBJECT_PREFIX": "test." + id + ".",
		"PARLEY_EDGE_DRAIN_DELAY": "1500ms", "PARLEY_EDGE_DRAIN_WINDOW": "300ms",
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"run"}, stackEnv(vars), io.Discard, io.Discard) }()
	t.Cleanup(func() {
		cancel()
		<-done
		teststack.DeleteStreams(t, vars["PARLEY_DELIVERY_STREAM"])
	})
	if !teststack.Eventually(t, 60*time.Second, func() bool { return teststack.Ready(admin) }) {
		t.Fatal("parleyd never ready")
	}
	a, _ := auth.New(auth.Config{HS256Secret: []byte(testSecret)}, nil)
	ws := dialEdge(t, a, public, chat.UserID(id+"_early"), "d")

	cancel() // as SIGTERM does
	stopped := time.Now()
	var code int
	var status string
	if !teststack.Eventually(t, 2*time.Second, func() bool {
		code, status = readyzStatus(admin)
		return code == http.StatusServiceUnavailable
	}) || status != "draining" {
		t.Fatalf("/readyz after the stop: %d %q; want 503 draining", code, status)
	}
	if flipped := time.Since(stopped); flipped > 500*time.Millisecond {
		t.Errorf("/readyz took %v to turn 503; want at once", flipped)
	}
	// During the pause: the open connection hears nothing, and a late handshake is admitted.
	late := dialEdge(t, a, public, chat.UserID(id+"_late"), "d")
	_ = ws.SetReadDeadline(stopped.Add(time.Second))
	var f protocol.Frame
	err := ws.ReadJSON(&f)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("within a second of the stop the connection got %+v (%v); want nothing during the 1.5s drain delay", f, err)
	}
	if code, _ := readyzStatus(admin); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz during the drain delay: %d; want 503", code)
	}
	// Then the connections get the drain's hint and the close (the late one is read: a read
	// that timed out leaves a gorilla connection unusable).
	_ = late.SetReadDeadline(time.Now().Add(5 * time.Second))
	var h protocol.Frame
	if err := late.ReadJSON(&h); err != nil || h.Type != protocol.TypeReconnect || h.Reason != "draining" {
		t.Fatalf("late connection: %+v, %v; want the drain's reconnect hint", h, err)
	}
	if since := time.Since(stopped); since < 1400*time.Millisecond {
		t.Errorf("the hint came %v after the stop; want after the 1.5s delay", since)
	}
	_, _, err = late.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway {
		t.Errorf("late connection ended with %v; want close 1001", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("parleyd: %v", err)
		}
		done <- nil
	case <-time.After(20 * time.Second):
		t.Fatal("parleyd did not stop")
	}
}

// Two edges with --edge-rebalance on a bucket of their own see each other through it.
func TestRebalanceBucketOfParleyd(t *testing.T) {
	id := teststack.ID(t)
	bucket := "T_" + id + "_EDGES"
	t.Cleanup(func() { deleteBucket(t, bucket) })
	vars := map[string]string{
		"PARLEY_AUTH_HS256_SECRET": testSecret, "PARLEY_LOG_LEVEL": "warn", "PARLEY_EDGE_DRAIN_WINDOW": "100ms",
		"PARLEY_CASSANDRA_KEYSPACE": teststack.Keyspace, "PARLEY_CASSANDRA_CONSISTENCY": "ONE",
		"PARLEY_DELIVERY_STREAM": "T_" + id, "PARLEY_DELIVERY_SUBJECT_PREFIX": "test." + id + ".",
		"PARLEY_EDGE_REBALANCE": "true", "PARLEY_EDGE_REBALANCE_BUCKET": bucket, "PARLEY_EDGE_REBALANCE_INTERVAL": "200ms",
	}
	admin1, _ := startParleyd(t, vars, nil)
	admin2, _ := startParleyd(t, vars, nil)
	edges := func(admin string) string {
		resp, err := http.Get("http://" + admin + "/metrics")
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "parley_edge_rebalance_edges ") {
				return l
			}
		}
		return "(none)"
	}
	for _, admin := range []string{admin1, admin2} {
		if !teststack.Eventually(t, 5*time.Second, func() bool { return edges(admin) == "parley_edge_rebalance_edges 2" }) {
			t.Errorf("edge at %s: %s; want 2 edges seen", admin, edges(admin))
		}
	}
}
