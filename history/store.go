package history

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	gocql "github.com/apache/cassandra-gocql-driver/v2"

	"github.com/parleyhq/parley/internal/breaker"
	"github.com/parleyhq/parley/internal/chat"
)

// ErrSeqTaken: a message at one of the seqs being appended already exists. The appender
// is stale (another sequencer moved on): it must reload the last seq.
var ErrSeqTaken = errors.New("seq already taken")

// Config configures the Store. Zero values take the defaults.
type Config struct {
	// BucketSize is how many seqs share a message partition. Default 1000. It is part of the
	// data layout: never change it for a keyspace that holds messages.
	BucketSize int64
	// MaxMembers bounds a group's size. Default 1000.
	MaxMembers int
	// MaxPage bounds one page of messages. Default 200.
	MaxPage int
	// Breaker guards every call (nil: none). Build it with IsCassandraFailure.
	Breaker *breaker.Breaker
}

// Defaults.
const (
	DefaultBucketSize = 1000
	DefaultMaxMembers = 1000
	DefaultMaxPage    = 200
)

// Store reads and writes conversations and messages.
type Store struct {
	s   *gocql.Session
	cfg Config
}

// Guard runs fn, a series of Cassandra calls, under the store's circuit breaker. Only failures
// of Cassandra itself count against it: not-found, a taken seq or a bad request are answers.
func (st *Store) Guard(fn func() error) error {
	if st.cfg.Breaker == nil {
		return fn()
	}
	return st.cfg.Breaker.Do(fn)
}

// IsCassandraFailure reports whether err counts as a failure of Cassandra (for the breaker).
func IsCassandraFailure(err error) bool {
	switch {
	case err == nil, errors.Is(err, chat.ErrNotFound), errors.Is(err, chat.ErrInvalid),
		errors.Is(err, chat.ErrTooManyMembers), errors.Is(err, context.Canceled), errors.Is(err, breaker.ErrUnavailable):
		return false
	}
	return true
}

// New returns a Store on a session bound to Parley's keyspace.
func New(s *gocql.Session, cfg Config) (*Store, error) {
	if cfg.BucketSize == 0 {
		cfg.BucketSize = DefaultBucketSize
	}
	if cfg.MaxMembers == 0 {
		cfg.MaxMembers = DefaultMaxMembers
	}
	if cfg.MaxPage == 0 {
		cfg.MaxPage = DefaultMaxPage
	}
	if cfg.BucketSize < 1 || cfg.MaxMembers < 2 || cfg.MaxPage < 1 {
		return nil, fmt.Errorf("history config: bucket size, max members and max page must be positive (members at least 2)")
	}
	return &Store{s: s, cfg: cfg}, nil
}

// MaxMembers is the configured largest group.
func (st *Store) MaxMembers() int { return st.cfg.MaxMembers }

// Conversation is a conversation's metadata.
type Conversation struct {
	ID        chat.ConversationID
	Kind      chat.Kind
	Title     string
	CreatedBy chat.UserID
	CreatedAt time.Time
}

// Member is a user's membership. A member may read the seqs of Window: from JoinedSeq (0 for
// the members a conversation was created with, else the seq of the member_added event) up to
// LeftSeq once they have left or were removed (LeftSeq > 0: the seq of that event).
type Member struct {
	User      chat.UserID
	Role      chat.Role
	JoinedSeq int64
	LeftSeq   int64
}

// Active reports whether the member is still in the conversation.
func (m Member) Active() bool { return m.LeftSeq == 0 }

// Window is the member's visible range of seqs.
func (m Member) Window() Window { return Window{From: m.JoinedSeq, To: m.LeftSeq} }

// Window is a range of seqs a reader may see: From <= seq, and seq <= To unless To is 0. The
// zero Window is everything.
type Window struct{ From, To int64 }

// Contains reports whether seq is inside w.
func (w Window) Contains(seq int64) bool { return seq >= w.From && (w.To == 0 || seq <= w.To) }

