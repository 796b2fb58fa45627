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

// ConversationID is a UUID naming a conversation.
type ConversationID [16]byte

// NewConversationID returns a random (version 4) conversation id, for groups.
func NewConversationID() ConversationID {
	var id ConversationID
	_, _ = rand.Read(id[:])
	id[6] = id[6]&0x0f | 0x40
	id[8] = id[8]&0x3f | 0x80
	return id
}

// DirectConversationID is the one id of the direct (1:1) conversation of two users, the same
// whichever of them asks, so creating it twice creates it once. It is a name-based UUID
// (version 8 layout: SHA-256 of the ordered pair, truncated).
func DirectConversationID(a, b UserID) ConversationID {
	if b < a {
		a, b = b, a
	}
	h := sha256.Sum256([]byte("parley/direct\x00" + string(a) + "\x00" + string(b)))
	var id ConversationID
	copy(id[:], h[:16])
	id[6] = id[6]&0x0f | 0x80
	id[8] = id[8]&0x3f | 0x80
	return id
}

// ParseConversationID parses the canonical 36-character UUID form.
func ParseConversationID(s string) (ConversationID, error) {
	var id ConversationID
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return id, fmt.Errorf("%w: want 8-4-4-4-12 hexadecimal digits", ErrInvalidConversation)
	}
	hexs := s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:36]
	if _, err := hex.Decode(id[:], []byte(hexs)); err != nil {
		return ConversationID{}, fmt.Errorf("%w: want 8-4-4-4-12 hexadecimal digits", ErrInvalidConversation)
	}
	return id, nil
}

// String is the canonical lower-case UUID form.
func (id ConversationID) String() string {
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

// Kind is what a conversation is.
type Kind string

// Conversation kinds.
const (
	KindDirect Kind = "direct"
	KindGroup  Kind = "group"
)

// Role is a member's role in a group.
type Role string

// Member roles. Direct conversations have two members of role member.
const (
	RoleOwner  Role = "owner"
	RoleAdmin  Role = "admin"
	RoleMember Role = "member"
)

// MessageKind says what a message is: text, or an event about an earlier message or about the
// membership. Events have their own seq; TargetSeq names the message an edit, deletion or
// reaction refers to, and TargetUser the member a membership event is about.
type MessageKind string

// Message kinds.
const (
	MessageText            MessageKind = "text"
	MessageEdit            MessageKind = "edit"     // Body is the new text of TargetSeq
	MessageDelete          MessageKind = "delete"   // TargetSeq is deleted (its body is no longer served)
	MessageReaction        MessageKind = "reaction" // Body is the emoji the sender added to TargetSeq
	MessageReactionRemoved MessageKind = "reaction_removed"
	MessageMemberAdded     MessageKind = "member_added" // TargetUser joined, added by Sender
	MessageMemberRemoved   MessageKind = "member_removed"
	MessageMemberLeft      MessageKind = "member_left"
)

// Known reports whether k is one of the kinds above.
func (k MessageKind) Known() bool {
	switch k {
	case MessageText, MessageEdit, MessageDelete, MessageReaction, MessageReactionRemoved,
		MessageMemberAdded, MessageMemberRemoved, MessageMemberLeft:
		return true
	}
	return false
}

// TargetsMessage reports whether events of kind k refer to an earlier message (TargetSeq).
func (k MessageKind) TargetsMessage() bool {
	return k == MessageEdit || k == MessageDelete || k == MessageReaction || k == MessageReactionRemoved
}

// Membership reports whether k changes the membership (TargetUser).
func (k MessageKind) Membership() bool {
	return k == MessageMemberAdded || k == MessageMemberRemoved || k == MessageMemberLeft
}

// Message is one entry of a conversation's log. Entries are immutable once stored; the fields
// under "latest state" are not stored with the entry but folded in from later events when a
// text message is read.
type Message struct {
	Conversation ConversationID
	Seq          int64
	Kind         MessageKind
	Sender       UserID
	SenderDevice DeviceID
	ClientMsgID  [16]byte
	Body         string
	TargetSeq    int64
	TargetUser   UserID
	CreatedAt    time.Time

	// Latest state (reads only).
	EditedSeq int64 // seq of the latest edit, 0 if never edited
	Deleted   bool
	Reactions []Reaction
}

// Reaction is one emoji on a message and who added it.
type Reaction struct {
	Emoji string
	Users []UserID
}
