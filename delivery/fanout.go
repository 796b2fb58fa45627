package delivery

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/routing"
	"github.com/parleyhq/parley/internal/wire"
	"github.com/parleyhq/parley/protocol"
)

// Live fan-out reads the log: each entry goes, already encoded, to every recipient's user
// subject. It is at-most-once per delivery of the entry to this consumer; a worker that takes
// over pushes again only what the previous one had in flight (counted as repeats). Sync
// repairs whatever it misses.
//
// An entry is pushed once the projector has written it (normally within milliseconds), so a
// device that connects meanwhile finds in its first sync everything it was not pushed: sync
// reads Cassandra, and the push went out before the device's subscription existed. When the
// projector makes no progress (Cassandra is down or slow), the fan-out stops waiting and
// pushes at once, from the log and its member cache: messaging goes on. Such a push is owed
// again once the entry is written (owed.go), for the devices that connected and synced
// meanwhile.

// projectionWait bounds how long one entry waits for its projection before the fan-out takes
// the projector for stalled.
const projectionWait = 250 * time.Millisecond

// fanState is a partition's fan-out state while this worker holds it. mu is held by the
// handler for a whole batch and by the settler (owed.go) for a pass.
type fanState struct {
	p       int
	mu      sync.Mutex
	members *memberCache
	// floor is the projector's last known ack floor; stalled says the last wait for it timed
	// out, so entries are pushed without waiting until the floor moves again.
	floor   uint64
	stalled bool
	// pin is the pin id of the last batch: a new one means this worker just took the
	// partition over (and takes over its debts).
	pin string
	// owed is, per conversation, the last entry pushed before it was projected; markRev the
	// revision of the partition's owed mark this worker wrote or took over (0: none);
	// settling says a settler runs.
	owed       map[chat.ConversationID]owedPush
	markRev    uint64
	markFailed time.Time // the last failed write of the mark
	settling   bool
}

func (w *Worker) fanout(p int) func(ctx context.Context, batch []jetstream.Msg) {
	fs := &fanState{p: p, members: &memberCache{entries: map[chat.ConversationID]cachedMembers{}},
		owed: map[chat.ConversationID]owedPush{}}
	return func(ctx context.Context, batch []jetstream.Msg) {
		fs.mu.Lock()
		defer fs.mu.Unlock()
		for _, msg := range batch {
			if id := msg.Headers().Get("Nats-Pin-Id"); id != "" && id != fs.pin {
				fs.pin = id
				w.takeOverDebts(ctx, fs)
			}
		}
		f := w.written[p].Load()
		if f < fs.floor+1 && fs.stalled {
			// Only a projector elsewhere can say it moved on.
			if af, err := w.projectedFloor(ctx, p); err == nil {
				f = max(f, af)
			}
		}
		if f > fs.floor {
			fs.stalled = false
		}
		fs.floor = max(fs.floor, f)
		for _, msg := range batch {
			w.fanOutEntry(ctx, fs, msg)
		}
	}
}

// awaitProjected waits until the projector has written the entry at streamSeq, for at most
// wait; it reports whether it has. This worker's own projector is watched for free (every
// 2 ms); the projector consumer's ack floor (a JetStream request, for a projector in another
// process) every 25 ms.
func (w *Worker) awaitProjected(ctx context.Context, fs *fanState, streamSeq uint64, wait time.Duration) bool {
	start := w.now()
	asked := start
	for {
		fs.floor = max(fs.floor, w.written[fs.p].Load())
		if fs.floor >= streamSeq {
			return true
		}
		now := w.now()
		if now.Sub(start) >= wait {
			return false
		}
		if now.Sub(asked) >= 25*time.Millisecond {
			asked = now
			if f, err := w.projectedFloor(ctx, fs.p); err == nil {
				fs.floor = max(fs.floor, f)
				continue
			}
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(2 * time.Millisecond):
		}
	}
}

func (w *Worker) fanOutEntry(ctx context.Context, fs *fanState, msg jetstream.Msg) {
	defer func() { _ = msg.Ack() }()
	meta, err := msg.Metadata()
	if err != nil {
		return
	}
	e, err := decodeLogEntry(msg.Data(), meta.Sequence.Stream)
	if err != nil {
		w.logger.Error("fan-out: undecodable log entry", "partition", fs.p, "err", err)
		return
	}
	if meta.NumDelivered > 1 {
		w.metrics.repeats.Inc()
	}
	// A membership event waits longer (up to membershipPushWait even when the projector is
	// stalled): a member who sees their removal must be refused at their next send, which
	// the edges learn from the projector.
	projected := false
	switch {
	case e.m.Kind.Membership():
		projected = w.awaitProjected(ctx, fs, e.streamSeq, membershipPushWait)
	case !fs.stalled:
		if projected = w.awaitProjected(ctx, fs, e.streamSeq, projectionWait); !projected {
			fs.stalled = true
		}
	default:
		projected = fs.floor >= e.streamSeq
	}
	fs.members.follow(e.m)
	users, err := w.members(ctx, fs.members, e.m.Conversation)
	if err != nil {
		w.metrics.fanoutSkipped.Inc() // no member list at all: the members sync instead
		return
	}
	if !projected {
		w.metrics.fanoutUnprojected.Inc()
		w.owe(ctx, fs, e) // before the push: a takeover after it finds the mark
	}
	w.push(e.m, withLeaver(users, e.m))
	w.metrics.endToEnd.Observe(w.now().Sub(e.acceptedAt).Seconds())
}

// membershipPushWait bounds how long the push of a membership event waits for its projection.
const membershipPushWait = 2 * time.Second

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
