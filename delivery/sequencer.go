package delivery

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/parleyhq/parley/delivery/ingest"
	"github.com/parleyhq/parley/internal/chat"
)

// The sequencer: each ingest entry, in partition order, is deduplicated by client_msg_id,
// given the next seq of its conversation and appended to the conversation's log, fenced on
// the log's last entry; then the ingest copy is acknowledged. It writes nothing to Cassandra
// (the projector does), so messaging goes on while Cassandra is down. docs/delivery.md has
// the steps and what a crash between any two does.

// seqState is what a partition's sequencer keeps while this worker holds the partition.
type seqState struct {
	p     int
	convs map[chat.ConversationID]*convState
	// recent holds the ids of the entries this worker appended or found in the log beyond the
	// projector's ack floor (not known to be in Cassandra yet): with Cassandra's
	// client_msg_id rows it answers every dedupe question.
	recent map[dedupeKey]int64
}

// convState is where a conversation's log ends.
type convState struct {
	last int64  // seq of its last entry (0: none)
	head uint64 // stream seq of its last entry in the log (0: the log holds none)
}

type dedupeKey struct {
	conv   chat.ConversationID
	sender chat.UserID
	id     chat.ClientMsgID
}

// recentLimit bounds seqState.recent; past it, ids of entries the projector has confirmed are
// forgotten (Cassandra answers for them).
const recentLimit = 100_000

func (w *Worker) sequencer(p int) func(ctx context.Context, batch []jetstream.Msg) {
	ps := &seqState{p: p, convs: map[chat.ConversationID]*convState{}, recent: map[dedupeKey]int64{}}
	return func(ctx context.Context, batch []jetstream.Msg) { w.process(ctx, ps, batch) }
}

func (ps *seqState) remember(m chat.Message) {
	ps.recent[dedupeKey{m.Conversation, m.Sender, m.ClientMsgID}] = m.Seq
}

// item is one message of a batch, decoded.
type item struct {
	msg   jetstream.Msg
	entry ingest.Entry
	done  bool // acked, rejected or dead-lettered
}

// process sequences a batch, conversation by conversation (a conversation's messages keep
// their stream order). A conversation whose step fails for a transient reason (NATS, or
// Cassandra where it is needed) is retried after RetryDelays while its messages are kept
// alive: the batch, and so the partition, waits for it, and nothing behind it overtakes it.
// Messages being processed when ctx ends are left unacknowledged and are redelivered.
func (w *Worker) process(ctx context.Context, ps *seqState, batch []jetstream.Msg) {
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
		ok := w.retry(ctx, "sequencing", conv, time.Hour, func() error { return w.processConversation(ctx, ps, groups[conv], start) }, func() {
			delete(ps.convs, conv) // reload next time: the failure may have left it stale
			w.metrics.outcomes.WithLabelValues("retry").Inc()
		})
		if !ok {
			return
		}
	}
	if len(ps.recent) > recentLimit {
		w.forgetProjected(ctx, ps)
	}
}

// retry runs step until it succeeds, waiting RetryDelays (at most maxDelay) between attempts
// (failed runs after each failure); false when ctx ended first. A stage retries in process rather than nak a
// message: a nak with delay would let later messages of the partition overtake it.
func (w *Worker) retry(ctx context.Context, what string, conv chat.ConversationID, maxDelay time.Duration, step func() error, failed func()) bool {
	for attempt := uint64(1); ; attempt++ {
		err := step()
		if ctx.Err() != nil {
			return false
		}
		if err == nil {
			return true
		}
		failed()
		w.logger.Warn(what+" failed; will retry", "conversation", conv, "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(min(w.cfg.retryDelay(attempt), maxDelay)):
		}
	}
}

// processConversation sequences the pending items of one conversation, in order. It returns
// the first transient error; items finished before it stay finished.
func (w *Worker) processConversation(ctx context.Context, ps *seqState, items []*item, start time.Time) error {
	for _, it := range items {
		if it.done {
			continue
		}
		err := w.sequence(ctx, ps, it, start)
		var rej *rejection
		switch {
		case errors.As(err, &rej):
			// A membership change that no longer applies (the user is already in, or already
			// out, or the group is full): it is answered by not happening, and nothing is
			// appended.
			w.logger.Info("membership change rejected", "conversation", it.entry.Conversation, "kind", it.entry.Kind,
				"member", it.entry.TargetUser, "reason", rej.reason)
			w.metrics.outcomes.WithLabelValues("rejected").Inc()
			_ = it.msg.Ack()
			it.done = true
		case errors.Is(err, chat.ErrNotFound):
			if err := w.deadLetterMissing(ctx, it); err != nil {
				return err
			}
		case err != nil:
			return err
		}
	}
	return nil
}

// newMessage is the message an entry becomes, before it has a seq.
func (w *Worker) newMessage(s ingest.Entry) chat.Message {
	m := chat.Message{Conversation: s.Conversation, Kind: s.Kind, Sender: s.Sender, SenderDevice: s.SenderDevice,
		ClientMsgID: s.ClientMsgID, Body: s.Body, TargetSeq: s.TargetSeq, TargetUser: s.TargetUser,
		CreatedAt: w.now().UTC().Truncate(time.Millisecond)}
	if m.Kind == "" {
		m.Kind = chat.MessageText
	}
	return m
}

