package inbox

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	gocql "github.com/apache/cassandra-gocql-driver/v2"

	"github.com/parleyhq/parley/history"
	"github.com/parleyhq/parley/internal/chat"
)

// ErrInvalid is returned (wrapped) for a malformed request (a bad since-token).
var ErrInvalid = errors.New("invalid request")

// MaxConversations bounds how many conversations of one user the inbox reads at once.
const MaxConversations = 5000

// Inbox reads and updates users' inboxes.
type Inbox struct {
	s       *gocql.Session
	history *history.Store
	now     func() time.Time
}

// New returns an Inbox on Parley's keyspace.
func New(s *gocql.Session, h *history.Store) *Inbox {
	return &Inbox{s: s, history: h, now: time.Now}
}

// Entry is one conversation in a user's inbox.
type Entry struct {
	Conversation chat.ConversationID
	Kind         chat.Kind
	Title        string
	LastSeq      int64
	ReadSeq      int64
	ReadAt       time.Time
	LastAt       time.Time // last message, or creation when there is none
	Preview      string
	LastSender   chat.UserID
	// JoinedSeq and LeftSeq bound what the user may see of the conversation (see
	// history.Member). For a conversation the user left, LastSeq is LeftSeq and the last
	// activity fields are cleared: nothing after leaving is shown.
	JoinedSeq int64
	LeftSeq   int64
}

// Window is the user's visible range of the conversation.
func (e Entry) Window() history.Window { return history.Window{From: e.JoinedSeq, To: e.LeftSeq} }

// Unread is the number of messages after the read position.
func (e Entry) Unread() int64 { return max(0, e.LastSeq-e.ReadSeq) }

// List returns the user's conversations, most recently active first. Conversations the user
// has left or was removed from are not listed.
func (in *Inbox) List(ctx context.Context, user chat.UserID) ([]Entry, error) {
	all, err := in.list(ctx, user)
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, e := range all {
		if e.LeftSeq == 0 {
			out = append(out, e)
		}
	}
	return out, nil
}

