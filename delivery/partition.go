package delivery

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// A partition's ownership: its consumer (a priority group with the pinned-client policy, so one
// worker at a time holds it), the pull loop that takes its messages in batches, the takeover
// that waits for a previous owner's messages (acquire), the keep-alive that stops JetStream
// redelivering messages still being worked on, and the lag gauge.

// stage is one of the consumers every partition has: the sequencer on the ingest stream, the
// projector and the fan-out on the log. handler returns the batch handler of partition p,
// with whatever state it keeps while this worker holds the partition.
type stage struct {
	i       int // index in stageNames
	name    string
	stream  jetstream.Stream // the stream its consumers read (to unpin them)
	handler func(p int) func(ctx context.Context, batch []jetstream.Msg)
}

// consume pulls one partition's consumer of a stage and hands it over in batches: whatever
// has arrived (up to Config.Batch, the consumer's MaxAckPending) is taken at once. Order
// holds because a batch is finished (every message acked or dead-lettered) before the next is
// taken, the server delivers a partition in stream order, and a worker that takes over a
// partition first waits until it holds every message still pending from the previous owner
// (acquire). When ctx ends, the partition is given back at once (letGo) rather than after
// PinnedTTL; when the rebalancer asks (this worker holds more than its share), it is handed
// over gracefully and this worker goes on pulling it as a standby.
func (w *Worker) consume(ctx context.Context, st stage, p int, cons jetstream.Consumer, ready func()) error {
	done := newFinished(finishedLimit) // the stream seqs of the messages this worker finished
	for {
		handedOver, err := w.hold(ctx, st, p, cons, done, ready)
		ready = func() {}
		if err != nil || !handedOver {
			return err
		}
	}
}

// hold is one pull of a partition's consumer, from its start until ctx ends (false), the
// partition was handed over on the rebalancer's request (true), or the pull ended by itself
// (an error). done is kept across pulls: what this worker finished stays finished.
func (w *Worker) hold(ctx context.Context, st stage, p int, cons jetstream.Consumer, done *finished, ready func()) (bool, error) {
	// The pull asks for a whole batch and stays open across acks, so the next messages follow
	// an ack without a new pull round trip. It expires after PinnedTTL/2: a new pull request
	// is what keeps the pin (the server unpins a worker that sent none for PinnedTTL).
	it, err := cons.Messages(jetstream.PullPriorityGroup(priorityGroup), jetstream.PullMaxMessages(w.cfg.Batch),
		jetstream.PullExpiry(w.cfg.PinnedTTL/2))
	ready()
	if err != nil {
		return false, fmt.Errorf("pull %s of partition %d: %w", st.name, p, err)
	}
	in := make(chan jetstream.Msg, w.cfg.Batch)
	out := newOutstanding()
	go w.pull(ctx, st, p, it, in, out) // ends (closing in) when the iterator has
	actx, stopAlive := context.WithCancel(ctx)
	alive := make(chan struct{})
	go func() {
		defer close(alive)
		w.keepAlive(actx, out)
	}()
	handle := st.handler(p)
	pin := ""
	var handover chan<- bool // the rebalancer's request being served
	release := w.release[st.i][p]
	end := func() bool {
		// Drain, not Stop: the messages the server sent before it saw this worker's pull
		// end still arrive and are given back with the rest; dropped, they would hold the
		// next owner up for AckWait. A drain that cannot finish (NATS away) is cut short.
		it.Drain()
		cut := time.AfterFunc(time.Second, it.Stop)
		for range in {
		}
		cut.Stop()
		stopAlive()
		<-alive
		unpinned := w.letGo(st, p, cons, pin, out)
		w.setPin(st, p, "")
		return unpinned
	}
	for {
		batch, req, ok := w.nextBatch(ctx, in, release)
		if req != nil {
			if pin == "" {
				req <- false // not pinned here: nothing to hand over
				continue
			}
			// Stop pulling, finish what has arrived, then unpin (end): the next owner finds
			// nothing of this worker's pending, so it starts at once.
			handover, release = req, nil
			it.Drain()
			continue
		}
		if !ok {
			unpinned := end()
			if handover != nil && ctx.Err() == nil {
				if unpinned {
					w.metrics.handovers.WithLabelValues(st.name).Inc()
				}
				handover <- unpinned
				return true, nil
			}
			if handover != nil {
				handover <- false
			}
			return false, pullEnded(ctx, st, p)
		}
		acquiring := false
		for _, msg := range batch {
			if id := msg.Headers().Get("Nats-Pin-Id"); id != "" && id != pin {
				pin, acquiring = id, true
				w.setPin(st, p, id)
			}
			if meta, err := msg.Metadata(); err == nil && meta.NumDelivered > 1 {
				w.metrics.redelivered.WithLabelValues(st.name).Inc()
				acquiring = true // a redelivery: make sure nothing older is still out
			}
		}
		if acquiring {
			if batch, ok = w.acquire(ctx, st, p, cons, in, out, batch); !ok {
				continue // in is closed or ctx ended: the next nextBatch says so
			}
		}
		batch = w.fresh(st, batch, done, out)
		handle(ctx, batch)
		if ctx.Err() != nil {
			continue
		}
		for _, msg := range batch {
			out.remove(msg)
			if meta, err := msg.Metadata(); err == nil {
				done.add(meta.Sequence.Stream)
			}
		}
	}
}

