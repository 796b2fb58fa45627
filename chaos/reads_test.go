package chaos

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/protocol"
)

// The final sync read pages with advancing cursors and waits out a rate_limited refusal
// (a long run's reads hit the edge's frame rate once).
func TestSyncReadPagesAndWaitsOutRateLimits(t *testing.T) {
	const a, b = "c0ffee00-0000-4000-8000-00000000000a", "c0ffee00-0000-4000-8000-00000000000b"
	var (
		mu       sync.Mutex
		requests []protocol.Frame
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up := websocket.Upgrader{Subprotocols: []string{protocol.Subprotocol}}
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		_ = ws.WriteJSON(protocol.Frame{Type: protocol.TypeHello})
		for n := 0; ; n++ {
			var f protocol.Frame
			if ws.ReadJSON(&f) != nil {
				return
			}
			mu.Lock()
			requests = append(requests, f)
			mu.Unlock()
			msg := func(conv string, seq int64) protocol.Message {
				return protocol.Message{Conversation: conv, Seq: seq, Sender: "alice", ClientMsgID: "m", Kind: "text"}
			}
			switch n {
			case 0:
				_ = ws.WriteJSON(protocol.Frame{Type: protocol.TypeMessage, Conversation: a, Seq: 9}) // a live push: skipped
				_ = ws.WriteJSON(protocol.Frame{Type: protocol.TypeSyncResult, ID: f.ID, More: true, Since: "s0",
					Messages: []protocol.Message{msg(a, 1), msg(a, 2)}})
			case 1:
				_ = ws.WriteJSON(protocol.Frame{Type: protocol.TypeError, ID: f.ID, Code: protocol.CodeRateLimited, Retryable: true, RetryAfterMS: 10})
			case 2:
				_ = ws.WriteJSON(protocol.Frame{Type: protocol.TypeSyncResult, ID: f.ID, Since: "s1",
					Messages: []protocol.Message{msg(a, 3), msg(b, 1)}})
			}
		}
	}))
	defer srv.Close()
	w, err := NewWorkload(WorkloadConfig{Edges: []string{"ws" + strings.TrimPrefix(srv.URL, "http")}, API: srv.URL,
		Secret: []byte("0123456789abcdef0123456789abcdef")})
	if err != nil {
		t.Fatal(err)
	}
	reads, err := w.syncRead(context.Background(), "alice", []string{a, b})
	if err != nil {
		t.Fatal(err)
	}
	if len(reads) != 2 || len(reads[0].Entries) != 3 || len(reads[1].Entries) != 1 || !reads[0].Final || reads[0].Source != "sync alice" {
		t.Fatalf("reads %+v", reads)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(requests) != 3 {
		t.Fatalf("%d requests, want 3 (page, refused page, page again)", len(requests))
	}
	second := requests[1]
	if second.Since != "s0" || second.Cursors[0] != (protocol.Cursor{Conversation: a, Seq: 2}) || second.Cursors[1] != (protocol.Cursor{Conversation: b}) {
		t.Errorf("second page asked with since %q cursors %v", second.Since, second.Cursors)
	}
	if requests[2].Since != second.Since || requests[2].ID != second.ID {
		t.Errorf("the refused page was not asked again unchanged: %+v", requests[2])
	}
}
