//go:build outage

package main

// The outage tests stop and restart the local stack's Cassandra, so they cannot run beside
// the other packages' tests. `make test` runs them as a separate phase after `go test ./...`:
//
//	go test -tags outage -run Outage -count=1 ./cmd/parleyd

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/teststack"
	"github.com/parleyhq/parley/protocol"
)

// leakOptions: after Cassandra restarts, the driver (gocql v2.1.2) may open a pool connection
// while the session is closing and leave its reader goroutine behind. It ends with the process
// (parleyd exits after closing the session), so it is tolerated here and nowhere else.
var leakOptions = []goleak.Option{
	goleak.IgnoreAnyFunction("github.com/apache/cassandra-gocql-driver/v2.(*Conn).serve"),
	// A Session.Close stuck in the driver after a Cassandra restart (backend.CloseCassandra
	// leaves it behind rather than hang the shutdown), with the goroutines it waits for.
	goleak.IgnoreAnyFunction("github.com/parleyhq/parley/internal/backend.CloseCassandra.func1"),
	goleak.IgnoreAnyFunction("github.com/apache/cassandra-gocql-driver/v2.(*controlConn).heartBeat"),
	goleak.IgnoreAnyFunction("github.com/apache/cassandra-gocql-driver/v2.(*refreshDebouncer).flusher"),
	goleak.IgnoreAnyFunction("github.com/apache/cassandra-gocql-driver/v2.(*Session).reconnectDownedHosts"),
	goleak.IgnoreAnyFunction("github.com/apache/cassandra-gocql-driver/v2.(*Conn).heartBeat"),
	goleak.IgnoreAnyFunction("github.com/apache/cassandra-gocql-driver/v2.(*eventDebouncer).flusher"),
	goleak.IgnoreAnyFunction("github.com/apache/cassandra-gocql-driver/v2.(*writeCoalescer).writeFlusherImpl"),
}

func stack(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command("../../deploy/local/stack.sh", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("stack.sh %v: %v\n%s", args, err, out)
	}
}

