package chat

import (
	"errors"
	"testing"
	"time"
)

func TestConversationIDRoundTrip(t *testing.T) {
	for i := 0; i < 100; i++ {
		id := NewConversationID()
		got, err := ParseConversationID(id.String())
		if err != nil || got != id {
			t.Fatalf("Parse(%s) = %v, %v", id, got, err)
		}
		if id.String()[14] != '4' {
			t.Fatalf("random id %s is not version 4", id)
		}
	}
	upper := "7D1F3A52-5B0E-4C1A-9A57-2F1E0C6B9D10"
	if id, err := ParseConversationID(upper); err != nil || id.String() != "7d1f3a52-5b0e-4c1a-9a57-2f1e0c6b9d10" {
		t.Errorf("Parse(%s) = %v, %v", upper, id, err)
	}
	for _, bad := range []string{"", "7d1f3a525b0e4c1a9a572f1e0c6b9d10", "7d1f3a52-5b0e-4c1a-9a57-2f1e0c6b9d1g", "7d1f3a52_5b0e-4c1a-9a57-2f1e0c6b9d10"} {
		if _, err := ParseConversationID(bad); !errors.Is(err, ErrInvalidConversation) {
			t.Errorf("Parse(%q) error = %v; want ErrInvalidConversation", bad, err)
		}
	}
}

func TestDirectConversationIDIsSymmetricAndDistinct(t *testing.T) {
	ab, ba := DirectConversationID("alice", "bob"), DirectConversationID("bob", "alice")
	if ab != ba {
		t.Fatalf("direct id depends on order: %s vs %s", ab, ba)
	}
	if ab == DirectConversationID("alice", "carol") || ab == DirectConversationID("alic", "ebob") {
		t.Fatal("different pairs share a direct id")
	}
}

// Client message ids parse and print the canonical UUID form, derived ones are stable, and
// malformed ones are refused with ErrInvalidClientMsgID.
func TestClientMsgID(t *testing.T) {
	id := NewClientMsgID()
	back, err := ParseClientMsgID(id.String())
	if err != nil || back != id {
		t.Fatalf("round trip of %s = %s, %v", id, back, err)
	}
	if id[6]>>4 != 7 || id[8]>>6 != 2 {
		t.Errorf("%s is not a version 7, variant 1 UUID", id)
	}
	if at, ok := id.Time(); !ok || time.Since(at) > time.Minute || time.Since(at) < 0 {
		t.Errorf("%s carries the time %v, %v; want now", id, at, ok)
	}
	if _, ok := ClientMsgID(NewConversationID()).Time(); ok {
		t.Error("a version 4 id has a time")
	}
	a, b := DerivedClientMsgID("react", "alice", "7"), DerivedClientMsgID("react", "alice", "7")
	if a != b || a == DerivedClientMsgID("react", "alice7") {
		t.Errorf("derived ids: %s %s; want equal for equal parts and different when parts run together", a, b)
	}
	for _, bad := range []string{"", "not-a-uuid", id.String()[:35], "g" + id.String()[1:]} {
		if _, err := ParseClientMsgID(bad); !errors.Is(err, ErrInvalidClientMsgID) {
			t.Errorf("ParseClientMsgID(%q) = %v; want ErrInvalidClientMsgID", bad, err)
		}
	}
}
