package history

import (
	"context"
	"fmt"
	"slices"
	"strings"

	gocql "github.com/apache/cassandra-gocql-driver/v2"

	"github.com/parleyhq/parley/internal/chat"
)

// Events: an edit, deletion or reaction is a log entry of its own; ApplyEvent then folds it
// into message_state, the latest state of its target, which reads join back onto text
// messages (fold). Every message_state write carries USING TIMESTAMP <event seq>: Cassandra
// keeps the cell with the highest timestamp, so the event with the higher seq wins whatever
// order the writes arrive in, and writing an event twice is harmless.

// reactionElement is a reactions set element: user ids hold no spaces, so the first space
// separates the user from the emoji.
func reactionElement(user chat.UserID, emoji string) string { return string(user) + " " + emoji }

func (st *Store) applyEvent(ctx context.Context, m chat.Message) error {
	if m.TargetSeq < 1 || m.TargetSeq >= m.Seq {
		return fmt.Errorf("%w: event %d targets seq %d", chat.ErrInvalid, m.Seq, m.TargetSeq)
	}
	var (
		stmt string
		args []any
	)
	switch m.Kind {
	case chat.MessageEdit:
		stmt = `UPDATE message_state USING TIMESTAMP ? SET edit_body = ?, edit_seq = ?`
		args = []any{m.Seq, m.Body, m.Seq}
	case chat.MessageDelete:
		stmt = `UPDATE message_state USING TIMESTAMP ? SET deleted_seq = ?, deleted_by = ?`
		args = []any{m.Seq, m.Seq, string(m.Sender)}
	case chat.MessageReaction:
		stmt = `UPDATE message_state USING TIMESTAMP ? SET reactions = reactions + ?`
		args = []any{m.Seq, []string{reactionElement(m.Sender, m.Body)}}
	case chat.MessageReactionRemoved:
		stmt = `UPDATE message_state USING TIMESTAMP ? SET reactions = reactions - ?`
		args = []any{m.Seq, []string{reactionElement(m.Sender, m.Body)}}
	default:
		return fmt.Errorf("%w: %s is not a message event", chat.ErrInvalid, m.Kind)
	}
	args = append(args, uuid(m.Conversation), st.bucket(m.TargetSeq), m.TargetSeq)
	if err := st.s.Query(stmt+` WHERE conversation_id = ? AND bucket = ? AND target_seq = ?`, args...).
		Idempotent(true).ExecContext(ctx); err != nil {
		return fmt.Errorf("apply %s: %w", m.Kind, err)
	}
	// Then flag the target's bucket, so reads of it look for state (after the state: a reader
	// that sees the flag finds the state).
	if err := st.s.Query(`UPDATE messages SET has_state = true WHERE conversation_id = ? AND bucket = ?`,
		uuid(m.Conversation), st.bucket(m.TargetSeq)).Idempotent(true).ExecContext(ctx); err != nil {
		return fmt.Errorf("apply %s: %w", m.Kind, err)
	}
	return nil
}

// messageState is one message_state row.
type messageState struct {
	editBody  string
	editSeq   int64
	deleted   bool
	reactions []string
}

// fold sets the latest state of the text messages in page, and hides the bodies of edits to
// deleted messages. One range read of message_state per bucket the page needs state of;
// hasState says, for the buckets the page was read from, whether any event targeted them.
func (st *Store) fold(ctx context.Context, id chat.ConversationID, page []chat.Message, hasState map[int64]bool) error {
	ranges := map[int64][2]int64{} // bucket -> [lowest, highest] target seq needed
	need := func(seq int64) {
		b := st.bucket(seq)
		if has, known := hasState[b]; known && !has {
			return // no event ever targeted this bucket
		}
		r, ok := ranges[b]
		if !ok {
			r = [2]int64{seq, seq}
		}
		ranges[b] = [2]int64{min(r[0], seq), max(r[1], seq)}
	}
	for _, m := range page {
		switch m.Kind {
		case chat.MessageText:
			need(m.Seq)
		case chat.MessageEdit:
			need(m.TargetSeq)
		}
	}
	if len(ranges) == 0 {
		return nil
	}
	states := map[int64]messageState{}
	for b, r := range ranges {
		iter := st.s.Query(`SELECT target_seq, edit_body, edit_seq, deleted_seq, reactions FROM message_state
			WHERE conversation_id = ? AND bucket = ? AND target_seq >= ? AND target_seq <= ?`, uuid(id), b, r[0], r[1]).
			Idempotent(true).IterContext(ctx)
		var (
			seq, deletedSeq int64
			s               messageState
		)
		for iter.Scan(&seq, &s.editBody, &s.editSeq, &deletedSeq, &s.reactions) {
			s.deleted = deletedSeq > 0
			states[seq] = s
			s = messageState{}
		}
		if err := iter.Close(); err != nil {
			return fmt.Errorf("read message state: %w", err)
		}
	}
	for i := range page {
		m := &page[i]
		switch m.Kind {
		case chat.MessageText:
			s, ok := states[m.Seq]
			if !ok {
				continue
			}
			if s.editSeq > 0 {
				m.Body, m.EditedSeq = s.editBody, s.editSeq
			}
			if s.deleted {
				m.Body, m.Deleted = "", true
				continue
			}
			m.Reactions = reactions(s.reactions)
		case chat.MessageEdit:
			if states[m.TargetSeq].deleted {
				m.Body = "" // the text of a deleted message is not served, not even as an edit
			}
		}
	}
	return nil
}

