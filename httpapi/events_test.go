package httpapi_test

import (
	"context"
	"encoding/json"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/parleyhq/parley/httpapi"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/routing"
	"github.com/parleyhq/parley/internal/teststack"
	"github.com/parleyhq/parley/protocol"
	"github.com/parleyhq/parley/protocol/rest"
)

// page reads every message of conv that user may see, oldest first.
func (e *env) page(conv string, user chat.UserID) []protocol.Message {
	e.t.Helper()
	msgs, status := e.tryPage(conv, user)
	if status != 200 {
		e.t.Fatalf("GET messages as %s: %d", user, status)
	}
	return msgs
}

func (e *env) tryPage(conv string, user chat.UserID) ([]protocol.Message, int) {
	var p httpapi.MessagesJSON
	resp := e.do("GET", "/v1/conversations/"+conv+"/messages?after=0&limit=200", user, nil, nil, &p)
	return p.Messages, resp.StatusCode
}

// waitSeq waits until user sees a message with seq at least seq, and returns the page.
func (e *env) waitSeq(conv string, user chat.UserID, seq int64) []protocol.Message {
	e.t.Helper()
	var msgs []protocol.Message
	if !teststack.Eventually(e.t, 30*time.Second, func() bool {
		msgs, _ = e.tryPage(conv, user) // 404 until a new member's join is applied
		return len(msgs) > 0 && msgs[len(msgs)-1].Seq >= seq
	}) {
		e.t.Fatalf("%s never saw seq %d; has %+v", user, seq, msgs)
	}
	return msgs
}

// waitState waits until the messages user sees satisfy ok (an event's seq is readable a moment
// before its effect is applied; members are pushed the event only after it is).
func (e *env) waitState(conv string, user chat.UserID, ok func([]protocol.Message) bool) []protocol.Message {
	e.t.Helper()
	var msgs []protocol.Message
	if !teststack.Eventually(e.t, 30*time.Second, func() bool { msgs, _ = e.tryPage(conv, user); return ok(msgs) }) {
		e.t.Fatalf("state never reached; last seen %+v", msgs)
	}
	return msgs
}

func (e *env) expect(method, path string, user chat.UserID, body any, status int) rest.Accepted {
	e.t.Helper()
	var acc rest.Accepted
	var out any = &acc
	if status != 202 {
		out = nil
	}
	if resp := e.do(method, path, user, body, nil, out); resp.StatusCode != status {
		e.t.Fatalf("%s %s as %s: %d; want %d", method, path, user, resp.StatusCode, status)
	}
	return acc
}

func bySeq(msgs []protocol.Message, seq int64) protocol.Message {
	i := slices.IndexFunc(msgs, func(m protocol.Message) bool { return m.Seq == seq })
	if i < 0 {
		return protocol.Message{}
	}
	return msgs[i]
}

