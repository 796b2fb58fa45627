package chat

// Progress is where one conversation stands for one user: how far it has gone (LastSeq), how
// far the user has read it (ReadSeq), and how many other members' text messages are after the
// read position (Unread: counted from the stored messages, never incremented, so it cannot
// drift; at most MaxUnread).
type Progress struct {
	Conversation ConversationID
	LastSeq      int64
	ReadSeq      int64
	Unread       int64
	// Peer is the other member of a direct conversation ("" for a group).
	Peer UserID
}

// MaxUnread bounds an unread count: a count of MaxUnread means that many or more.
const MaxUnread = 1000

// SyncRequest is what a reconnecting device knows.
type SyncRequest struct {
	// Since is the token of its last complete sync ("" for the first).
	Since string
	// Cursors are the last seq it has of each conversation; missing ones count as 0.
	Cursors map[ConversationID]int64
	// Limit bounds the messages returned (default 200, at most 1000).
	Limit int
	// MaxBytes, when positive, bounds the page in bytes too: messages are added while their
	// sizes (as Size measures them) fit in MaxBytes, and a page that stops for it has More
	// set, like one that reached Limit. A page always holds at least one message when one is
	// due, so paging makes progress whatever the sizes.
	MaxBytes int
	// Size is a message's size on the wire (wire.MessageBytes); required with MaxBytes.
	Size func(Message) int
}

// SyncResult is one page of what changed.
type SyncResult struct {
	// Conversations changed since the token or with messages after the cursor.
	Conversations []Progress
	// Messages after the cursors, by conversation, each in seq order.
	Messages []Message
	// More: the page is full; sync again with the cursors advanced past Messages and the same
	// Since. When More is false, Since is the token for the next sync.
	More  bool
	Since string
}

// Receipt kinds: how far a user's devices have received a conversation, and read it.
const (
	ReceiptDelivered = "delivered"
	ReceiptRead      = "read"
)