// finishedLimit bounds how many finished stream seqs a partition's stage remembers. A
// redelivery of a message finished longer ago than that is processed again, which every
// stage tolerates (the projector's writes are idempotent, the sequencer deduplicates, a
// repeated push is dropped by the clients).
const finishedLimit = 4096

// finished is the set of stream seqs a partition's stage has finished, the oldest forgotten
// past its limit. It is a set, not a high-water mark: a worker does not receive its messages
// contiguously (nats.go drops messages of a pull subscription whose buffer is full, the
// server redelivers them after the ack wait; a takeover that gives up waiting goes on
// without the previous owner's messages), so "finished a later one" never implies "finished
// this one". Acknowledging an entry for that reason is how the projection lost two entries
// for good (docs/reliability.md, session 6).
type finished struct {
	seqs  map[uint64]struct{}
	order []uint64 // ring of the remembered seqs, oldest at next
	next  int
}

func newFinished(limit int) *finished {
	return &finished{seqs: make(map[uint64]struct{}, limit), order: make([]uint64, 0, limit)}
}

func (f *finished) has(seq uint64) bool { _, ok := f.seqs[seq]; return ok }

func (f *finished) add(seq uint64) {
	if f.has(seq) {
		return
	}
	if len(f.order) < cap(f.order) {
		f.order = append(f.order, seq)
	} else {
		delete(f.seqs, f.order[f.next])
		f.order[f.next] = seq
		f.next = (f.next + 1) % len(f.order)
	}
	f.seqs[seq] = struct{}{}
}

// setPin records the pin id this worker holds partition p's stage with ("": none) and, for
// the sequencer, the ownership gauge.
func (w *Worker) setPin(st stage, p int, id string) {
	w.pins[st.i][p].Store(id)
	if st.name == stageSequencer {
		owned := 0.0
		if id != "" {
			owned = 1
		}
		w.metrics.owned.WithLabelValues(strconv.Itoa(p)).Set(owned)
	}
}

// letGo gives a partition's consumer back when this worker stops pulling it (its pull has
// ended and its handler has returned): the messages it holds unfinished (none after a
// handover, which finishes them first) are nak'ed, so they are redelivered at once instead
// of after AckWait, and its pin is removed, so another worker is pinned with the next
// message instead of after PinnedTTL. Redelivered messages are safe to process again (see
// acquire and fresh). A worker that dies does neither; that is what the timeouts are for.
// Bounded by a short deadline: a worker whose NATS connection is gone gives up at once. It
// reports whether it removed the pin.
func (w *Worker) letGo(st stage, p int, cons jetstream.Consumer, pin string, out *outstanding) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, msg := range out.list() {
		_ = msg.Nak()
	}
	if pin == "" {
		return false // never pinned in this pull
	}
	unpinned, err := w.unpin(ctx, st, cons, pin)
	if err != nil {
		w.logger.Debug("unpin", "stage", st.name, "partition", p, "err", err)
	}
	return unpinned
}