// reactions groups '<user> <emoji>' elements by emoji, emojis and users in byte order.
func reactions(elements []string) []chat.Reaction {
	var out []chat.Reaction
	for _, e := range elements {
		user, emoji, ok := strings.Cut(e, " ")
		if !ok {
			continue
		}
		i := slices.IndexFunc(out, func(r chat.Reaction) bool { return r.Emoji == emoji })
		if i < 0 {
			out = append(out, chat.Reaction{Emoji: emoji})
			i = len(out) - 1
		}
		out[i].Users = append(out[i].Users, chat.UserID(user))
	}
	slices.SortFunc(out, func(a, b chat.Reaction) int { return strings.Compare(a.Emoji, b.Emoji) })
	for _, r := range out {
		slices.Sort(r.Users)
	}
	return out
}

// applyMembership makes conversation_members and the member's inbox row agree with a stored
// membership event. Each change is conditional on the member's joined_seq being below the
// event's seq, so an event replayed after a later one of the same user is a no-op:
//   - added at S: a new row (joined S), or rejoin (joined S, left cleared) if joined < S;
//   - removed or left at S: left = S if joined < S.
func (st *Store) applyMembership(ctx context.Context, m chat.Message) (Member, error) {
	conv, user := uuid(m.Conversation), string(m.TargetUser)
	if user == "" {
		return Member{}, fmt.Errorf("%w: membership event %d names no member", chat.ErrInvalid, m.Seq)
	}
	cas := func(stmt string, args ...any) error {
		_, err := st.s.Query(stmt, args...).SerialConsistency(gocql.LocalSerial).MapScanCASContext(ctx, map[string]any{})
		if err != nil {
			return fmt.Errorf("apply %s: %w", m.Kind, err)
		}
		return nil
	}
	switch m.Kind {
	case chat.MessageMemberAdded:
		created, err := st.s.Query(`INSERT INTO conversation_members (conversation_id, user_id, role, joined_seq) VALUES (?, ?, ?, ?) IF NOT EXISTS`,
			conv, user, string(chat.RoleMember), m.Seq).SerialConsistency(gocql.LocalSerial).MapScanCASContext(ctx, map[string]any{})
		if err != nil {
			return Member{}, fmt.Errorf("apply %s: %w", m.Kind, err)
		}
		if !created {
			if err := cas(`UPDATE conversation_members SET role = ?, joined_seq = ?, left_seq = null WHERE conversation_id = ? AND user_id = ? IF joined_seq < ?`,
				string(chat.RoleMember), m.Seq, conv, user, m.Seq); err != nil {
				return Member{}, err
			}
		}
	case chat.MessageMemberRemoved, chat.MessageMemberLeft:
		if err := cas(`UPDATE conversation_members SET left_seq = ? WHERE conversation_id = ? AND user_id = ? IF joined_seq < ?`,
			m.Seq, conv, user, m.Seq); err != nil {
			return Member{}, err
		}
	default:
		return Member{}, fmt.Errorf("%w: %s is not a membership event", chat.ErrInvalid, m.Kind)
	}
	// The member's row as it now is (whichever event made it so): the inbox copies it.
	return st.member(ctx, m.Conversation, m.TargetUser)
}

// unloggedBatch is how many rows of different partitions one request writes (Cassandra warns
// above 10 partitions in an unlogged batch).
const unloggedBatch = 10
