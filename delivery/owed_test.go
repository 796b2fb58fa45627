package delivery_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/parleyhq/parley/delivery"
	"github.com/parleyhq/parley/delivery/ingest"
	"github.com/parleyhq/parley/history"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/routing"
	"github.com/parleyhq/parley/internal/teststack"
	"github.com/parleyhq/parley/protocol"
)

// stalledStore is the real store with the projector's writes failing while stalled is set
// (Cassandra unable to take writes): the projector retries and the entries wait in the log.
type stalledStore struct {
	*history.Store
	stalled atomic.Bool
}

var errStalled = errors.New("injected: Cassandra times out on writes")

func (s *stalledStore) Put(ctx context.Context, conv chat.ConversationID, msgs []chat.Message) error {
	if s.stalled.Load() {
		return errStalled
	}
	return s.Store.Put(ctx, conv, msgs)
}

// device is a user's live feed, subscribed from the moment it connects.
type device struct {
	t    *testing.T
	feed chan *nats.Msg
	sub  *nats.Subscription
}

func (p *pipeline) connect(u chat.UserID) *device {
	p.t.Helper()
	d := &device{t: p.t, feed: make(chan *nats.Msg, 64)}
	var err error
	if d.sub, err = p.n.Conn.ChanSubscribe(routing.UserSubject(u), d.feed); err != nil {
		p.t.Fatal(err)
	}
	if err := p.n.Conn.Flush(); err != nil {
		p.t.Fatal(err)
	}
	p.t.Cleanup(func() { _ = d.sub.Unsubscribe() })
	return d
}

// await waits up to d for a push of conv's seq; it reports whether one came.
func (d *device) await(conv chat.ConversationID, seq int64, within time.Duration) bool {
	d.t.Helper()
	deadline := time.After(within)
	for {
		select {
		case m := <-d.feed:
			var f protocol.Frame
			if err := json.Unmarshal(m.Data, &f); err != nil {
				d.t.Fatalf("undecodable push %q: %v", m.Data, err)
			}
			if f.Type == protocol.TypeMessage && f.Conversation == conv.String() && f.Seq == seq {
				return true
			}
		case <-deadline:
			return false
		}
	}
}

// owedMark is partition 0's mark in the owed bucket (found false: none).
func (p *pipeline) owedMark() (found bool) {
	p.t.Helper()
	kv, err := p.n.JetStream.KeyValue(context.Background(), delivery.OwedBucket(p.cfg))
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return false
	}
	if err != nil {
		p.t.Fatal(err)
	}
	_, err = kv.Get(context.Background(), "0")
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false
	}
	if err != nil {
		p.t.Fatal(err)
	}
	return true
}

// stalledPush sets up the defect of the cluster smoke test (seed 290052693): the projector is
// stalled, so the fan-out pushes a conversation's last message before Cassandra has it. A
// device that was connected gets the push; one that connects after it would find nothing
// in its sync (sync reads Cassandra), and no later message shows it a gap.
func stalledPush(t *testing.T, p *pipeline) (conv chat.ConversationID, b chat.UserID, store *stalledStore, stopA func()) {
	t.Helper()
	id := teststack.ID(t)
	a := chat.UserID(id + "_a")
	b = chat.UserID(id + "_b")
	conv, _, err := p.store.CreateDirect(context.Background(), a, b, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	store = &stalledStore{Store: p.store}
	store.stalled.Store(true)
	stopA = p.startWorkerWith(store)
	early := p.connect(b)
	p.send(conv, a, 1)
	if !early.await(conv, 1, 15*time.Second) {
		t.Fatal("no live push of seq 1 within 15s while the projector is stalled")
	}
	if _, ok, err := p.store.MessageAt(context.Background(), conv, 1); err != nil || ok {
		t.Fatalf("seq 1 in Cassandra while the projector is stalled: %v, %v; want it missing", ok, err)
	}
	return conv, b, store, stopA
}

// The fan-out pushes such a message again once the projector has written it.
func TestPushBeforeProjectionIsPushedAgain(t *testing.T) {
	p := newPipeline(t, delivery.Config{Ingest: ingest.Config{Partitions: 1}})
	conv, b, store, _ := stalledPush(t, p)
	late := p.connect(b) // connected after the push; its sync now would find nothing
	if !p.owedMark() {
		t.Error("no owed mark while the fan-out owes a push")
	}
	store.stalled.Store(false)
	if !late.await(conv, 1, 15*time.Second) {
		t.Fatal("a device that connected after the push of seq 1, before it was projected, heard nothing of it within 15s of the projector catching up")
	}
	if _, ok, err := p.store.MessageAt(context.Background(), conv, 1); err != nil || !ok {
		t.Fatalf("seq 1 in Cassandra when it was pushed again: %v, %v; want it written first", ok, err)
	}
	if !teststack.Eventually(t, 5*time.Second, func() bool { return !p.owedMark() }) {
		t.Error("the owed mark is still there after the debt was paid")
	}
}

// When the worker that owes the push stops before paying, the worker that takes the
// partition's fan-out over (a message of another conversation in the partition gives it the
// pin) reads the mark and pays it.
func TestOwedPushSurvivesTheFanoutOwner(t *testing.T) {
	p := newPipeline(t, delivery.Config{Ingest: ingest.Config{Partitions: 1}})
	conv, b, _, stopA := stalledPush(t, p)
	stopA()
	if !p.owedMark() {
		t.Fatal("no owed mark after the owing worker stopped")
	}
	late := p.connect(b)
	p.startWorker()
	id := teststack.ID(t)
	other, _, err := p.store.CreateDirect(context.Background(), chat.UserID(id+"_c"), chat.UserID(id+"_d"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	p.send(other, chat.UserID(id+"_c"), 1)
	if !late.await(conv, 1, 4*time.Second) {
		t.Fatal("the new fan-out owner did not pay the stopped worker's owed push of seq 1 within 4s")
	}
}

// When no message comes to give the partition's fan-out to another worker, the reconciler
// pays a mark nobody refreshes.
func TestReconcilerPaysAnAbandonedDebt(t *testing.T) {
	p := newPipeline(t, delivery.Config{Ingest: ingest.Config{Partitions: 1}})
	t.Cleanup(func() { _ = p.n.JetStream.DeleteKeyValue(context.Background(), p.cfg.Ingest.Stream+"_LEASES") })
	conv, b, _, stopA := stalledPush(t, p)
	stopA()
	late := p.connect(b)
	p.startWorker() // projects seq 1; its fan-out gets no message, so it never takes over
	p.waitProjected()
	if late.await(conv, 1, 6*time.Second) { // the mark is abandoned (unrefreshed) after 5s
		t.Fatal("seq 1 pushed again with no owner and no reconciler: the test does not isolate the reconciler")
	}
	if _, err := p.newWorker().Reconcile(context.Background(), 15*time.Minute); err != nil {
		t.Fatal(err)
	}
	if !late.await(conv, 1, 5*time.Second) {
		t.Fatal("the reconciler did not pay the abandoned owed push of seq 1")
	}
	if p.owedMark() {
		t.Error("the reconciler left the abandoned mark after paying it")
	}
}
