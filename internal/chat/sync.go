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

// MaxUnread bounds an unread count: a count of MaxUnread means that many or more, or more
// than MaxUnreadScan messages and events after the read position (the count reads at most
// MaxUnreadScan of them).
const MaxUnread = 1000

// MaxUnreadScan bounds the rows one unread count reads: the messages and events after the
// read position, the ones that never count (edits, reactions, membership, the user's own
// texts) included. Seqs are contiguous, so it is a bound on the seqs read.
const MaxUnreadScan = 2 * MaxUnread

// MaxSyncConversations bounds the conversation entries of one sync page.
const MaxSyncConversations = 1000

// MaxSyncScan bounds the rows the unread counts of one sync page read (each entry's at most
// MaxUnreadScan, nothing for one read to its end): a page stops before an entry that would
// go over it, so a page has at least 100 entries that all need a full count.
const MaxSyncScan = 100 * MaxUnreadScan

// SyncRequest is what a reconnecting device knows.
type SyncRequest struct {
	// Since is the token of its last complete sync ("" for the first).
	Since string
	// Cursors are the last seq it has of each conversation; missing ones count as 0.
	Cursors map[ConversationID]int64
	// Limit bounds the messages returned (default 200, at most 1000).
	Limit int
	// Page is the continuation of a catch-up: SyncResult.Page of the page before ("" for a
	// catch-up's first page). With it, Since is not read: the token carries it.
	Page string
	// MaxBytes, when positive, bounds the page in bytes too: conversation entries and
	// messages are added while their sizes (as EntrySize and Size measure them) fit in
	// MaxBytes, and a page that stops for it has More set, like one that reached Limit. A
	// page always holds at least one item when one is due (a message larger than MaxBytes
	// alone), so paging makes progress whatever the sizes.
	MaxBytes int
	// Size is a message's size on the wire (wire.MessageBytes); required with MaxBytes.
	Size func(Message) int
	// EntrySize is a conversation entry's size on the wire, at most (wire.ConversationBytes);
	// required with MaxBytes.
	EntrySize func(Progress) int
}

// SyncResult is one page of what changed. The pages of one catch-up carry each changed
// conversation once, in conversation id order, each followed by its messages.
type SyncResult struct {
	// Conversations changed since the token or with messages after the cursor: those of this
	// page, each returned once in a catch-up (at most MaxSyncConversations a page, and their
	// unread counts reading at most MaxSyncScan rows).
	Conversations []Progress
	// Messages after the cursors, by conversation, each in seq order.
	Messages []Message
	// More: the page is full; sync again with Page, the same Since and the cursors. When More
	// is false, Since is the token for the next sync.
	More  bool
	Since string
	// Page continues the catch-up (set with More): a token signed for the user that says
	// where the next page starts, so any server can serve it.
	Page string
}

// Receipt kinds: how far a user's devices have received a conversation, and read it.
const (
	ReceiptDelivered = "delivered"
	ReceiptRead      = "read"
)
