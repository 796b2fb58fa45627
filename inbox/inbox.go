package inbox

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	gocql "github.com/apache/cassandra-gocql-driver/v2"

	"github.com/parleyhq/parley/history"
	"github.com/parleyhq/parley/internal/breaker"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/cursor"
)

// MaxConversations bounds how many conversations of one user the inbox reads at once.
const MaxConversations = 5000

// Config configures an Inbox. Zero values take the defaults.
type Config struct {
	// Breaker guards every call to Cassandra (nil: none). Build it with
	// history.IsCassandraFailure; give the inbox its own, so its failures and the history
	// store's are told apart.
	Breaker *breaker.Breaker
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Cursors signs and checks sync's since-tokens (internal/cursor). Sync needs it (it fails
	// without); the delivery worker's inbox, which only records, does not.
	Cursors *cursor.Keys
}

// Inbox reads and updates users' inboxes: it owns the user_conversations and device_cursors
// tables. Conversations and their members are read from the history store.
type Inbox struct {
	s       *gocql.Session
	history *history.Store
	cfg     Config
}

// New returns an Inbox on Parley's keyspace.
func New(s *gocql.Session, h *history.Store, cfg Config) *Inbox {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Inbox{s: s, history: h, cfg: cfg}
}

func (in *Inbox) now() time.Time { return in.cfg.Now() }

// guard runs fn, a series of Cassandra calls, under the inbox's circuit breaker.
func (in *Inbox) guard(fn func() error) error { return in.cfg.Breaker.Do(fn) }

// Entry is one conversation in a user's inbox.
type Entry struct {
	// Progress is the conversation, its last seq and the user's read seq (and so Unread).
	chat.Progress
	Kind   chat.Kind
	Title  string
	ReadAt time.Time
	// LastAt is the last activity the user sees: their last visible text message or, once
	// they left or were removed, the leaving; the time the row was added when there is none.
	LastAt     time.Time
	Preview    string
	LastSender chat.UserID
	// JoinedSeq and LeftSeq bound what the user may see of the conversation (see
	// history.Member). For a conversation the user left, LastSeq is LeftSeq and the last
	// activity fields are cleared: nothing after leaving is shown.
	JoinedSeq int64
	LeftSeq   int64
	// LeftAt is when the user left or was removed (zero while a member): the row's last
	// activity, which the leaving is (see ApplyMembership). Sync returns the conversation once
	// more if that is after its since-token.
	LeftAt time.Time
}

// Window is the user's visible range of the conversation.
func (e Entry) Window() history.Window { return history.Window{From: e.JoinedSeq, To: e.LeftSeq} }

// List returns the user's conversations, most recently active first, with their unread
// counts. Conversations the user has left or was removed from are not listed.
func (in *Inbox) List(ctx context.Context, user chat.UserID) ([]Entry, error) {
	out, err := in.current(ctx, user)
	if err != nil {
		return nil, err
	}
	if err := in.countUnread(ctx, user, out); err != nil {
		return nil, err
	}
	return out, nil
}

