package parley

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/protocol"
)

// Closing a client while a message waits for the app (the events channel is full) keeps the
// stored cursor at the last message the app was given: the next client on the store is
// given the rest. Before, the waiting message's seq went into the cursor although the app
// never got it, and the next client skipped it for good (the cluster smoke test's device that
// never surfaced seq 103: a push arrived as the harness closed its client).
func TestCloseKeepsTheCursorAtWhatTheAppGot(t *testing.T) {
	const conv, pushes = "00000000-0000-4000-8000-000000000001", 300
	up := websocket.Upgrader{Subprotocols: []string{protocol.Subprotocol}}
	var pushed atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		_ = ws.WriteJSON(protocol.Frame{Type: protocol.TypeHello, Session: "s", User: "me", Device: "d", Version: protocol.Version})
		for {
			var f protocol.Frame
			if ws.ReadJSON(&f) != nil {
				return
			}
			if f.Type != protocol.TypeSync {
				continue
			}
			_ = ws.WriteJSON(protocol.Frame{Type: protocol.TypeSyncResult, ID: f.ID, Since: "done"})
			for seq := int64(1); seq <= pushes; seq++ {
				if ws.WriteJSON(protocol.Frame{Type: protocol.TypeMessage, Conversation: conv, Seq: seq, Sender: "bob", Kind: "text", Body: "hi"}) != nil {
					return
				}
				pushed.Store(seq)
			}
		}
	}))
	defer srv.Close()
	store := NewMemoryStore()
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/v1/ws"
	c, err := Dial(context.Background(), url, WithToken(StaticToken("t")), WithDevice("d"), WithStore(store), WithAutoAck(false))
	if err != nil {
		t.Fatal(err)
	}
	// The app reads nothing until the channel is full and a message waits behind it.
	deadline := time.Now().Add(10 * time.Second)
	for (len(c.Events()) < cap(c.Events()) || pushed.Load() < pushes) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if len(c.Events()) < cap(c.Events()) {
		t.Fatalf("%d events waiting after 10s; want the channel full (%d)", len(c.Events()), cap(c.Events()))
	}
	time.Sleep(100 * time.Millisecond) // the next message reaches the blocked hand-over
	c.Close()
	var got int64
	for e := range c.Events() {
		if e.Kind == EventMessage {
			if e.Message.Seq != got+1 {
				t.Fatalf("seq %d after %d", e.Message.Seq, got)
			}
			got = e.Message.Seq
		}
	}
	st, err := store.Load()
	if err != nil {
		t.Fatal(err)
	}
	if st.Cursors[conv] != got {
		t.Fatalf("stored cursor %d after Close; the app was given up to seq %d: the next client would skip %d..%d", st.Cursors[conv], got, got+1, st.Cursors[conv])
	}
}