// With Cassandra stopped, /readyz answers 503 naming Cassandra and the REST API answers 503
// with Retry-After; when Cassandra is back both recover without restarting parleyd.
func TestOutageOfCassandra(t *testing.T) {
	admin, public := teststack.FreeAddr(t), teststack.FreeAddr(t)
	vars := map[string]string{
		"PARLEY_ADMIN_ADDR": admin, "PARLEY_LISTEN_ADDR": public, "PARLEY_AUTH_HS256_SECRET": testSecret,
		"PARLEY_CASSANDRA_KEYSPACE": teststack.Keyspace, "PARLEY_CASSANDRA_CONSISTENCY": "ONE", "PARLEY_LOG_LEVEL": "error",
		"PARLEY_DELIVERY_STREAM": "T_" + teststack.ID(t), "PARLEY_DELIVERY_SUBJECT_PREFIX": "test." + teststack.ID(t) + ".",
		"PARLEY_CASSANDRA_BREAKER_OPEN_FOR": "1s", "PARLEY_CASSANDRA_TIMEOUT": "2s",
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"run"}, stackEnv(vars), io.Discard, io.Discard) }()
	t.Cleanup(func() {
		cancel()
		<-done
		stack(t, "up", "cassandra") // leave the stack as it was, whatever happened
	})

	ready := func() (int, map[string]any) {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			return 0, nil
		}
		defer resp.Body.Close()
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	if !teststack.Eventually(t, 60*time.Second, func() bool { c, _ := ready(); return c == http.StatusOK }) {
		t.Fatal("parleyd never ready")
	}
	a, _ := auth.New(auth.Config{HS256Secret: []byte(testSecret)}, nil)
	tok, _ := a.Mint("outage_alice", "", time.Hour)
	call := func(method, path, body string) *http.Response {
		req, _ := http.NewRequest(method, "http://"+public+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp
	}
	if resp := call("POST", "/v1/conversations", `{"kind":"direct","with":"outage_bob"}`); resp.StatusCode >= 300 {
		t.Fatalf("create conversation: %d", resp.StatusCode)
	}

	stack(t, "down", "cassandra")
	var body map[string]any
	if !teststack.Eventually(t, 30*time.Second, func() bool {
		var c int
		c, body = ready()
		return c == http.StatusServiceUnavailable
	}) {
		t.Fatal("/readyz still 200 with Cassandra stopped")
	}
	checks, _ := body["checks"].(map[string]any)
	cass, _ := checks["cassandra"].(map[string]any)
	if ok, _ := cass["ok"].(bool); ok || cass["error"] == "" {
		t.Errorf("/readyz body %v does not name Cassandra as failing", body)
	}
	resp := call("GET", "/v1/conversations", "")
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("API with Cassandra stopped: %d, Retry-After %q; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}

	stack(t, "up", "cassandra")
	if !teststack.Eventually(t, 90*time.Second, func() bool { c, _ := ready(); return c == http.StatusOK }) {
		t.Fatal("/readyz did not return to 200 after Cassandra restarted")
	}
	if !teststack.Eventually(t, 30*time.Second, func() bool { return call("GET", "/v1/conversations", "").StatusCode == http.StatusOK }) {
		t.Fatal("API did not recover after Cassandra restarted")
	}
}

// Cassandra stopped for 20 s under load: every send is still accepted (durable in JetStream),
// and once Cassandra is back everything is sequenced, in order, without gap or duplicate, and
// delivered live to the other member's device.
func TestOutageOfCassandraUnderLoad(t *testing.T) {
	id := teststack.ID(t)
	vars := map[string]string{
		"PARLEY_AUTH_HS256_SECRET":  testSecret,
		"PARLEY_CASSANDRA_KEYSPACE": teststack.Keyspace, "PARLEY_CASSANDRA_CONSISTENCY": "ONE", "PARLEY_LOG_LEVEL": "error",
		"PARLEY_DELIVERY_STREAM": "T_" + id, "PARLEY_DELIVERY_SUBJECT_PREFIX": "test." + id + ".",
		"PARLEY_CASSANDRA_BREAKER_OPEN_FOR": "1s", "PARLEY_CASSANDRA_TIMEOUT": "2s", "PARLEY_EDGE_DRAIN_WINDOW": "200ms",
	}
	_, public := startParleyd(t, vars, func() { stack(t, "up", "cassandra") })
	a, _ := auth.New(auth.Config{HS256Secret: []byte(testSecret)}, nil)
	alice, bob := chat.UserID(id+"_alice"), chat.UserID(id+"_bob")
	status, body := restCall(t, a, public, alice, "POST", "/v1/conversations", `{"kind":"direct","with":"`+string(bob)+`"}`)
	var created struct{ ID string }
	if err := json.Unmarshal(body, &created); err != nil || status != http.StatusCreated {
		t.Fatalf("create conversation: %d %s", status, body)
	}
	dial := func(u chat.UserID) *websocket.Conn { return dialEdge(t, a, public, u, "phone") }
	wsA, wsB := dial(alice), dial(bob)

	// Alice's replies and bob's messages are read in the background.
	var (
		mu       sync.Mutex
		accepted = map[string]bool{}
		failures []protocol.Frame
		received []protocol.Frame
	)
	go func() {
		for {
			var f protocol.Frame
			if wsA.ReadJSON(&f) != nil {
				return
			}
			mu.Lock()
			switch f.Type {
			case protocol.TypeAccepted:
				accepted[f.ID] = true
			case protocol.TypeError:
				failures = append(failures, f)
			}
			mu.Unlock()
		}
	}()
	go func() {
		for {
			var f protocol.Frame
			if wsB.ReadJSON(&f) != nil {
				return
			}
			if f.Type == protocol.TypeMessage {
				mu.Lock()
				received = append(received, f)
				mu.Unlock()
			}
		}
	}()
	sent := 0
	sendOne := func() {
		// UUIDv7 ids, as the SDK mints them: the sequencer dedupes fresh ones by the log alone
		// while Cassandra is down.
		f := protocol.Frame{Type: protocol.TypeSend, ID: strconv.Itoa(sent), Conversation: created.ID,
			ClientMsgID: chat.NewClientMsgID().String(), Body: strconv.Itoa(sent)}
		if err := wsA.WriteJSON(f); err != nil {
			t.Fatal(err)
		}
		sent++
	}
	sendFor := func(d time.Duration) {
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
			sendOne()
		}
	}

	sendFor(3 * time.Second) // Cassandra up: the edge learns alice is a member
	stack(t, "down", "cassandra")
	outage, before := time.Now(), sent
	sendFor(20 * time.Second)
	during := sent - before
	time.Sleep(time.Second)
	mu.Lock()
	liveDuring := len(received) - before
	mu.Unlock()
	stack(t, "up", "cassandra")
	// Messaging goes on while Cassandra is down: the sequencer and the fan-out need only the
	// log and their caches (the first design delivered nothing until Cassandra was back).
	if liveDuring < during/2 {
		t.Errorf("bob received %d of the %d messages sent while Cassandra was down before it came back; want delivery to go on", liveDuring, during)
	}
	t.Logf("Cassandra was down for %v", time.Since(outage).Round(time.Second))
	sendFor(3 * time.Second)

	if !teststack.Eventually(t, 30*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(accepted) == sent }) {
		mu.Lock()
		t.Fatalf("%d of %d sends accepted; errors: %+v", len(accepted), sent, failures)
	}
	if !teststack.Eventually(t, 120*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(received) >= sent }) {
		mu.Lock()
		t.Fatalf("bob received %d of %d messages within 2 minutes of Cassandra's return", len(received), sent)
	}
	time.Sleep(time.Second) // a duplicate would arrive by now
	mu.Lock()
	defer mu.Unlock()
	if len(failures) > 0 {
		t.Errorf("sends answered with errors: %+v", failures)
	}
	if len(received) != sent {
		t.Errorf("bob received %d messages; want %d (duplicates?)", len(received), sent)
	}
	for i, f := range received {
		if f.Seq != int64(i+1) || f.Body != strconv.Itoa(i) {
			t.Fatalf("bob's message %d: seq %d body %q; want seq %d body %q (gap, duplicate or reordering)", i, f.Seq, f.Body, i+1, strconv.Itoa(i))
		}
	}
	t.Logf("%d messages sent, %d while Cassandra was stopped (%d of those delivered live before it came back); all accepted, sequenced and delivered in order", sent, during, liveDuring)
}

