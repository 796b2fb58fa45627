package edge

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/chat"
)

// fakeMembers answers from a map and counts the questions (a pure-logic unit test of the cache).
type fakeMembers struct {
	members map[chat.UserID]bool
	err     error
	asked   int
}

func (f *fakeMembers) IsActiveMember(_ context.Context, _ chat.ConversationID, u chat.UserID) (bool, error) {
	f.asked++
	return f.members[u], f.err
}

func TestMembershipCache(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	inner := &fakeMembers{members: map[chat.UserID]bool{"alice": true}}
	c := newMembershipCache(inner, func() time.Time { return now })
	conv := chat.NewConversationID()
	ask := func(u chat.UserID) (bool, error) { return c.IsActiveMember(context.Background(), conv, u) }

	for i := 0; i < 3; i++ {
		if ok, err := ask("alice"); !ok || err != nil {
			t.Fatalf("alice: %v %v", ok, err)
		}
	}
	if inner.asked != 1 {
		t.Errorf("store asked %d times for three checks within the TTL; want 1", inner.asked)
	}
	for i := 0; i < 2; i++ {
		if ok, _ := ask("mallory"); ok {
			t.Fatal("a non-member was let in")
		}
	}
	if inner.asked != 3 {
		t.Errorf("negative answers must not be cached: store asked %d times; want 3", inner.asked)
	}

	// Past the TTL the store is asked again; while it fails, the last answer stands.
	now = now.Add(membershipTTL + time.Second)
	inner.err = errors.New("cassandra down")
	if ok, err := ask("alice"); !ok || err != nil {
		t.Errorf("alice during an outage: %v %v; want the cached yes", ok, err)
	}
	if _, err := ask("bob"); err == nil {
		t.Error("an unknown user during an outage must get the store's error")
	}
	now = now.Add(membershipStale)
	if _, err := ask("alice"); err == nil {
		t.Error("an answer older than the stale limit must not stand in for the store")
	}

	// A membership change announced for the conversation drops its answers.
	inner.err = nil
	if ok, _ := ask("alice"); !ok {
		t.Fatal("alice")
	}
	inner.members["alice"] = false
	c.invalidate(conv)
	if ok, _ := ask("alice"); ok {
		t.Error("alice still a member after the invalidation")
	}
	if c.n != 0 {
		t.Errorf("entry count %d; want 0", c.n)
	}
}
