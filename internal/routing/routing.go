// Package routing names the NATS subjects and headers by which the parts of Parley hand live
// events to each other. It is small on purpose: the edge, delivery, presence and the load-test
// harness share these names without depending on each other or on any store driver.
package routing

import (
	"github.com/nats-io/nats.go"

	"github.com/parleyhq/parley/internal/chat"
)

// The edge subscribes to a user's
// subject while it holds a connection of that user; whoever has a frame for that user
// (delivery, presence, typing) publishes it there, already encoded, with its frame type in
// HeaderFrameType so the edge can apply its drop policy without decoding it.
const (
	// UserSubjectPrefix + user id is the subject of one user's live events.
	UserSubjectPrefix = "parley.user."
	// HeaderFrameType carries the protocol frame type of a published frame.
	HeaderFrameType = "Parley-Type"
)

// MembershipSubjectPrefix + conversation id is where the delivery worker announces that it
// applied a membership change of that conversation (an empty message); edges drop their
// cached membership answers for it.
const MembershipSubjectPrefix = "parley.membership."

// MembershipSubject is the announcement subject of a conversation ("*" for all of them).
func MembershipSubject(conv string) string { return MembershipSubjectPrefix + conv }

// PresenceSubjectPrefix + user id carries that user's presence transitions (a JSON
// protocol.PresenceState); edges subscribe while one of their clients watches the user.
const PresenceSubjectPrefix = "parley.presence."

// PresenceSubject is the subject of a user's presence transitions.
func PresenceSubject(u chat.UserID) string { return PresenceSubjectPrefix + string(u) }

// UserSubject is the subject of a user's live events. User ids never contain '.', '*', '>'
// or whitespace (chat.ParseUserID), so the id is one subject token.
func UserSubject(u chat.UserID) string { return UserSubjectPrefix + string(u) }

// MsgPublisher publishes one NATS message (*nats.Conn does).
type MsgPublisher interface {
	PublishMsg(m *nats.Msg) error
}

// Publish sends an encoded frame of type frameType to each user's subject and returns how many
// publishes failed. Live events are best effort: whoever calls this relies on sync to repair.
func Publish(p MsgPublisher, to []chat.UserID, frameType string, data []byte) (failed int) {
	for _, u := range to {
		m := nats.NewMsg(UserSubject(u))
		m.Header.Set(HeaderFrameType, frameType)
		m.Data = data
		if p.PublishMsg(m) != nil {
			failed++
		}
	}
	return failed
}