// list is List including the conversations the user left (sync delivers up to the leaving).
// It is one read of the user's partition: every row carries what the list shows.
func (in *Inbox) list(ctx context.Context, user chat.UserID) ([]Entry, error) {
	var entries []Entry
	err := in.history.Guard(func() error {
		iter := in.s.Query(`SELECT conversation_id, kind, title, added_at, read_seq, read_at, joined_seq, left_seq,
			last_seq, last_at, last_preview, last_sender FROM user_conversations WHERE user_id = ? LIMIT ?`,
			string(user), MaxConversations).Idempotent(true).IterContext(ctx)
		var (
			cid          gocql.UUID
			kind, sender string
			added        time.Time
		)
		for {
			var e Entry
			if !iter.Scan(&cid, &kind, &e.Title, &added, &e.ReadSeq, &e.ReadAt, &e.JoinedSeq, &e.LeftSeq,
				&e.LastSeq, &e.LastAt, &e.Preview, &sender) {
				break
			}
			e.Conversation, e.Kind, e.LastSender = chat.ConversationID(cid), chat.Kind(kind), chat.UserID(sender)
			if e.LastAt.IsZero() {
				e.LastAt = added // no message yet: the time it entered the inbox
			}
			if e.LeftSeq > 0 {
				// Out of the conversation: nothing after leaving is shown.
				e.LastSeq, e.LastAt, e.Preview, e.LastSender = min(e.LastSeq, e.LeftSeq), added, "", ""
			}
			entries = append(entries, e)
		}
		if err := iter.Close(); err != nil {
			return fmt.Errorf("read inbox: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(entries, func(i, j int) bool {
		if !entries[i].LastAt.Equal(entries[j].LastAt) {
			return entries[i].LastAt.After(entries[j].LastAt)
		}
		return entries[i].Conversation.String() < entries[j].Conversation.String()
	})
	return entries, nil
}

// clampForMember checks that user is a current member (ErrNotFound otherwise) and clamps seq
// to the conversation's last seq: nobody reads or receives the future.
func (in *Inbox) clampForMember(ctx context.Context, user chat.UserID, conv chat.ConversationID, seq int64) (int64, error) {
	ok, err := in.history.IsActiveMember(ctx, conv, user)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, history.ErrNotFound
	}
	last, err := in.history.LastSeq(ctx, conv)
	if err != nil {
		return 0, err
	}
	return min(seq, last), nil
}

// MarkRead moves user's read position in a conversation forward to seq (clamped to the last
// seq). It reports the read position after the call and whether it moved. ErrNotFound when
// the user is not a member.
func (in *Inbox) MarkRead(ctx context.Context, user chat.UserID, conv chat.ConversationID, seq int64) (int64, bool, error) {
	seq, err := in.clampForMember(ctx, user, conv, seq)
	if err != nil {
		return 0, false, err
	}
	var (
		read  int64
		moved bool
	)
	err = in.history.Guard(func() error {
		read, moved, err = in.markRead(ctx, user, conv, seq)
		return err
	})
	return read, moved, err
}

// markRead moves the read position forward with a compare-and-set loop.
func (in *Inbox) markRead(ctx context.Context, user chat.UserID, conv chat.ConversationID, seq int64) (int64, bool, error) {
	for attempt := 0; attempt < 5; attempt++ {
		var cur int64
		err := in.s.Query(`SELECT read_seq FROM user_conversations WHERE user_id = ? AND conversation_id = ?`,
			string(user), gocql.UUID(conv)).Idempotent(true).ScanContext(ctx, &cur)
		if err != nil && !errors.Is(err, gocql.ErrNotFound) {
			return 0, false, fmt.Errorf("read position: %w", err)
		}
		if seq <= cur {
			return cur, false, nil
		}
		// Forward only, even with several devices marking read at once.
		applied, err := in.s.Query(`UPDATE user_conversations SET read_seq = ?, read_at = ? WHERE user_id = ? AND conversation_id = ? IF read_seq = ?`,
			seq, in.now(), string(user), gocql.UUID(conv), cur).MapScanCASContext(ctx, map[string]any{})
		if err != nil {
			return 0, false, fmt.Errorf("mark read: %w", err)
		}
		if applied {
			return seq, true, nil
		}
	}
	return 0, false, fmt.Errorf("mark read: too much contention")
}

// SyncRequest is what a reconnecting device knows.
type SyncRequest struct {
	// Since is the token of its last complete sync ("" for the first).
	Since string
	// Cursors are the last seq it has of each conversation; missing ones count as 0.
	Cursors map[chat.ConversationID]int64
	// Limit bounds the messages returned (default 200, at most 1000).
	Limit int
}

// SyncResult is one page of what changed.
type SyncResult struct {
	// Conversations changed since the token or with messages after the cursor.
	Conversations []Entry
	// Messages after the cursors, by conversation, each in seq order.
	Messages []chat.Message
	// More: the page is full; sync again with the cursors advanced past Messages and the same
	// Since. When More is false, Since is the token for the next sync.
	More  bool
	Since string
}

// Sync returns what user's device missed.
func (in *Inbox) Sync(ctx context.Context, user chat.UserID, req SyncRequest) (SyncResult, error) {
	start := in.now()
	since, err := parseSince(req.Since)
	if err != nil {
		return SyncResult{}, err
	}
	limit := req.Limit
	if limit <= 0 {
		limit = 200
	}
	limit = min(limit, 1000)
	entries, err := in.list(ctx, user)
	if err != nil {
		return SyncResult{}, err
	}
	res := SyncResult{Since: req.Since}
	for _, e := range entries {
		cursor := max(req.Cursors[e.Conversation], e.JoinedSeq-1)
		changed := e.LastSeq > cursor || e.LastAt.After(since) || e.ReadAt.After(since)
		if e.LeftSeq > 0 {
			changed = e.LastSeq > cursor // up to and including the leaving, then never again
		}
		if !changed {
			continue
		}
		res.Conversations = append(res.Conversations, e)
		for after := cursor; after < e.LastSeq && !res.More; {
			if len(res.Messages) >= limit {
				res.More = true
				break
			}
			page, err := in.history.After(ctx, e.Conversation, e.Window(), after, min(limit-len(res.Messages), 200))
			if err != nil {
				return SyncResult{}, err
			}
			if len(page) == 0 {
				break
			}
			res.Messages = append(res.Messages, page...)
			after = page[len(page)-1].Seq
		}
	}
	if !res.More {
		// Everything up to the start of this sync is covered. Activity during it is covered by
		// the next sync (or arrives live).
		res.Since = formatSince(start.Add(-sinceMargin))
	}
	return res, nil
}

// sinceMargin is subtracted from a token's time: activity is stamped by other processes'
// clocks, and returning a conversation twice is harmless while missing one is not.
const sinceMargin = 5 * time.Second

// The since-token is opaque to clients: base64 of "v1:<unix milliseconds>".
func formatSince(t time.Time) string {
	return base64.RawURLEncoding.EncodeToString([]byte("v1:" + strconv.FormatInt(t.UnixMilli(), 10)))
}

func parseSince(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) < 4 || string(b[:3]) != "v1:" {
		return time.Time{}, fmt.Errorf("%w: since is not a token this server issued", ErrInvalid)
	}
	ms, err := strconv.ParseInt(string(b[3:]), 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: since is not a token this server issued", ErrInvalid)
	}
	return time.UnixMilli(ms), nil
}

