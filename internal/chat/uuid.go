package chat

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// ErrInvalidConversation is returned (wrapped) for a malformed conversation id.
var ErrInvalidConversation = errors.New("invalid conversation id")

// ErrInvalidClientMsgID is returned (wrapped) for a malformed client message id.
var ErrInvalidClientMsgID = errors.New("invalid client_msg_id")

// The UUIDs of this package (conversation ids, client message ids) share one implementation:
// random (version 4) and name-based (version 8 layout, SHA-256), parsed from and printed in the
// canonical 8-4-4-4-12 form.

func randomUUID() [16]byte {
	var id [16]byte
	_, _ = rand.Read(id[:])
	id[6] = id[6]&0x0f | 0x40
	id[8] = id[8]&0x3f | 0x80
	return id
}

// nameUUID is the name-based UUID of parts (each followed by a NUL byte, so the parts
// cannot run into each other).
func nameUUID(parts ...string) [16]byte {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	var id [16]byte
	copy(id[:], h.Sum(nil))
	id[6] = id[6]&0x0f | 0x80
	id[8] = id[8]&0x3f | 0x80
	return id
}

func parseUUID(s string) ([16]byte, bool) {
	var id [16]byte
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return id, false
	}
	hexs := s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:36]
	if _, err := hex.Decode(id[:], []byte(hexs)); err != nil {
		return [16]byte{}, false
	}
	return id, true
}

func formatUUID(id [16]byte) string {
	var b [36]byte
	hex.Encode(b[0:8], id[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], id[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], id[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], id[8:10])
	b[23] = '-'
	hex.Encode(b[24:36], id[10:16])
	return string(b[:])
}

// ConversationID is a UUID naming a conversation.
type ConversationID [16]byte

// NewConversationID returns a random (version 4) conversation id, for groups.
func NewConversationID() ConversationID { return randomUUID() }

// DirectConversationID is the one id of the direct (1:1) conversation of two users, the same
// whichever of them asks, so creating it twice creates it once. It is a name-based UUID
// (version 8 layout: SHA-256 of the ordered pair, truncated).
func DirectConversationID(a, b UserID) ConversationID {
	if b < a {
		a, b = b, a
	}
	// The name is "parley/direct", a, b, each NUL-terminated but the last (the layout of the
	// first version, kept so existing direct conversations keep their ids).
	h := sha256.Sum256([]byte("parley/direct\x00" + string(a) + "\x00" + string(b)))
	var id ConversationID
	copy(id[:], h[:16])
	id[6] = id[6]&0x0f | 0x80
	id[8] = id[8]&0x3f | 0x80
	return id
}

// ParseConversationID parses the canonical 36-character UUID form.
func ParseConversationID(s string) (ConversationID, error) {
	id, ok := parseUUID(s)
	if !ok {
		return ConversationID{}, fmt.Errorf("%w: want 8-4-4-4-12 hexadecimal digits", ErrInvalidConversation)
	}
	return id, nil
}

// String is the canonical lower-case UUID form.
func (id ConversationID) String() string { return formatUUID(id) }

// ClientMsgID is the client-generated UUID of a send (or of an event posted through the REST
// API) that makes it idempotent: per conversation and sender, one id is one message.
type ClientMsgID [16]byte

// NewClientMsgID returns a time-ordered client message id (UUIDv7, RFC 9562: 48 bits of
// Unix milliseconds, then random bits), as the SDKs mint them: while Cassandra is down the
// sequencer can tell a fresh send from a late resend by the id alone (docs/delivery.md).
func NewClientMsgID() ClientMsgID {
	id := ClientMsgID(randomUUID())
	ms := uint64(time.Now().UnixMilli())
	for i := 0; i < 6; i++ {
		id[i] = byte(ms >> (40 - 8*i))
	}
	id[6] = id[6]&0x0f | 0x70
	return id
}

// Time is when a UUIDv7 id was minted (ok false for any other version).
func (id ClientMsgID) Time() (t time.Time, ok bool) {
	if id[6]>>4 != 7 {
		return time.Time{}, false
	}
	var ms int64
	for _, b := range id[:6] {
		ms = ms<<8 | int64(b)
	}
	return time.UnixMilli(ms), true
}

// DerivedClientMsgID is the name-based id of parts: the same parts give the same id, so a
// request repeated without an idempotency key still makes one event.
func DerivedClientMsgID(parts ...string) ClientMsgID { return nameUUID(parts...) }

// ParseClientMsgID parses the canonical 36-character UUID form.
func ParseClientMsgID(s string) (ClientMsgID, error) {
	id, ok := parseUUID(s)
	if !ok {
		return ClientMsgID{}, fmt.Errorf("%w: want a UUID (8-4-4-4-12 hexadecimal digits)", ErrInvalidClientMsgID)
	}
	return id, nil
}

// String is the canonical lower-case UUID form.
func (id ClientMsgID) String() string { return formatUUID(id) }
