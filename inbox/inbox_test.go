package inbox_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	gocql "github.com/apache/cassandra-gocql-driver/v2"

	"github.com/parleyhq/parley/history"
	"github.com/parleyhq/parley/inbox"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/cursor"
	"github.com/parleyhq/parley/internal/teststack"
)

func setup(t *testing.T) (*inbox.Inbox, *history.Store) {
	t.Helper()
	s := teststack.Cassandra(t)
	h, err := history.New(s, history.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return inbox.New(s, h, inbox.Config{Cursors: testKeys(t, "k1")}), h
}

// createDirect creates a direct conversation and lists it in both inboxes, as the REST API does.
func createDirect(t *testing.T, in *inbox.Inbox, h *history.Store, a, b chat.UserID) chat.ConversationID {
	t.Helper()
	id, _, err := h.CreateDirect(bg, a, b, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Add(bg, history.Conversation{ID: id, Kind: chat.KindDirect}, []chat.UserID{a, b}, time.Now()); err != nil {
		t.Fatal(err)
	}
	return id
}

// createGroup creates a group and lists it in its members' inboxes, as the REST API does.
func createGroup(t *testing.T, in *inbox.Inbox, h *history.Store, owner chat.UserID, members ...chat.UserID) chat.ConversationID {
	t.Helper()
	id, err := h.CreateGroup(bg, owner, "g", members, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Add(bg, history.Conversation{ID: id, Kind: chat.KindGroup, Title: "g"}, append([]chat.UserID{owner}, members...), time.Now()); err != nil {
		t.Fatal(err)
	}
	return id
}

var bg = context.Background()

// testKeys is a cursor key set: the first id signs, every id verifies (each id's secret is
// the id repeated).
func testKeys(t *testing.T, ids ...string) *cursor.Keys {
	t.Helper()
	var keys []cursor.Key
	for _, id := range ids {
		keys = append(keys, cursor.Key{ID: id, Secret: []byte(strings.Repeat(id, 32))})
	}
	ks, err := cursor.NewKeys(keys[0], keys[1:]...)
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

// appendN stores n messages from sender after the conversation's current last seq, and
// writes them into the members' inbox rows, as the delivery worker does.
func appendN(t *testing.T, in *inbox.Inbox, h *history.Store, conv chat.ConversationID, sender chat.UserID, n int) {
	t.Helper()
	last, err := h.LastSeq(bg, conv)
	if err != nil {
		t.Fatal(err)
	}
	var ms []chat.Message
	for i := 1; i <= n; i++ {
		m := chat.Message{Conversation: conv, Seq: last + int64(i), Kind: chat.MessageText, Sender: sender,
			Body: fmt.Sprintf("%d", last+int64(i)), CreatedAt: time.Now()}
		binary.BigEndian.PutUint64(m.ClientMsgID[8:], uint64(m.Seq))
		ms = append(ms, m)
	}
	if err := h.Put(bg, conv, ms); err != nil {
		t.Fatal(err)
	}
	touch(t, in, h, ms...)
}

// touch writes entries into the inbox rows of the conversation's current members.
func touch(t *testing.T, in *inbox.Inbox, h *history.Store, ms ...chat.Message) {
	t.Helper()
	for _, m := range ms {
		members, err := h.Members(bg, m.Conversation)
		if err != nil {
			t.Fatal(err)
		}
		var users []chat.UserID
		for _, mem := range members {
			if mem.Active() || mem.User == m.TargetUser {
				users = append(users, mem.User)
			}
		}
		if err := in.Record(bg, m, users); err != nil {
			t.Fatal(err)
		}
	}
}

// A device that was offline while 500 messages arrived in 20 conversations syncs all of them,
// in order, once, with correct unread counts; read on one device shows on the other.
func TestOfflineDeviceSyncsEverything(t *testing.T) {
	in, h := setup(t)
	p := teststack.ID(t)
	me := chat.UserID(p + "_me")
	var convs []chat.ConversationID
	for i := 0; i < 20; i++ {
		convs = append(convs, createDirect(t, in, h, me, chat.UserID(fmt.Sprintf("%s_f%d", p, i))))
	}
	// Device B syncs once while everything is empty.
	first, err := in.Sync(bg, me, chat.SyncRequest{})
	if err != nil || first.More || len(first.Messages) != 0 {
		t.Fatalf("first sync = %+v, %v", first, err)
	}
	// 500 messages arrive: 25 in each conversation, from the other member.
	for i, c := range convs {
		appendN(t, in, h, c, chat.UserID(fmt.Sprintf("%s_f%d", p, i)), 25)
	}
	// Device A (offline all along) syncs from nothing in pages of 60.
	cursors := map[chat.ConversationID]int64{}
	got := 0
	var res chat.SyncResult
	for pages := 0; ; pages++ {
		if pages > 50 {
			t.Fatal("sync does not converge")
		}
		res, err = in.Sync(bg, me, chat.SyncRequest{Cursors: cursors, Limit: 60})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range res.Messages {
			if m.Seq != cursors[m.Conversation]+1 {
				t.Fatalf("conversation %s: seq %d after cursor %d (gap, duplicate or disorder)", m.Conversation, m.Seq, cursors[m.Conversation])
			}
			cursors[m.Conversation] = m.Seq
			got++
		}
		if !res.More {
			break
		}
	}
	if got != 500 {
		t.Fatalf("synced %d messages; want 500", got)
	}
	for _, c := range convs {
		if cursors[c] != 25 {
			t.Errorf("conversation %s synced to %d; want 25", c, cursors[c])
		}
	}
	unread := map[chat.ConversationID]int64{}
	for _, e := range res.Conversations {
		unread[e.Conversation] = e.Unread
	}
	list, err := in.List(bg, me)
	if err != nil || len(list) != 20 {
		t.Fatalf("List = %d entries, %v", len(list), err)
	}
	for _, e := range list {
		if e.Unread != 25 || e.LastSeq != 25 || e.Preview != "25" {
			t.Errorf("entry %+v: unread %d; want 25 unread, preview 25", e.Conversation, e.Unread)
		}
	}

	// Device A reads conversation 3 up to 20; device B, syncing with its token and cursors,
	// sees the new read position (5 unread) without refetching the messages it has.
	if read, moved, err := in.MarkRead(bg, me, convs[3], 20); err != nil || !moved || read != 20 {
		t.Fatalf("MarkRead = %d, %v, %v", read, moved, err)
	}
	resB, err := in.Sync(bg, me, chat.SyncRequest{Since: res.Since, Cursors: cursors})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range resB.Conversations {
		if e.Conversation == convs[3] {
			found = e.ReadSeq == 20 && e.Unread == 5
		}
	}
	if !found || len(resB.Messages) != 0 {
		t.Errorf("device B's sync after the read: %d conversations, %d messages; want convs[3] read to 20 and no messages",
			len(resB.Conversations), len(resB.Messages))
	}
}

func TestMarkReadOnlyMovesForward(t *testing.T) {
	in, h := setup(t)
	p := teststack.ID(t)
	me, you := chat.UserID(p+"_me"), chat.UserID(p+"_you")
	conv := createDirect(t, in, h, me, you)
	appendN(t, in, h, conv, you, 10)
	if r, moved, err := in.MarkRead(bg, me, conv, 7); err != nil || !moved || r != 7 {
		t.Fatalf("read to 7: %d %v %v", r, moved, err)
	}
	if r, moved, err := in.MarkRead(bg, me, conv, 5); err != nil || moved || r != 7 {
		t.Errorf("read back to 5: %d %v %v; want it to stay at 7", r, moved, err)
	}
	if r, _, err := in.MarkRead(bg, me, conv, 1000); err != nil || r != 10 {
		t.Errorf("read past the end: %d %v; want clamped to 10", r, err)
	}
	if _, _, err := in.MarkRead(bg, chat.UserID(p+"_stranger"), conv, 1); !errors.Is(err, chat.ErrNotFound) {
		t.Errorf("stranger marks read: %v; want ErrNotFound", err)
	}
	// Re-creating the direct conversation keeps the read position.
	createDirect(t, in, h, you, me)
	list, _ := in.List(bg, me)
	if len(list) != 1 || list[0].ReadSeq != 10 {
		t.Errorf("after re-creating: %+v; want read 10 kept", list)
	}
	if _, err := in.Sync(bg, me, chat.SyncRequest{Since: "garbage!"}); !errors.Is(err, chat.ErrInvalid) {
		t.Errorf("bad since-token: %v; want ErrInvalid", err)
	}
}

// The first device to acknowledge a seq moves the user's delivered position; another device
// acknowledging less, or the same, does not; cursors never move back.
func TestAckMovesDeliveredForward(t *testing.T) {
	in, h := setup(t)
	p := teststack.ID(t)
	me, you := chat.UserID(p+"_me"), chat.UserID(p+"_you")
	conv := createDirect(t, in, h, me, you)
	appendN(t, in, h, conv, you, 8)
	steps := []struct {
		device    chat.DeviceID
		seq       int64
		delivered int64
		moved     bool
	}{
		{"phone", 3, 3, true},
		{"laptop", 2, 3, false}, // behind the phone: nothing new delivered
		{"laptop", 5, 5, true},
		{"phone", 4, 5, false},
		{"phone", 100, 8, true}, // clamped to the last seq
		{"phone", 8, 8, false},
	}
	for _, s := range steps {
		d, moved, err := in.Ack(bg, me, s.device, conv, s.seq)
		if err != nil || d != s.delivered || moved != s.moved {
			t.Errorf("Ack(%s, %d) = %d, %v, %v; want %d, %v", s.device, s.seq, d, moved, err, s.delivered, s.moved)
		}
	}
	if _, _, err := in.Ack(bg, chat.UserID(p+"_stranger"), "d", conv, 1); !errors.Is(err, chat.ErrNotFound) {
		t.Errorf("stranger acks: %v; want ErrNotFound", err)
	}
}

// A removed member's device syncs up to and including its removal, and nothing after it.
func TestSyncStopsAtRemoval(t *testing.T) {
	in, h := setup(t)
	p := teststack.ID(t)
	owner, bob := chat.UserID(p+"_owner"), chat.UserID(p+"_bob")
	conv := createGroup(t, in, h, owner, bob)
	appendN(t, in, h, conv, owner, 3)
	rm := chat.Message{Conversation: conv, Seq: 4, Kind: chat.MessageMemberRemoved, Sender: owner, TargetUser: bob, CreatedAt: time.Now()}
	if err := h.Put(bg, conv, []chat.Message{rm}); err != nil {
		t.Fatal(err)
	}
	mem, err := h.ApplyMembership(bg, rm)
	if err != nil {
		t.Fatal(err)
	}
	if err := in.ApplyMembership(bg, rm, mem); err != nil {
		t.Fatal(err)
	}
	touch(t, in, h, rm)
	appendN(t, in, h, conv, owner, 5) // seqs 5-9: not for bob

	res, err := in.Sync(bg, bob, chat.SyncRequest{Cursors: map[chat.ConversationID]int64{conv: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Messages) != 3 || res.Messages[0].Seq != 2 || res.Messages[2].Seq != 4 || res.Messages[2].Kind != chat.MessageMemberRemoved {
		t.Fatalf("sync after removal = %+v; want seqs 2-4 ending with the removal", res.Messages)
	}
	if len(res.Conversations) != 1 || res.Conversations[0].LastSeq != 4 {
		t.Errorf("conversation entry = %+v; want last seq 4", res.Conversations)
	}
	res, err = in.Sync(bg, bob, chat.SyncRequest{Since: res.Since, Cursors: map[chat.ConversationID]int64{conv: 4}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Messages) != 0 || len(res.Conversations) != 0 {
		t.Errorf("sync after catching up with the removal = %+v; want nothing", res)
	}
	if list, err := in.List(bg, bob); err != nil || len(list) != 0 {
		t.Errorf("bob's inbox = %+v, %v; want empty", list, err)
	}
}

// A since-token is the user's own: another user's or a tampered one is refused with
// chat.ErrInvalid; after a key rotation, one signed with the previous key still verifies
// while that key is listed.
func TestSinceTokenIsSignedForTheUser(t *testing.T) {
	in, h := setup(t)
	p := teststack.ID(t)
	alice, bob := chat.UserID(p+"_alice"), chat.UserID(p+"_bob")
	createDirect(t, in, h, alice, bob)
	res, err := in.Sync(bg, alice, chat.SyncRequest{})
	if err != nil || res.Since == "" {
		t.Fatalf("first sync = %+v, %v", res, err)
	}
	if _, err := in.Sync(bg, bob, chat.SyncRequest{Since: res.Since}); !errors.Is(err, chat.ErrInvalid) {
		t.Errorf("bob's sync with alice's since: %v; want chat.ErrInvalid", err)
	}
	tampered := []byte(res.Since)
	tampered[len(tampered)-1] ^= 1
	if _, err := in.Sync(bg, alice, chat.SyncRequest{Since: string(tampered)}); !errors.Is(err, chat.ErrInvalid) {
		t.Errorf("sync with a tampered since: %v; want chat.ErrInvalid", err)
	}
	s := teststack.Cassandra(t)
	rotated := inbox.New(s, h, inbox.Config{Cursors: testKeys(t, "k2", "k1")})
	next, err := rotated.Sync(bg, alice, chat.SyncRequest{Since: res.Since})
	if err != nil {
		t.Fatalf("k1's since after rotating to k2: %v", err)
	}
	if _, err := inbox.New(s, h, inbox.Config{Cursors: testKeys(t, "k2")}).Sync(bg, alice, chat.SyncRequest{Since: res.Since}); !errors.Is(err, chat.ErrInvalid) {
		t.Errorf("k1's since once k1 is retired: %v; want chat.ErrInvalid", err)
	}
	if _, err := in.Sync(bg, alice, chat.SyncRequest{Since: next.Since}); !errors.Is(err, chat.ErrInvalid) {
		t.Errorf("k2's since where only k1 is known: %v; want chat.ErrInvalid", err)
	}
}

// Unread counts the other members' texts after the read position, a send moves the sender's
// read position, and replaying the projection (the same writes again, in any order) gives the
// same counts: they are derived, never incremented.
func TestUnreadIsDerivedAndReplaySafe(t *testing.T) {
	in, h := setup(t)
	p := teststack.ID(t)
	alice, bob := chat.UserID(p+"_alice"), chat.UserID(p+"_bob")
	conv := createGroup(t, in, h, alice, bob)
	var ms []chat.Message
	add := func(kind chat.MessageKind, sender chat.UserID, target int64) {
		m := chat.Message{Conversation: conv, Seq: int64(len(ms) + 1), Kind: kind, Sender: sender, Body: "x", TargetSeq: target, CreatedAt: time.Now()}
		binary.BigEndian.PutUint64(m.ClientMsgID[8:], uint64(m.Seq))
		ms = append(ms, m)
	}
	add(chat.MessageText, alice, 0)
	add(chat.MessageText, alice, 0)
	add(chat.MessageEdit, alice, 1)
	add(chat.MessageReaction, alice, 2)
	add(chat.MessageText, bob, 0)
	add(chat.MessageText, alice, 0)
	add(chat.MessageReaction, bob, 6)
	project := func(run []chat.Message) {
		t.Helper()
		if err := h.Put(bg, conv, run); err != nil {
			t.Fatal(err)
		}
		touch(t, in, h, run[len(run)-1])
		if err := in.MarkSent(bg, run); err != nil {
			t.Fatal(err)
		}
	}
	unread := func() map[chat.UserID]int64 {
		out := map[chat.UserID]int64{}
		for _, u := range []chat.UserID{alice, bob} {
			list, err := in.List(bg, u)
			if err != nil || len(list) != 1 {
				t.Fatalf("inbox of %s: %+v, %v", u, list, err)
			}
			out[u] = list[0].Unread
		}
		return out
	}
	project(ms[:3])
	project(ms[3:])
	// Alice sent 6 last: she has read everything; bob sent 5, so alice's 6 is his to read.
	want := map[chat.UserID]int64{alice: 0, bob: 1}
	if got := unread(); got[alice] != want[alice] || got[bob] != want[bob] {
		t.Fatalf("unread = %v; want %v", got, want)
	}
	// Replays, one entry at a time and backwards.
	for i := len(ms) - 1; i >= 0; i-- {
		project(ms[i : i+1])
	}
	project(ms)
	if got := unread(); got[alice] != want[alice] || got[bob] != want[bob] {
		t.Errorf("unread after replays = %v; want %v", got, want)
	}
}

// A page bounded in bytes ends with More when the next message would not fit, and holds one
// message at least; paging on with the cursors returns every message once, in order, and
// the last page's since-token like a count-limited sync.
func TestSyncPagesByBytes(t *testing.T) {
	in, h := setup(t)
	p := teststack.ID(t)
	me, other := chat.UserID(p+"_me"), chat.UserID(p+"_other")
	small := createDirect(t, in, h, me, other)
	big := createDirect(t, in, h, me, chat.UserID(p+"_big"))
	appendN(t, in, h, small, other, 30) // bodies "1".."30": 1 or 2 bytes each
	last, _ := h.LastSeq(bg, big)
	var ms []chat.Message
	for i := 1; i <= 12; i++ {
		m := chat.Message{Conversation: big, Seq: last + int64(i), Kind: chat.MessageText, Sender: other,
			Body: fmt.Sprintf("%03d%s", i, make([]byte, 997)), CreatedAt: time.Now()} // 1,000 bytes
		binary.BigEndian.PutUint64(m.ClientMsgID[8:], uint64(m.Seq))
		ms = append(ms, m)
	}
	if err := h.Put(bg, big, ms); err != nil {
		t.Fatal(err)
	}
	touch(t, in, h, ms...)

	size := func(m chat.Message) int { return 100 + len(m.Body) } // a stand-in for wire.MessageBytes
	entrySize := func(chat.Progress) int { return 150 }           // and for wire.ConversationBytes
	const maxBytes = 2500
	for _, tc := range []struct {
		name     string
		maxBytes int
	}{{"bounded", maxBytes}, {"smaller than one message", 10}} {
		t.Run(tc.name, func(t *testing.T) {
			cursors := map[chat.ConversationID]int64{}
			got, pages, page := 0, 0, ""
			for {
				if pages++; pages > 100 {
					t.Fatal("sync does not converge")
				}
				res, err := in.Sync(bg, me, chat.SyncRequest{Cursors: cursors, Page: page, Limit: 1000, MaxBytes: tc.maxBytes,
					Size: size, EntrySize: entrySize})
				if err != nil {
					t.Fatal(err)
				}
				page = res.Page
				bytes := entrySize(chat.Progress{}) * len(res.Conversations)
				for _, m := range res.Messages {
					if m.Seq != cursors[m.Conversation]+1 {
						t.Fatalf("conversation %s: seq %d after cursor %d (gap, duplicate or disorder)", m.Conversation, m.Seq, cursors[m.Conversation])
					}
					cursors[m.Conversation] = m.Seq
					bytes += size(m)
					got++
				}
				if len(res.Messages)+len(res.Conversations) == 0 && res.More {
					t.Fatal("an empty page with more: paging makes no progress")
				}
				if len(res.Messages)+len(res.Conversations) > 1 && bytes > tc.maxBytes {
					t.Errorf("page %d: %d entries and %d messages of %d bytes; want at most %d bytes", pages,
						len(res.Conversations), len(res.Messages), bytes, tc.maxBytes)
				}
				if !res.More {
					if res.Since == "" {
						t.Error("the last page has no since-token")
					}
					break
				}
				if res.Since != "" {
					t.Errorf("page %d with more has since %q; want the request's (empty)", pages, res.Since)
				}
			}
			if got != 42 {
				t.Errorf("synced %d messages in %d pages; want 42", got, pages)
			}
			if tc.maxBytes == maxBytes && pages < 6 {
				t.Errorf("%d pages for 12 messages of 1,100 bytes and 30 small ones in pages of %d bytes; want at least 6", pages, maxBytes)
			}
		})
	}
}

// A direct conversation's row keeps the other member in its own peer column, and no title.
// Rows written before the column (the peer in title, or nowhere) still show the peer, from
// the member list, and the first read fills their column; creating the conversation again
// fills it too. Every path writes the same value, so repeating any of them changes nothing.
func TestDirectPeerColumn(t *testing.T) {
	in, h := setup(t)
	s := teststack.Cassandra(t)
	p := teststack.ID(t)
	alice, bob, carol := chat.UserID(p+"_alice"), chat.UserID(p+"_bob"), chat.UserID(p+"_carol")
	row := func(u chat.UserID, conv chat.ConversationID) (peer, title string) {
		t.Helper()
		var pp, tt *string
		if err := s.Query(`SELECT peer, title FROM user_conversations WHERE user_id = ? AND conversation_id = ?`,
			string(u), gocql.UUID(conv)).Scan(&pp, &tt); err != nil {
			t.Fatalf("read %s's row: %v", u, err)
		}
		if pp != nil {
			peer = *pp
		}
		if tt != nil {
			title = *tt
		}
		return peer, title
	}
	peerOf := func(u chat.UserID, conv chat.ConversationID) (chat.UserID, string) {
		t.Helper()
		list, err := in.List(bg, u)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range list {
			if e.Conversation == conv {
				return e.Peer, e.Title
			}
		}
		t.Fatalf("%s's inbox has no %s: %+v", u, conv, list)
		return "", ""
	}

	d := createDirect(t, in, h, alice, bob)
	for _, c := range [][2]chat.UserID{{alice, bob}, {bob, alice}} {
		if peer, title := row(c[0], d); peer != string(c[1]) || title != "" {
			t.Errorf("%s's row: peer %q, title %q; want peer %s and no title", c[0], peer, title, c[1])
		}
		if peer, title := peerOf(c[0], d); peer != c[1] || title != "" {
			t.Errorf("%s's entry: peer %q, title %q; want peer %s and no title", c[0], peer, title, c[1])
		}
	}

	// Rows as the code before the column wrote them: alice's with the peer in title, carol's
	// with nothing.
	old := createDirect(t, in, h, alice, carol)
	for _, c := range [][2]chat.UserID{{alice, carol}, {carol, ""}} {
		if err := s.Query(`UPDATE user_conversations SET peer = null, title = ? WHERE user_id = ? AND conversation_id = ?`,
			string(c[1]), string(c[0]), gocql.UUID(old)).Exec(); err != nil {
			t.Fatal(err)
		}
	}
	if peer, title := peerOf(alice, old); peer != carol || title != "" {
		t.Errorf("alice's entry of an old row: peer %q, title %q; want %s and no title", peer, title, carol)
	}
	if peer, title := row(alice, old); peer != string(carol) || title != "" {
		t.Errorf("alice's old row after a read: peer %q, title %q; want the column filled, the title cleared", peer, title)
	}
	// Creating it again (either member may) fills carol's.
	if err := in.Add(bg, history.Conversation{ID: old, Kind: chat.KindDirect}, []chat.UserID{carol, alice}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if peer, _ := row(carol, old); peer != string(alice) {
		t.Errorf("carol's old row after the conversation was created again: peer %q; want %s", peer, alice)
	}
	if peer, _ := peerOf(carol, old); peer != alice {
		t.Errorf("carol's entry: peer %q; want %s", peer, alice)
	}
	// A group has none.
	g := createGroup(t, in, h, alice, bob)
	if peer, title := peerOf(alice, g); peer != "" || title != "g" {
		t.Errorf("group entry: peer %q, title %q; want no peer, title g", peer, title)
	}
}
