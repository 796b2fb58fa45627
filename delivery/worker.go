package delivery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/parleyhq/parley/delivery/ingest"
	"github.com/parleyhq/parley/history"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/routing"
	"github.com/parleyhq/parley/protocol"
)

// priorityGroup is the one priority group of every partition consumer.
const priorityGroup = "sequencer"

// Worker sequences the partitions it is pinned to. Run many (one per delivery process): for
// each partition JetStream delivers to one of them at a time and fails over to another when it
// stops pulling for PinnedTTL.
type Worker struct {
	cfg     Config
	js      jetstream.JetStream
	nc      *nats.Conn
	store   *history.Store
	logger  *slog.Logger
	metrics *metrics
	now     func() time.Time
	// pins[p] is the JetStream pin id on the last message of partition p this worker received.
	pins []atomic.Value
}

// NewWorker returns a Worker. ingest.EnsureStream and EnsureDeadLetters must have succeeded.
func NewWorker(cfg Config, js jetstream.JetStream, nc *nats.Conn, store *history.Store, reg prometheus.Registerer, logger *slog.Logger) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return &Worker{cfg: cfg, js: js, nc: nc, store: store, logger: logger, metrics: m, now: time.Now,
		pins: make([]atomic.Value, cfg.Ingest.Partitions)}, nil
}

// Run consumes every partition until ctx ends. Messages being processed when ctx ends are
// left unacknowledged and are redelivered (to this or another worker). If a partition's
// consumer cannot be set up, Run stops the others and returns the error.
func (w *Worker) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err })
		cancel()
	}
	var consumers []jetstream.Consumer
	for p := 0; p < w.cfg.Ingest.Partitions && ctx.Err() == nil; p++ {
		cons, err := w.js.CreateOrUpdateConsumer(ctx, w.cfg.Ingest.Stream, jetstream.ConsumerConfig{
			Durable:        "sequencer-" + strconv.Itoa(p),
			Description:    "Parley sequencer of partition " + strconv.Itoa(p),
			FilterSubject:  w.cfg.Ingest.SubjectPrefix + strconv.Itoa(p),
			AckPolicy:      jetstream.AckExplicitPolicy,
			AckWait:        w.cfg.AckWait,
			MaxDeliver:     w.cfg.MaxDeliver,
			MaxAckPending:  w.cfg.Batch, // see consume for how order is kept
			DeliverPolicy:  jetstream.DeliverAllPolicy,
			PriorityGroups: []string{priorityGroup},
			PriorityPolicy: jetstream.PriorityPolicyPinned,
			PinnedTTL:      w.cfg.PinnedTTL,
		})
		if err != nil {
			if ctx.Err() == nil {
				fail(fmt.Errorf("consumer of partition %d: %w", p, err))
			}
			break
		}
		consumers = append(consumers, cons)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.consume(ctx, p, cons); err != nil {
				fail(err)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		w.watchLag(ctx, consumers)
	}()
	wg.Wait()
	return firstErr
}