// sequence gives one entry its seq in the log, or finds the seq it was given before, and
// acknowledges its ingest copy.
func (w *Worker) sequence(ctx context.Context, ps *seqState, it *item, start time.Time) error {
	e := it.entry
	for attempt := 0; attempt < 5; attempt++ {
		cs, err := w.load(ctx, ps, e.Conversation)
		if err != nil {
			return err
		}
		if _, dup, err := w.sequencedBefore(ctx, ps, e); err != nil {
			return err
		} else if dup {
			w.finish(it, true, start)
			return nil
		}
		m := w.newMessage(e)
		if m.Kind.Membership() {
			if err := w.checkMembership(ctx, ps, cs, m); err != nil {
				return err
			}
		}
		m.Seq = cs.last + 1
		streamSeq, dup, err := w.log.appendEntry(ctx, ps.p, m, e.AcceptedAt, cs.head)
		if errors.Is(err, errFenced) {
			// Another sequencer appended to this conversation (it held the partition while
			// this one was paused): reload where the log ends and decide again.
			w.metrics.fenced.Inc()
			delete(ps.convs, e.Conversation)
			continue
		}
		if err != nil {
			return err
		}
		if dup != nil {
			// The log already has it (a redelivery of an entry this or another sequencer
			// appended, within the log's duplicate window).
			ps.remember(dup.m)
			w.finish(it, true, start)
			return nil
		}
		cs.last, cs.head = m.Seq, streamSeq
		ps.remember(m)
		w.finish(it, false, start)
		return nil
	}
	return fmt.Errorf("log of conversation %s moved on 5 times in a row", e.Conversation)
}

// load returns where the conversation's log ends: from the log itself (never from
// Cassandra, which may have lost a write it acknowledged), or, when the log holds none of its
// entries, from Cassandra, which then has them all (the projector confirmed each before the
// log let it age out). The entries the projector has not confirmed yet are remembered for
// dedupe.
func (w *Worker) load(ctx context.Context, ps *seqState, conv chat.ConversationID) (*convState, error) {
	if cs, ok := ps.convs[conv]; ok {
		return cs, nil
	}
	head, found, err := w.log.head(ctx, ps.p, conv)
	if err != nil {
		return nil, err
	}
	cs := &convState{}
	if found {
		cs.last, cs.head = head.m.Seq, head.streamSeq
		floor, err := w.projectedFloor(ctx, ps.p)
		if err != nil {
			return nil, err
		}
		if floor < cs.head {
			unprojected, err := w.log.after(ctx, ps.p, conv, floor)
			if err != nil {
				return nil, err
			}
			for _, e := range unprojected {
				ps.remember(e.m)
			}
		}
	} else if cs.last, err = w.store.LastSeq(ctx, conv); err != nil {
		return nil, err // chat.ErrNotFound: no such conversation (dead-lettered by the caller)
	}
	ps.convs[conv] = cs
	return cs, nil
}

// sequencedBefore reports whether e was given a seq before: an entry this worker appended or
// saw unprojected in the log, or one Cassandra has (every entry the projector confirmed).
// While Cassandra cannot answer, a send whose client_msg_id is a UUIDv7 made within half the
// log's duplicate window is taken for new: were it a resend of an entry already in the log,
// the log's own duplicate check refuses the copy. Any other entry waits for Cassandra.
func (w *Worker) sequencedBefore(ctx context.Context, ps *seqState, e ingest.Entry) (int64, bool, error) {
	if seq, ok := ps.recent[dedupeKey{e.Conversation, e.Sender, e.ClientMsgID}]; ok {
		return seq, true, nil
	}
	seq, ok, err := w.store.SeqOf(ctx, e.Conversation, e.Sender, e.ClientMsgID)
	if err != nil {
		if freshV7(e.ClientMsgID, w.now(), w.cfg.Log.DuplicateWindow/2) {
			w.metrics.outcomes.WithLabelValues("dedupe_by_log").Inc()
			return 0, false, nil
		}
		return 0, false, err
	}
	return seq, ok, nil
}

// freshV7 reports whether id is a UUIDv7 whose time is within window before now (and not
// more than a minute after it).
func freshV7(id chat.ClientMsgID, now time.Time, window time.Duration) bool {
	at, ok := id.Time()
	if !ok {
		return false
	}
	age := now.Sub(at)
	return age >= -time.Minute && age < window
}

// finish acknowledges a sequenced (or already sequenced) entry and counts it.
func (w *Worker) finish(it *item, dup bool, start time.Time) {
	if err := it.msg.Ack(); err != nil {
		// Not fatal: a redelivery finds the entry in the log (the dedupe path).
		w.logger.Warn("ack", "err", err)
	}
	it.done = true
	if dup {
		w.metrics.outcomes.WithLabelValues("duplicate").Inc()
		return
	}
	w.metrics.outcomes.WithLabelValues("sequenced").Inc()
	w.metrics.sequencing.Observe(w.now().Sub(start).Seconds())
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

// forgetProjected drops the remembered ids of entries the projector has confirmed (Cassandra
// answers for them now). The remembered ids carry no stream seq, so it drops them all when
// the projector has caught up with everything this worker appended, and keeps them
// otherwise.
func (w *Worker) forgetProjected(ctx context.Context, ps *seqState) {
	floor, err := w.projectedFloor(ctx, ps.p)
	if err != nil {
		return
	}
	for _, cs := range ps.convs {
		if cs.head > floor {
			return
		}
	}
	clear(ps.recent)
}