// Edits, deletions and reactions are events with their own seqs, and reads return each
// message in its latest state.
func TestEditsDeletionsReactions(t *testing.T) {
	e := newEnv(t)
	alice, bob, carol := e.user("alice"), e.user("bob"), e.user("carol")
	var g rest.Conversation
	e.do("POST", "/v1/conversations", alice, map[string]any{"kind": "group", "members": []string{string(bob), string(carol)}}, nil, &g)
	base := "/v1/conversations/" + g.ID + "/messages"
	for _, body := range []string{"first", "second"} {
		e.do("POST", base, bob, map[string]any{"body": body}, map[string]string{"Idempotency-Key": chat.NewConversationID().String()}, nil)
	}
	e.waitSeq(g.ID, alice, 2)

	e.expect("PATCH", base+"/1", bob, map[string]any{"body": "first, edited"}, 202) // seq 3
	e.expect("PATCH", base+"/1", carol, map[string]any{"body": "not mine"}, 403)    // not the sender
	e.expect("DELETE", base+"/2", carol, nil, 403)                                  // neither sender nor admin
	e.expect("PATCH", base+"/9", bob, map[string]any{"body": "future"}, 404)        // no such message
	thumbs := "/reactions/" + url.PathEscape("👍")
	e.expect("PUT", base+"/1"+thumbs, carol, nil, 202) // seq 4
	e.waitState(g.ID, alice, func(msgs []protocol.Message) bool { return len(bySeq(msgs, 1).Reactions) == 1 })
	e.expect("PUT", base+"/1"+thumbs, carol, nil, 204)                             // already there
	e.expect("PUT", base+"/1"+thumbs, bob, nil, 202)                               // seq 5
	e.expect("PATCH", base+"/3", bob, map[string]any{"body": "x"}, 409)            // an event, not a message
	e.expect("PUT", base+"/1/reactions/"+url.PathEscape("a b"), bob, nil, 400)     // a space
	e.expect("PATCH", base+"/2", bob, map[string]any{"body": "soon deleted"}, 202) // seq 6: an edit, then
	e.expect("DELETE", base+"/2", alice, nil, 202)                                 // the owner deletes bob's: seq 7
	e.waitState(g.ID, alice, func(msgs []protocol.Message) bool { return bySeq(msgs, 2).Deleted })
	e.expect("DELETE", base+"/2", alice, nil, 204) // already deleted
	e.waitSeq(g.ID, alice, 7)
	e.expect("DELETE", base+"/1"+thumbs, carol, nil, 202) // seq 8
	// An event's seq is readable a moment before its effect is applied (members are pushed the
	// event only after): wait for the state.
	msgs := e.waitState(g.ID, alice, func(msgs []protocol.Message) bool {
		r := bySeq(msgs, 1).Reactions
		return bySeq(msgs, 8).Seq == 8 && len(r) == 1 && len(r[0].Users) == 1
	})

	if len(msgs) != 8 {
		t.Fatalf("log has %d entries; want 8: %+v", len(msgs), msgs)
	}
	m1, m2 := bySeq(msgs, 1), bySeq(msgs, 2)
	if m1.Body != "first, edited" || m1.EditedSeq != 3 || m1.Deleted {
		t.Errorf("message 1 = %+v; want the edited text", m1)
	}
	if len(m1.Reactions) != 1 || m1.Reactions[0].Emoji != "👍" || !slices.Equal(m1.Reactions[0].Users, []string{string(bob)}) {
		t.Errorf("message 1 reactions = %+v; want 👍 by bob only", m1.Reactions)
	}
	if !m2.Deleted || m2.Body != "" {
		t.Errorf("message 2 = %+v; want deleted without a body", m2)
	}
	if ed := bySeq(msgs, 6); ed.Kind != "edit" || ed.TargetSeq != 2 || ed.Body != "" {
		t.Errorf("the edit of a deleted message = %+v; want its body hidden", ed)
	}
	if ev := bySeq(msgs, 3); ev.Kind != "edit" || ev.TargetSeq != 1 || ev.Sender != string(bob) || ev.Body != "first, edited" {
		t.Errorf("edit event = %+v", ev)
	}
	// Paging backwards returns the same state.
	var p httpapi.MessagesJSON
	e.do("GET", base+"?before=3", carol, nil, nil, &p)
	if len(p.Messages) != 2 || p.Messages[1].Body != "first, edited" || !p.Messages[0].Deleted {
		t.Errorf("before=3: %+v", p.Messages)
	}
}