// Redis stopped: presence answers "unknown" while messages still flow; Redis restarted empty:
// the presence state is rebuilt by the next heartbeat, and nobody's presence flapped.
func TestOutageOfRedis(t *testing.T) {
	id := teststack.ID(t)
	const heartbeat, openFor = 500 * time.Millisecond, time.Second
	vars := map[string]string{
		"PARLEY_AUTH_HS256_SECRET":  testSecret,
		"PARLEY_CASSANDRA_KEYSPACE": teststack.Keyspace, "PARLEY_CASSANDRA_CONSISTENCY": "ONE", "PARLEY_LOG_LEVEL": "error",
		"PARLEY_DELIVERY_STREAM": "T_" + id, "PARLEY_DELIVERY_SUBJECT_PREFIX": "test." + id + ".", "PARLEY_EDGE_DRAIN_WINDOW": "200ms",
		"PARLEY_PRESENCE_TTL": "2s", "PARLEY_PRESENCE_HEARTBEAT": heartbeat.String(), "PARLEY_PRESENCE_GRACE": "500ms",
		"PARLEY_CASSANDRA_BREAKER_OPEN_FOR": openFor.String(), "PARLEY_REDIS_DIAL_TIMEOUT": "200ms",
	}
	_, public := startParleyd(t, vars, func() { stack(t, "up", "redis") })
	a, _ := auth.New(auth.Config{HS256Secret: []byte(testSecret)}, nil)
	alice, bob := chat.UserID(id+"_alice"), chat.UserID(id+"_bob")
	rest := func(user chat.UserID, method, path, body string) (int, string) {
		status, data := restCall(t, a, public, user, method, path, body)
		return status, string(data)
	}
	status, body := rest(alice, "POST", "/v1/conversations", `{"kind":"direct","with":"`+string(bob)+`"}`)
	var conv struct{ ID string }
	if err := json.Unmarshal([]byte(body), &conv); err != nil || status != http.StatusCreated {
		t.Fatalf("create conversation: %d %s", status, body)
	}
	dial := func(u chat.UserID) *websocket.Conn { return dialEdge(t, a, public, u, "phone") }
	// Bob's frames are read in the background; alice's presence events are counted.
	wsBob := dial(bob)
	var (
		mu        sync.Mutex
		frames    []protocol.Frame
		presences int
	)
	go func() {
		for {
			var f protocol.Frame
			if wsBob.ReadJSON(&f) != nil {
				return
			}
			mu.Lock()
			frames = append(frames, f)
			if f.Type == protocol.TypePresence && f.ID == "" {
				presences++
			}
			mu.Unlock()
		}
	}()
	find := func(ok func(protocol.Frame) bool) (protocol.Frame, bool) {
		mu.Lock()
		defer mu.Unlock()
		for _, f := range frames {
			if ok(f) {
				return f, true
			}
		}
		return protocol.Frame{}, false
	}
	wsAlice := dial(alice)
	// Alice's session reaches Redis in the edge's next presence batch: wait for it, so that
	// bob's snapshot is taken after it.
	if !teststack.Eventually(t, 10*time.Second, func() bool {
		status, body := rest(bob, "GET", "/v1/presence?user="+string(alice), "")
		return status == http.StatusOK && strings.Contains(body, `"online"`)
	}) {
		t.Fatal("alice never online through the REST API")
	}
	if err := wsBob.WriteJSON(protocol.Frame{Type: protocol.TypePresenceSubscribe, ID: "p1", Users: []string{string(alice)}}); err != nil {
		t.Fatal(err)
	}
	if !teststack.Eventually(t, 10*time.Second, func() bool {
		f, ok := find(func(f protocol.Frame) bool { return f.ID == "p1" })
		return ok && len(f.Presence) == 1 && f.Presence[0].State == protocol.PresenceOnline
	}) {
		t.Fatal("snapshot never said alice is online")
	}
	// Alice's own connect publishes "online" through NATS, which may reach bob just after his
	// snapshot: the baseline is taken once no presence event has come for half a second.
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return presences
	}
	before, quietSince := count(), time.Now()
	teststack.Eventually(t, 5*time.Second, func() bool {
		if n := count(); n != before {
			before, quietSince = n, time.Now()
		}
		return time.Since(quietSince) >= 500*time.Millisecond
	})

	stack(t, "down", "redis")
	if !teststack.Eventually(t, 10*time.Second, func() bool {
		_, body := rest(bob, "GET", "/v1/presence?user="+string(alice), "")
		return strings.Contains(body, `"state":"unknown"`)
	}) {
		t.Error("GET /v1/presence never answered unknown with Redis stopped")
	}
	if err := wsBob.WriteJSON(protocol.Frame{Type: protocol.TypePresenceSubscribe, ID: "p2", Users: []string{string(alice)}}); err != nil {
		t.Fatal(err)
	}
	if !teststack.Eventually(t, 10*time.Second, func() bool {
		f, ok := find(func(f protocol.Frame) bool { return f.ID == "p2" })
		return ok && len(f.Presence) == 1 && f.Presence[0].State == protocol.PresenceUnknown
	}) {
		t.Error("a snapshot with Redis stopped did not say unknown")
	}
	// Messaging does not need Redis.
	if err := wsAlice.WriteJSON(protocol.Frame{Type: protocol.TypeSend, ID: "s1", Conversation: conv.ID,
		ClientMsgID: chat.NewConversationID().String(), Body: "redis is down"}); err != nil {
		t.Fatal(err)
	}
	if !teststack.Eventually(t, 20*time.Second, func() bool {
		_, ok := find(func(f protocol.Frame) bool { return f.Type == protocol.TypeMessage && f.Body == "redis is down" })
		return ok
	}) {
		t.Error("a message sent while Redis was stopped did not arrive")
	}

	stack(t, "up", "redis") // empty: it keeps nothing on disk
	back := time.Now()
	if !teststack.Eventually(t, 10*time.Second, func() bool {
		_, body := rest(bob, "GET", "/v1/presence?user="+string(alice), "")
		return strings.Contains(body, `"state":"online"`)
	}) {
		t.Fatal("presence not rebuilt after Redis restarted empty")
	}
	took := time.Since(back)
	t.Logf("presence rebuilt %v after Redis was back (heartbeat %v, breaker open-for %v)", took.Round(10*time.Millisecond), heartbeat, openFor)
	if took > heartbeat+openFor+time.Second {
		t.Errorf("rebuilt after %v; want within a heartbeat once the breaker lets calls through", took)
	}
	time.Sleep(2 * time.Second) // a flap would be published by now
	mu.Lock()
	defer mu.Unlock()
	if presences != before {
		var got []string
		for _, f := range frames {
			if f.Type == protocol.TypePresence && f.ID == "" && len(f.Presence) == 1 {
				got = append(got, string(f.Presence[0].State))
			}
		}
		t.Errorf("bob got %d presence events for alice through the outage (all events: %v); want none (no flap)", presences-before, got)
	}
}