// unpin removes this worker's pin (pin) from the consumer if it still holds it: the server
// then pins the next worker waiting in the priority group. Another worker's pin is left
// alone (this one lost the partition meanwhile).
func (w *Worker) unpin(ctx context.Context, st stage, cons jetstream.Consumer, pin string) (bool, error) {
	info, err := cons.Info(ctx)
	if err != nil {
		return false, err
	}
	for _, g := range info.PriorityGroups {
		if g.Group == priorityGroup && g.PinnedClientID == pin {
			if err := st.stream.UnpinConsumer(ctx, info.Name, priorityGroup); err != nil {
				return false, err
			}
			return true, nil
		}
	}
	return false, nil
}

// fresh returns the batch in stream order with each stream message once (its latest
// delivery), without the messages this worker has finished already: a message redelivered
// while it waited (its ack wait passed) or whose ack was lost is acked again and not
// processed twice (which would fan it out twice). Only a message this worker finished itself
// is acked here; any other is processed, however old its stream seq.
func (w *Worker) fresh(st stage, batch []jetstream.Msg, done *finished, out *outstanding) []jetstream.Msg {
	bySeq := make(map[uint64]jetstream.Msg, len(batch))
	var seqs []uint64
	for _, msg := range batch {
		meta, err := msg.Metadata()
		if err != nil {
			continue
		}
		sseq := meta.Sequence.Stream
		if done.has(sseq) {
			_ = msg.Ack()
			out.remove(msg)
			w.metrics.redeliveredDone.WithLabelValues(st.name).Inc()
			continue
		}
		if prev, ok := bySeq[sseq]; ok {
			out.remove(prev)
		} else {
			seqs = append(seqs, sseq)
		}
		bySeq[sseq] = msg
	}
	slices.Sort(seqs)
	sorted := make([]jetstream.Msg, 0, len(seqs))
	for _, sseq := range seqs {
		sorted = append(sorted, bySeq[sseq])
	}
	return sorted
}

// outstanding is every message a partition's worker has received and not finished: they are
// all kept alive (InProgress) until finished, also those still waiting behind a batch that is
// being retried, so none is redelivered behind the worker's back.
type outstanding struct {
	mu   sync.Mutex
	msgs map[jetstream.Msg]struct{}
}

func newOutstanding() *outstanding { return &outstanding{msgs: map[jetstream.Msg]struct{}{}} }

func (o *outstanding) add(msg jetstream.Msg) {
	o.mu.Lock()
	o.msgs[msg] = struct{}{}
	o.mu.Unlock()
}

func (o *outstanding) remove(msg jetstream.Msg) {
	o.mu.Lock()
	delete(o.msgs, msg)
	o.mu.Unlock()
}

func (o *outstanding) list() []jetstream.Msg {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]jetstream.Msg, 0, len(o.msgs))
	for m := range o.msgs {
		out = append(out, m)
	}
	return out
}

// pull moves messages from the iterator to in until the iterator ends (stopped, drained, or
// its connection closed), then closes in. Every message it received is in out.
func (w *Worker) pull(ctx context.Context, st stage, p int, it jetstream.MessagesContext, in chan<- jetstream.Msg, out *outstanding) {
	defer close(in)
	for {
		msg, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return
			}
			if ctx.Err() != nil {
				it.Stop()
				return
			}
			w.logger.Warn("pull", "stage", st.name, "partition", p, "err", err)
			select { // a persistent error (NATS away) must not spin
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		out.add(msg)
		in <- msg // the consume loop reads in until it is closed
	}
}

// pullEnded is what consume returns when it stopped taking messages: nil when ctx ended,
// else an error (the pull ended by itself: the connection was closed or the consumer
// deleted).
func pullEnded(ctx context.Context, st stage, p int) error {
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("pull of the %s of partition %d ended", st.name, p)
}

// nextBatch waits for a message, then takes what else has arrived, up to Batch; false when
// ctx ends or in is closed. A request of the rebalancer (on release) is returned instead,
// when one comes first.
func (w *Worker) nextBatch(ctx context.Context, in <-chan jetstream.Msg, release <-chan chan<- bool) ([]jetstream.Msg, chan<- bool, bool) {
	var batch []jetstream.Msg
	select {
	case <-ctx.Done():
		return nil, nil, false
	case req := <-release:
		return nil, req, true
	case msg, ok := <-in:
		if !ok {
			return nil, nil, false
		}
		batch = append(batch, msg)
	}
	for len(batch) < w.cfg.Batch {
		select {
		case msg, ok := <-in:
			if !ok {
				return batch, nil, true // the next call reports the end
			}
			batch = append(batch, msg)
		default:
			return batch, nil, true
		}
	}
	return batch, nil, true
}