// CanAdmin reports whether the member may add and remove members and delete others' messages.
func (m Member) CanAdmin() bool {
	return m.Active() && (m.Role == chat.RoleOwner || m.Role == chat.RoleAdmin)
}

func uuid(id chat.ConversationID) gocql.UUID { return gocql.UUID(id) }

func (st *Store) createDirect(ctx context.Context, a, b chat.UserID, now time.Time) (id chat.ConversationID, created bool, err error) {
	if a == b {
		return id, false, fmt.Errorf("%w: a direct conversation needs two different users", chat.ErrInvalid)
	}
	id = chat.DirectConversationID(a, b)
	created, err = st.s.Query(`INSERT INTO conversations (conversation_id, kind, created_by, created_at, last_seq)
		VALUES (?, ?, ?, ?, 0) IF NOT EXISTS`, uuid(id), string(chat.KindDirect), string(a), now).
		MapScanCASContext(ctx, map[string]any{})
	if err != nil {
		return id, false, fmt.Errorf("create direct conversation: %w", err)
	}
	// Members are written every time: idempotent, and it repairs a creation that crashed
	// between the two writes.
	b2 := st.s.Batch(gocql.UnloggedBatch)
	for _, u := range []chat.UserID{a, b} {
		b2.Query(`INSERT INTO conversation_members (conversation_id, user_id, role, joined_seq) VALUES (?, ?, ?, 0)`,
			uuid(id), string(u), string(chat.RoleMember))
	}
	if err := b2.ExecContext(ctx); err != nil {
		return id, created, fmt.Errorf("add direct members: %w", err)
	}
	return id, created, nil
}

func (st *Store) createGroup(ctx context.Context, creator chat.UserID, title string, members []chat.UserID, now time.Time) (chat.ConversationID, error) {
	all := []chat.UserID{creator}
	for _, m := range members {
		if !slices.Contains(all, m) {
			all = append(all, m)
		}
	}
	if len(all) > st.cfg.MaxMembers {
		return chat.ConversationID{}, fmt.Errorf("%w: %d members, at most %d", chat.ErrTooManyMembers, len(all), st.cfg.MaxMembers)
	}
	id := chat.NewConversationID()
	if err := st.s.Query(`INSERT INTO conversations (conversation_id, kind, title, created_by, created_at, last_seq)
		VALUES (?, ?, ?, ?, ?, 0)`, uuid(id), string(chat.KindGroup), title, string(creator), now).
		ExecContext(ctx); err != nil {
		return id, fmt.Errorf("create group: %w", err)
	}
	// One partition: a single unlogged batch is atomic and isolated for it.
	b := st.s.Batch(gocql.UnloggedBatch)
	for _, u := range all {
		role := chat.RoleMember
		if u == creator {
			role = chat.RoleOwner
		}
		b.Query(`INSERT INTO conversation_members (conversation_id, user_id, role, joined_seq) VALUES (?, ?, ?, 0)`,
			uuid(id), string(u), string(role))
	}
	if err := b.ExecContext(ctx); err != nil {
		return id, fmt.Errorf("add group members: %w", err)
	}
	return id, nil
}

func (st *Store) conversation(ctx context.Context, id chat.ConversationID) (Conversation, error) {
	c := Conversation{ID: id}
	var kind, createdBy string
	err := st.s.Query(`SELECT kind, title, created_by, created_at FROM conversations WHERE conversation_id = ?`, uuid(id)).
		Idempotent(true).ScanContext(ctx, &kind, &c.Title, &createdBy, &c.CreatedAt)
	if errors.Is(err, gocql.ErrNotFound) {
		return c, chat.ErrNotFound
	}
	if err != nil {
		return c, fmt.Errorf("read conversation: %w", err)
	}
	c.Kind, c.CreatedBy = chat.Kind(kind), chat.UserID(createdBy)
	return c, nil
}