// Membership changes are events in the seq stream: a member added later sees the
// conversation from their join on; a removed member sees nothing written after the removal.
func TestMembershipEvents(t *testing.T) {
	e := newEnv(t)
	alice, bob, carol, dave := e.user("alice"), e.user("bob"), e.user("carol"), e.user("dave")
	var g, d rest.Conversation
	e.do("POST", "/v1/conversations", alice, map[string]any{"kind": "group", "members": []string{string(bob), string(carol)}}, nil, &g)
	e.do("POST", "/v1/conversations", alice, map[string]any{"kind": "direct", "with": string(bob)}, nil, &d)
	conv := "/v1/conversations/" + g.ID
	post := func(u chat.UserID, body string) {
		e.do("POST", conv+"/messages", u, map[string]any{"body": body}, map[string]string{"Idempotency-Key": chat.NewConversationID().String()}, nil)
	}
	post(bob, "before dave")
	e.waitSeq(g.ID, alice, 1)

	e.expect("POST", conv+"/members", bob, map[string]any{"user": dave}, 403)  // not an admin
	e.expect("POST", conv+"/members", alice, map[string]any{"user": bob}, 409) // already in
	e.expect("POST", "/v1/conversations/"+d.ID+"/members", alice, map[string]any{"user": dave}, 409)
	e.expect("POST", "/v1/conversations/"+d.ID+"/leave", alice, nil, 409)
	e.expect("DELETE", conv+"/members/"+string(alice), bob, nil, 403)           // bob is no admin
	e.expect("POST", conv+"/members", alice, map[string]any{"user": dave}, 202) // seq 2
	msgs := e.waitSeq(g.ID, alice, 2)
	if ev := bySeq(msgs, 2); ev.Kind != "member_added" || ev.User != string(dave) || ev.Sender != string(alice) {
		t.Fatalf("seq 2 = %+v; want dave added by alice", ev)
	}
	// dave sees the conversation from his join on, and it is in his inbox with nothing unread.
	if dm := e.waitSeq(g.ID, dave, 2); len(dm) != 1 || dm[0].Seq != 2 {
		t.Errorf("dave sees %+v; want only his join (seq 2)", dm)
	}
	var in rest.Inbox
	e.do("GET", "/v1/conversations", dave, nil, nil, &in)
	if len(in.Conversations) != 1 || in.Conversations[0].ID != g.ID || in.Conversations[0].Unread != 0 {
		t.Errorf("dave's inbox = %+v", in)
	}
	post(dave, "hi, I am dave") // seq 3

	e.expect("DELETE", conv+"/members/"+string(carol), alice, nil, 202) // seq 4
	e.waitSeq(g.ID, alice, 4)
	post(bob, "carol is gone") // seq 5
	e.waitSeq(g.ID, alice, 5)
	cm := e.page(g.ID, carol)
	if last := cm[len(cm)-1]; last.Seq != 4 || last.Kind != "member_removed" || last.User != string(carol) {
		t.Errorf("carol's history ends with %+v; want her removal at seq 4", last)
	}
	var p httpapi.MessagesJSON
	e.do("GET", conv+"/messages", carol, nil, nil, &p) // latest first
	if len(p.Messages) == 0 || p.Messages[0].Seq != 4 {
		t.Errorf("carol's latest page starts at %+v; want seq 4", p.Messages)
	}
	e.expect("GET", conv, carol, nil, 404)
	e.expect("POST", conv+"/read", carol, map[string]any{"seq": 1}, 404)
	e.expect("POST", conv+"/leave", carol, nil, 404)
	in = rest.Inbox{}
	e.do("GET", "/v1/conversations", carol, nil, nil, &in)
	if len(in.Conversations) != 0 {
		t.Errorf("carol's inbox still lists %+v", in.Conversations)
	}
	var got rest.Conversation
	e.do("GET", conv, alice, nil, nil, &got)
	var names []string
	for _, m := range got.Members {
		names = append(names, m.User)
	}
	slices.Sort(names)
	if want := []string{string(alice), string(bob), string(dave)}; !slices.Equal(names, want) {
		t.Errorf("members %v; want %v", names, want)
	}

	// Leaving, and coming back: a rejoin sees from the new join on.
	e.expect("DELETE", conv+"/members/"+string(dave), dave, nil, 202) // your own id: leave, seq 6
	e.waitSeq(g.ID, alice, 6)
	e.expect("POST", conv+"/members", alice, map[string]any{"user": carol}, 202) // seq 7
	msgs = e.waitSeq(g.ID, carol, 7)
	var seqs []int64
	for _, m := range msgs {
		seqs = append(seqs, m.Seq)
	}
	if want := []int64{7}; !slices.Equal(seqs, want) {
		t.Errorf("carol after rejoining sees seqs %v; want %v (a new membership starts at its join)", seqs, want)
	}
	if ev := bySeq(msgs, 7); ev.Kind != "member_added" || ev.User != string(carol) {
		t.Errorf("seq 7 = %+v", ev)
	}
	dm := e.page(g.ID, dave)
	if last := dm[len(dm)-1]; last.Seq != 6 || last.Kind != "member_left" {
		t.Errorf("dave's history ends with %+v; want his leaving at 6", last)
	}
}

