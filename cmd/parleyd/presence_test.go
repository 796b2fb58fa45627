package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/teststack"
	"github.com/parleyhq/parley/protocol"
)

// Presence and typing through whole parleyd processes: a watcher sees a member come online
// and go offline (after the grace period), a stranger may not watch nor type, typing reaches
// the other member, and an edge process killed with SIGKILL takes its users offline within
// TTL + heartbeat.
func TestPresenceAndTyping(t *testing.T) {
	id := teststack.ID(t)
	const ttl, heartbeat, grace = 2 * time.Second, 500 * time.Millisecond, 500 * time.Millisecond
	vars := map[string]string{
		"PARLEY_AUTH_HS256_SECRET": testSecret, "PARLEY_LOG_LEVEL": "warn", "PARLEY_EDGE_DRAIN_WINDOW": "200ms",
		"PARLEY_CASSANDRA_KEYSPACE": teststack.Keyspace, "PARLEY_CASSANDRA_CONSISTENCY": "ONE",
		"PARLEY_DELIVERY_STREAM": "T_" + id, "PARLEY_DELIVERY_SUBJECT_PREFIX": "test." + id + ".",
		"PARLEY_PRESENCE_TTL": ttl.String(), "PARLEY_PRESENCE_HEARTBEAT": heartbeat.String(), "PARLEY_PRESENCE_GRACE": grace.String(),
	}
	_, public := startParleyd(t, vars, nil)
	a, _ := auth.New(auth.Config{HS256Secret: []byte(testSecret)}, nil)
	alice, bob, carol := chat.UserID(id+"_alice"), chat.UserID(id+"_bob"), chat.UserID(id+"_carol")
	rest := func(user chat.UserID, method, path, body string) (int, []byte) {
		return restCall(t, a, public, user, method, path, body)
	}
	status, data := rest(alice, "POST", "/v1/conversations", `{"kind":"direct","with":"`+string(bob)+`"}`)
	var conv struct{ ID string }
	if err := json.Unmarshal(data, &conv); err != nil || status != http.StatusCreated {
		t.Fatalf("create conversation: %d %s", status, data)
	}
	dial := func(addr string, u chat.UserID, device string) *websocket.Conn {
		return dialEdge(t, a, addr, u, device)
	}
	// next returns the next frame of c that ok accepts, failing after within.
	next := func(c *websocket.Conn, within time.Duration, ok func(protocol.Frame) bool) protocol.Frame {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(within))
		for {
			var f protocol.Frame
			if err := c.ReadJSON(&f); err != nil {
				t.Fatalf("waiting for a frame: %v", err)
			}
			if ok(f) {
				return f
			}
		}
	}
	reply := func(id string) func(protocol.Frame) bool { return func(f protocol.Frame) bool { return f.ID == id } }
	presenceOf := func(u chat.UserID) func(protocol.Frame) bool {
		return func(f protocol.Frame) bool {
			return f.Type == protocol.TypePresence && f.ID == "" && len(f.Presence) == 1 && f.Presence[0].User == string(u)
		}
	}

	wsBob := dial(public, bob, "phone")
	if err := wsBob.WriteJSON(protocol.Frame{Type: protocol.TypePresenceSubscribe, ID: "p1", Users: []string{string(alice)}}); err != nil {
		t.Fatal(err)
	}
	snap := next(wsBob, 10*time.Second, reply("p1"))
	if snap.Type != protocol.TypePresence || len(snap.Presence) != 1 || snap.Presence[0].State != protocol.PresenceOffline {
		t.Fatalf("snapshot: %+v; want alice offline", snap)
	}
	wsCarol := dial(public, carol, "phone")
	if err := wsCarol.WriteJSON(protocol.Frame{Type: protocol.TypePresenceSubscribe, ID: "p2", Users: []string{string(alice)}}); err != nil {
		t.Fatal(err)
	}
	if f := next(wsCarol, 10*time.Second, reply("p2")); f.Type != protocol.TypeError || f.Code != protocol.CodeForbidden {
		t.Errorf("a stranger's subscribe: %+v; want forbidden", f)
	}

	// Alice connects: bob sees her online. She types: bob sees it; carol may not type there.
	wsAlice := dial(public, alice, "laptop")
	if f := next(wsBob, 10*time.Second, presenceOf(alice)); f.Presence[0].State != protocol.PresenceOnline {
		t.Errorf("bob got %+v; want alice online", f)
	}
	if err := wsAlice.WriteJSON(protocol.Frame{Type: protocol.TypeTyping, ID: "t1", Conversation: conv.ID}); err != nil {
		t.Fatal(err)
	}
	if f := next(wsAlice, 10*time.Second, reply("t1")); f.Type != protocol.TypeOK {
		t.Errorf("reply to typing: %+v; want ok", f)
	}
	if f := next(wsBob, 10*time.Second, func(f protocol.Frame) bool { return f.Type == protocol.TypeTyping }); f.User != string(alice) || f.Conversation != conv.ID {
		t.Errorf("bob got typing %+v; want alice's in the conversation", f)
	}
	if err := wsCarol.WriteJSON(protocol.Frame{Type: protocol.TypeTyping, ID: "t2", Conversation: conv.ID}); err != nil {
		t.Fatal(err)
	}
	// Carol's next frame is the answer to her own typing: she received nothing of alice's.
	if f := next(wsCarol, 10*time.Second, func(f protocol.Frame) bool {
		if f.Type == protocol.TypeTyping {
			t.Errorf("a stranger received typing %+v", f)
		}
		return f.ID == "t2"
	}); f.Type != protocol.TypeError || f.Code != protocol.CodeNotFound {
		t.Errorf("a stranger's typing: %+v; want not_found", f)
	}
	if status, data := rest(bob, "GET", "/v1/presence?user="+string(alice), ""); status != http.StatusOK || !strings.Contains(string(data), `"state":"online"`) {
		t.Errorf("GET /v1/presence as bob: %d %s; want alice online", status, data)
	}
	if status, _ := rest(carol, "GET", "/v1/presence?user="+string(alice), ""); status != http.StatusForbidden {
		t.Errorf("GET /v1/presence as a stranger: %d; want 403", status)
	}

	// Alice's only device goes: offline after the grace period, with her last seen.
	wsAlice.Close()
	if f := next(wsBob, grace+10*time.Second, presenceOf(alice)); f.Presence[0].State != protocol.PresenceOffline || f.Presence[0].LastSeen == 0 {
		t.Errorf("bob got %+v; want alice offline with a last seen", f)
	}

	// Alice on another edge process, which is then killed: offline within TTL + heartbeat.
	child := startProcess(t, vars, "run", "--roles=edge")
	dial(child.public, alice, "tablet")
	if f := next(wsBob, 10*time.Second, presenceOf(alice)); f.Presence[0].State != protocol.PresenceOnline {
		t.Fatalf("bob got %+v; want alice online again", f)
	}
	child.kill()
	killed := time.Now()
	if f := next(wsBob, ttl+heartbeat+10*time.Second, presenceOf(alice)); f.Presence[0].State != protocol.PresenceOffline {
		t.Errorf("bob got %+v; want alice offline after her edge died", f)
	}
	took := time.Since(killed)
	t.Logf("offline %v after the edge process was killed (TTL %v, heartbeat %v)", took.Round(10*time.Millisecond), ttl, heartbeat)
	if took > ttl+heartbeat+time.Second {
		t.Errorf("offline %v after the kill; want within TTL + heartbeat (+ one sweep)", took)
	}
}

