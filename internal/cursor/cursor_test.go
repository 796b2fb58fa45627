package cursor_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/cursor"
)

func key(id string) cursor.Key {
	return cursor.Key{ID: id, Secret: []byte(strings.Repeat(id, 32))}
}

func TestSealOpen(t *testing.T) {
	ks, err := cursor.NewKeys(key("k1"))
	if err != nil {
		t.Fatal(err)
	}
	conv := chat.NewConversationID()
	s := cursor.Scope{Purpose: cursor.PurposeMessages, User: "alice", Conversation: conv}
	tok := ks.Seal(s, []byte("b42"))
	if got, err := ks.Open(s, tok); err != nil || string(got) != "b42" {
		t.Fatalf("Open(Seal(b42)) = %q, %v", got, err)
	}
	flip := []byte(tok)
	flip[len(flip)-3] ^= 1
	other, _ := cursor.NewKeys(key("k1x"))
	refused := map[string]struct {
		s   cursor.Scope
		tok string
		ks  *cursor.Keys
	}{
		"tampered mac":         {s, string(flip), ks},
		"tampered payload":     {s, strings.Replace(tok, ".YjQy.", ".YjQz.", 1), ks},
		"another user":         {cursor.Scope{Purpose: s.Purpose, User: "bob", Conversation: conv}, tok, ks},
		"another conversation": {cursor.Scope{Purpose: s.Purpose, User: "alice", Conversation: chat.NewConversationID()}, tok, ks},
		"another purpose":      {cursor.Scope{Purpose: cursor.PurposeInbox, User: "alice", Conversation: conv}, tok, ks},
		"unknown key":          {s, tok, other},
		"garbage":              {s, "not-a-token", ks},
		"empty":                {s, "", ks},
	}
	for name, c := range refused {
		if _, err := c.ks.Open(c.s, c.tok); !errors.Is(err, chat.ErrInvalid) {
			t.Errorf("%s: Open = %v; want chat.ErrInvalid", name, err)
		}
	}
}

// A token signed with the key that was current keeps verifying after a new key takes over,
// and stops once the old key leaves the set.
func TestRotation(t *testing.T) {
	old, _ := cursor.NewKeys(key("k1"))
	s := cursor.Scope{Purpose: cursor.PurposeSince, User: "alice"}
	tok := old.Seal(s, []byte("1"))
	rotated, err := cursor.ParseKeys("k2=" + strings.Repeat("k2", 32) + ",k1=" + strings.Repeat("k1", 32))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rotated.Open(s, tok); err != nil {
		t.Fatalf("old key's token after rotation: %v", err)
	}
	if id, _, _ := strings.Cut(rotated.Seal(s, []byte("1")), "."); id != "k2" {
		t.Errorf("rotated set signs with %q; want k2", id)
	}
	retired, _ := cursor.NewKeys(key("k2"))
	if _, err := retired.Open(s, tok); !errors.Is(err, chat.ErrInvalid) {
		t.Errorf("retired key's token: %v; want refused", err)
	}
}

func TestParseKeys(t *testing.T) {
	for _, bad := range []string{"", "k1", "k1=short", "k 1=" + strings.Repeat("x", 32),
		"k1=" + strings.Repeat("x", 32) + ",k1=" + strings.Repeat("y", 32)} {
		if _, err := cursor.ParseKeys(bad); err == nil {
			t.Errorf("ParseKeys(%q) accepted", bad)
		}
	}
	d := cursor.Derive("hs256", []byte("secret"))
	if d.Validate() != nil || d.ID != "hs256" {
		t.Errorf("Derive gives an invalid key: %v", d.Validate())
	}
}

// A token is one string: changing a part's last character where only its unused trailing
// bits differ decodes to the same bytes under lenient base64, and must still be refused.
func TestTrailingBitsAreRefused(t *testing.T) {
	ks, err := cursor.NewKeys(key("k1"))
	if err != nil {
		t.Fatal(err)
	}
	s := cursor.Scope{Purpose: cursor.PurposeInbox, User: "alice"}
	tok := ks.Seal(s, []byte("12:x")) // 4 bytes: the payload part's last character has 4 unused bits
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	parts := strings.Split(tok, ".")
	for i := 1; i <= 2; i++ {
		p := parts[i]
		last := strings.IndexByte(alphabet, p[len(p)-1])
		changed := append([]string(nil), parts...)
		changed[i] = p[:len(p)-1] + string(alphabet[last^1])
		if _, err := ks.Open(s, strings.Join(changed, ".")); !errors.Is(err, chat.ErrInvalid) {
			t.Errorf("part %d with its last character's trailing bit changed: %v; want chat.ErrInvalid", i, err)
		}
	}
}
