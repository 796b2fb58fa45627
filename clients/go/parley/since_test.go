package parley

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/protocol"
)

// A refused since-token is retried from an empty since once per sync, not again and again:
// against a server that refuses every sync, the first connection asks with the token, then
// with "", and gives up (the refusal is logged); the next connection no longer sends the
// token. (clients/gotest tests the recovery against a real parleyd.)
func TestRefusedSinceIsDroppedOnce(t *testing.T) {
	up := websocket.Upgrader{Subprotocols: []string{protocol.Subprotocol}}
	var (
		mu    sync.Mutex
		syncs [][]string // the since of each sync, per connection
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		mu.Lock()
		conn := len(syncs)
		syncs = append(syncs, nil)
		mu.Unlock()
		if ws.WriteJSON(protocol.Frame{Type: protocol.TypeHello, Session: "s", User: "me", Device: "d", Version: protocol.Version}) != nil {
			return
		}
		for {
			var f protocol.Frame
			if ws.ReadJSON(&f) != nil {
				return
			}
			if f.Type == protocol.TypeSync {
				mu.Lock()
				syncs[conn] = append(syncs[conn], f.Since)
				mu.Unlock()
				_ = ws.WriteJSON(protocol.Frame{Type: protocol.TypeError, ID: f.ID, Code: protocol.CodeBadRequest, Message: "since is not a token this server issued to you"})
			}
		}
	}))
	defer srv.Close()
	store := NewMemoryStore()
	if err := store.Save(State{Since: "old", Cursors: map[string]int64{"c": 3}}); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/v1/ws"
	c, err := Dial(context.Background(), url, WithToken(StaticToken("t")), WithDevice("d"), WithStore(store),
		WithBackoff(10*time.Millisecond, 50*time.Millisecond), WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		done := len(syncs) >= 3 && len(syncs[1]) > 0
		mu.Unlock()
		if done || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.Close()
	mu.Lock()
	defer mu.Unlock()
	if len(syncs) < 2 || !slices.Equal(syncs[0], []string{"old", ""}) || !slices.Equal(syncs[1], []string{""}) {
		t.Fatalf("the since of each sync, per connection: %q; want [old \"\"] then [\"\"]", syncs)
	}
	if st, _ := store.Load(); st.Since != "" || st.Cursors["c"] != 3 {
		t.Errorf("stored state: %+v; want the since forgotten, the cursors kept", st)
	}
	if out := logs.String(); !strings.Contains(out, "after the since-token or page token was refused") || !strings.Contains(out, "bad_request") {
		t.Errorf("logs do not show the refusal of the sync from an empty since:\n%s", out)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
