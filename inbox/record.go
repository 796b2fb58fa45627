package inbox

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	gocql "github.com/apache/cassandra-gocql-driver/v2"

	"github.com/parleyhq/parley/history"
	"github.com/parleyhq/parley/internal/chat"
)

// The writes of this file keep user_conversations (one row per user and conversation) in step
// with what the conversation's log says: a new conversation is listed for its members (Add),
// every sequenced entry raises its members' rows (Record), and a membership event changes the
// member's row (ApplyMembership). All of them may be repeated.

// Add lists a new conversation in users' inboxes with nothing read; a direct conversation's
// rows name the other member (peer), so the inbox shows who it is with without another read.
// A direct conversation may be created again (by either user), so its rows are written IF
// NOT EXISTS and keep their read positions, and a row that exists without its peer (written
// before the column) gets it now; a new group has none to keep and skips the Paxos round per
// member.
func (in *Inbox) Add(ctx context.Context, c history.Conversation, users []chat.UserID, now time.Time) error {
	return in.guard(func() error {
		// A group's row has a title and no peer, a direct conversation's the other way round
		// (a null written would be a tombstone).
		const (
			group  = `INSERT INTO user_conversations (user_id, conversation_id, read_seq, read_at, kind, title, added_at, joined_seq) VALUES (?, ?, 0, ?, ?, ?, ?, 0)`
			direct = `INSERT INTO user_conversations (user_id, conversation_id, read_seq, read_at, kind, peer, added_at, joined_seq) VALUES (?, ?, 0, ?, ?, ?, ?, 0) IF NOT EXISTS`
		)
		for _, u := range users {
			if c.Kind != chat.KindDirect {
				if err := in.s.Query(group, string(u), gocql.UUID(c.ID), now, string(c.Kind), c.Title, now).ExecContext(ctx); err != nil {
					return fmt.Errorf("add to inbox: %w", err)
				}
				continue
			}
			var peer chat.UserID
			for _, o := range users {
				if o != u {
					peer = o
				}
			}
			prev := map[string]any{}
			applied, err := in.s.Query(direct, string(u), gocql.UUID(c.ID), now, string(c.Kind), string(peer), now).
				MapScanCASContext(ctx, prev)
			if err != nil {
				return fmt.Errorf("add to inbox: %w", err)
			}
			if had, _ := prev["peer"].(string); !applied && had == "" {
				if err := in.fillPeer(ctx, u, c.ID, peer); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// fillPeer writes the peer into a direct conversation's row that has none (written before
// the column, when the peer was kept in the title column or nowhere) and clears its title:
// a direct conversation has none. The members of a direct conversation never change, so
// every writer writes the same value and repeating it changes nothing.
func (in *Inbox) fillPeer(ctx context.Context, user chat.UserID, conv chat.ConversationID, peer chat.UserID) error {
	if err := in.s.Query(`UPDATE user_conversations SET peer = ?, title = null WHERE user_id = ? AND conversation_id = ?`,
		string(peer), string(user), gocql.UUID(conv)).Idempotent(true).ExecContext(ctx); err != nil {
		return fmt.Errorf("fill the peer of an inbox row: %w", err)
	}
	return nil
}

// unloggedBatch is how many rows of different partitions one request writes: an unlogged batch
// over that many partitions (Cassandra warns above 10), so a direct conversation costs one
// request.
const unloggedBatch = 10

// Record writes a sequenced entry as the last activity of its conversation into each user's
// row: last_seq for every entry, and last_at, preview and sender for text messages. The cells
// are written USING TIMESTAMP <seq>, so a row never goes back to an older entry, whatever order
// the writes land in, and repeating them is harmless (the delivery worker records every entry
// before acknowledging it). Rows are written unloggedBatch at a time, at most 8 requests in
// flight.
func (in *Inbox) Record(ctx context.Context, m chat.Message, users []chat.UserID) error {
	return in.guard(func() error { return in.record(ctx, m, users) })
}

func (in *Inbox) record(ctx context.Context, m chat.Message, users []chat.UserID) error {
	stmt := `UPDATE user_conversations USING TIMESTAMP ? SET last_seq = ? WHERE user_id = ? AND conversation_id = ?`
	args := func(u chat.UserID) []any { return []any{m.Seq, m.Seq, string(u), gocql.UUID(m.Conversation)} }
	if m.Kind == chat.MessageText {
		stmt = `UPDATE user_conversations USING TIMESTAMP ? SET last_seq = ?, last_at = ?, last_preview = ?, last_sender = ? WHERE user_id = ? AND conversation_id = ?`
		args = func(u chat.UserID) []any {
			return []any{m.Seq, m.Seq, m.CreatedAt, preview(m.Body), string(m.Sender), string(u), gocql.UUID(m.Conversation)}
		}
	}
	write := func(chunk []chat.UserID) error {
		var err error
		if len(chunk) == 1 {
			err = in.s.Query(stmt, args(chunk[0])...).Idempotent(true).ExecContext(ctx)
		} else {
			b := in.s.Batch(gocql.UnloggedBatch)
			for _, u := range chunk {
				b.Query(stmt, args(u)...)
			}
			err = b.ExecContext(ctx)
		}
		if err != nil {
			return fmt.Errorf("update inbox: %w", err)
		}
		return nil
	}
	if len(users) <= unloggedBatch {
		if len(users) == 0 {
			return nil
		}
		return write(users)
	}
	var (
		wg    sync.WaitGroup
		sem   = make(chan struct{}, 8)
		mu    sync.Mutex
		first error
	)
	for chunk := range slices.Chunk(users, unloggedBatch) {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := write(chunk); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return first
}

// Behind returns the users whose row for conv does not record seq yet (no row, or an older
// last entry): what the reconciler repairs.
func (in *Inbox) Behind(ctx context.Context, conv chat.ConversationID, users []chat.UserID, seq int64) ([]chat.UserID, error) {
	var behind []chat.UserID
	err := in.guard(func() error {
		behind = nil
		for _, u := range users {
			var last *int64
			err := in.s.Query(`SELECT last_seq FROM user_conversations WHERE user_id = ? AND conversation_id = ?`,
				string(u), gocql.UUID(conv)).Idempotent(true).ScanContext(ctx, &last)
			if err != nil && !errors.Is(err, gocql.ErrNotFound) {
				return fmt.Errorf("read inbox row: %w", err)
			}
			if last == nil || *last < seq {
				behind = append(behind, u)
			}
		}
		return nil
	})
	return behind, err
}

// preview is the start of a message body for inbox entries: at most 100 bytes, cut on a rune
// boundary.
func preview(body string) string {
	if len(body) <= 100 {
		return body
	}
	n := 100
	for n > 0 && !utf8.RuneStart(body[n]) {
		n--
	}
	return body[:n]
}

// ApplyMembership makes the member's inbox row agree with their membership after a stored
// membership event m was applied to the member list (history.Store.ApplyMembership returns
// mem, the member's row as it now is, whichever event made it so). An active member is listed
// from the join on with nothing unread, the join event included; a member who is out keeps
// the row up to the leaving. Repeating it changes nothing.
func (in *Inbox) ApplyMembership(ctx context.Context, m chat.Message, mem history.Member) error {
	return in.guard(func() error { return in.applyMembership(ctx, m, mem) })
}

func (in *Inbox) applyMembership(ctx context.Context, m chat.Message, mem history.Member) error {
	user, conv := string(mem.User), gocql.UUID(m.Conversation)
	if !mem.Active() {
		if err := in.s.Query(`UPDATE user_conversations SET joined_seq = ?, left_seq = ? WHERE user_id = ? AND conversation_id = ?`,
			mem.JoinedSeq, mem.LeftSeq, user, conv).Idempotent(true).ExecContext(ctx); err != nil {
			return fmt.Errorf("apply %s to inbox: %w", m.Kind, err)
		}
		// The leaving is the last activity the member sees, so its time is the row's last_at
		// (the time of the last entry of the conversation the member sees that counts as
		// activity: text messages, and this), and sync compares it with the device's
		// since-token (Entry.LeftAt). It needs no column of its own: while the member is out
		// nothing later is written into their row (Record writes the active members, and an
		// event's own leaver only for that event, which does not touch last_at), so last_at
		// stays the leaving's until a rejoin, and then the leaving is still the last thing
		// they saw. Written like Record's cells (USING TIMESTAMP <seq>), so an earlier text
		// recorded late cannot overwrite it, a later one after a rejoin does, and a replay
		// changes nothing.
		if m.Seq == mem.LeftSeq {
			if err := in.s.Query(`UPDATE user_conversations USING TIMESTAMP ? SET last_at = ? WHERE user_id = ? AND conversation_id = ?`,
				m.Seq, m.CreatedAt, user, conv).Idempotent(true).ExecContext(ctx); err != nil {
				return fmt.Errorf("apply %s to inbox: %w", m.Kind, err)
			}
		}
		return nil
	}
	c, err := in.history.Conversation(ctx, m.Conversation)
	if err != nil {
		return err
	}
	if _, err := in.s.Query(`INSERT INTO user_conversations (user_id, conversation_id, read_seq, read_at, kind, title, added_at, joined_seq)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS`,
		user, conv, mem.JoinedSeq, m.CreatedAt, string(c.Kind), c.Title, m.CreatedAt, mem.JoinedSeq).
		MapScanCASContext(ctx, map[string]any{}); err != nil {
		return fmt.Errorf("apply %s to inbox: %w", m.Kind, err)
	}
	if err := in.s.Query(`UPDATE user_conversations SET joined_seq = ?, left_seq = null WHERE user_id = ? AND conversation_id = ?`,
		mem.JoinedSeq, user, conv).Idempotent(true).ExecContext(ctx); err != nil {
		return fmt.Errorf("apply %s to inbox: %w", m.Kind, err)
	}
	// A rejoining member does not inherit unread messages from before the rejoin.
	_, _, err = in.forward(ctx, readPosition, []any{user, conv}, mem.JoinedSeq, m.CreatedAt)
	if err != nil && !errors.Is(err, chat.ErrNotFound) {
		return err
	}
	return nil
}

// MarkSent records, in each sender's row, their latest text message in msgs (a run of one
// conversation's entries) as sent_seq: whoever sends has read the conversation so far, and the
// read position the inbox reports is the higher of read_seq and sent_seq. The cell is written
// USING TIMESTAMP <seq>, like Record's, so the highest seq wins whatever order the writes land
// in and repeating them changes nothing: no lightweight transaction on the projection's path.
func (in *Inbox) MarkSent(ctx context.Context, msgs []chat.Message) error {
	latest := map[chat.UserID]chat.Message{}
	var order []chat.UserID
	for _, m := range msgs {
		if m.Kind != chat.MessageText {
			continue
		}
		if _, ok := latest[m.Sender]; !ok {
			order = append(order, m.Sender)
		}
		latest[m.Sender] = m
	}
	if len(order) == 0 {
		return nil
	}
	const stmt = `UPDATE user_conversations USING TIMESTAMP ? SET sent_seq = ? WHERE user_id = ? AND conversation_id = ?`
	return in.guard(func() error {
		var err error
		if len(order) == 1 {
			m := latest[order[0]]
			err = in.s.Query(stmt, m.Seq, m.Seq, string(m.Sender), gocql.UUID(m.Conversation)).Idempotent(true).ExecContext(ctx)
		} else {
			b := in.s.Batch(gocql.UnloggedBatch) // one partition per sender, few senders per run
			for _, u := range order {
				m := latest[u]
				b.Query(stmt, m.Seq, m.Seq, string(u), gocql.UUID(m.Conversation))
			}
			err = b.ExecContext(ctx)
		}
		if err != nil {
			return fmt.Errorf("record senders' sent_seq: %w", err)
		}
		return nil
	})
}
