package protocol

// Version is the protocol version this package implements.
const Version = 1

// Subprotocol is the WebSocket subprotocol a client must offer (Sec-WebSocket-Protocol).
const Subprotocol = "parley.v1.json"

// TokenSubprotocolPrefix marks a token carried in Sec-WebSocket-Protocol, for browsers, which
// cannot set an Authorization header on a WebSocket: the client offers
// "parley.v1.json, parley.token.<JWT>" and the server selects "parley.v1.json".
const TokenSubprotocolPrefix = "parley.token."

// Path is the WebSocket endpoint.
const Path = "/v1/ws"

// Type names a frame. Client frames are sent by clients, server frames by the server.
type Type string

// Client frames.
const (
	// TypeSend sends a message to a conversation; answered by accepted or error.
	TypeSend Type = "send"
	// TypeAck says this device has received a conversation's messages up to seq.
	TypeAck Type = "ack"
	// TypeRead says the user has read a conversation up to seq.
	TypeRead Type = "read"
	// TypeSync asks for what changed since a since-token and the messages after cursors.
	TypeSync Type = "sync"
	// TypePresenceSubscribe watches users' presence; answered by a presence snapshot.
	TypePresenceSubscribe Type = "presence.subscribe"
	// TypePresenceUnsubscribe stops watching users.
	TypePresenceUnsubscribe Type = "presence.unsubscribe"
	// TypeTyping says the user is typing in a conversation (also pushed by the server).
	TypeTyping Type = "typing"
	// TypePing asks for a pong; an application-level liveness check.
	TypePing Type = "ping"
	// TypeAuthRefresh replaces the connection's token before it expires.
	TypeAuthRefresh Type = "auth.refresh"
)

// Server frames.
const (
	// TypeHello is the first frame on every connection: session, time, heartbeat, limits.
	TypeHello Type = "hello"
	// TypeAccepted answers send: the message is durable and will be delivered.
	TypeAccepted Type = "accepted"
	// TypeMessage pushes a sequenced message (also the sender's own, to all its devices).
	TypeMessage Type = "message"
	// TypeReceipt says a member received or read a conversation up to seq.
	TypeReceipt Type = "receipt"
	// TypeSyncResult answers sync with one page of changes.
	TypeSyncResult Type = "sync.result"
	// TypePresence carries presence states: the snapshot answering presence.subscribe (with
	// its id) or an update (without id).
	TypePresence Type = "presence"
	// TypePresenceResync says presence updates to this connection were lost: what the client
	// shows of its watched users may be stale until it takes a fresh snapshot
	// (presence.subscribe again with the users it watches).
	TypePresenceResync Type = "presence.resync"
	// TypePong answers ping.
	TypePong Type = "pong"
	// TypeOK answers a request that has no specific result (ack, read, typing,
	// presence.unsubscribe, auth.refresh) when the request carried an id.
	TypeOK Type = "ok"
	// TypeError answers a request that failed, or reports a frame that could not be handled.
	TypeError Type = "error"
	// TypeReconnect asks the client to reconnect after a delay (drain, slow consumer).
	TypeReconnect Type = "reconnect"
)

// ClientTypes are the frame types a client may send.
var ClientTypes = []Type{TypeSend, TypeAck, TypeRead, TypeSync, TypePresenceSubscribe,
	TypePresenceUnsubscribe, TypeTyping, TypePing, TypeAuthRefresh}

// IsClientType reports whether t is a frame type clients may send.
func IsClientType(t Type) bool {
	for _, c := range ClientTypes {
		if c == t {
			return true
		}
	}
	return false
}

// Ephemeral reports whether frames of type t may be dropped under backpressure: they carry no
// state that sync cannot rebuild (typing, presence updates).
func Ephemeral(t Type) bool {
	return t == TypeTyping || t == TypePresence
}