func (st *Store) member(ctx context.Context, id chat.ConversationID, user chat.UserID) (Member, error) {
	m := Member{User: user}
	var role string
	err := st.s.Query(`SELECT role, joined_seq, left_seq FROM conversation_members WHERE conversation_id = ? AND user_id = ?`,
		uuid(id), string(user)).Idempotent(true).ScanContext(ctx, &role, &m.JoinedSeq, &m.LeftSeq)
	if errors.Is(err, gocql.ErrNotFound) {
		return m, chat.ErrNotFound
	}
	if err != nil {
		return m, fmt.Errorf("read member: %w", err)
	}
	m.Role = chat.Role(role)
	return m, nil
}

func (st *Store) members(ctx context.Context, id chat.ConversationID) ([]Member, error) {
	iter := st.s.Query(`SELECT user_id, role, joined_seq, left_seq FROM conversation_members WHERE conversation_id = ?`,
		uuid(id)).Idempotent(true).IterContext(ctx)
	var (
		out        []Member
		user, role string
		m          Member
	)
	for iter.Scan(&user, &role, &m.JoinedSeq, &m.LeftSeq) {
		m.User, m.Role = chat.UserID(user), chat.Role(role)
		out = append(out, m)
	}
	if err := iter.Close(); err != nil {
		return nil, fmt.Errorf("read members: %w", err)
	}
	return out, nil
}

func (st *Store) bucket(seq int64) int64 { return seq / st.cfg.BucketSize }

const messageColumns = `seq, kind, sender_id, sender_device, client_msg_id, body, target_seq, target_user, created_at`

// readColumns adds the bucket's has_state flag (a static column: set once an event targets a
// message of the bucket), so a page of a bucket without events needs no message_state read.
const readColumns = messageColumns + `, has_state`

func (st *Store) put(ctx context.Context, id chat.ConversationID, msgs []chat.Message) error {
	const insert = `INSERT INTO messages (conversation_id, bucket, ` + messageColumns + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	values := func(m chat.Message) []any {
		return []any{uuid(id), st.bucket(m.Seq), m.Seq, string(m.Kind), string(m.Sender), string(m.SenderDevice),
			gocql.UUID(m.ClientMsgID), m.Body, m.TargetSeq, string(m.TargetUser), m.CreatedAt}
	}
	for start := 0; start < len(msgs); {
		end := start
		for end < len(msgs) && st.bucket(msgs[end].Seq) == st.bucket(msgs[start].Seq) {
			end++
		}
		// One bucket is one partition: an unlogged batch of its rows is one mutation.
		var err error
		if end-start == 1 {
			err = st.s.Query(insert, values(msgs[start])...).Idempotent(true).ExecContext(ctx)
		} else {
			b := st.s.Batch(gocql.UnloggedBatch)
			for _, m := range msgs[start:end] {
				b.Query(insert, values(m)...)
			}
			err = b.ExecContext(ctx)
		}
		if err != nil {
			return fmt.Errorf("write messages: %w", err)
		}
		start = end
	}
	for chunk := range slices.Chunk(msgs, unloggedBatch) {
		const ids = `INSERT INTO message_ids (conversation_id, sender_id, client_msg_id, seq) VALUES (?, ?, ?, ?)`
		var err error
		if len(chunk) == 1 {
			m := chunk[0]
			err = st.s.Query(ids, uuid(id), string(m.Sender), gocql.UUID(m.ClientMsgID), m.Seq).Idempotent(true).ExecContext(ctx)
		} else {
			b := st.s.Batch(gocql.UnloggedBatch)
			for _, m := range chunk {
				b.Query(ids, uuid(id), string(m.Sender), gocql.UUID(m.ClientMsgID), m.Seq)
			}
			err = b.ExecContext(ctx)
		}
		if err != nil {
			return fmt.Errorf("write client_msg_ids: %w", err)
		}
	}
	// The last_seq hint only needs to point into the bucket where the log ends (LastSeq walks
	// forward from it), so it is raised when a message opens a bucket, not per message.
	for _, m := range msgs {
		if err := st.raiseLast(ctx, id, m); err != nil {
			return err
		}
	}
	return nil
}

