// Package rest holds the JSON bodies of Parley's REST API (docs/openapi.yaml) that both the
// server and the SDKs read or write, so the two cannot drift apart. Like its parent protocol,
// it is layer 0: standard library only (here, not even that).
package rest

// Conversation is a conversation with its current members.
type Conversation struct {
	ID        string   `json:"id"`
	Kind      string   `json:"kind"`
	Title     string   `json:"title,omitempty"`
	CreatedBy string   `json:"created_by"`
	CreatedAt int64    `json:"created_at"`
	LastSeq   int64    `json:"last_seq"`
	Members   []Member `json:"members"`
}

// Member is a current member and their role.
type Member struct {
	User string `json:"user"`
	Role string `json:"role"`
}

// InboxEntry is one conversation of the inbox.
type InboxEntry struct {
	ID    string `json:"id"`
	Kind  string `json:"kind"`
	Title string `json:"title,omitempty"`
	// Peer is the other member of a direct conversation (absent for a group).
	Peer        string `json:"peer,omitempty"`
	LastSeq     int64  `json:"last_seq"`
	ReadSeq     int64  `json:"read_seq"`
	Unread      int64  `json:"unread"`
	LastAt      int64  `json:"last_at"`
	LastSender  string `json:"last_sender,omitempty"`
	LastPreview string `json:"last_preview,omitempty"`
}

// Inbox is a page of the inbox, most recently active first.
type Inbox struct {
	Conversations []InboxEntry `json:"conversations"`
	// Next is the cursor of the next page ("" on the last page).
	Next string `json:"next,omitempty"`
}

// Accepted answers a posted change: it is durable and will be sequenced.
type Accepted struct {
	Conversation string `json:"conversation"`
	ClientMsgID  string `json:"client_msg_id"`
	// Kind is the kind of the accepted entry (text, edit, delete, reaction, ...).
	Kind       string `json:"kind,omitempty"`
	AcceptedAt int64  `json:"accepted_at"`
}
