package inbox_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	gocql "github.com/apache/cassandra-gocql-driver/v2"

	"github.com/parleyhq/parley/history"
	"github.com/parleyhq/parley/inbox"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/teststack"
)

// A user with more conversations than one page's bytes hold syncs from nothing: the pages
// of the catch-up carry every changed conversation once, in id order, each with its unread
// count, every message once and in order, and each page (entries and messages) within
// MaxBytes. A message that arrives during the catch-up in a conversation already passed is
// returned by the next sync, from the final since-token.
func TestSyncPagesConversationsOnce(t *testing.T) {
	in, h := setup(t)
	p := teststack.ID(t)
	me, other := chat.UserID(p+"_me"), chat.UserID(p+"_other")
	const convs = 150
	want := map[chat.ConversationID]int64{} // messages of each conversation
	for i := 0; i < convs; i++ {
		c := createGroup(t, in, h, other, me)
		if n := i % 4; n > 0 {
			appendN(t, in, h, c, other, n)
		}
		last, err := h.LastSeq(bg, c)
		if err != nil {
			t.Fatal(err)
		}
		want[c] = last
	}
	size := func(m chat.Message) int { return 100 + len(m.Body) }
	entrySize := func(chat.Progress) int { return 100 }
	const maxBytes = 4000 // 40 entries, or fewer with messages: several pages

	cursors := map[chat.ConversationID]int64{}
	seen := map[chat.ConversationID]chat.Progress{}
	var res chat.SyncResult
	var prev chat.ConversationID
	page, pages, lateSent := "", 0, false
	var late chat.ConversationID
	for {
		if pages++; pages > 100 {
			t.Fatal("sync does not converge")
		}
		var err error
		res, err = in.Sync(bg, me, chat.SyncRequest{Cursors: cursors, Page: page, Limit: 1000, MaxBytes: maxBytes,
			Size: size, EntrySize: entrySize})
		if err != nil {
			t.Fatal(err)
		}
		page = res.Page
		n := entrySize(chat.Progress{}) * len(res.Conversations)
		for _, e := range res.Conversations {
			if _, dup := seen[e.Conversation]; dup {
				t.Fatalf("page %d: conversation %s returned again", pages, e.Conversation)
			}
			if bytes.Compare(e.Conversation[:], prev[:]) <= 0 {
				t.Fatalf("page %d: conversation %s after %s: not in id order", pages, e.Conversation, prev)
			}
			prev = e.Conversation
			seen[e.Conversation] = e
		}
		if len(res.Conversations) > chat.MaxSyncConversations {
			t.Errorf("page %d: %d entries; want at most %d", pages, len(res.Conversations), chat.MaxSyncConversations)
		}
		for _, m := range res.Messages {
			if m.Seq != cursors[m.Conversation]+1 {
				t.Fatalf("conversation %s: seq %d after cursor %d (gap, duplicate or disorder)", m.Conversation, m.Seq, cursors[m.Conversation])
			}
			if _, ok := seen[m.Conversation]; !ok {
				t.Fatalf("page %d: a message of %s before its entry", pages, m.Conversation)
			}
			cursors[m.Conversation] = m.Seq
			n += size(m)
		}
		if n > maxBytes {
			t.Errorf("page %d: %d entries and %d messages, %d bytes; want at most %d", pages, len(res.Conversations), len(res.Messages), n, maxBytes)
		}
		if !res.More {
			break
		}
		if res.Page == "" {
			t.Fatalf("page %d has more and no page token", pages)
		}
		if !lateSent && len(res.Conversations) >= 2 {
			// A message arrives in a conversation this catch-up has passed.
			late, lateSent = res.Conversations[0].Conversation, true
			appendN(t, in, h, late, other, 1)
		}
	}
	if pages < 4 {
		t.Errorf("%d pages for %d entries of 100 bytes in pages of %d bytes; want at least 4", pages, convs, maxBytes)
	}
	if len(seen) != convs {
		t.Errorf("%d conversations returned; want %d", len(seen), convs)
	}
	for c, last := range want {
		if cursors[c] != last {
			t.Errorf("conversation %s synced to %d; want %d", c, cursors[c], last)
		}
		// Unread: the other member's texts, all of the conversation's messages here.
		if e := seen[c]; e.LastSeq != last || e.Unread != last {
			t.Errorf("conversation %s: entry %+v; want last seq and unread %d", c, e, last)
		}
	}
	// The final since-token stands for the catch-up's start: the late message comes back.
	next, err := in.Sync(bg, me, chat.SyncRequest{Since: res.Since, Cursors: cursors, Limit: 1000, MaxBytes: maxBytes,
		Size: size, EntrySize: entrySize})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range next.Conversations {
		found = found || e.Conversation == late
	}
	if !lateSent || !found || len(next.Messages) != 1 || next.Messages[0].Conversation != late || next.Messages[0].Seq != want[late]+1 {
		t.Errorf("the sync after the catch-up: %d entries, %d messages; want the late conversation %s and its message %d",
			len(next.Conversations), len(next.Messages), late, want[late]+1)
	}
}

