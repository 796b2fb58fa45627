package chat

import (
	"time"
)

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
	ClientMsgID  ClientMsgID
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