// watchLag refreshes the consumer-lag gauge of every partition every 5 seconds.
func (w *Worker) watchLag(ctx context.Context, consumers []jetstream.Consumer) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		for p, c := range consumers {
			ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
			info, err := c.Info(ictx)
			cancel()
			if err == nil {
				w.metrics.pending.WithLabelValues(strconv.Itoa(p)).Set(float64(info.NumPending + uint64(info.NumAckPending)))
				owned := 0.0
				mine, _ := w.pins[p].Load().(string)
				for _, g := range info.PriorityGroups {
					if g.Group == priorityGroup && mine != "" && g.PinnedClientID == mine {
						owned = 1
					}
				}
				w.metrics.owned.WithLabelValues(strconv.Itoa(p)).Set(owned)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// consume pulls one partition and sequences it in batches: whatever has arrived (up to
// Config.Batch, the consumer's MaxAckPending) is taken at once, grouped by conversation, and
// each conversation's run of text messages is stored with one conditional insert. Order holds
// because a batch is finished (every message acked or dead-lettered) before the next is taken,
// the server delivers a partition in stream order, and a worker that takes over a partition
// first waits until it holds every message still pending from the previous owner (acquire).
func (w *Worker) consume(ctx context.Context, p int, cons jetstream.Consumer) error {
	// The pull asks for a whole batch and stays open across acks, so the next messages follow
	// an ack without a new pull round trip.
	it, err := cons.Messages(jetstream.PullPriorityGroup(priorityGroup), jetstream.PullMaxMessages(w.cfg.Batch),
		jetstream.PullExpiry(w.cfg.PinnedTTL/2))
	if err != nil {
		return fmt.Errorf("pull partition %d: %w", p, err)
	}
	in := make(chan jetstream.Msg, w.cfg.Batch)
	out := newOutstanding()
	pulled := make(chan struct{})
	go func() {
		defer close(pulled)
		w.pull(ctx, p, it, in, out)
	}()
	alive := make(chan struct{})
	go func() {
		defer close(alive)
		w.keepAlive(ctx, out)
	}()
	defer func() {
		it.Stop()
		<-pulled
		<-alive
	}()
	go func() {
		<-ctx.Done()
		it.Stop()
	}()
	ps := &partitionState{last: map[chat.ConversationID]int64{}, members: map[chat.ConversationID]cachedMembers{}}
	pin := ""
	var done uint64 // the highest stream seq of the batches this worker finished
	for {
		batch, ok := w.nextBatch(ctx, in)
		if !ok {
			return nil
		}
		acquiring := false
		for _, msg := range batch {
			if id := msg.Headers().Get("Nats-Pin-Id"); id != "" && id != pin {
				pin, acquiring = id, true
				w.pins[p].Store(id)
			}
			if meta, err := msg.Metadata(); err == nil && meta.NumDelivered > 1 {
				w.metrics.redelivered.Inc()
				acquiring = true // a redelivery: make sure nothing older is still out
			}
		}
		if acquiring {
			if batch, ok = w.acquire(ctx, p, cons, in, out, batch); !ok {
				return nil
			}
		}
		batch = w.fresh(batch, done, out)
		w.process(ctx, ps, batch)
		if ctx.Err() != nil {
			return nil
		}
		for _, msg := range batch {
			out.remove(msg)
			if meta, err := msg.Metadata(); err == nil {
				done = max(done, meta.Sequence.Stream)
			}
		}
	}
}

// fresh returns the batch in stream order with each stream message once (its latest
// delivery), without the messages this worker has finished already: a message redelivered
// while it waited (its ack wait passed) or whose ack was lost is acked again and not
// processed twice (which would fan it out twice).
func (w *Worker) fresh(batch []jetstream.Msg, done uint64, out *outstanding) []jetstream.Msg {
	bySeq := make(map[uint64]jetstream.Msg, len(batch))
	var seqs []uint64
	for _, msg := range batch {
		meta, err := msg.Metadata()
		if err != nil {
			continue
		}
		sseq := meta.Sequence.Stream
		if sseq <= done {
			_ = msg.Ack()
			out.remove(msg)
			w.metrics.outcomes.WithLabelValues("redelivered_done").Inc()
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

// pull moves messages from the iterator to in until the iterator stops.
func (w *Worker) pull(ctx context.Context, p int, it jetstream.MessagesContext, in chan<- jetstream.Msg, out *outstanding) {
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return
			}
			w.logger.Warn("pull", "partition", p, "err", err)
			select { // a persistent error (NATS away) must not spin
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		out.add(msg)
		select {
		case in <- msg:
		case <-ctx.Done():
			return
		}
	}
}

// nextBatch waits for a message, then takes what else has arrived, up to Batch.
func (w *Worker) nextBatch(ctx context.Context, in <-chan jetstream.Msg) ([]jetstream.Msg, bool) {
	var batch []jetstream.Msg
	select {
	case <-ctx.Done():
		return nil, false
	case msg := <-in:
		batch = append(batch, msg)
	}
	for len(batch) < w.cfg.Batch {
		select {
		case msg := <-in:
			batch = append(batch, msg)
		default:
			return batch, true
		}
	}
	return batch, true
}

// acquire is called when this worker has just been pinned to the partition (or sees a
// redelivery). A previous owner that died may still hold messages older than the ones just
// received; they come back to this worker once their ack wait expires. Until then nothing is
// sequenced: acquire keeps collecting until this worker holds every message the consumer
// has pending, then returns them all in stream order. It gives up waiting after three ack
// waits (logged and counted) rather than stall the partition for ever.
func (w *Worker) acquire(ctx context.Context, p int, cons jetstream.Consumer, in <-chan jetstream.Msg, out *outstanding, batch []jetstream.Msg) ([]jetstream.Msg, bool) {
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
	giveUp := time.Now().Add(3 * w.cfg.AckWait)
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
		if time.Now().After(giveUp) {
			w.logger.Warn("taking over a partition: messages of the previous owner did not come back; going on",
				"partition", p, "held", len(held))
			w.metrics.acquireTimeouts.Inc()
			return sorted(), true
		}
		select {
		case <-ctx.Done():
			return nil, false
		case msg := <-in:
			add(msg)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

type partitionState struct {
	last    map[chat.ConversationID]int64
	members map[chat.ConversationID]cachedMembers
}

type cachedMembers struct {
	users []chat.UserID
	at    time.Time
}

// membersTTL bounds how stale the member list used for live fan-out may be. Live push is best
// effort; a member added a moment ago catches up through sync.
const membersTTL = 5 * time.Second

// item is one message of a batch, decoded.
type item struct {
	msg  jetstream.Msg
	send ingest.Send
	done bool // acked, rejected or dead-lettered
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
		groups[s.Conversation] = append(groups[s.Conversation], &item{msg: msg, send: s})
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
		if it.send.Kind != "" && it.send.Kind != chat.MessageText {
			return false
		}
	}
	return true
}

// newMessage is the message a send becomes, before it has a seq.
func (w *Worker) newMessage(s ingest.Send) chat.Message {
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
	conv := run[0].send.Conversation
	type key struct {
		sender chat.UserID
		id     [16]byte
	}
	seen := make(map[key]bool, len(run))
	for _, it := range run {
		k := key{it.send.Sender, it.send.ClientMsgID}
		if seen[k] {
			return false, nil // the same send twice in the run (a resend after the duplicate window)
		}
		seen[k] = true
		if _, claimed, err := w.store.SeqOf(ctx, conv, it.send.Sender, it.send.ClientMsgID); err != nil || claimed {
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
		msgs[i] = w.newMessage(it.send)
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
		err = w.store.UpdateInboxes(ctx, msgs[len(msgs)-1], users)
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
	if !errors.Is(err, history.ErrNotFound) {
		return err
	}
	for _, it := range run {
		if err := w.deadLetter(ctx, it.msg, fmt.Errorf("conversation %s not found (edge and delivery on different keyspaces?)", it.send.Conversation)); err != nil {
			return err
		}
		it.done = true
	}
	return nil
}

// handle sequences one message. The order of steps, and why a crash between any two loses
// nothing and duplicates nothing, is in docs/delivery.md. It returns transient errors only.
func (w *Worker) handle(ctx context.Context, ps *partitionState, it *item, start time.Time) error {
	s := it.send
	m, dup, err := w.sequence(ctx, ps, s)
	var users []chat.UserID
	if err == nil {
		// Every member's inbox row learns the new entry before the ack: a crash here redelivers,
		// the dedupe path finds the entry stored and comes back to this step.
		users, err = w.recipients(ctx, ps, m)
		if err == nil {
			err = w.store.UpdateInboxes(ctx, m, users)
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
	if errors.Is(err, history.ErrNotFound) {
		// The edge checked membership before accepting, so the conversation existed: this
		// worker is pointed at another keyspace than the edge. Retrying cannot help now; an
		// operator can replay the message once the cause is fixed.
		if err := w.deadLetter(ctx, it.msg, fmt.Errorf("conversation %s not found (edge and delivery on different keyspaces?)", s.Conversation)); err != nil {
			return err
		}
		it.done = true
		return nil
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
	w.metrics.endToEnd.Observe(w.now().Sub(it.send.AcceptedAt).Seconds())
}

// sequence gives s its seq and stores it, or finds the seq it was already given.
func (w *Worker) sequence(ctx context.Context, ps *partitionState, s ingest.Send) (chat.Message, bool, error) {
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
func (w *Worker) storedBefore(ctx context.Context, ps *partitionState, s ingest.Send) (chat.Message, bool, error) {
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

// rejection is a membership event that does not apply when it comes to be sequenced.
type rejection struct{ reason string }

func (r *rejection) Error() string { return "rejected: " + r.reason }

// checkMembership decides whether a membership event still applies now, in sequence order:
// the edge and the API checked when they accepted it, but other changes may have been
// sequenced since.
func (w *Worker) checkMembership(ctx context.Context, m chat.Message) error {
	mem, err := w.store.Member(ctx, m.Conversation, m.TargetUser)
	in := err == nil && mem.Active()
	if err != nil && !errors.Is(err, history.ErrNotFound) {
		return err
	}
	switch {
	case m.Kind == chat.MessageMemberAdded && in:
		return &rejection{"already a member"}
	case m.Kind != chat.MessageMemberAdded && !in:
		return &rejection{"not a member"}
	case m.Kind == chat.MessageMemberAdded:
		all, err := w.store.Members(ctx, m.Conversation)
		if err != nil {
			return err
		}
		active := 0
		for _, x := range all {
			if x.Active() {
				active++
			}
		}
		if active >= w.store.MaxMembers() {
			return &rejection{"the group is full"}
		}
	}
	return nil
}

// applyEffects folds a stored event into the state it changes. Idempotent: it runs again when
// a redelivery finds the event stored.
func (w *Worker) applyEffects(ctx context.Context, ps *partitionState, m chat.Message) error {
	switch {
	case m.Kind.TargetsMessage():
		return w.store.ApplyEvent(ctx, m)
	case m.Kind.Membership():
		delete(ps.members, m.Conversation) // the next fan-out reads the new member list
		if err := w.store.ApplyMembership(ctx, m); err != nil {
			return err
		}
		// Edges cache membership answers: tell them (best effort; their TTL bounds the rest).
		_ = w.nc.Publish(routing.MembershipSubject(m.Conversation.String()), nil)
	}
	return nil
}

// recipients are the users an entry is for: the current members, and for a removal or leaving
// also the member who is out (their devices learn it, their inbox row records it).
func (w *Worker) recipients(ctx context.Context, ps *partitionState, m chat.Message) ([]chat.UserID, error) {
	users, err := w.memberList(ctx, ps, m.Conversation)
	if err != nil {
		return nil, err
	}
	if m.Kind == chat.MessageMemberRemoved || m.Kind == chat.MessageMemberLeft {
		users = append(slices.Clip(users), m.TargetUser)
	}
	return users, nil
}

// fanOut publishes the sequenced message on every recipient's user subject, the sender's
// included (their other devices). Best effort: failures are counted, sync repairs.
func (w *Worker) fanOut(m chat.Message, users []chat.UserID) {
	data, err := protocol.Encode(MessageFrame(m))
	if err != nil {
		return
	}
	w.metrics.fanoutErrors.Add(float64(routing.Publish(w.nc, users, string(protocol.TypeMessage), data)))
	w.metrics.fanout.Add(float64(len(users)))
}

func (w *Worker) memberList(ctx context.Context, ps *partitionState, conv chat.ConversationID) ([]chat.UserID, error) {
	if c, ok := ps.members[conv]; ok && w.now().Sub(c.at) < membersTTL {
		return c.users, nil
	}
	ms, err := w.store.Members(ctx, conv)
	if err != nil {
		return nil, err
	}
	users := make([]chat.UserID, 0, len(ms))
	for _, m := range ms {
		if m.Active() {
			users = append(users, m.User)
		}
	}
	ps.members[conv] = cachedMembers{users: users, at: w.now()}
	return users, nil
}

// MessageFrame is the protocol frame of a stored message.
func MessageFrame(m chat.Message) protocol.Frame {
	w := history.WireMessage(m)
	return protocol.Frame{
		Type: protocol.TypeMessage, Conversation: w.Conversation, Seq: w.Seq, Sender: w.Sender,
		SenderDevice: w.SenderDevice, ClientMsgID: w.ClientMsgID, Kind: w.Kind, Body: w.Body, TargetSeq: w.TargetSeq,
		User: w.User, TS: w.TS,
	}
}