// A page token is bound to the user it was issued to; a tampered one is refused.
func TestSyncPageTokenIsSignedForTheUser(t *testing.T) {
	in, h := setup(t)
	p := teststack.ID(t)
	me, other := chat.UserID(p+"_me"), chat.UserID(p+"_other")
	for i := 0; i < 3; i++ {
		createGroup(t, in, h, other, me)
	}
	res, err := in.Sync(bg, me, chat.SyncRequest{MaxBytes: 1, Size: func(chat.Message) int { return 1 },
		EntrySize: func(chat.Progress) int { return 1 }})
	if err != nil || !res.More || res.Page == "" || len(res.Conversations) != 1 {
		t.Fatalf("first page = %d entries, more %v, page %q, %v; want 1 entry and a page token", len(res.Conversations), res.More, res.Page, err)
	}
	for name, tc := range map[string]struct {
		user chat.UserID
		page string
	}{
		"another user's": {other, res.Page},
		"tampered":       {me, res.Page[:len(res.Page)-2] + "AA"},
		"a since-token":  {me, "k1.x.y"},
	} {
		if _, err := in.Sync(bg, tc.user, chat.SyncRequest{Page: tc.page}); !errors.Is(err, chat.ErrInvalid) {
			t.Errorf("%s page token: %v; want chat.ErrInvalid", name, err)
		}
	}
}

// Counting the unread of a conversation with many events after the read position reads at
// most chat.MaxUnreadScan rows and answers chat.MaxUnread ("that many or more"), whatever
// lies after them.
func TestUnreadScanIsBounded(t *testing.T) {
	in, h := setup(t)
	// A second inbox on a session that counts the rows the unread count reads.
	var rows atomic.Int64
	cfg := teststack.CassandraConfig()
	cl := gocql.NewCluster(cfg.Hosts...)
	cl.Keyspace, cl.Consistency, cl.Timeout = teststack.Keyspace, gocql.One, 10*time.Second
	cl.QueryObserver = observer(func(q gocql.ObservedQuery) {
		if strings.HasPrefix(q.Statement, "SELECT kind, sender_id FROM messages") {
			rows.Add(int64(q.Rows))
		}
	})
	s, err := cl.CreateSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	counted, err := history.New(s, history.Config{})
	if err != nil {
		t.Fatal(err)
	}
	counting := inbox.New(s, counted, inbox.Config{Cursors: testKeys(t, "k1")})

	p := teststack.ID(t)
	me, other := chat.UserID(p+"_me"), chat.UserID(p+"_other")
	conv := createDirect(t, in, h, me, other)
	appendN(t, in, h, conv, other, 1) // one text, then reactions to it, then one text
	const events = chat.MaxUnreadScan + 500
	last, _ := h.LastSeq(bg, conv)
	var ms []chat.Message
	for i := 1; i <= events+1; i++ {
		m := chat.Message{Conversation: conv, Seq: last + int64(i), Kind: chat.MessageReaction, Sender: other,
			TargetSeq: last, Body: "👍", CreatedAt: time.Now()}
		if i == events+1 {
			m.Kind, m.TargetSeq, m.Body = chat.MessageText, 0, "the last"
		}
		binary.BigEndian.PutUint64(m.ClientMsgID[8:], uint64(m.Seq))
		ms = append(ms, m)
	}
	for i := 0; i < len(ms); i += 250 {
		if err := h.Put(bg, conv, ms[i:min(i+250, len(ms))]); err != nil {
			t.Fatal(err)
		}
	}
	touch(t, in, h, ms[len(ms)-1])

	for _, read := range []struct {
		name      string
		seq       int64
		wantCount int64
	}{
		{"far behind", 0, chat.MaxUnread},           // more than MaxUnreadScan seqs after the read position
		{"near the end", last + 500 + 1, 1},         // MaxUnreadScan seqs: counted exactly
		{"at the end", last + int64(events) + 1, 0}, // nothing to read
	} {
		if read.seq > 0 {
			if _, _, err := in.MarkRead(bg, me, conv, read.seq); err != nil {
				t.Fatal(err)
			}
		}
		rows.Store(0)
		began := time.Now()
		list, err := counting.List(bg, me)
		took := time.Since(began)
		if err != nil || len(list) != 1 {
			t.Fatalf("%s: List = %d entries, %v", read.name, len(list), err)
		}
		got := rows.Load()
		t.Logf("%s (read at %d, last %d): unread %d, %d rows read, in %v", read.name, list[0].ReadSeq, list[0].LastSeq, list[0].Unread, got, took)
		if list[0].Unread != read.wantCount {
			t.Errorf("%s: unread %d; want %d", read.name, list[0].Unread, read.wantCount)
		}
		if got > chat.MaxUnreadScan {
			t.Errorf("%s: the unread count read %d rows; want at most %d", read.name, got, chat.MaxUnreadScan)
		}
	}
}

type observer func(gocql.ObservedQuery)

func (o observer) ObserveQuery(_ context.Context, q gocql.ObservedQuery) { o(q) }
