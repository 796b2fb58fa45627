package delivery

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/routing"
	"github.com/parleyhq/parley/internal/wire"
	"github.com/parleyhq/parley/protocol"
)

// Live fan-out reads the log: each entry, once it is in the log, goes, already encoded, to
// every recipient's user subject. It does not wait for Cassandra (the member list is cached,
// see memberCache). It is at-most-once per delivery of the entry to this consumer; a worker
// that takes over pushes again only what the previous one had in flight (counted as
// repeats). Sync repairs whatever it misses.

func (w *Worker) fanout(p int) func(ctx context.Context, batch []jetstream.Msg) {
	mc := &memberCache{entries: map[chat.ConversationID]cachedMembers{}}
	return func(ctx context.Context, batch []jetstream.Msg) {
		for _, msg := range batch {
			w.fanOutEntry(ctx, mc, p, msg)
		}
	}
}

func (w *Worker) fanOutEntry(ctx context.Context, mc *memberCache, p int, msg jetstream.Msg) {
	defer func() { _ = msg.Ack() }()
	meta, err := msg.Metadata()
	if err != nil {
		return
	}
	e, err := decodeLogEntry(msg.Data(), meta.Sequence.Stream)
	if err != nil {
		w.logger.Error("fan-out: undecodable log entry", "partition", p, "err", err)
		return
	}
	if meta.NumDelivered > 1 {
		w.metrics.repeats.Inc()
	}
	if e.m.Kind.Membership() {
		w.awaitProjection(ctx, p, e.streamSeq)
	}
	mc.follow(e.m)
	users, err := w.members(ctx, mc, e.m.Conversation)
	if err != nil {
		w.metrics.fanoutSkipped.Inc() // no member list at all: the members sync instead
		return
	}
	w.push(e.m, withLeaver(users, e.m))
	w.metrics.endToEnd.Observe(w.now().Sub(e.acceptedAt).Seconds())
}

// membershipPushWait bounds how long the push of a membership event waits for its projection.
const membershipPushWait = 2 * time.Second

// awaitProjection waits until the projector has written the entry at streamSeq (or
// membershipPushWait has passed). A membership event is pushed once it is in Cassandra and the
// edges have been told, so a member who sees their removal is refused at their next send.
func (w *Worker) awaitProjection(ctx context.Context, p int, streamSeq uint64) {
	deadline := w.now().Add(membershipPushWait)
	for w.now().Before(deadline) {
		if floor, err := w.projectedFloor(ctx, p); err == nil && floor >= streamSeq {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// push publishes the message frame on every recipient's user subject, the sender's included
// (their other devices). Best effort: failures are counted, sync repairs.
func (w *Worker) push(m chat.Message, users []chat.UserID) {
	data, err := protocol.Encode(wire.MessageFrame(m))
	if err != nil {
		return
	}
	w.metrics.fanoutErrors.Add(float64(routing.Publish(w.nc, users, string(protocol.TypeMessage), data)))
	w.metrics.fanout.Add(float64(len(users)))
}