func (st *Store) messageAt(ctx context.Context, id chat.ConversationID, seq int64) (chat.Message, bool, error) {
	page, _, err := st.read(ctx, id, `SELECT `+readColumns+` FROM messages WHERE conversation_id = ? AND bucket = ? AND seq = ?`,
		uuid(id), st.bucket(seq), seq)
	if err != nil || len(page) == 0 {
		return chat.Message{}, false, err
	}
	return page[0], true, nil
}

func (st *Store) isActiveMember(ctx context.Context, id chat.ConversationID, user chat.UserID) (bool, error) {
	m, err := st.member(ctx, id, user)
	if errors.Is(err, chat.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return m.Active(), nil
}

// raiseLast: if m opened a bucket, the conversation's last_seq hint is raised to m's seq
// unless it is already past it (a conditional update: it never lowers it, whatever order
// projections land in). Any other message leaves the hint alone.
func (st *Store) raiseLast(ctx context.Context, id chat.ConversationID, m chat.Message) error {
	if st.bucket(m.Seq) == st.bucket(m.Seq-1) {
		return nil
	}
	_, err := st.s.Query(`UPDATE conversations SET last_seq = ? WHERE conversation_id = ? IF last_seq < ?`, m.Seq, uuid(id), m.Seq).
		MapScanCASContext(ctx, map[string]any{})
	if err != nil {
		return fmt.Errorf("raise last_seq: %w", err)
	}
	return nil
}

func (st *Store) seqOf(ctx context.Context, id chat.ConversationID, sender chat.UserID, clientMsgID chat.ClientMsgID) (int64, bool, error) {
	var seq int64
	err := st.s.Query(`SELECT seq FROM message_ids WHERE conversation_id = ? AND sender_id = ? AND client_msg_id = ?`,
		uuid(id), string(sender), gocql.UUID(clientMsgID)).Idempotent(true).ScanContext(ctx, &seq)
	if errors.Is(err, gocql.ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("read client_msg_id: %w", err)
	}
	return seq, true, nil
}

func (st *Store) lastSeq(ctx context.Context, id chat.ConversationID) (int64, error) {
	var hint int64
	err := st.s.Query(`SELECT last_seq FROM conversations WHERE conversation_id = ?`, uuid(id)).
		Idempotent(true).ScanContext(ctx, &hint)
	if errors.Is(err, gocql.ErrNotFound) {
		return 0, chat.ErrNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("read last_seq: %w", err)
	}
	last := hint
	for b := st.bucket(hint); ; b++ {
		var top int64
		err := st.s.Query(`SELECT seq FROM messages WHERE conversation_id = ? AND bucket = ? LIMIT 1`, uuid(id), b).
			Idempotent(true).ScanContext(ctx, &top)
		if errors.Is(err, gocql.ErrNotFound) {
			return last, nil
		}
		if err != nil {
			return 0, fmt.Errorf("read bucket %d: %w", b, err)
		}
		last = max(last, top)
		if top < (b+1)*st.cfg.BucketSize-1 {
			return last, nil // the bucket is not full: the log ends here
		}
	}
}

func (st *Store) before(ctx context.Context, id chat.ConversationID, w Window, before int64, limit int) ([]chat.Message, error) {
	limit, err := st.clamp(limit)
	if err != nil {
		return nil, err
	}
	if before <= 0 {
		last, err := st.lastSeq(ctx, id)
		if err != nil {
			return nil, err
		}
		before = last + 1
	}
	if w.To > 0 {
		before = min(before, w.To+1)
	}
	floor := max(w.From, 1) // the lowest seq to return
	var (
		out   []chat.Message
		state = map[int64]bool{}
	)
	for b := st.bucket(before - 1); b >= st.bucket(floor) && len(out) < limit && before > floor; b-- {
		page, has, err := st.read(ctx, id, `SELECT `+readColumns+` FROM messages WHERE conversation_id = ? AND bucket = ? AND seq < ? AND seq >= ? LIMIT ?`,
			uuid(id), b, before, floor, limit-len(out))
		if err != nil {
			return nil, err
		}
		out, state[b] = append(out, page...), has
	}
	return out, st.fold(ctx, id, out, state)
}

func (st *Store) after(ctx context.Context, id chat.ConversationID, w Window, after int64, limit int) ([]chat.Message, error) {
	limit, err := st.clamp(limit)
	if err != nil {
		return nil, err
	}
	after = max(after, w.From-1, 0)
	var (
		out   []chat.Message
		state = map[int64]bool{}
	)
	for b := st.bucket(after + 1); len(out) < limit && (w.To == 0 || after < w.To); b++ {
		stmt, args := `SELECT `+readColumns+` FROM messages WHERE conversation_id = ? AND bucket = ? AND seq > ? ORDER BY seq ASC LIMIT ?`,
			[]any{uuid(id), b, after, limit - len(out)}
		if w.To > 0 {
			stmt, args = `SELECT `+readColumns+` FROM messages WHERE conversation_id = ? AND bucket = ? AND seq > ? AND seq <= ? ORDER BY seq ASC LIMIT ?`,
				[]any{uuid(id), b, after, w.To, limit - len(out)}
		}
		page, has, err := st.read(ctx, id, stmt, args...)
		if err != nil {
			return nil, err
		}
		out, state[b] = append(out, page...), has
		// Seqs are contiguous, so a bucket that does not reach its last seq is the end.
		if len(page) == 0 || page[len(page)-1].Seq < (b+1)*st.cfg.BucketSize-1 {
			break
		}
		after = page[len(page)-1].Seq
	}
	return out, st.fold(ctx, id, out, state)
}

func (st *Store) clamp(limit int) (int, error) {
	if limit < 0 {
		return 0, fmt.Errorf("%w: limit %d", chat.ErrInvalid, limit)
	}
	if limit == 0 {
		return 50, nil
	}
	return min(limit, st.cfg.MaxPage), nil
}

// read runs a SELECT of readColumns within one bucket and reports the bucket's has_state.
func (st *Store) read(ctx context.Context, id chat.ConversationID, stmt string, args ...any) ([]chat.Message, bool, error) {
	iter := st.s.Query(stmt, args...).Idempotent(true).IterContext(ctx)
	var (
		out                  []chat.Message
		kind, sender, device string
		target               string
		cmid                 gocql.UUID
		has, hasAny          bool
	)
	for {
		var m chat.Message
		if !iter.Scan(&m.Seq, &kind, &sender, &device, &cmid, &m.Body, &m.TargetSeq, &target, &m.CreatedAt, &has) {
			break
		}
		hasAny = hasAny || has
		m.Conversation = id
		m.Kind, m.Sender, m.SenderDevice, m.ClientMsgID = chat.MessageKind(kind), chat.UserID(sender), chat.DeviceID(device), chat.ClientMsgID(cmid)
		m.TargetUser = chat.UserID(target)
		out = append(out, m)
	}
	if err := iter.Close(); err != nil {
		return nil, false, fmt.Errorf("read messages: %w", err)
	}
	return out, hasAny, nil
}

// The exported methods run under the store's circuit breaker (Config.Breaker): while it is
// open they fail fast with breaker.ErrUnavailable instead of waiting for Cassandra to time out.

// CreateDirect creates the direct conversation of a and b if it does not exist and returns
// its id (the same for both users, see chat.DirectConversationID). created is false when it
// existed already.
func (st *Store) CreateDirect(ctx context.Context, a, b chat.UserID, now time.Time) (id chat.ConversationID, created bool, err error) {
	err = st.Guard(func() error { id, created, err = st.createDirect(ctx, a, b, now); return err })
	return
}

// CreateGroup creates a group owned by creator with the other members, and returns its id.
func (st *Store) CreateGroup(ctx context.Context, creator chat.UserID, title string, members []chat.UserID, now time.Time) (id chat.ConversationID, err error) {
	err = st.Guard(func() error { id, err = st.createGroup(ctx, creator, title, members, now); return err })
	return
}

// Conversation returns a conversation's metadata, or chat.ErrNotFound.
func (st *Store) Conversation(ctx context.Context, id chat.ConversationID) (c Conversation, err error) {
	err = st.Guard(func() error { c, err = st.conversation(ctx, id); return err })
	return
}

// Member returns user's membership of a conversation, or chat.ErrNotFound when there is none.
func (st *Store) Member(ctx context.Context, id chat.ConversationID, user chat.UserID) (m Member, err error) {
	err = st.Guard(func() error { m, err = st.member(ctx, id, user); return err })
	return
}

// Members returns every member, past ones included (LeftSeq > 0).
func (st *Store) Members(ctx context.Context, id chat.ConversationID) (ms []Member, err error) {
	err = st.Guard(func() error { ms, err = st.members(ctx, id); return err })
	return
}

// ActiveMembers lists the users who are members now (the one place that filters out the
// members who left or were removed).
func (st *Store) ActiveMembers(ctx context.Context, id chat.ConversationID) ([]chat.UserID, error) {
	ms, err := st.Members(ctx, id)
	if err != nil {
		return nil, err
	}
	users := make([]chat.UserID, 0, len(ms))
	for _, m := range ms {
		if m.Active() {
			users = append(users, m.User)
		}
	}
	return users, nil
}

// Put writes messages of one conversation, with their client_msg_id rows, as the sequenced
// log has them. The log decides what each seq holds, so the rows are plain inserts (no Paxos
// round) and repeating a Put, in any order, changes nothing. A message that opens a bucket
// raises the last_seq hint (a conditional update that never lowers it).
func (st *Store) Put(ctx context.Context, id chat.ConversationID, msgs []chat.Message) error {
	return st.Guard(func() error { return st.put(ctx, id, msgs) })
}

// MessageAt returns the message at seq, if it exists.
func (st *Store) MessageAt(ctx context.Context, id chat.ConversationID, seq int64) (m chat.Message, ok bool, err error) {
	err = st.Guard(func() error { m, ok, err = st.messageAt(ctx, id, seq); return err })
	return
}

// Stored returns the messages with from <= seq <= to as they are stored (no state folded in),
// oldest first, in one read per bucket: the reconciler compares them with the log.
func (st *Store) Stored(ctx context.Context, id chat.ConversationID, from, to int64) (msgs []chat.Message, err error) {
	err = st.Guard(func() error { msgs, err = st.stored(ctx, id, from, to); return err })
	return
}

func (st *Store) stored(ctx context.Context, id chat.ConversationID, from, to int64) ([]chat.Message, error) {
	if from < 1 || to < from {
		return nil, fmt.Errorf("%w: seqs %d to %d", chat.ErrInvalid, from, to)
	}
	var out []chat.Message
	for b := st.bucket(from); b <= st.bucket(to); b++ {
		page, _, err := st.read(ctx, id, `SELECT `+readColumns+` FROM messages WHERE conversation_id = ? AND bucket = ? AND seq >= ? AND seq <= ? ORDER BY seq ASC`,
			uuid(id), b, from, to)
		if err != nil {
			return nil, err
		}
		out = append(out, page...)
	}
	return out, nil
}

// IsActiveMember reports whether user is a current member of the conversation (false, nil
// for a conversation that does not exist).
func (st *Store) IsActiveMember(ctx context.Context, id chat.ConversationID, user chat.UserID) (ok bool, err error) {
	err = st.Guard(func() error { ok, err = st.isActiveMember(ctx, id, user); return err })
	return
}

// SeqOf returns the seq a sender's client_msg_id was given in a conversation, if any.
func (st *Store) SeqOf(ctx context.Context, id chat.ConversationID, sender chat.UserID, clientMsgID chat.ClientMsgID) (seq int64, ok bool, err error) {
	err = st.Guard(func() error { seq, ok, err = st.seqOf(ctx, id, sender, clientMsgID); return err })
	return
}

// LastSeq returns the highest seq stored in a conversation (0 when empty). It starts from the
// conversation's last_seq hint and walks forward over full buckets, so a stale hint costs a
// read or two, never a wrong answer. chat.ErrNotFound if the conversation does not exist.
func (st *Store) LastSeq(ctx context.Context, id chat.ConversationID) (last int64, err error) {
	err = st.Guard(func() error { last, err = st.lastSeq(ctx, id); return err })
	return
}

// Before returns up to limit messages inside w with seq < before, newest first. before <= 0
// means from the latest message. Text messages come with their latest state (edits, deletion,
// reactions) folded in.
func (st *Store) Before(ctx context.Context, id chat.ConversationID, w Window, before int64, limit int) (page []chat.Message, err error) {
	err = st.Guard(func() error { page, err = st.before(ctx, id, w, before, limit); return err })
	return
}

// After returns up to limit messages inside w with seq > after, oldest first, with their
// latest state as Before.
func (st *Store) After(ctx context.Context, id chat.ConversationID, w Window, after int64, limit int) (page []chat.Message, err error) {
	err = st.Guard(func() error { page, err = st.after(ctx, id, w, after, limit); return err })
	return
}

// ApplyEvent folds a stored edit, deletion or reaction event into its target's latest state.
// It is idempotent and commutative (see the events migration), so the delivery worker may
// repeat it after a crash.
func (st *Store) ApplyEvent(ctx context.Context, m chat.Message) error {
	return st.Guard(func() error { return st.applyEvent(ctx, m) })
}

// ApplyMembership applies a stored membership event (member added, removed, left) to the
// member list and returns the member's row as it now is (the inbox copies it, see
// inbox.Inbox.ApplyMembership). Repeating it, also after later membership events of the same
// user were applied, changes nothing.
func (st *Store) ApplyMembership(ctx context.Context, m chat.Message) (mem Member, err error) {
	err = st.Guard(func() error { mem, err = st.applyMembership(ctx, m); return err })
	return
}

// CountTexts counts the text messages with after < seq <= upTo that others than user sent,
// at most limit of them (it stops there): the unread count of user's inbox row, derived from
// the read position and the stored messages, so it cannot drift and replays of the projection
// do not change it. Events (edits, deletions, reactions, membership) and user's own texts
// never count. It reads at most upTo - after rows (one per seq): callers bound the scan with
// the range (inbox reads at most chat.MaxUnreadScan).
func (st *Store) CountTexts(ctx context.Context, id chat.ConversationID, user chat.UserID, after, upTo int64, limit int) (n int, err error) {
	err = st.Guard(func() error { n, err = st.countTexts(ctx, id, user, after, upTo, limit); return err })
	return
}

func (st *Store) countTexts(ctx context.Context, id chat.ConversationID, user chat.UserID, after, upTo int64, limit int) (int, error) {
	after = max(after, 0)
	n := 0
	for b := st.bucket(after + 1); after < upTo && n < limit && b <= st.bucket(upTo); b++ {
		iter := st.s.Query(`SELECT kind, sender_id FROM messages WHERE conversation_id = ? AND bucket = ? AND seq > ? AND seq <= ?`,
			uuid(id), b, after, upTo).Idempotent(true).PageSize(1000).IterContext(ctx)
		var kind, sender string
		for n < limit && iter.Scan(&kind, &sender) {
			if chat.MessageKind(kind) == chat.MessageText && chat.UserID(sender) != user {
				n++
			}
		}
		if err := iter.Close(); err != nil {
			return 0, fmt.Errorf("count messages: %w", err)
		}
	}
	return n, nil
}
