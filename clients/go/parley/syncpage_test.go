package parley

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/protocol"
)

// A new device catching up on more conversations than a sync may carry cursors for (1,500
// conversations with a message each, 100 a page) pages through with the page tokens and
// leaves out the cursors of the conversations the catch-up has passed: no request has more
// than protocol.MaxCursors cursors (the server refuses those), and every message arrives once.
// Before, the pages after the tenth asked with every cursor so far and were refused.
func TestCatchUpLeavesOutPassedCursors(t *testing.T) {
	const convs, perPage = 1500, 100
	conv := func(i int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012d", i) }
	up := websocket.Upgrader{Subprotocols: []string{protocol.Subprotocol}}
	var (
		mu         sync.Mutex
		maxCursors int
	)
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
			switch f.Type {
			case protocol.TypeSync:
				mu.Lock()
				maxCursors = max(maxCursors, len(f.Cursors))
				mu.Unlock()
				if len(f.Cursors) > protocol.MaxCursors {
					_ = ws.WriteJSON(protocol.Frame{Type: protocol.TypeError, ID: f.ID, Code: protocol.CodeBadRequest,
						Message: fmt.Sprintf("%d cursors, at most %d allowed", len(f.Cursors), protocol.MaxCursors)})
					continue
				}
				from := 0
				if f.Page != "" {
					from, _ = strconv.Atoi(strings.TrimPrefix(f.Page, "p"))
				}
				res := protocol.Frame{Type: protocol.TypeSyncResult, ID: f.ID, Since: "done"}
				held := map[string]int64{}
				for _, c := range f.Cursors {
					held[c.Conversation] = c.Seq
				}
				for i := from; i < min(from+perPage, convs); i++ {
					res.Conversations = append(res.Conversations, protocol.Conversation{Conversation: conv(i), LastSeq: 1})
					if held[conv(i)] < 1 {
						res.Messages = append(res.Messages, protocol.Message{Conversation: conv(i), Seq: 1, Sender: "bob", Kind: "text", Body: "hi"})
					}
				}
				if from+perPage < convs {
					res.More, res.Page, res.Since = true, "p"+strconv.Itoa(from+perPage), ""
				}
				_ = ws.WriteJSON(res)
			case protocol.TypePing:
				_ = ws.WriteJSON(protocol.Frame{Type: protocol.TypePong, ID: f.ID})
			}
		}
	}))
	defer srv.Close()
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/v1/ws"
	c, err := Dial(context.Background(), url, WithToken(StaticToken("t")), WithDevice("d"), WithAutoAck(false))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := map[string]int{}
	deadline := time.After(20 * time.Second)
	for connected := false; !connected || len(got) < convs; {
		select {
		case e := <-c.Events():
			switch {
			case e.Kind == EventMessage:
				got[e.Message.Conversation]++
			case e.Kind == EventState && e.State == Connected:
				connected = true
			}
		case <-deadline:
			mu.Lock()
			defer mu.Unlock()
			t.Fatalf("messages of %d of %d conversations; the largest sync had %d cursors", len(got), convs, maxCursors)
		}
	}
	for conv, n := range got {
		if n != 1 {
			t.Errorf("%s: %d messages; want 1", conv, n)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if maxCursors > protocol.MaxCursors {
		t.Errorf("a sync with %d cursors; at most %d allowed", maxCursors, protocol.MaxCursors)
	}
}
