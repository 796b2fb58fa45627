// Package cursor signs and checks the opaque tokens Parley hands clients to continue from:
// sync's since-tokens and page tokens, and the REST API's page cursors. A token is bound to
// its purpose, to the user it was issued to and, for a page of one conversation, to that
// conversation, and signed with HMAC-SHA256 under a key set: one current key signs, older
// keys still verify, so keys can be rotated without refusing the tokens clients hold.
// Anything else (tampered, another user's, another conversation's, a purpose's token used for
// another, a key no longer in the set) is refused with chat.ErrInvalid, which the error table
// answers as 400 bad_request.
//
// The standard library's crypto/hmac is the library here: a cursor needs a MAC over a few
// fields and nothing of what JWT or PASETO add (claims, algorithms, expiry, encryption), and
// a short token keeps URLs and frames small.
package cursor

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/parleyhq/parley/internal/chat"
)

// MinSecretLen is the shortest key secret accepted, in bytes.
const MinSecretLen = 32

// macLen is how much of the HMAC-SHA256 a token carries (128 bits).
const macLen = 16

// Key is one signing key: an id, carried in every token it signs, and its secret.
type Key struct {
	ID     string
	Secret []byte
}

// Validate reports whether the key is usable: an id of 1 to 32 letters, digits, '-' or '_',
// and a secret of at least MinSecretLen bytes.
func (k Key) Validate() error {
	if k.ID == "" || len(k.ID) > 32 || strings.Trim(k.ID, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != "" {
		return fmt.Errorf("cursor key id %q: want 1 to 32 letters, digits, '-' or '_'", k.ID)
	}
	if len(k.Secret) < MinSecretLen {
		return fmt.Errorf("cursor key %q: secret is %d bytes, at least %d required", k.ID, len(k.Secret), MinSecretLen)
	}
	return nil
}

// Derive returns the key of id whose secret is derived from another secret (HMAC-SHA256 of a
// fixed label under it): parleyd's default when no cursor key is configured is derived from
// the HS256 token secret, which every process of a deployment shares.
func Derive(id string, secret []byte) Key {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte("parley cursor key v1"))
	return Key{ID: id, Secret: h.Sum(nil)}
}

// Keys is a key set: the first key signs, every key verifies.
type Keys struct {
	current Key
	byID    map[string][]byte
}

// NewKeys returns the set that signs with current and also accepts tokens signed by previous.
func NewKeys(current Key, previous ...Key) (*Keys, error) {
	ks := &Keys{current: current, byID: map[string][]byte{}}
	for _, k := range append([]Key{current}, previous...) {
		if err := k.Validate(); err != nil {
			return nil, err
		}
		if _, dup := ks.byID[k.ID]; dup {
			return nil, fmt.Errorf("cursor key id %q appears twice", k.ID)
		}
		ks.byID[k.ID] = k.Secret
	}
	return ks, nil
}

// ParseKeys reads a key set written as "id=secret,id=secret,...": the first signs, the rest
// only verify. A secret is the text after the first '=' (at least MinSecretLen bytes, no ',';
// the output of `openssl rand -base64 32` will do).
func ParseKeys(s string) (*Keys, error) {
	var keys []Key
	for _, part := range strings.Split(s, ",") {
		id, secret, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return nil, errors.New(`want id=secret[,id=secret...] (the first key signs, the others only verify)`)
		}
		keys = append(keys, Key{ID: id, Secret: []byte(secret)})
	}
	if len(keys) == 0 {
		return nil, errors.New("no key")
	}
	return NewKeys(keys[0], keys[1:]...)
}

// CurrentID is the id of the key that signs.
func (ks *Keys) CurrentID() string { return ks.current.ID }

// Scope is what a token is bound to: its purpose (each issuer its own, so a token of one kind
// is never taken for another), the user it was issued to, and the conversation for a page of
// one (the zero id otherwise).
type Scope struct {
	Purpose      string
	User         chat.UserID
	Conversation chat.ConversationID
}

// Purposes of the tokens Parley issues.
const (
	PurposeSince    = "since"     // sync's since-token (inbox)
	PurposeSyncPage = "sync-page" // the continuation of a sync catch-up (inbox)
	PurposeInbox    = "inbox"     // a page of GET /v1/conversations
	PurposeMessages = "messages"  // a page of GET /v1/conversations/{id}/messages
)

// Seal returns the token carrying payload within scope, signed with the current key:
// "<key id>.<payload>.<mac>", base64url without padding. The payload is not secret (clients
// must not read it, but can): put no secret in it.
func (ks *Keys) Seal(s Scope, payload []byte) string {
	enc := base64.RawURLEncoding.Strict()
	return ks.current.ID + "." + enc.EncodeToString(payload) + "." + enc.EncodeToString(mac(ks.current.Secret, ks.current.ID, s, payload))
}

// Open checks token against scope and returns its payload. Every failure wraps
// chat.ErrInvalid and names no detail a forger could use beyond "not one of ours".
func (ks *Keys) Open(s Scope, token string) ([]byte, error) {
	bad := fmt.Errorf("%w: %s is not a token this server issued to you", chat.ErrInvalid, what(s.Purpose))
	id, rest, ok := strings.Cut(token, ".")
	if !ok {
		return nil, bad
	}
	p64, m64, ok := strings.Cut(rest, ".")
	if !ok {
		return nil, bad
	}
	secret, ok := ks.byID[id]
	if !ok {
		return nil, bad
	}
	enc := base64.RawURLEncoding.Strict()
	payload, err1 := enc.DecodeString(p64)
	got, err2 := enc.DecodeString(m64)
	if err1 != nil || err2 != nil || !hmac.Equal(got, mac(secret, id, s, payload)) {
		return nil, bad
	}
	return payload, nil
}

func what(purpose string) string {
	switch purpose {
	case PurposeSince:
		return "since"
	case PurposeSyncPage:
		return "page"
	}
	return "cursor"
}

// mac is the truncated HMAC-SHA256 of every field, each length-prefixed so that no two
// different scopes and payloads give the same input.
func mac(secret []byte, id string, s Scope, payload []byte) []byte {
	h := hmac.New(sha256.New, secret)
	field := func(b []byte) {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	field([]byte("parley-cursor-v1"))
	field([]byte(id))
	field([]byte(s.Purpose))
	field([]byte(s.User))
	field(s.Conversation[:])
	field(payload)
	return h.Sum(nil)[:macLen]
}