// Replaying the log (parleyd reproject) after a member left and came back writes no entry of
// the time they were out into their inbox row: the preview stays one they may see.
func TestReprojectKeepsARejoinedMembersPreview(t *testing.T) {
	e := newEnv(t)
	alice, bob, carol := e.user("alice"), e.user("bob"), e.user("carol")
	var g rest.Conversation
	e.do("POST", "/v1/conversations", alice, map[string]any{"kind": "group", "members": []string{string(bob), string(carol)}}, nil, &g)
	conv := "/v1/conversations/" + g.ID
	post := func(u chat.UserID, body string) {
		e.do("POST", conv+"/messages", u, map[string]any{"body": body}, map[string]string{"Idempotency-Key": chat.NewConversationID().String()}, nil)
	}
	post(bob, "for everyone") // seq 1
	e.waitSeq(g.ID, alice, 1)
	e.expect("DELETE", conv+"/members/"+string(carol), alice, nil, 202) // seq 2
	e.waitSeq(g.ID, alice, 2)
	post(bob, "while carol is out") // seq 3
	e.waitSeq(g.ID, alice, 3)
	// An entry of another conversation in the log between seq 3 and 4, so that a replay
	// projects 3 as the last of a run (the runs are a conversation's consecutive entries).
	var other rest.Conversation
	e.do("POST", "/v1/conversations", alice, map[string]any{"kind": "direct", "with": string(bob)}, nil, &other)
	e.do("POST", "/v1/conversations/"+other.ID+"/messages", alice, map[string]any{"body": "elsewhere"}, map[string]string{"Idempotency-Key": chat.NewConversationID().String()}, nil)
	e.waitSeq(other.ID, alice, 1)
	e.expect("POST", conv+"/members", alice, map[string]any{"user": carol}, 202) // seq 4
	e.waitSeq(g.ID, carol, 4)
	preview := func() string {
		var in rest.Inbox
		e.do("GET", "/v1/conversations", carol, nil, nil, &in)
		if len(in.Conversations) != 1 {
			t.Fatalf("carol's inbox = %+v", in)
		}
		return in.Conversations[0].LastPreview
	}
	if p := preview(); p == "while carol is out" {
		t.Fatalf("carol's preview before the replay is %q, a message she may not see", p)
	}
	if _, err := e.worker.Reproject(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if p := preview(); p == "while carol is out" {
		t.Errorf("carol's preview after the replay is %q, a message of the time she was out", p)
	}
}

// A read through the API pushes a read receipt to the other members and the reader's devices.
func TestReadPushesReceipts(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.user("alice"), e.user("bob")
	var d rest.Conversation
	e.do("POST", "/v1/conversations", alice, map[string]any{"kind": "direct", "with": string(bob)}, nil, &d)
	e.do("POST", "/v1/conversations/"+d.ID+"/messages", alice, map[string]any{"body": "hi"}, map[string]string{"Idempotency-Key": chat.NewConversationID().String()}, nil)
	e.waitSeq(d.ID, bob, 1)
	got := map[chat.UserID]chan protocol.Frame{}
	for _, u := range []chat.UserID{alice, bob} {
		ch := make(chan protocol.Frame, 4)
		got[u] = ch
		sub, err := e.nc.Subscribe(routing.UserSubject(u), func(m *nats.Msg) {
			var f protocol.Frame
			if json.Unmarshal(m.Data, &f) == nil && m.Header.Get(routing.HeaderFrameType) == string(protocol.TypeReceipt) {
				ch <- f
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	_ = e.nc.Flush()
	e.expect("POST", "/v1/conversations/"+d.ID+"/read", bob, map[string]any{"seq": 1}, 200)
	for u, ch := range got {
		select {
		case f := <-ch:
			if f.Conversation != d.ID || f.Seq != 1 || f.User != string(bob) || f.Kind != "read" {
				t.Errorf("%s got receipt %+v", u, f)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("%s got no read receipt", u)
		}
	}
	// Reading the same position again moves nothing and pushes nothing.
	e.expect("POST", "/v1/conversations/"+d.ID+"/read", bob, map[string]any{"seq": 1}, 200)
	select {
	case f := <-got[alice]:
		t.Errorf("a read that moved nothing pushed %+v", f)
	case <-time.After(300 * time.Millisecond):
	}
}
