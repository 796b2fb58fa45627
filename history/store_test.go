package history_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
	"time"

	gocql "github.com/apache/cassandra-gocql-driver/v2"

	"github.com/parleyhq/parley/history"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/teststack"
)

func newStore(t *testing.T, cfg history.Config) (*history.Store, *gocql.Session) {
	t.Helper()
	s := teststack.Cassandra(t)
	st, err := history.New(s, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return st, s
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

func user(t *testing.T, name string) chat.UserID { return chat.UserID(teststack.ID(t) + "_" + name) }

func TestDirectConversationIsCreatedOnce(t *testing.T) {
	st, _ := newStore(t, history.Config{})
	a, b := user(t, "a"), user(t, "b")
	id1, created1, err := st.CreateDirect(ctx(t), a, b, time.Now())
	if err != nil || !created1 {
		t.Fatalf("first CreateDirect = %v, %v, %v; want created", id1, created1, err)
	}
	id2, created2, err := st.CreateDirect(ctx(t), b, a, time.Now())
	if err != nil || created2 || id2 != id1 {
		t.Fatalf("second CreateDirect = %v, %v, %v; want the same id, not created", id2, created2, err)
	}
	members, err := st.Members(ctx(t), id1)
	if err != nil || len(members) != 2 {
		t.Fatalf("Members = %v, %v; want 2", members, err)
	}
	c, err := st.Conversation(ctx(t), id1)
	if err != nil || c.Kind != chat.KindDirect || c.CreatedBy != a {
		t.Errorf("Conversation = %+v, %v", c, err)
	}
	if _, _, err := st.CreateDirect(ctx(t), a, a, time.Now()); !errors.Is(err, chat.ErrInvalid) {
		t.Errorf("direct conversation with oneself: %v; want ErrInvalid", err)
	}
}

func TestGroupMembership(t *testing.T) {
	st, _ := newStore(t, history.Config{MaxMembers: 3})
	owner, m1, m2, m3 := user(t, "o"), user(t, "m1"), user(t, "m2"), user(t, "m3")
	id, err := st.CreateGroup(ctx(t), owner, "team", []chat.UserID{m1, m2, m1}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	got, err := st.Member(ctx(t), id, owner)
	if err != nil || got.Role != chat.RoleOwner || !got.Active() {
		t.Errorf("owner membership = %+v, %v", got, err)
	}
	if got, err := st.Member(ctx(t), id, m2); err != nil || got.Role != chat.RoleMember {
		t.Errorf("member m2 = %+v, %v", got, err)
	}
	if _, err := st.Member(ctx(t), id, m3); !errors.Is(err, chat.ErrNotFound) {
		t.Errorf("non-member: %v; want ErrNotFound", err)
	}
	if _, err := st.Member(ctx(t), chat.NewConversationID(), owner); !errors.Is(err, chat.ErrNotFound) {
		t.Errorf("unknown conversation: %v; want ErrNotFound", err)
	}
	if _, err := st.Conversation(ctx(t), chat.NewConversationID()); !errors.Is(err, chat.ErrNotFound) {
		t.Errorf("unknown conversation: %v; want ErrNotFound", err)
	}
	if _, err := st.CreateGroup(ctx(t), owner, "big", []chat.UserID{m1, m2, m3}, time.Now()); !errors.Is(err, chat.ErrTooManyMembers) {
		t.Errorf("4 members with MaxMembers 3: %v; want ErrTooManyMembers", err)
	}
}

func msgs(id chat.ConversationID, sender chat.UserID, from, to int64) []chat.Message {
	var out []chat.Message
	for s := from; s <= to; s++ {
		m := chat.Message{Conversation: id, Seq: s, Kind: chat.MessageText, Sender: sender, SenderDevice: "d",
			Body: fmt.Sprintf("message %d", s), CreatedAt: time.UnixMilli(1_800_000_000_000 + s)}
		binary.BigEndian.PutUint64(m.ClientMsgID[8:], uint64(s))
		copy(m.ClientMsgID[:8], sender)
		out = append(out, m)
	}
	return out
}

// Paging backwards from the latest message and forwards from any seq returns every message
// exactly once, in order, across bucket boundaries (bucket size 10 here).
func TestPagingAcrossBuckets(t *testing.T) {
	st, s := newStore(t, history.Config{BucketSize: 10})
	a, b := user(t, "a"), user(t, "b")
	id, _, err := st.CreateDirect(ctx(t), a, b, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	const n = 35
	// Appends of 5 that cross bucket boundaries (8-12, 18-22, ...).
	for from := int64(1); from <= n; from += 5 {
		batch := msgs(id, a, from, min(from+4, n))
		if err := st.Put(ctx(t), id, batch); err != nil {
			t.Fatalf("Put %d: %v", from, err)
		}
	}
	if m, ok, err := st.MessageAt(ctx(t), id, 12); err != nil || !ok || m.Seq != 12 || m.Body != "message 12" {
		t.Errorf("MessageAt(12) = %+v, %v, %v", m, ok, err)
	}
	if _, ok, err := st.MessageAt(ctx(t), id, n+1); err != nil || ok {
		t.Errorf("MessageAt(%d) = %v, %v; want not found", n+1, ok, err)
	}
	if ok, err := st.IsActiveMember(ctx(t), id, a); err != nil || !ok {
		t.Errorf("IsActiveMember(a) = %v, %v", ok, err)
	}
	if ok, err := st.IsActiveMember(ctx(t), id, "stranger"); err != nil || ok {
		t.Errorf("IsActiveMember(stranger) = %v, %v", ok, err)
	}
	if last, err := st.LastSeq(ctx(t), id); err != nil || last != n {
		t.Fatalf("LastSeq = %d, %v; want %d", last, err, n)
	}

	// Backwards from the latest, 7 at a time.
	var seen []int64
	before := int64(0)
	for {
		page, err := st.Before(ctx(t), id, history.Window{}, before, 7)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, m := range page {
			seen = append(seen, m.Seq)
		}
		before = page[len(page)-1].Seq
	}
	for i, seq := range seen {
		if seq != n-int64(i) {
			t.Fatalf("backwards paging gave %v; want %d down to 1", seen, n)
		}
	}
	if len(seen) != n {
		t.Fatalf("backwards paging gave %d messages; want %d", len(seen), n)
	}

	// Forwards from every starting point, 6 at a time.
	for start := int64(0); start <= n; start++ {
		var got []int64
		after := start
		for {
			page, err := st.After(ctx(t), id, history.Window{}, after, 6)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			for _, m := range page {
				got = append(got, m.Seq)
				if m.Body != fmt.Sprintf("message %d", m.Seq) || m.Sender != a || m.Conversation != id {
					t.Fatalf("message %d read back as %+v", m.Seq, m)
				}
			}
			after = page[len(page)-1].Seq
		}
		if int64(len(got)) != n-start {
			t.Fatalf("forwards from %d gave %v; want %d..%d", start, got, start+1, n)
		}
		for i, seq := range got {
			if seq != start+1+int64(i) {
				t.Fatalf("forwards from %d gave %v; want %d..%d in order", start, got, start+1, n)
			}
		}
	}

	// The hint points into the last bucket: it was written by the append that opened it (26-30).
	var hint int64
	if err := s.Query(`SELECT last_seq FROM conversations WHERE conversation_id = ?`, gocql.UUID(id)).Scan(&hint); err != nil || hint != 30 {
		t.Errorf("hint after the appends = %d, %v; want 30", hint, err)
	}
	// Writing an old message again never lowers the hint (a projection repeated late).
	if err := st.Put(ctx(t), id, msgs(id, a, 10, 10)); err != nil {
		t.Fatal(err)
	}
	if err := s.Query(`SELECT last_seq FROM conversations WHERE conversation_id = ?`, gocql.UUID(id)).Scan(&hint); err != nil || hint != 30 {
		t.Errorf("hint after raising to 10 = %d, %v; want 30 kept", hint, err)
	}
	// A stale last_seq hint does not hide messages.
	if err := s.Query(`UPDATE conversations SET last_seq = 3 WHERE conversation_id = ?`, gocql.UUID(id)).Exec(); err != nil {
		t.Fatal(err)
	}
	if last, err := st.LastSeq(ctx(t), id); err != nil || last != n {
		t.Errorf("LastSeq with a stale hint = %d, %v; want %d", last, err, n)
	}
	// Writing again a message inside a bucket changes nothing; the one that opened it raises
	// a stale hint there.
	for _, seq := range []int64{n, 30} {
		if err := st.Put(ctx(t), id, msgs(id, a, seq, seq)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Query(`SELECT last_seq FROM conversations WHERE conversation_id = ?`, gocql.UUID(id)).Scan(&hint); err != nil || hint != 30 {
		t.Errorf("hint after repairing = %d, %v; want 30", hint, err)
	}
	// The client_msg_id of every message maps to its seq.
	for _, m := range msgs(id, a, 1, n) {
		if seq, ok, err := st.SeqOf(ctx(t), id, a, m.ClientMsgID); err != nil || !ok || seq != m.Seq {
			t.Fatalf("SeqOf(%d) = %d, %v, %v", m.Seq, seq, ok, err)
		}
	}
	if _, ok, err := st.SeqOf(ctx(t), id, b, msgs(id, a, 1, 1)[0].ClientMsgID); err != nil || ok {
		t.Errorf("SeqOf for another sender = %v, %v; want not found", ok, err)
	}
}

// Put is idempotent: writing the same messages again, or an earlier run after a later one
// (a projection repeated by the reconciler), leaves the rows, the client_msg_id map and
// LastSeq as they were.
func TestPutIsIdempotent(t *testing.T) {
	st, _ := newStore(t, history.Config{BucketSize: 10})
	id, _, err := st.CreateDirect(ctx(t), user(t, "a"), user(t, "b"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	first, second := msgs(id, "x", 1, 8), msgs(id, "x", 9, 23)
	for _, run := range [][]chat.Message{first, second, first, second[:3]} {
		if err := st.Put(ctx(t), id, run); err != nil {
			t.Fatal(err)
		}
	}
	page, err := st.After(ctx(t), id, history.Window{}, 0, 50)
	if err != nil {
		t.Fatal(err)
	}
	if len(page) != 23 || page[0].Seq != 1 || page[22].Seq != 23 {
		t.Fatalf("after repeated puts the log has %d messages; want 1..23 once", len(page))
	}
	if last, err := st.LastSeq(ctx(t), id); err != nil || last != 23 {
		t.Errorf("LastSeq = %d, %v; want 23 (the hint never goes back)", last, err)
	}
	if seq, ok, err := st.SeqOf(ctx(t), id, "x", second[4].ClientMsgID); err != nil || !ok || seq != 13 {
		t.Errorf("SeqOf = %d, %v, %v; want 13", seq, ok, err)
	}
}

// Membership events may be applied more than once (a redelivery after a crash), also after
// later events of the same user: the member's row always ends as the latest event left it.
func TestMembershipEventsReplay(t *testing.T) {
	st, _ := newStore(t, history.Config{})
	owner, bob := user(t, "owner"), user(t, "bob")
	id, err := st.CreateGroup(ctx(t), owner, "g", nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ev := func(seq int64, kind chat.MessageKind) chat.Message {
		m := chat.Message{Conversation: id, Seq: seq, Kind: kind, Sender: owner, TargetUser: bob, CreatedAt: time.Now()}
		if err := st.Put(ctx(t), id, []chat.Message{m}); err != nil {
			t.Fatal(err)
		}
		return m
	}
	apply := func(m chat.Message) {
		if _, err := st.ApplyMembership(ctx(t), m); err != nil {
			t.Fatal(err)
		}
	}
	check := func(step string, want history.Member) {
		t.Helper()
		got, err := st.Member(ctx(t), id, bob)
		if err != nil || got.JoinedSeq != want.JoinedSeq || got.LeftSeq != want.LeftSeq {
			t.Errorf("%s: member = %+v, %v; want joined %d left %d", step, got, err, want.JoinedSeq, want.LeftSeq)
		}
	}
	added, removed := ev(1, chat.MessageMemberAdded), ev(2, chat.MessageMemberRemoved)
	apply(added)
	apply(added)
	check("added twice", history.Member{JoinedSeq: 1})
	apply(removed)
	apply(added) // a late replay of the add
	check("removed, add replayed", history.Member{JoinedSeq: 1, LeftSeq: 2})
	again := ev(3, chat.MessageMemberAdded)
	apply(again)
	apply(removed) // a late replay of the removal
	check("re-added, removal replayed", history.Member{JoinedSeq: 3})
	if w := (history.Member{JoinedSeq: 3}).Window(); w.Contains(2) || !w.Contains(3) || !w.Contains(99) {
		t.Errorf("window %+v", w)
	}
}

// Stored returns the rows of a seq range across buckets as stored, holes left out, and
// refuses a range that is not one.
func TestStoredRange(t *testing.T) {
	st, s := newStore(t, history.Config{BucketSize: 10})
	a, b := user(t, "a"), user(t, "b")
	id, _, err := st.CreateDirect(ctx(t), a, b, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Put(ctx(t), id, msgs(id, a, 1, 25)); err != nil {
		t.Fatal(err)
	}
	if err := s.Query(`DELETE FROM messages WHERE conversation_id = ? AND bucket = 1 AND seq = 12`, gocql.UUID(id)).Exec(); err != nil {
		t.Fatal(err)
	}
	got, err := st.Stored(ctx(t), id, 8, 22)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []int64
	for _, m := range got {
		seqs = append(seqs, m.Seq)
		if m.Body != fmt.Sprintf("message %d", m.Seq) || m.Sender != a {
			t.Errorf("seq %d stored as %+v", m.Seq, m)
		}
	}
	if want := "[8 9 10 11 13 14 15 16 17 18 19 20 21 22]"; fmt.Sprint(seqs) != want {
		t.Errorf("Stored(8, 22) seqs %v; want %s", seqs, want)
	}
	for _, r := range [][2]int64{{0, 5}, {6, 5}} {
		if _, err := st.Stored(ctx(t), id, r[0], r[1]); !errors.Is(err, chat.ErrInvalid) {
			t.Errorf("Stored(%d, %d) = %v; want ErrInvalid", r[0], r[1], err)
		}
	}
}
