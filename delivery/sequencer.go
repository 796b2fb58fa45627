package delivery

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/parleyhq/parley/delivery/ingest"
	"github.com/parleyhq/parley/history"
	"github.com/parleyhq/parley/internal/chat"
)

// The sequencer: a batch's entries, conversation by conversation, get their seqs and are
// stored, deduplicated by client_msg_id, recorded in the members' inboxes, acknowledged and
// fanned out. docs/delivery.md has the order of the steps and what a crash between any two
// does.

type partitionState struct {
	last    map[chat.ConversationID]int64
	members map[chat.ConversationID]cachedMembers
}

// item is one message of a batch, decoded.
type item struct {
	msg   jetstream.Msg
	entry ingest.Entry
	done  bool // acked, rejected or dead-lettered
}

// process sequences a batch, conversation by conversation (a conversation's messages keep
// their stream order). A conversation whose step fails for a transient reason (Cassandra
// unavailable) is retried after RetryDelays while its messages are kept alive: the batch, and
// so the partition, waits for it, and nothing behind it overtakes it. Messages being processed
// when ctx ends are left unacknowledged and are redelivered.
func (w *Worker) process(ctx context.Context, ps *partitionState, batch []jetstream.Msg) {
	start := w.now()
	var (
		order  []chat.ConversationID
		groups = map[chat.ConversationID][]*item{}
	)
	for _, msg := range batch {
		s, err := ingest.Decode(msg.Data())
		if err != nil {
			for attempt := uint64(1); w.deadLetter(ctx, msg, err) != nil; attempt++ {
				w.logger.Warn("dead-letter publish failed; will retry", "attempt", attempt)
				select {
				case <-ctx.Done():
					return
				case <-time.After(w.cfg.retryDelay(attempt)):
				}
			}
			continue
		}
		if _, ok := groups[s.Conversation]; !ok {
			order = append(order, s.Conversation)
		}
		groups[s.Conversation] = append(groups[s.Conversation], &item{msg: msg, entry: s})
	}
	w.metrics.batchSize.Observe(float64(len(batch)))
	for _, conv := range order {
		items := groups[conv]
		for attempt := uint64(1); ; attempt++ {
			err := w.processConversation(ctx, ps, items, start)
			if err == nil || ctx.Err() != nil {
				break
			}
			delete(ps.last, conv) // reload next time: the failure may have left it stale
			w.logger.Warn("sequencing failed; will retry", "conversation", conv, "attempt", attempt, "err", err)
			w.metrics.outcomes.WithLabelValues("retry").Inc()
			select {
			case <-ctx.Done():
				return
			case <-time.After(w.cfg.retryDelay(attempt)):
			}
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// processConversation sequences the pending items of one conversation, in order. A run of two
// or more text messages not seen before is stored at once (one claim batch, one conditional
// insert per bucket, one inbox write); anything else (events, duplicates, a seq conflict)
// goes one message at a time. It returns the first transient error; items finished before it
// stay finished.
func (w *Worker) processConversation(ctx context.Context, ps *partitionState, items []*item, start time.Time) error {
	var pending []*item
	for _, it := range items {
		if !it.done {
			pending = append(pending, it)
		}
	}
	if len(pending) > 1 && w.allText(pending) {
		handled, err := w.sequenceRun(ctx, ps, pending, start)
		if err != nil || handled {
			return err
		}
	}
	for _, it := range pending {
		if it.done {
			continue
		}
		if err := w.handle(ctx, ps, it, start); err != nil {
			return err
		}
	}
	return nil
}

func (w *Worker) allText(items []*item) bool {
	for _, it := range items {
		if it.entry.Kind != "" && it.entry.Kind != chat.MessageText {
			return false
		}
	}
	return true
}

// newMessage is the message a send becomes, before it has a seq.
func (w *Worker) newMessage(s ingest.Entry) chat.Message {
	m := chat.Message{Conversation: s.Conversation, Kind: s.Kind, Sender: s.Sender, SenderDevice: s.SenderDevice,
		ClientMsgID: s.ClientMsgID, Body: s.Body, TargetSeq: s.TargetSeq, TargetUser: s.TargetUser,
		CreatedAt: w.now().UTC().Truncate(time.Millisecond)}
	if m.Kind == "" {
		m.Kind = chat.MessageText
	}
	return m
}

// sequenceRun stores a run of text messages of one conversation with consecutive seqs. It
// reports handled=false, and changes nothing that matters, when a message of the run was
// claimed before (a redelivery) or another worker took the seqs meanwhile: the caller then
// goes one message at a time, whose dedupe and retry handle those cases.
func (w *Worker) sequenceRun(ctx context.Context, ps *partitionState, run []*item, start time.Time) (handled bool, err error) {
	conv := run[0].entry.Conversation
	type key struct {
		sender chat.UserID
		id     [16]byte
	}
	seen := make(map[key]bool, len(run))
	for _, it := range run {
		k := key{it.entry.Sender, it.entry.ClientMsgID}
		if seen[k] {
			return false, nil // the same send twice in the run (a resend after the duplicate window)
		}
		seen[k] = true
		if _, claimed, err := w.store.SeqOf(ctx, conv, it.entry.Sender, it.entry.ClientMsgID); err != nil || claimed {
			return false, err
		}
	}
	last, known := ps.last[conv]
	if !known {
		if last, err = w.store.LastSeq(ctx, conv); err != nil {
			return false, w.nonTransient(ctx, run, err)
		}
	}
	msgs := make([]chat.Message, len(run))
	for i, it := range run {
		msgs[i] = w.newMessage(it.entry)
		msgs[i].Seq = last + 1 + int64(i)
	}
	if err := w.store.ClaimClientMsgIDs(ctx, conv, msgs); err != nil {
		return false, err
	}
	if err := w.store.Append(ctx, conv, msgs); err != nil {
		if errors.Is(err, history.ErrSeqTaken) {
			w.metrics.fenced.Inc()
			delete(ps.last, conv)
			return false, nil
		}
		return false, err
	}
	ps.last[conv] = msgs[len(msgs)-1].Seq
	// Every member's inbox row learns the run's last entry before the acks (the rows keep the
	// highest seq they were written with, so the last entry is all they need).
	users, err := w.recipients(ctx, ps, msgs[len(msgs)-1])
	if err == nil {
		err = w.inbox.Record(ctx, msgs[len(msgs)-1], users)
	}
	if err != nil {
		return false, err // a retry goes one at a time and finds them stored (the dedupe path)
	}
	for i, it := range run {
		w.finish(it, msgs[i], users, false, start)
	}
	return true, nil
}

// nonTransient dead-letters the run when err says the conversation does not exist (see
// handle), and passes any other error on.
func (w *Worker) nonTransient(ctx context.Context, run []*item, err error) error {
	if !errors.Is(err, chat.ErrNotFound) {
		return err
	}
	for _, it := range run {
		if err := w.deadLetterMissing(ctx, it); err != nil {
			return err
		}
	}
	return nil
}

// deadLetterMissing moves an entry whose conversation does not exist to the dead letters. The
// edge checked membership before accepting, so the conversation existed: this worker is
// pointed at another keyspace than the edge. Retrying cannot help now; an operator can replay
// the message once the cause is fixed.
func (w *Worker) deadLetterMissing(ctx context.Context, it *item) error {
	if err := w.deadLetter(ctx, it.msg, fmt.Errorf("conversation %s not found (edge and delivery on different keyspaces?)", it.entry.Conversation)); err != nil {
		return err
	}
	it.done = true
	return nil
}

// handle sequences one message. The order of steps, and why a crash between any two loses
// nothing and duplicates nothing, is in docs/delivery.md. It returns transient errors only.
func (w *Worker) handle(ctx context.Context, ps *partitionState, it *item, start time.Time) error {
	s := it.entry
	m, dup, err := w.sequence(ctx, ps, s)
	var users []chat.UserID
	if err == nil {
		// Every member's inbox row learns the new entry before the ack: a crash here redelivers,
		// the dedupe path finds the entry stored and comes back to this step.
		users, err = w.recipients(ctx, ps, m)
		if err == nil {
			err = w.inbox.Record(ctx, m, users)
		}
	}
	var rej *rejection
	if errors.As(err, &rej) {
		// A membership change that no longer applies (the user is already in, or already out,
		// or the group is full): it is answered by not happening, and nothing is appended.
		w.logger.Info("membership change rejected", "conversation", s.Conversation, "kind", s.Kind, "member", s.TargetUser, "reason", rej.reason)
		w.metrics.outcomes.WithLabelValues("rejected").Inc()
		_ = it.msg.Ack()
		it.done = true
		return nil
	}
	if errors.Is(err, chat.ErrNotFound) {
		return w.deadLetterMissing(ctx, it)
	}
	if err != nil {
		return err
	}
	w.finish(it, m, users, dup, start)
	return nil
}

// finish acks a stored message, counts it and fans it out.
func (w *Worker) finish(it *item, m chat.Message, users []chat.UserID, dup bool, start time.Time) {
	if err := it.msg.Ack(); err != nil {
		// Not fatal: a redelivery finds the message already stored (the dedupe path).
		w.logger.Warn("ack", "err", err)
	}
	it.done = true
	if dup {
		w.metrics.outcomes.WithLabelValues("duplicate").Inc()
	} else {
		w.metrics.outcomes.WithLabelValues("sequenced").Inc()
		w.metrics.sequencing.Observe(w.now().Sub(start).Seconds())
	}
	w.fanOut(m, users)
	w.metrics.endToEnd.Observe(w.now().Sub(it.entry.AcceptedAt).Seconds())
}

// sequence gives s its seq and stores it, or finds the seq it was already given.
func (w *Worker) sequence(ctx context.Context, ps *partitionState, s ingest.Entry) (chat.Message, bool, error) {
	conv := s.Conversation
	m := w.newMessage(s)
	checked := false
	for attempt := 0; attempt < 5; attempt++ {
		// Dedupe, again after a conflict: the worker that took the seq may have stored this
		// very message (it was redelivered to both).
		stored, dup, err := w.storedBefore(ctx, ps, s)
		if err != nil || dup {
			return stored, dup, err
		}
		if m.Kind.Membership() && !checked {
			if err := w.checkMembership(ctx, m); err != nil {
				return m, false, err
			}
			checked = true
		}
		last, known := ps.last[conv]
		if !known {
			if last, err = w.store.LastSeq(ctx, conv); err != nil {
				return m, false, err
			}
		}
		m.Seq = last + 1
		if err := w.store.ClaimClientMsgID(ctx, conv, s.Sender, s.ClientMsgID, m.Seq); err != nil {
			return m, false, err
		}
		err = w.store.Append(ctx, conv, []chat.Message{m})
		if errors.Is(err, history.ErrSeqTaken) {
			// Another worker wrote this seq (it had the partition meanwhile): reload and retry.
			w.metrics.fenced.Inc()
			delete(ps.last, conv)
			continue
		}
		if err != nil {
			return m, false, err
		}
		ps.last[conv] = m.Seq
		return m, false, w.applyEffects(ctx, ps, m)
	}
	return m, false, fmt.Errorf("seq of conversation %s taken 5 times in a row", conv)
}

// storedBefore finds s stored already (sent before, or stored by another worker): the same
// message at the seq its client_msg_id was claimed for. A crash may have come between the
// append and the steps after it; they are repeated here (all idempotent).
func (w *Worker) storedBefore(ctx context.Context, ps *partitionState, s ingest.Entry) (chat.Message, bool, error) {
	claimed, ok, err := w.store.SeqOf(ctx, s.Conversation, s.Sender, s.ClientMsgID)
	if err != nil || !ok {
		return chat.Message{}, false, err
	}
	stored, exists, err := w.store.MessageAt(ctx, s.Conversation, claimed)
	if err != nil {
		return chat.Message{}, false, err
	}
	if !exists || stored.Sender != s.Sender || stored.ClientMsgID != s.ClientMsgID {
		return chat.Message{}, false, nil // claimed but not stored (a crash between the two writes), or the claim went stale
	}
	if err := w.store.RaiseLast(ctx, s.Conversation, stored); err != nil {
		return chat.Message{}, false, err
	}
	if err := w.applyEffects(ctx, ps, stored); err != nil {
		return chat.Message{}, false, err
	}
	return stored, true, nil
}