// current is the user's current conversations (not left) without their unread counts: one
// read of the user's partition, what the presence policy needs.
func (in *Inbox) current(ctx context.Context, user chat.UserID) ([]Entry, error) {
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

// Position is a place in a user's conversation list, which is ordered by last activity,
// newest first, then by conversation id: Page continues after it. The zero Position is the
// start of the list.
type Position struct {
	At           time.Time
	Conversation chat.ConversationID
}

// IsZero reports whether p is the start of the list.
func (p Position) IsZero() bool { return p.At.IsZero() && p.Conversation == chat.ConversationID{} }

// PositionOf is where e stands in the list.
func PositionOf(e Entry) Position { return Position{At: e.LastAt, Conversation: e.Conversation} }

// before reports whether an entry at a comes before one at b in the list's order: the order
// List sorts by, so that paging by position and listing agree.
func before(a, b Position) bool {
	if !a.At.Equal(b.At) {
		return a.At.After(b.At)
	}
	return a.Conversation.String() < b.Conversation.String()
}

// Page is List after the position (from the start when it is zero), at most limit entries
// (counting unread for those only), and whether more follow. Paging by position rather than
// offset means a conversation that becomes active meanwhile moves above the position (it is
// on the next first page) without making the next page repeat or skip any other entry.
func (in *Inbox) Page(ctx context.Context, user chat.UserID, after Position, limit int) ([]Entry, bool, error) {
	all, err := in.list(ctx, user)
	if err != nil {
		return nil, false, err
	}
	var page []Entry
	more := false
	for _, e := range all {
		if e.LeftSeq != 0 || (!after.IsZero() && !before(after, PositionOf(e))) {
			continue
		}
		if len(page) == limit {
			more = true
			break
		}
		page = append(page, e)
	}
	if err := in.countUnread(ctx, user, page); err != nil {
		return nil, false, err
	}
	return page, more, nil
}

// countUnread sets each entry's Unread: the other members' text messages after the read
// position (and inside what the user may see), at most chat.MaxUnread. Each count reads at
// most chat.MaxUnreadScan rows (seqs) after the read position: when more follow, the count is
// chat.MaxUnread ("that many or more"). Entries with nothing after the read position cost
// nothing; the others one read each, 8 at a time.
func (in *Inbox) countUnread(ctx context.Context, user chat.UserID, entries []Entry) error {
	var (
		wg    sync.WaitGroup
		sem   = make(chan struct{}, 8)
		mu    sync.Mutex
		first error
	)
	for i := range entries {
		e := &entries[i]
		from, upTo := unreadRange(*e)
		e.Unread = 0
		if upTo <= from {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			n, err := in.history.CountTexts(ctx, e.Conversation, user, from, upTo, chat.MaxUnread)
			if upTo < e.LastSeq {
				n = chat.MaxUnread // more than the scan reads follow: too many to count
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil && first == nil {
				first = err
			}
			e.Unread = int64(n)
		}()
	}
	wg.Wait()
	return first
}

// unreadRange is the seqs the unread count of e reads: (from, upTo], at most
// chat.MaxUnreadScan of them, none when e is read to its end.
func unreadRange(e Entry) (from, upTo int64) {
	from = max(e.ReadSeq, e.JoinedSeq-1)
	return from, max(from, min(e.LastSeq, from+chat.MaxUnreadScan))
}

// list is List including the conversations the user left (sync delivers up to the leaving).
// It is one read of the user's partition: every row carries what the list shows.
func (in *Inbox) list(ctx context.Context, user chat.UserID) ([]Entry, error) {
	var entries []Entry
	err := in.guard(func() error {
		iter := in.s.Query(`SELECT conversation_id, kind, title, peer, added_at, read_seq, sent_seq, read_at, joined_seq, left_seq,
			last_seq, last_at, last_preview, last_sender FROM user_conversations WHERE user_id = ? LIMIT ?`,
			string(user), MaxConversations).Idempotent(true).IterContext(ctx)
		var (
			cid                gocql.UUID
			kind, peer, sender string
			added              time.Time
		)
		for {
			var (
				e    Entry
				sent int64
			)
			if !iter.Scan(&cid, &kind, &e.Title, &peer, &added, &e.ReadSeq, &sent, &e.ReadAt, &e.JoinedSeq, &e.LeftSeq,
				&e.LastSeq, &e.LastAt, &e.Preview, &sender) {
				break
			}
			// A send counts as reading up to it (MarkSent): the position reported, and counted
			// from, is the higher of the two.
			e.ReadSeq = max(e.ReadSeq, sent)
			e.Conversation, e.Kind, e.LastSender = chat.ConversationID(cid), chat.Kind(kind), chat.UserID(sender)
			if e.Kind == chat.KindDirect {
				// A direct conversation has no title (rows written before the peer column
				// kept the peer there); its row names the other member (see Add).
				e.Peer, e.Title = chat.UserID(peer), ""
			}
			if e.LastAt.IsZero() {
				e.LastAt = added // no message yet: the time it entered the inbox
			}
			if e.LeftSeq > 0 {
				// Out of the conversation: nothing after leaving is shown. The row's last
				// activity is the leaving (ApplyMembership).
				e.LeftAt = e.LastAt
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
	for i := range entries {
		if e := &entries[i]; e.Kind == chat.KindDirect && e.Peer == "" {
			// A row written before the peer column: ask the member list, once, and keep the
			// answer in the row.
			members, err := in.history.Members(ctx, e.Conversation)
			if err != nil {
				return nil, err
			}
			for _, m := range members {
				if m.User != user {
					e.Peer = m.User
				}
			}
			if e.Peer != "" {
				if err := in.guard(func() error { return in.fillPeer(ctx, user, e.Conversation, e.Peer) }); err != nil {
					return nil, err
				}
			}
		}
	}
	sort.Slice(entries, func(i, j int) bool { return before(PositionOf(entries[i]), PositionOf(entries[j])) })
	return entries, nil
}

// clampForMember checks that user is a current member (chat.ErrNotFound otherwise) and clamps seq
// to the conversation's last seq: nobody reads or receives the future.
func (in *Inbox) clampForMember(ctx context.Context, user chat.UserID, conv chat.ConversationID, seq int64) (int64, error) {
	ok, err := in.history.IsActiveMember(ctx, conv, user)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, chat.ErrNotFound
	}
	last, err := in.history.LastSeq(ctx, conv)
	if err != nil {
		return 0, err
	}
	return min(seq, last), nil
}

// MarkRead moves user's read position in a conversation forward to seq (clamped to the last
// seq). It reports the read position after the call and whether it moved. chat.ErrNotFound when
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
	err = in.guard(func() error {
		read, moved, err = in.forward(ctx, readPosition, []any{string(user), gocql.UUID(conv)}, seq, in.now())
		return err
	})
	return read, moved, err
}

// Sync returns one page of what user's device missed. The pages of one catch-up visit the
// user's conversations in id order: each changed one is returned once, on the page that
// reaches it, followed by its messages; the page token (SyncResult.Page, signed for the user)
// says where the next page starts, so the server keeps nothing between pages. A page holds at
// most chat.MaxSyncConversations entries whose unread counts read at most chat.MaxSyncScan
// rows, req.Limit messages and, with req.MaxBytes, that many bytes of entries and messages
// (one larger message goes alone). Unread is counted for the page's entries only.
func (in *Inbox) Sync(ctx context.Context, user chat.UserID, req chat.SyncRequest) (chat.SyncResult, error) {
	pos, err := in.syncPosition(user, req)
	if err != nil {
		return chat.SyncResult{}, err
	}
	limit := req.Limit
	if limit <= 0 {
		limit = 200
	}
	limit = min(limit, 1000)
	entries, err := in.list(ctx, user)
	if err != nil {
		return chat.SyncResult{}, err
	}
	slices.SortFunc(entries, func(a, b Entry) int { return bytes.Compare(a.Conversation[:], b.Conversation[:]) })
	res := chat.SyncResult{Since: req.Since}
	var carried []Entry // the entries of this page, in res.Conversations' order
	used := 0           // the page's bytes, as req.EntrySize and req.Size measure them
	scan := int64(0)    // the rows the carried entries' unread counts read
	msgBytes := 0       // the messages' part of used
	fits := func(n int) bool { return req.MaxBytes <= 0 || used == 0 || used+n <= req.MaxBytes }
	// next is where the page stopped: the next page resumes there.
	var next *syncPosition
	for _, e := range entries {
		if bytes.Compare(e.Conversation[:], pos.conv[:]) < 0 {
			continue // before the position: done in an earlier page
		}
		cursor := max(req.Cursors[e.Conversation], e.JoinedSeq-1)
		if pos.resumed && e.Conversation == pos.conv && pos.seq >= 0 {
			cursor = max(cursor, pos.seq) // in progress: its entry and messages up to seq are sent
		} else {
			if !changed(e, req.Cursors, pos.since) {
				continue
			}
			n := 0
			if req.MaxBytes > 0 {
				n = req.EntrySize(e.Progress)
			}
			from, upTo := unreadRange(e)
			if len(carried) == chat.MaxSyncConversations || (len(carried) > 0 && scan+upTo-from > chat.MaxSyncScan) || !fits(n) {
				next = &syncPosition{conv: e.Conversation, seq: -1}
				break
			}
			used, scan = used+n, scan+upTo-from
			carried = append(carried, e)
		}
		after := cursor
		for after < e.LastSeq && next == nil {
			if len(res.Messages) >= limit {
				next = &syncPosition{conv: e.Conversation, seq: after}
				break
			}
			page, err := in.history.After(ctx, e.Conversation, e.Window(), after, readAhead(req, limit-len(res.Messages), len(res.Messages), msgBytes, used))
			if err != nil {
				return chat.SyncResult{}, err
			}
			if len(page) == 0 {
				break
			}
			for _, m := range page {
				n := 0
				if req.MaxBytes > 0 {
					n = req.Size(m)
				}
				if !fits(n) {
					next = &syncPosition{conv: e.Conversation, seq: after} // full in bytes: the next page starts at m
					break
				}
				used, msgBytes = used+n, msgBytes+n
				res.Messages = append(res.Messages, m)
				after = m.Seq
			}
		}
		if next != nil {
			break
		}
	}
	if err := in.countUnread(ctx, user, carried); err != nil {
		return chat.SyncResult{}, err
	}
	for _, e := range carried {
		res.Conversations = append(res.Conversations, e.Progress)
	}
	if next != nil {
		next.since, next.start, next.resumed = pos.since, pos.start, true
		res.More, res.Page = true, in.formatPage(user, *next)
		return res, nil
	}
	// Everything up to the start of the catch-up (its first page) is covered. Activity during
	// it is covered by the next sync (or arrives live).
	res.Since = in.formatSince(user, pos.start.Add(-sinceMargin))
	return res, nil
}

// changed reports whether sync returns e to a device holding cursors, whose last complete
// sync stands for since.
func changed(e Entry, cursors map[chat.ConversationID]int64, since time.Time) bool {
	held, hasCursor := cursors[e.Conversation]
	cursor := max(held, e.JoinedSeq-1)
	if e.LeftSeq > 0 {
		// Out of the conversation: returned, up to and including the leaving, to a device
		// whose cursor is below the leaving and that either holds the conversation (sent a
		// cursor for it) or has not synced since the leaving; so every device learns of it
		// once, then never again.
		return e.LastSeq > cursor && (hasCursor || e.LeftAt.After(since))
	}
	return e.LastSeq > cursor || e.LastAt.After(since) || e.ReadAt.After(since)
}

// syncPosition is where a page of a catch-up starts: the catch-up's since and start, and the
// conversation it resumes at (conversations before it, in id order, are done). seq >= 0: that
// conversation's entry and its messages up to seq were sent; seq < 0: it is not started.
type syncPosition struct {
	since, start time.Time
	conv         chat.ConversationID
	seq          int64
	resumed      bool // from a page token (false for a catch-up's first page)
}

// syncPosition reads where the requested page starts: from req.Page, or the start of a new
// catch-up at req.Since.
func (in *Inbox) syncPosition(user chat.UserID, req chat.SyncRequest) (syncPosition, error) {
	if req.Page == "" {
		since, err := in.parseSince(user, req.Since)
		return syncPosition{since: since, start: in.now()}, err
	}
	if in.cfg.Cursors == nil {
		return syncPosition{}, errors.New("inbox: Config.Cursors is not set: sync cannot sign page tokens")
	}
	b, err := in.cfg.Cursors.Open(pageScope(user), req.Page)
	if err != nil {
		return syncPosition{}, err
	}
	if len(b) != pageTokenLen {
		return syncPosition{}, fmt.Errorf("%w: page is not a token this server issued to you", chat.ErrInvalid)
	}
	p := syncPosition{since: time.UnixMilli(int64(binary.BigEndian.Uint64(b[0:]))),
		start: time.UnixMilli(int64(binary.BigEndian.Uint64(b[8:]))), seq: int64(binary.BigEndian.Uint64(b[32:])), resumed: true}
	copy(p.conv[:], b[16:32])
	return p, nil
}

// pageTokenLen is the payload of a page token: since and start (Unix ms), the conversation
// and the seq, big-endian.
const pageTokenLen = 8 + 8 + 16 + 8

func (in *Inbox) formatPage(user chat.UserID, p syncPosition) string {
	b := make([]byte, pageTokenLen)
	binary.BigEndian.PutUint64(b[0:], uint64(p.since.UnixMilli()))
	binary.BigEndian.PutUint64(b[8:], uint64(p.start.UnixMilli()))
	copy(b[16:32], p.conv[:])
	binary.BigEndian.PutUint64(b[32:], uint64(p.seq))
	return in.cfg.Cursors.Seal(pageScope(user), b)
}

func pageScope(user chat.UserID) cursor.Scope {
	return cursor.Scope{Purpose: cursor.PurposeSyncPage, User: user}
}

// readAhead is how many messages a sync reads from the store at once: what the count limit
// leaves (at most 200), and, when the page is bounded in bytes, about what fits in the bytes
// left (of used) at the messages' average size so far (20 before the first), so that a page
// of large messages does not read far more than it returns.
func readAhead(req chat.SyncRequest, left, got, msgBytes, used int) int {
	n := min(left, 200)
	if req.MaxBytes <= 0 {
		return n
	}
	if got == 0 || msgBytes == 0 {
		return min(n, 20)
	}
	return max(1, min(n, (req.MaxBytes-used)/max(1, msgBytes/got)+1))
}

// sinceMargin is subtracted from a token's time: activity is stamped by other processes'
// clocks, and returning a conversation twice is harmless while missing one is not.
const sinceMargin = 5 * time.Second

// The since-token is opaque to clients: the Unix milliseconds it stands for, signed for the
// user (internal/cursor), so another user's token, a tampered one or one of a key no longer
// configured is refused with chat.ErrInvalid.
func (in *Inbox) formatSince(user chat.UserID, t time.Time) string {
	return in.cfg.Cursors.Seal(sinceScope(user), strconv.AppendInt(nil, t.UnixMilli(), 10))
}

func (in *Inbox) parseSince(user chat.UserID, s string) (time.Time, error) {
	if in.cfg.Cursors == nil {
		return time.Time{}, errors.New("inbox: Config.Cursors is not set: sync cannot sign since-tokens")
	}
	if s == "" {
		return time.Time{}, nil
	}
	b, err := in.cfg.Cursors.Open(sinceScope(user), s)
	if err != nil {
		return time.Time{}, err
	}
	ms, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: since is not a token this server issued to you", chat.ErrInvalid)
	}
	return time.UnixMilli(ms), nil
}

func sinceScope(user chat.UserID) cursor.Scope {
	return cursor.Scope{Purpose: cursor.PurposeSince, User: user}
}

// Ack records that user's device has received a conversation up to seq (clamped to the last
// seq): the device's cursor moves forward, and so does the user's delivered position when this
// is the first of their devices to get that far. It reports the user's delivered position
// after the call and whether it moved (then "delivered" receipts are due). chat.ErrNotFound when
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
	err = in.guard(func() error {
		if _, _, err := in.forward(ctx, deviceCursor, []any{string(user), string(device), gocql.UUID(conv)}, seq, time.Time{}); err != nil {
			return err
		}
		delivered, moved, err = in.forward(ctx, deliveredPosition, []any{string(user), gocql.UUID(conv)}, seq, time.Time{})
		return err
	})
	return delivered, moved, err
}

// position is a forward-only seq column of one row: read and delivered positions, device
// cursors. Several devices may move one at once; none may move it back.
type position struct {
	table, column, where string
	// create inserts the row (key..., seq) when it does not exist; "" when a missing row
	// means the user is not a member (chat.ErrNotFound).
	create string
	// stamp is a time column written with every move ("" for none).
	stamp string
}

var (
	readPosition = position{table: "user_conversations", column: "read_seq", where: `user_id = ? AND conversation_id = ?`,
		stamp: "read_at"}
	deliveredPosition = position{table: "user_conversations", column: "delivered_seq", where: `user_id = ? AND conversation_id = ?`}
	deviceCursor      = position{table: "device_cursors", column: "seq", where: `user_id = ? AND device_id = ? AND conversation_id = ?`,
		create: `INSERT INTO device_cursors (user_id, device_id, conversation_id, seq) VALUES (?, ?, ?, ?) IF NOT EXISTS`}
)

// forward raises p's column of the row key to seq with compare-and-set, never lowering it,
// and writes at into p's stamp column with the move. It returns the value after the call and
// whether it moved. A missing value counts as 0.
func (in *Inbox) forward(ctx context.Context, p position, key []any, seq int64, at time.Time) (int64, bool, error) {
	set := p.column + ` = ?`
	if p.stamp != "" {
		set += `, ` + p.stamp + ` = ?`
	}
	values := func(rest ...any) []any {
		v := []any{seq}
		if p.stamp != "" {
			v = append(v, at)
		}
		return append(append(v, key...), rest...)
	}
	for attempt := 0; attempt < 5; attempt++ {
		var cur *int64
		err := in.s.Query(`SELECT `+p.column+` FROM `+p.table+` WHERE `+p.where, key...).Idempotent(true).ScanContext(ctx, &cur)
		exists := err == nil
		if err != nil && !errors.Is(err, gocql.ErrNotFound) {
			return 0, false, fmt.Errorf("read %s: %w", p.column, err)
		}
		if cur != nil && seq <= *cur {
			return *cur, false, nil
		}
		var applied bool
		switch {
		case !exists && p.create == "":
			return 0, false, fmt.Errorf("%w: no %s row", chat.ErrNotFound, p.table)
		case !exists:
			applied, err = in.s.Query(p.create, append(slices.Clone(key), seq)...).MapScanCASContext(ctx, map[string]any{})
		case cur == nil:
			applied, err = in.s.Query(`UPDATE `+p.table+` SET `+set+` WHERE `+p.where+` IF `+p.column+` = null`,
				values()...).MapScanCASContext(ctx, map[string]any{})
		default:
			applied, err = in.s.Query(`UPDATE `+p.table+` SET `+set+` WHERE `+p.where+` IF `+p.column+` = ?`,
				values(*cur)...).MapScanCASContext(ctx, map[string]any{})
		}
		if err != nil {
			return 0, false, fmt.Errorf("move %s: %w", p.column, err)
		}
		if applied {
			return seq, true, nil
		}
	}
	return 0, false, fmt.Errorf("move %s: too much contention", p.column)
}
