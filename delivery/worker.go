package delivery

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/parleyhq/parley/history"
	"github.com/parleyhq/parley/internal/chat"
)

// priorityGroup is the one priority group of every partition consumer.
const priorityGroup = "sequencer"

// The stages of a partition.
const (
	stageSequencer = "sequencer"
	stageProjector = "projector"
	stageFanout    = "fanout"
)

// stageNames are the stages in the order of their index (stage.i).
var stageNames = [numStages]string{stageSequencer, stageProjector, stageFanout}

const numStages = 3

// Worker runs the delivery pipeline for the partitions it is pinned to. Every partition has
// three consumers, each with its own pin: the sequencer (ingest stream -> the log), the
// projector (the log -> Cassandra) and the fan-out (the log -> the members' user subjects).
// Run many (one per delivery process): for each consumer JetStream delivers to one of them at
// a time and fails over to another when it stops pulling for PinnedTTL. Workers that hold
// more than their fair share of partitions hand the excess over (rebalance.go).
type Worker struct {
	cfg     Config
	js      jetstream.JetStream
	nc      *nats.Conn
	log     *seqLog
	store   Store
	inbox   Inbox
	logger  *slog.Logger
	metrics *metrics
	now     func() time.Time
	// id names this worker in the workers bucket (rebalance.go).
	id string
	// pins[s][p] is the JetStream pin id this worker holds partition p's stage s with (from
	// the messages it received; "" when it gave the partition up or never held it).
	pins [numStages][]atomic.Value
	// release[s][p] carries the rebalancer's requests to hand partition p's stage s over;
	// the consume loop answers on the request whether it removed its pin.
	release [numStages][]chan chan<- bool
	// projectors[p] is partition p's projector consumer: its ack floor says how far the log
	// is in Cassandra (the sequencer's dedupe relies on it).
	projectors []jetstream.Consumer
	// written[p] is the stream seq up to which this worker's own projector of partition p has
	// written every entry (0 when another worker projects it): the fan-out reads it without a
	// JetStream request.
	written []atomic.Uint64
	// owedKV is the owed bucket (owed.go): which partitions' fan-out owes pushes.
	owedKV jetstream.KeyValue
}

// Store is what the worker needs of the history store (history.Store): the projection of the
// log (messages and their client_msg_ids, the state events change, the member list) and the
// reads the sequencer makes of it.
type Store interface {
	LastSeq(ctx context.Context, conv chat.ConversationID) (int64, error)
	SeqOf(ctx context.Context, conv chat.ConversationID, sender chat.UserID, id chat.ClientMsgID) (int64, bool, error)
	Put(ctx context.Context, conv chat.ConversationID, msgs []chat.Message) error
	Stored(ctx context.Context, conv chat.ConversationID, from, to int64) ([]chat.Message, error)
	ApplyEvent(ctx context.Context, m chat.Message) error
	ApplyMembership(ctx context.Context, m chat.Message) (history.Member, error)
	Member(ctx context.Context, conv chat.ConversationID, user chat.UserID) (history.Member, error)
	ActiveMembers(ctx context.Context, conv chat.ConversationID) ([]chat.UserID, error)
	Members(ctx context.Context, conv chat.ConversationID) ([]history.Member, error)
	MaxMembers() int
}

// Inbox is what the worker needs of the inbox (inbox.Inbox): every projected entry is
// recorded in its members' rows, a membership event in the member's row, and a text moves its
// sender's read position.
type Inbox interface {
	Record(ctx context.Context, m chat.Message, users []chat.UserID) error
	MarkSent(ctx context.Context, msgs []chat.Message) error
	ApplyMembership(ctx context.Context, m chat.Message, mem history.Member) error
	Behind(ctx context.Context, conv chat.ConversationID, users []chat.UserID, seq int64) ([]chat.UserID, error)
}

// NewWorker returns a Worker. ingest.EnsureStream, EnsureLog and EnsureDeadLetters must have
// succeeded.
func NewWorker(cfg Config, js jetstream.JetStream, nc *nats.Conn, store Store, inbox Inbox, reg prometheus.Registerer, logger *slog.Logger) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	w := &Worker{cfg: cfg, js: js, nc: nc, log: &seqLog{js: js, ingest: cfg.Ingest}, store: store, inbox: inbox,
		logger: logger, metrics: m, now: cfg.Now, id: nuid.Next(),
		projectors: make([]jetstream.Consumer, cfg.Ingest.Partitions), written: make([]atomic.Uint64, cfg.Ingest.Partitions)}
	for s := range numStages {
		w.pins[s] = make([]atomic.Value, cfg.Ingest.Partitions)
		w.release[s] = make([]chan chan<- bool, cfg.Ingest.Partitions)
		for p := range w.release[s] {
			w.release[s][p] = make(chan chan<- bool, 1)
		}
	}
	return w, nil
}