// Frame is the envelope of every frame: a JSON object with "type", an optional request "id",
// and the fields of its type. One struct carries the union of all fields so a frame is decoded
// in a single pass; Validate checks that the fields its type requires are present.
type Frame struct {
	Type Type `json:"type"`
	// ID is chosen by the client (1 to 64 bytes) and echoed in the reply.
	ID string `json:"id,omitempty"`

	// Conversation is a conversation id (UUID).
	Conversation string `json:"conversation,omitempty"`
	// ClientMsgID is the client-generated UUID that makes send idempotent.
	ClientMsgID string `json:"client_msg_id,omitempty"`
	// Body is a message's text.
	Body string `json:"body,omitempty"`
	// Seq is a position in a conversation: of a message, or "up to" in ack, read, receipt.
	Seq int64 `json:"seq,omitempty"`
	// Sender is the user who sent a message; User is the user a receipt, typing or presence is about.
	Sender       string `json:"sender,omitempty"`
	SenderDevice string `json:"sender_device,omitempty"`
	User         string `json:"user,omitempty"`
	// TS is a server timestamp in Unix milliseconds.
	TS int64 `json:"ts,omitempty"`
	// Kind qualifies a message (text, edit, delete, ...) or a receipt (delivered, read).
	Kind string `json:"kind,omitempty"`
	// TargetSeq is the message an event (edit, delete, reaction) refers to.
	TargetSeq int64 `json:"target_seq,omitempty"`

	// Users are the users of presence.subscribe and presence.unsubscribe.
	Users []string `json:"users,omitempty"`
	// Presence are presence states (presence frames).
	Presence []PresenceState `json:"presence,omitempty"`

	// Since is the inbox since-token of sync and sync.result ("" for a first sync).
	Since string `json:"since,omitempty"`
	// Page is the continuation token of a catch-up: in a sync.result with more, and in the
	// sync that asks for the next page ("" for a catch-up's first page).
	Page string `json:"page,omitempty"`
	// Cursors are a device's last received seq per conversation (sync).
	Cursors []Cursor `json:"cursors,omitempty"`
	// Limit bounds the messages of one sync.result page.
	Limit int `json:"limit,omitempty"`
	// Messages and Conversations are the contents of a sync.result page (each changed
	// conversation once in a catch-up, on one of its pages); More says another page follows
	// (send sync again with the returned page, the same since and the cursors).
	Messages      []Message      `json:"messages,omitempty"`
	Conversations []Conversation `json:"conversations,omitempty"`
	More          bool           `json:"more,omitempty"`

	// Token is a JWT (auth.refresh).
	Token string `json:"token,omitempty"`

	// Hello fields.
	Session     string  `json:"session,omitempty"`
	Device      string  `json:"device,omitempty"`
	Version     int     `json:"version,omitempty"`
	HeartbeatMS int64   `json:"heartbeat_ms,omitempty"`
	ExpiresAt   int64   `json:"expires_at,omitempty"`
	Limits      *Limits `json:"limits,omitempty"`

	// Error fields.
	Code         Code   `json:"code,omitempty"`
	Message      string `json:"message,omitempty"`
	Retryable    bool   `json:"retryable,omitempty"`
	RetryAfterMS int64  `json:"retry_after_ms,omitempty"`

	// Reconnect fields: AfterMS is the delay before reconnecting; Reason says why.
	AfterMS int64  `json:"after_ms,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// Message is a sequenced message as pushed (message frame) and synced (sync.result).
type Message struct {
	Conversation string `json:"conversation"`
	Seq          int64  `json:"seq"`
	Sender       string `json:"sender"`
	SenderDevice string `json:"sender_device,omitempty"`
	ClientMsgID  string `json:"client_msg_id"`
	Kind         string `json:"kind"`
	Body         string `json:"body,omitempty"`
	TargetSeq    int64  `json:"target_seq,omitempty"`
	// User is the member a membership event (member_added, member_removed, member_left) is about.
	User string `json:"user,omitempty"`
	TS   int64  `json:"ts"`

	// The latest state of a text message, in history reads and sync (never in live message
	// frames, which carry the log entry as it was sequenced): EditedSeq is the seq of the
	// latest edit (Body is then the edited text), Deleted hides the body, Reactions are the
	// current reactions.
	EditedSeq int64      `json:"edited_seq,omitempty"`
	Deleted   bool       `json:"deleted,omitempty"`
	Reactions []Reaction `json:"reactions,omitempty"`
}

// Reaction is one emoji on a message and the users who added it.
type Reaction struct {
	Emoji string   `json:"emoji"`
	Users []string `json:"users"`
}

// Conversation is one inbox entry of a sync.result.
type Conversation struct {
	Conversation string `json:"conversation"`
	LastSeq      int64  `json:"last_seq"`
	ReadSeq      int64  `json:"read_seq"`
	Unread       int64  `json:"unread"`
	// Peer is the other member of a direct conversation (absent for a group).
	Peer string `json:"peer,omitempty"`
}

// Cursor is a device's position in one conversation.
type Cursor struct {
	Conversation string `json:"conversation"`
	Seq          int64  `json:"seq"`
}

// PresenceState is one user's presence.
type PresenceState struct {
	User string `json:"user"`
	// State is online, offline or unknown (presence store unavailable).
	State string `json:"state"`
	// LastSeen is Unix milliseconds, when known and the user is offline.
	LastSeen int64 `json:"last_seen,omitempty"`
}

// Presence states.
const (
	PresenceOnline  = "online"
	PresenceOffline = "offline"
	PresenceUnknown = "unknown"
)

// Limits are announced in hello; exceeding one gets the error or close code documented with it.
type Limits struct {
	// MaxFrameBytes is the largest frame the server reads (larger: close 1009).
	MaxFrameBytes int `json:"max_frame_bytes"`
	// MaxBodyBytes is the largest message body (larger: error body_too_large).
	MaxBodyBytes int `json:"max_body_bytes"`
	// FramesPerSecond is the sustained client frame rate (above: error rate_limited, then close 4008).
	FramesPerSecond int `json:"frames_per_second"`
	// FrameBurst is how many frames may arrive at once above the sustained rate.
	FrameBurst int `json:"frame_burst"`
	// MaxSubscriptions is how many users one connection may watch (above: too_many_subscriptions).
	MaxSubscriptions int `json:"max_subscriptions"`
}
