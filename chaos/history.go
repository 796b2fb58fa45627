package chaos

import (
	"time"
)

// Outcome is what became of a send, as the app saw it.
type Outcome string

// Outcomes of a send.
const (
	// SendUnknown: no answer (yet). The SDK keeps the message in its outbox and resends it with
	// the same client_msg_id; at the end of a run, a send still unknown was never answered.
	SendUnknown Outcome = "unknown"
	// SendAccepted: the server answered accepted: the message must never be lost.
	SendAccepted Outcome = "accepted"
	// SendRefused: the server refused it for good (EventSendFailed): it must never appear.
	SendRefused Outcome = "refused"
)

// Send is one message the app asked a device to send, and what became of it.
type Send struct {
	Conversation string `json:"conversation"`
	Sender       string `json:"sender"` // the user
	Device       string `json:"device"` // the device it was sent from, "user/device"
	ClientMsgID  string `json:"client_msg_id"`
	Body         string `json:"body"`
	// Invoked is when the app called Send; Settled when it learnt the outcome.
	Invoked time.Time `json:"invoked"`
	Outcome Outcome   `json:"outcome"`
	Settled time.Time `json:"settled,omitzero"`
	Err     string    `json:"err,omitempty"`
	// UnknownSince is when the send first went unanswered for longer than the SDK's resend
	// delay (so the SDK resent it with the same client_msg_id); zero if it never did.
	UnknownSince time.Time `json:"unknown_since,omitzero"`
}

// Entry is a message at a seq of a conversation, as some observer saw it.
type Entry struct {
	Conversation string `json:"conversation"`
	Seq          int64  `json:"seq"`
	Sender       string `json:"sender"`
	ClientMsgID  string `json:"client_msg_id"`
	Kind         string `json:"kind,omitempty"`
	Body         string `json:"body,omitempty"`
	// At is when it was observed (surfaced to the app, or read).
	At time.Time `json:"at,omitzero"`
}

// key identifies a message: the server keeps one message per (conversation, sender,
// client_msg_id).
type key struct{ conv, sender, id string }

func (e Entry) key() key { return key{e.Conversation, e.Sender, e.ClientMsgID} }
func (s Send) key() key  { return key{s.Conversation, s.Sender, s.ClientMsgID} }

// identity is what must be the same wherever a (conversation, seq) is seen.
func (e Entry) identity() string {
	kind := e.Kind
	if kind == "" {
		kind = "text"
	}
	return e.Sender + "/" + e.ClientMsgID + "/" + kind + "/" + e.Body
}

// Read is one read of one conversation by one reader.
type Read struct {
	// Source names the reader: "sync user", "rest user", "rest-live user".
	Source       string `json:"source"`
	Conversation string `json:"conversation"`
	// Final marks a complete read (from seq 1 to the end) made after every fault healed and
	// every send was answered: final reads are the truth that loss and gaps are checked against.
	Final   bool      `json:"final"`
	Entries []Entry   `json:"entries"`
	At      time.Time `json:"at"`
}

// History is everything a run recorded.
type History struct {
	Sends []Send `json:"sends"`
	// Devices holds, per device ("user/device"), the messages the SDK surfaced to the app,
	// in the order it surfaced them.
	Devices map[string][]Entry `json:"devices"`
	// Members lists, per conversation, the devices that must end up with every message of
	// it (every device of every member; membership does not change during a run).
	Members map[string][]string `json:"members"`
	Reads   []Read              `json:"reads"`
	// Presence holds the samples of the workload users' presence, in time order.
	Presence []PresenceSample `json:"presence,omitempty"`
	// Probe is the probe pair's conversation (its messages are sent only to check recovery,
	// so the timings leave it out).
	Probe string `json:"probe_conversation,omitempty"`
}
