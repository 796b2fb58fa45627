package delivery

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/parleyhq/parley/internal/chat"
)

// The projector writes the log into Cassandra: message rows and their client_msg_id rows
// (plain idempotent inserts: the log already decided what each seq holds, so no Paxos round),
// the effects of events, and the members' inbox rows. It acknowledges an entry only once all
// of that is written, so the projector consumer's ack floor is how far Cassandra has the log;
// while Cassandra is down it retries, in order, and the entries wait in the log.

func (w *Worker) projector(p int) func(ctx context.Context, batch []jetstream.Msg) {
	return func(ctx context.Context, batch []jetstream.Msg) { w.project(ctx, p, batch) }
}

func (w *Worker) project(ctx context.Context, p int, batch []jetstream.Msg) {
	var (
		order  []chat.ConversationID
		groups = map[chat.ConversationID][]logEntry{}
	)
	for _, msg := range batch {
		meta, err := msg.Metadata()
		if err != nil {
			continue
		}
		e, err := decodeLogEntry(msg.Data(), meta.Sequence.Stream)
		if err != nil {
			// Only a sequencer writes the log; an entry it cannot read is a bug, kept in the
			// log (it is not acknowledged away silently: counted and logged).
			w.logger.Error("projector: undecodable log entry", "partition", p, "stream_seq", meta.Sequence.Stream, "err", err)
			w.metrics.projected.WithLabelValues("undecodable").Inc()
			continue
		}
		if _, ok := groups[e.m.Conversation]; !ok {
			order = append(order, e.m.Conversation)
		}
		groups[e.m.Conversation] = append(groups[e.m.Conversation], e)
	}
	for _, conv := range order {
		// At most a second between attempts: while Cassandra is down they fail fast (the
		// breaker), and once it is back the projection must catch up at once.
		ok := w.retry(ctx, "projection", conv, time.Second, func() error { return w.projectEntries(ctx, groups[conv]) }, func() {
			w.metrics.projected.WithLabelValues("retry").Inc()
		})
		if !ok {
			return
		}
	}
	var last uint64
	for _, msg := range batch {
		_ = msg.Ack()
		if meta, err := msg.Metadata(); err == nil {
			last = max(last, meta.Sequence.Stream)
		}
	}
	// Batches come in stream order and each is finished before the next (a takeover first
	// holds everything the previous owner left), so every entry up to last is written.
	if last > w.written[p].Load() {
		w.written[p].Store(last)
	}
}

// projectEntries writes a run of one conversation's log entries (in seq order) into
// Cassandra. Every write is idempotent: a retry, a redelivery or the reconciler may repeat
// it.
func (w *Worker) projectEntries(ctx context.Context, entries []logEntry) error {
	if len(entries) == 0 {
		return nil
	}
	conv := entries[0].m.Conversation
	msgs := make([]chat.Message, len(entries))
	for i, e := range entries {
		msgs[i] = e.m
	}
	if err := w.store.Put(ctx, conv, msgs); err != nil {
		return err
	}
	for _, m := range msgs {
		if err := w.applyEffects(ctx, m); err != nil {
			return err
		}
	}
	// Every member's inbox row learns the run's last entry (rows keep the highest seq they
	// were written with), and a membership event's own recipients learn that event (the
	// member who left is not in the list any more). Only members who were members at the
	// entry's seq (membersAt: a replay must not reach a member's row across a leave and rejoin).
	members, err := w.store.Members(ctx, conv)
	if err != nil {
		return err
	}
	last := msgs[len(msgs)-1]
	for _, m := range msgs[:len(msgs)-1] {
		if m.Kind.Membership() {
			if err := w.inbox.Record(ctx, m, withLeaver(membersAt(members, m.Seq), m)); err != nil {
				return err
			}
		}
	}
	if err := w.inbox.Record(ctx, last, withLeaver(membersAt(members, last.Seq), last)); err != nil {
		return err
	}
	if err := w.inbox.MarkSent(ctx, msgs); err != nil {
		return err
	}
	now := w.now()
	for _, e := range entries {
		w.metrics.projected.WithLabelValues("projected").Inc()
		w.metrics.projectionLag.Observe(now.Sub(e.acceptedAt).Seconds())
	}
	return nil
}