// acquire is called when this worker has just been pinned to the partition (or sees a
// redelivery). A previous owner that died may still hold messages older than the ones just
// received; they come back to this worker once their ack wait expires. Until then nothing is
// sequenced: acquire keeps collecting until this worker holds every message the consumer
// has pending, then returns them all in stream order. It gives up waiting after three ack
// waits (logged and counted) rather than stall the partition for ever.
func (w *Worker) acquire(ctx context.Context, st stage, p int, cons jetstream.Consumer, in <-chan jetstream.Msg, out *outstanding, batch []jetstream.Msg) ([]jetstream.Msg, bool) {
	held := map[uint64]jetstream.Msg{}
	add := func(msg jetstream.Msg) {
		if meta, err := msg.Metadata(); err == nil {
			if prev, ok := held[meta.Sequence.Stream]; ok {
				out.remove(prev)
			}
			held[meta.Sequence.Stream] = msg // a redelivery replaces the earlier delivery
		}
	}
	for _, msg := range batch {
		add(msg)
	}
	sorted := func() []jetstream.Msg {
		seqs := slices.Sorted(maps.Keys(held))
		out := make([]jetstream.Msg, 0, len(seqs))
		for _, s := range seqs {
			out = append(out, held[s])
		}
		return out
	}
	giveUp := w.now().Add(3 * w.cfg.AckWait)
	for {
		ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
		info, err := cons.Info(ictx)
		cancel()
		if err == nil {
			mine := 0
			for s := range held {
				if s <= info.Delivered.Stream {
					mine++
				}
			}
			if mine >= info.NumAckPending {
				return sorted(), true
			}
		}
		if w.now().After(giveUp) {
			w.logger.Warn("taking over a partition: messages of the previous owner did not come back; going on",
				"stage", st.name, "partition", p, "held", len(held))
			w.metrics.acquireTimeouts.WithLabelValues(st.name).Inc()
			return sorted(), true
		}
		select {
		case <-ctx.Done():
			return nil, false
		case msg, ok := <-in:
			if !ok {
				return nil, false
			}
			add(msg)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// keepAlive tells JetStream every AckWait/3 that the outstanding messages are still being
// worked on (a slow Cassandra must not get them redelivered behind this worker's back), until
// ctx ends.
func (w *Worker) keepAlive(ctx context.Context, out *outstanding) {
	t := time.NewTicker(w.cfg.AckWait / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for _, msg := range out.list() {
				_ = msg.InProgress()
			}
		}
	}
}

// watchLag refreshes the lag gauges every 5 seconds: each partition's ingest backlog and
// lost ownership (from its sequencer consumer) and its projection backlog (log entries not yet in
// Cassandra, from its projector consumer).
func (w *Worker) watchLag(ctx context.Context, sequencers, projectors []jetstream.Consumer) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		for p, c := range sequencers {
			ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
			info, err := c.Info(ictx)
			cancel()
			if err == nil {
				w.metrics.pending.WithLabelValues(strconv.Itoa(p)).Set(float64(info.NumPending + uint64(info.NumAckPending)))
				// The ownership gauge follows the pins this worker sees (setPin); a pin the
				// server took away without this worker noticing (it was paused) is cleared
				// here, unless the consume loop changed it meanwhile.
				mine, _ := w.pins[0][p].Load().(string)
				for _, g := range info.PriorityGroups {
					if g.Group == priorityGroup && mine != "" && g.PinnedClientID != mine && w.pins[0][p].CompareAndSwap(mine, "") {
						w.metrics.owned.WithLabelValues(strconv.Itoa(p)).Set(0)
					}
				}
			}
		}
		for p, c := range projectors {
			ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
			info, err := c.Info(ictx)
			cancel()
			if err == nil {
				w.metrics.projectionPending.WithLabelValues(strconv.Itoa(p)).Set(float64(info.NumPending + uint64(info.NumAckPending)))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