// Ack records that user's device has received a conversation up to seq (clamped to the last
// seq): the device's cursor moves forward, and so does the user's delivered position when this
// is the first of their devices to get that far. It reports the user's delivered position
// after the call and whether it moved (then "delivered" receipts are due). ErrNotFound when
// the user is not a member.
func (in *Inbox) Ack(ctx context.Context, user chat.UserID, device chat.DeviceID, conv chat.ConversationID, seq int64) (int64, bool, error) {
	seq, err := in.clampForMember(ctx, user, conv, seq)
	if err != nil {
		return 0, false, err
	}
	var (
		delivered int64
		moved     bool
	)
	err = in.history.Guard(func() error {
		if _, _, err := forward(ctx, in.s, "device_cursors", "seq",
			`user_id = ? AND device_id = ? AND conversation_id = ?`, []any{string(user), string(device), gocql.UUID(conv)}, seq); err != nil {
			return err
		}
		delivered, moved, err = forward(ctx, in.s, "user_conversations", "delivered_seq",
			`user_id = ? AND conversation_id = ?`, []any{string(user), gocql.UUID(conv)}, seq)
		return err
	})
	return delivered, moved, err
}

// forward raises an integer column to seq with compare-and-set, never lowering it (several
// devices may acknowledge at once). It returns the value after the call and whether it moved.
// A missing row or value counts as 0. table, column and where are constants of this package.
func forward(ctx context.Context, s *gocql.Session, table, column, where string, key []any, seq int64) (int64, bool, error) {
	for attempt := 0; attempt < 5; attempt++ {
		var cur *int64
		err := s.Query(`SELECT `+column+` FROM `+table+` WHERE `+where, key...).Idempotent(true).ScanContext(ctx, &cur)
		exists := err == nil
		if err != nil && !errors.Is(err, gocql.ErrNotFound) {
			return 0, false, fmt.Errorf("read %s: %w", column, err)
		}
		if cur != nil && seq <= *cur {
			return *cur, false, nil
		}
		var applied bool
		switch {
		case !exists && table == "device_cursors":
			applied, err = s.Query(`INSERT INTO device_cursors (user_id, device_id, conversation_id, seq) VALUES (?, ?, ?, ?) IF NOT EXISTS`,
				append(key, seq)...).MapScanCASContext(ctx, map[string]any{})
		case cur == nil:
			applied, err = s.Query(`UPDATE `+table+` SET `+column+` = ? WHERE `+where+` IF `+column+` = null`,
				append([]any{seq}, key...)...).MapScanCASContext(ctx, map[string]any{})
		default:
			applied, err = s.Query(`UPDATE `+table+` SET `+column+` = ? WHERE `+where+` IF `+column+` = ?`,
				append(append([]any{seq}, key...), *cur)...).MapScanCASContext(ctx, map[string]any{})
		}
		if err != nil {
			return 0, false, fmt.Errorf("move %s: %w", column, err)
		}
		if applied {
			return seq, true, nil
		}
	}
	return 0, false, fmt.Errorf("move %s: too much contention", column)
}
