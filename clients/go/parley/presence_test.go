package parley

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/protocol"
)

// After presence.resync (the server lost presence updates to this connection), the client
// takes a fresh snapshot of every user it watches, at most 100 users a frame, and delivers
// it as EventPresence: a user who went offline meanwhile shows offline, though no update said
// so. Unsubscribed users are left out.
func TestPresenceResyncTakesAFreshSnapshot(t *testing.T) {
	up := websocket.Upgrader{Subprotocols: []string{protocol.Subprotocol}}
	var (
		mu       sync.Mutex
		offline  bool  // the server's truth: every watched user went offline
		asked    []int // users per presence.subscribe frame after the resync
		resynced = make(chan struct{})
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		var wmu sync.Mutex
		send := func(f protocol.Frame) {
			wmu.Lock()
			defer wmu.Unlock()
			_ = ws.WriteJSON(f)
		}
		send(protocol.Frame{Type: protocol.TypeHello, Session: "s", User: "me", Device: "d", Version: protocol.Version})
		for {
			var f protocol.Frame
			if ws.ReadJSON(&f) != nil {
				return
			}
			switch f.Type {
			case protocol.TypeSync:
				send(protocol.Frame{Type: protocol.TypeSyncResult, ID: f.ID, Since: "t"})
			case protocol.TypePresenceUnsubscribe:
				send(protocol.Frame{Type: protocol.TypeOK, ID: f.ID})
			case protocol.TypePresenceSubscribe:
				mu.Lock()
				state := protocol.PresenceOnline
				if offline {
					state = protocol.PresenceOffline
					asked = append(asked, len(f.Users))
				}
				mu.Unlock()
				snap := protocol.Frame{Type: protocol.TypePresence, ID: f.ID}
				for _, u := range f.Users {
					snap.Presence = append(snap.Presence, protocol.PresenceState{User: u, State: state, LastSeen: 1})
				}
				send(snap)
			case protocol.TypePing:
				send(protocol.Frame{Type: protocol.TypePong, ID: f.ID})
			}
			select {
			case <-resynced:
				mu.Lock()
				if !offline {
					offline = true
					mu.Unlock()
					send(protocol.Frame{Type: protocol.TypePresenceResync})
					continue
				}
				mu.Unlock()
			default:
			}
		}
	}))
	defer srv.Close()
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/v1/ws"
	c, err := Dial(context.Background(), url, WithToken(StaticToken("t")), WithDevice("d"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitConnected(t, c)
	ctx := context.Background()
	var users []string
	for i := 0; i < 150; i++ {
		users = append(users, fmt.Sprintf("u%03d", i))
	}
	for _, chunk := range [][]string{users[:100], users[100:]} {
		if st, err := c.Subscribe(ctx, chunk...); err != nil || len(st) != len(chunk) {
			t.Fatalf("subscribe: %d states, %v", len(st), err)
		}
	}
	if err := c.Unsubscribe(ctx, "u149"); err != nil {
		t.Fatal(err)
	}
	close(resynced)
	_, _ = c.Subscribe(ctx, "u000") // a frame for the server to answer with presence.resync after

	seen := map[string]string{}
	deadline := time.After(10 * time.Second)
	for len(seen) < 149 {
		select {
		case e := <-c.Events():
			if e.Kind == EventPresence {
				for _, st := range e.Frame.Presence {
					seen[st.User] = st.State
				}
			}
		case <-deadline:
			t.Fatalf("after presence.resync, a fresh state for %d of 149 watched users; want all", len(seen))
		}
	}
	for u, st := range seen {
		if st != protocol.PresenceOffline {
			t.Errorf("%s: %s after the fresh snapshot; want offline", u, st)
		}
	}
	if _, ok := seen["u149"]; ok {
		t.Error("an unsubscribed user was subscribed again")
	}
	mu.Lock()
	defer mu.Unlock()
	total := 0
	for _, n := range asked {
		total += n
		if n > protocol.MaxUsersPerCall {
			t.Errorf("a snapshot request of %d users; at most %d allowed", n, protocol.MaxUsersPerCall)
		}
	}
	if total != 149 {
		t.Errorf("users asked for after the resync: %d; want the 149 watched", total)
	}
}

// waitConnected reads events until the client is connected (its first sync done).
func waitConnected(t *testing.T, c *Client) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case e := <-c.Events():
			if e.Kind == EventState && e.State == Connected {
				return
			}
		case <-deadline:
			t.Fatal("never connected")
		}
	}
}