// consumerConfig is the configuration of one stage's consumer of partition p.
func (w *Worker) consumerConfig(st string, p int) (stream string, cc jetstream.ConsumerConfig) {
	cc = jetstream.ConsumerConfig{
		Durable:        st + "-" + strconv.Itoa(p),
		Description:    "Parley " + st + " of partition " + strconv.Itoa(p),
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        w.cfg.AckWait,
		MaxDeliver:     w.cfg.MaxDeliver,
		MaxAckPending:  w.cfg.Batch, // see consume for how order is kept
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		PriorityGroups: []string{priorityGroup},
		PriorityPolicy: jetstream.PriorityPolicyPinned,
		PinnedTTL:      w.cfg.PinnedTTL,
	}
	switch st {
	case stageSequencer:
		cc.FilterSubject = w.cfg.Ingest.SubjectPrefix + strconv.Itoa(p)
		return w.cfg.Ingest.Stream, cc
	case stageProjector:
		// The projection must see every entry, however often it is retried.
		cc.FilterSubject, cc.MaxDeliver = partitionFilter(w.cfg.Ingest, p), -1
	case stageFanout:
		// Live push is best effort: a new fan-out consumer starts from now, not from the
		// whole log (sync repairs what it misses).
		cc.FilterSubject, cc.DeliverPolicy = partitionFilter(w.cfg.Ingest, p), jetstream.DeliverNewPolicy
	}
	return LogStream(w.cfg.Ingest), cc
}

// Run consumes every partition's three stages until ctx ends. Messages being processed when
// ctx ends are left unacknowledged and are redelivered (to this or another worker). If a
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
	if err := w.log.open(ctx); err != nil {
		return err
	}
	stages := []stage{
		{i: 0, name: stageNames[0], handler: w.sequencer},
		{i: 1, name: stageNames[1], handler: w.projector},
		{i: 2, name: stageNames[2], handler: w.fanout},
	}
	consumers := map[string][]jetstream.Consumer{}
	// Every consumer is set up before any runs: the sequencer reads the projectors' progress.
	for i, st := range stages {
		name, _ := w.consumerConfig(st.name, 0)
		stream, err := w.js.Stream(ctx, name)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("stream %s of the %s: %w", name, st.name, err)
		}
		stages[i].stream = stream
		for p := 0; p < w.cfg.Ingest.Partitions; p++ {
			stream, cc := w.consumerConfig(st.name, p)
			cons, err := w.js.CreateOrUpdateConsumer(ctx, stream, cc)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("%s consumer of partition %d: %w", st.name, p, err)
			}
			consumers[st.name] = append(consumers[st.name], cons)
		}
	}
	copy(w.projectors, consumers[stageProjector])
	kv, err := w.ensureBucket(ctx, jetstream.KeyValueConfig{Bucket: w.owedBucket(),
		Description: "Parley delivery: partitions whose fan-out owes pushes (entries pushed before they were projected)",
		Storage:     jetstream.FileStorage, Replicas: w.cfg.Ingest.Replicas})
	if err != nil || kv == nil {
		return err // nil: ctx ended
	}
	w.owedKV = kv
	var pulling sync.WaitGroup
	for _, st := range stages {
		for p, cons := range consumers[st.name] {
			wg.Add(1)
			pulling.Add(1)
			go func() {
				defer wg.Done()
				if err := w.consume(ctx, st, p, cons, pulling.Done); err != nil {
					fail(err)
				}
			}()
		}
	}
	// Only once every consumer has a pull waiting does this worker count among the live
	// ones: a partition handed over to it then finds it there.
	pulling.Wait()
	if err := w.joinWorkers(ctx, &wg); err != nil {
		fail(err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		w.watchLag(ctx, consumers[stageSequencer], consumers[stageProjector])
	}()
	wg.Wait()
	return firstErr
}

// projectedFloor is the stream seq of the log up to which partition p is in Cassandra: the
// projector's ack floor (every entry up to it was written, and acknowledged only then).
func (w *Worker) projectedFloor(ctx context.Context, p int) (uint64, error) {
	ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	cons := w.projectors[p]
	if cons == nil { // not running (the reconciler of parleyd reconcile)
		var err error
		if cons, err = w.js.Consumer(ictx, LogStream(w.cfg.Ingest), stageProjector+"-"+strconv.Itoa(p)); err != nil {
			return 0, fmt.Errorf("projector of partition %d: %w", p, err)
		}
	}
	info, err := cons.Info(ictx)
	if err != nil {
		return 0, fmt.Errorf("projector of partition %d: %w", p, err)
	}
	return info.AckFloor.Stream, nil
}
