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
	"github.com/prometheus/client_golang/prometheus"

	"github.com/parleyhq/parley/history"
	"github.com/parleyhq/parley/internal/chat"
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
	store   Store
	inbox   Inbox
	logger  *slog.Logger
	metrics *metrics
	now     func() time.Time
	// pins[p] is the JetStream pin id on the last message of partition p this worker received.
	pins []atomic.Value
}

// Store is what the worker needs of the history store (history.Store): the sequenced log of
// each conversation with its dedupe map, the state events change, and the member list.
type Store interface {
	LastSeq(ctx context.Context, conv chat.ConversationID) (int64, error)
	SeqOf(ctx context.Context, conv chat.ConversationID, sender chat.UserID, id chat.ClientMsgID) (int64, bool, error)
	ClaimClientMsgID(ctx context.Context, conv chat.ConversationID, sender chat.UserID, id chat.ClientMsgID, seq int64) error
	ClaimClientMsgIDs(ctx context.Context, conv chat.ConversationID, msgs []chat.Message) error
	Append(ctx context.Context, conv chat.ConversationID, msgs []chat.Message) error
	MessageAt(ctx context.Context, conv chat.ConversationID, seq int64) (chat.Message, bool, error)
	RaiseLast(ctx context.Context, conv chat.ConversationID, m chat.Message) error
	ApplyEvent(ctx context.Context, m chat.Message) error
	ApplyMembership(ctx context.Context, m chat.Message) (history.Member, error)
	Member(ctx context.Context, conv chat.ConversationID, user chat.UserID) (history.Member, error)
	ActiveMembers(ctx context.Context, conv chat.ConversationID) ([]chat.UserID, error)
	MaxMembers() int
}

// Inbox is what the worker needs of the inbox (inbox.Inbox): every sequenced entry is
// recorded in its members' rows, and a membership event in the member's row.
type Inbox interface {
	Record(ctx context.Context, m chat.Message, users []chat.UserID) error
	ApplyMembership(ctx context.Context, m chat.Message, mem history.Member) error
}

// NewWorker returns a Worker. ingest.EnsureStream and EnsureDeadLetters must have succeeded.
func NewWorker(cfg Config, js jetstream.JetStream, nc *nats.Conn, store Store, inbox Inbox, reg prometheus.Registerer, logger *slog.Logger) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return &Worker{cfg: cfg, js: js, nc: nc, store: store, inbox: inbox, logger: logger, metrics: m, now: cfg.Now,
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