// A watcher of 1,000 users whose edge process is killed with SIGKILL: their sessions expire
// together and the 1,000 offline transitions reach the watcher's edge in one burst, far more
// than its queue's 256 frames (the default). The watcher still ends with every one of them
// offline, each last seen at the dead edge's last heartbeat (within one heartbeat interval
// before the kill), not when the sweeper noticed. A presence.resync is answered as the SDK
// does, with a fresh snapshot.
func TestPresenceBurstFromKilledEdge(t *testing.T) {
	id := teststack.ID(t)
	const ttl, heartbeat, grace = 2 * time.Second, 500 * time.Millisecond, 500 * time.Millisecond
	const users = 1000
	vars := map[string]string{
		"PARLEY_AUTH_HS256_SECRET": testSecret, "PARLEY_LOG_LEVEL": "warn", "PARLEY_EDGE_DRAIN_WINDOW": "200ms",
		"PARLEY_CASSANDRA_KEYSPACE": teststack.Keyspace, "PARLEY_CASSANDRA_CONSISTENCY": "ONE",
		"PARLEY_DELIVERY_STREAM": "T_" + id, "PARLEY_DELIVERY_SUBJECT_PREFIX": "test." + id + ".",
		"PARLEY_PRESENCE_TTL": ttl.String(), "PARLEY_PRESENCE_HEARTBEAT": heartbeat.String(), "PARLEY_PRESENCE_GRACE": grace.String(),
		"PARLEY_PRESENCE_POLICY": "anyone",
		// A Redis database of its own: every parleyd's sweeper takes any expired session of its
		// database offline and dates it by its own TTL, and the other tests' parleyd (30 s TTL)
		// share database 0; one of them sweeping first dated 87 of these users 28 s early.
		"PARLEY_REDIS_DB": "7",
	}
	_, public := startParleyd(t, vars, nil)
	child := startProcess(t, vars, "run", "--roles=edge")
	a, _ := auth.New(auth.Config{HS256Secret: []byte(testSecret)}, nil)
	names := make([]string, users)
	for i := range names {
		names[i] = fmt.Sprintf("%s_u%04d", id, i)
	}
	// Every watched user connects to the edge that will be killed (never read again: the
	// process dies).
	for _, u := range names {
		dialEdge(t, a, child.public, chat.UserID(u), "phone")
	}

	watcher := dialEdge(t, a, public, chat.UserID(id+"_watcher"), "phone")
	state := map[string]protocol.PresenceState{}
	subscribe := func() {
		for i := 0; i < users; i += protocol.MaxUsersPerCall {
			f := protocol.Frame{Type: protocol.TypePresenceSubscribe, ID: "p" + strconv.Itoa(i), Users: names[i:min(i+protocol.MaxUsersPerCall, users)]}
			if err := watcher.WriteJSON(f); err != nil {
				t.Fatal(err)
			}
		}
	}
	resyncs := 0
	// until reads the watcher's frames, applying snapshots and updates, until every user is in
	// want or the time is up.
	until := func(want string, within time.Duration) int {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			n := 0
			for _, u := range names {
				if state[u].State == want {
					n++
				}
			}
			if n == users || time.Now().After(deadline) {
				return n
			}
			_ = watcher.SetReadDeadline(deadline)
			var f protocol.Frame
			if err := watcher.ReadJSON(&f); err != nil {
				return n
			}
			switch f.Type {
			case protocol.TypePresence:
				for _, st := range f.Presence {
					state[st.User] = st
				}
			case protocol.TypePresenceResync:
				resyncs++
				subscribe()
			case protocol.TypeError:
				t.Fatalf("watcher got %+v", f)
			}
		}
	}
	subscribe()
	if n := until(protocol.PresenceOnline, 30*time.Second); n != users {
		t.Fatalf("%d of %d watched users online before the kill", n, users)
	}

	child.kill()
	killed := time.Now()
	n := until(protocol.PresenceOffline, ttl+heartbeat+15*time.Second)
	t.Logf("%d of %d offline %v after the kill; %d presence.resync", n, users, time.Since(killed).Round(10*time.Millisecond), resyncs)
	if n != users {
		t.Fatalf("the watcher shows %d of %d users of the killed edge offline; the rest stay online on its screen", n, users)
	}
	const slack = 100 * time.Millisecond
	late := 0
	for _, u := range names {
		seen := time.UnixMilli(state[u].LastSeen)
		if seen.Before(killed.Add(-heartbeat-slack)) || seen.After(killed.Add(slack)) {
			if late++; late <= 3 {
				t.Errorf("%s last seen %v after the kill; want the dead edge's last heartbeat, within %v before it", u, seen.Sub(killed), heartbeat)
			}
		}
	}
	if late > 0 {
		t.Errorf("%d of %d users have a last seen other than the last heartbeat", late, users)
	}
}
