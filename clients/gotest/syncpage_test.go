package gotest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/clients/go/parley"
	"github.com/parleyhq/parley/internal/teststack"
	"github.com/parleyhq/parley/protocol"
)

// rawPage is a sync.result as the wire carries it (its own type, so that the test reads any
// server's answer the same way).
type rawPage struct {
	Type          string `json:"type"`
	ID            string `json:"id"`
	Code          string `json:"code"`
	Message       string `json:"message"`
	Since         string `json:"since"`
	Page          string `json:"page"`
	More          bool   `json:"more"`
	Conversations []struct {
		Conversation string `json:"conversation"`
		LastSeq      int64  `json:"last_seq"`
		Unread       int64  `json:"unread"`
	} `json:"conversations"`
	Messages []struct {
		Conversation string `json:"conversation"`
		Seq          int64  `json:"seq"`
		Body         string `json:"body"`
	} `json:"messages"`
}

// A user in more conversations than one sync.result page holds (250 groups, about 22 KB of
// entries, in pages of 16 KiB) syncs from nothing, by raw frames and through the SDK. The
// pages of the catch-up carry every conversation once and every message once, in order; every
// page, its entries included, is within the page size, except a page of one message larger
// than it. Before, every page repeated all 250 entries: the first page alone was over the size.
func TestSyncManyConversationsInBytePages(t *testing.T) {
	const pageBytes = 16 << 10
	s := startServerWith(t, fmt.Sprintf("PARLEY_EDGE_SYNC_PAGE_BYTES=%d", pageBytes))
	alice, bob := users(t)
	ca := dial(t, s, alice)
	ka := collect(ca)
	defer func() { ca.Close(); <-ka.done }()
	ctx := context.Background()
	const groups = 250
	var convs []string
	for i := 0; i < groups; i++ {
		// 250 requests from one user go over the API's per-user rate (20 a second) when the
		// server is quick: wait as its Retry-After says, as an app would.
		var g parley.Conversation
		var err error
		for {
			g, err = ca.REST().CreateGroup(ctx, fmt.Sprintf("g%03d", i), string(bob))
			var apiErr *parley.APIError
			if errors.As(err, &apiErr) && apiErr.Status == http.StatusTooManyRequests {
				time.Sleep(max(apiErr.RetryAfter, 100*time.Millisecond))
				continue
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		convs = append(convs, g.ID)
	}
	// Messages in one conversation in eight: two of 1.5 KiB, and one of 16,000 bytes (its JSON
	// is larger than a page) in the first.
	want := map[string]int{}
	sent := 0
	for i := 0; i < groups; i += 8 {
		bodies := []string{strings.Repeat("a", 1536), strings.Repeat("b", 1536)}
		if i == 0 {
			bodies = append(bodies, strings.Repeat("c", 16000))
		}
		for _, b := range bodies {
			if _, err := ca.Send(ctx, convs[i], b); err != nil {
				t.Fatal(err)
			}
			want[convs[i]]++
			sent++
		}
	}
	if !teststack.Eventually(t, 60*time.Second, func() bool { _, acc := ka.count(); return acc == sent }) {
		t.Fatalf("alice: %v accepted of %d", fmt.Sprint(ka.count()), sent)
	}

	// Raw frames: page through a catch-up from nothing, as docs/protocol.md says.
	tok, _ := minter.Mint(bob, "raw", time.Hour)
	d := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}}
	ws, _, err := d.Dial(s.url(), http.Header{"Authorization": {"Bearer " + tok}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	catchUp := func(attempt int) (entries int, messages int) {
		seen := map[string]bool{}
		cursors := map[string]int64{}
		page := ""
		for n := 1; ; n++ {
			if n > 200 {
				t.Fatal("the catch-up does not end")
			}
			req := map[string]any{"type": "sync", "id": fmt.Sprintf("a%d-p%d", attempt, n), "limit": 1000}
			if page != "" {
				req["page"] = page
			}
			var cs []protocol.Cursor
			for c, s := range cursors {
				cs = append(cs, protocol.Cursor{Conversation: c, Seq: s})
			}
			if len(cs) > 0 {
				req["cursors"] = cs
			}
			time.Sleep(60 * time.Millisecond) // under the edge's 20 frames a second, over many attempts
			if err := ws.WriteJSON(req); err != nil {
				t.Fatal(err)
			}
			var res rawPage
			var size int
			_ = ws.SetReadDeadline(time.Now().Add(20 * time.Second))
			for res.ID != req["id"] {
				_, data, err := ws.ReadMessage()
				if err != nil {
					t.Fatalf("page %d: %v", n, err)
				}
				res = rawPage{}
				if err := json.Unmarshal(data, &res); err != nil {
					t.Fatal(err)
				}
				size = len(data)
			}
			if res.Type != "sync.result" {
				t.Fatalf("page %d: %s %s %s", n, res.Type, res.Code, res.Message)
			}
			if size > pageBytes && (len(res.Messages) != 1 || len(res.Conversations) != 0) {
				t.Fatalf("page %d is %d bytes (%d conversations, %d messages); want at most %d, or one message alone",
					n, size, len(res.Conversations), len(res.Messages), pageBytes)
			}
			for _, c := range res.Conversations {
				if seen[c.Conversation] {
					t.Fatalf("page %d: conversation %s again (%d conversations in the page)", n, c.Conversation, len(res.Conversations))
				}
				seen[c.Conversation] = true
			}
			for _, m := range res.Messages {
				if m.Seq != cursors[m.Conversation]+1 {
					t.Fatalf("page %d: %s seq %d after %d: a gap, a duplicate or disorder", n, m.Conversation, m.Seq, cursors[m.Conversation])
				}
				cursors[m.Conversation] = m.Seq
				messages++
			}
			if !res.More {
				if res.Since == "" {
					t.Fatal("the last page has no since-token")
				}
				t.Logf("attempt %d: %d pages, %d conversations, %d messages", attempt, n, len(seen), messages)
				return len(seen), messages
			}
			page = res.Page
		}
	}
	attempt := 0
	if !teststack.Eventually(t, 60*time.Second, func() bool {
		attempt++
		e, m := catchUp(attempt)
		return e == groups && m == sent
	}) {
		t.Fatalf("the raw catch-up never returned the %d conversations and %d messages", groups, sent)
	}

	// The SDK from an empty store delivers every message once, in order.
	cb := dial(t, s, bob, parley.WithStore(parley.NewMemoryStore()), parley.WithDevice("sdk"))
	kb := collect(cb)
	if !teststack.Eventually(t, 60*time.Second, func() bool { got, _ := kb.count(); return got >= sent }) {
		t.Fatalf("bob's SDK: %v of %d", fmt.Sprint(kb.count()), sent)
	}
	time.Sleep(500 * time.Millisecond) // a duplicate would arrive by now
	cb.Close()
	<-kb.done
	for c, n := range want {
		kb.inOrder(t, c, n)
	}
	if got, _ := kb.count(); got != sent {
		t.Errorf("bob's SDK delivered %d messages; want %d", got, sent)
	}
}
