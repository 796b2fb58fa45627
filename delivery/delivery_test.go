package delivery_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/parleyhq/parley/delivery"
	"github.com/parleyhq/parley/delivery/ingest"
	"github.com/parleyhq/parley/history"
	"github.com/parleyhq/parley/inbox"
	"github.com/parleyhq/parley/internal/backend"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/routing"
	"github.com/parleyhq/parley/internal/teststack"
	"github.com/parleyhq/parley/protocol"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/apache/cassandra-gocql-driver/v2.(*eventDebouncer).flusher"))
}

type pipeline struct {
	t     *testing.T
	n     *backend.NATS
	store *history.Store
	inbox *inbox.Inbox
	cfg   delivery.Config
	in    *ingest.Ingest
}

// newPipeline gives the test its own stream and subjects on the real NATS, and the shared
// test keyspace on the real Cassandra.
func newPipeline(t *testing.T, cfg delivery.Config) *pipeline {
	t.Helper()
	id := teststack.ID(t)
	cfg.Ingest.Stream = "T_" + id
	cfg.Ingest.SubjectPrefix = "test." + id + "."
	if cfg.Ingest.Partitions == 0 {
		cfg.Ingest.Partitions = 4
	}
	n := teststack.NATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := delivery.EnsureStreams(ctx, n.JetStream, cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, s := range delivery.StreamNames(cfg) {
			_ = n.JetStream.DeleteStream(context.Background(), s)
		}
		_ = n.JetStream.DeleteKeyValue(context.Background(), delivery.WorkersBucket(cfg))
		_ = n.JetStream.DeleteKeyValue(context.Background(), delivery.OwedBucket(cfg))
	})
	store, err := history.New(teststack.Cassandra(t), history.Config{})
	if err != nil {
		t.Fatal(err)
	}
	inb := inbox.New(teststack.Cassandra(t), store, inbox.Config{})
	in, err := ingest.New(n.JetStream, cfg.Ingest)
	if err != nil {
		t.Fatal(err)
	}
	return &pipeline{t: t, n: n, store: store, inbox: inb, cfg: cfg, in: in}
}

// startWorker runs a worker until the returned stop is called (or the test ends).
func (p *pipeline) startWorker() (stop func()) {
	p.t.Helper()
	return p.startWorkerWith(p.store)
}

// startWorkerWith runs a worker on store (the real one, or one that injects faults into it).
func (p *pipeline) startWorkerWith(store delivery.Store) (stop func()) {
	p.t.Helper()
	w, err := delivery.NewWorker(p.cfg, p.n.JetStream, p.n.Conn, store, p.inbox, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		p.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := w.Run(ctx); err != nil {
			p.t.Errorf("worker: %v", err)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	p.t.Cleanup(stop)
	return stop
}

func cmid(sender chat.UserID, i int) chat.ClientMsgID {
	var b chat.ClientMsgID
	copy(b[:8], sender)
	binary.BigEndian.PutUint64(b[8:], uint64(i))
	return b
}

func (p *pipeline) send(conv chat.ConversationID, sender chat.UserID, i int) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := p.in.Publish(ctx, ingest.Entry{Conversation: conv, Sender: sender, SenderDevice: "d",
		ClientMsgID: cmid(sender, i), Body: fmt.Sprintf("%s %d", sender, i), AcceptedAt: time.Now()})
	if err != nil {
		p.t.Errorf("publish: %v", err)
	}
}

// waitLog waits until the conversation has n messages, then returns them in order.
func (p *pipeline) waitLog(conv chat.ConversationID, n int) []chat.Message {
	p.t.Helper()
	var all []chat.Message
	ok := teststack.Eventually(p.t, 60*time.Second, func() bool {
		last, err := p.store.LastSeq(context.Background(), conv)
		return err == nil && last >= int64(n)
	})
	if !ok {
		last, _ := p.store.LastSeq(context.Background(), conv)
		p.t.Fatalf("conversation has %d messages after 60s; want %d", last, n)
	}
	after := int64(0)
	for {
		page, err := p.store.After(context.Background(), conv, history.Window{}, after, 200)
		if err != nil {
			p.t.Fatal(err)
		}
		if len(page) == 0 {
			return all
		}
		all = append(all, page...)
		after = page[len(page)-1].Seq
	}
}

// checkLog asserts seqs 1..len contiguous and each (sender, client_msg_id) exactly once.
func checkLog(t *testing.T, log []chat.Message, want int) {
	t.Helper()
	if len(log) != want {
		t.Fatalf("log has %d messages; want %d", len(log), want)
	}
	type key struct {
		sender chat.UserID
		id     [16]byte
	}
	seen := map[key]int64{}
	for i, m := range log {
		if m.Seq != int64(i+1) {
			t.Fatalf("message %d has seq %d: gap or duplicate", i, m.Seq)
		}
		k := key{m.Sender, m.ClientMsgID}
		if prev, dup := seen[k]; dup {
			t.Fatalf("send of seq %d stored again at seq %d", prev, m.Seq)
		}
		seen[k] = m.Seq
	}
}

// 20 concurrent senders in one conversation produce seqs 1..N without gaps or duplicates,
// and every member receives the live frames in seq order.
func TestConcurrentSendersGetContiguousSeqs(t *testing.T) {
	p := newPipeline(t, delivery.Config{})
	prefix := teststack.ID(t)
	var users []chat.UserID
	for i := 0; i < 20; i++ {
		users = append(users, chat.UserID(fmt.Sprintf("%s_u%d", prefix, i)))
	}
	conv, err := p.store.CreateGroup(context.Background(), users[0], "load", users[1:], time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// A member's live feed.
	feed := make(chan *nats.Msg, 1000)
	sub, err := p.n.Conn.ChanSubscribe(routing.UserSubject(users[7]), feed)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	p.startWorker()

	const perSender = 5
	var wg sync.WaitGroup
	for _, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perSender; i++ {
				p.send(conv, u, i)
			}
		}()
	}
	wg.Wait()
	n := len(users) * perSender
	checkLog(t, p.waitLog(conv, n), n)

	last := int64(0)
	for last < int64(n) {
		select {
		case m := <-feed:
			if m.Header.Get(routing.HeaderFrameType) != string(protocol.TypeMessage) {
				t.Fatalf("frame type header %q", m.Header.Get(routing.HeaderFrameType))
			}
			var f protocol.Frame
			if err := json.Unmarshal(m.Data, &f); err != nil {
				t.Fatal(err)
			}
			if f.Seq != last+1 || f.Conversation != conv.String() {
				t.Fatalf("live frame seq %d after %d (conversation %s)", f.Seq, last, f.Conversation)
			}
			last = f.Seq
		case <-time.After(10 * time.Second):
			t.Fatalf("live feed stopped at seq %d of %d", last, n)
		}
	}
}

// The same client_msg_id sent again, within JetStream's duplicate window and after it, from
// any connection, yields one message with one seq.
func TestDuplicateSendsYieldOneMessage(t *testing.T) {
	p := newPipeline(t, delivery.Config{Ingest: ingest.Config{DuplicateWindow: 200 * time.Millisecond}})
	a, b := chat.UserID(teststack.ID(t)+"_a"), chat.UserID(teststack.ID(t)+"_b")
	conv, _, err := p.store.CreateDirect(context.Background(), a, b, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	p.startWorker()
	p.send(conv, a, 1)
	p.send(conv, a, 1) // inside the window: JetStream drops it
	p.waitLog(conv, 1)
	time.Sleep(300 * time.Millisecond) // past the window: only Cassandra's map catches it
	p.send(conv, a, 1)
	p.send(conv, a, 2)
	p.waitLog(conv, 2)
	// Let any wrongly sequenced duplicate land before checking.
	time.Sleep(500 * time.Millisecond)
	log := p.waitLog(conv, 2)
	checkLog(t, log, 2)
	if log[0].ClientMsgID != cmid(a, 1) || log[1].ClientMsgID != cmid(a, 2) {
		t.Errorf("log %+v; want messages 1 then 2", log)
	}
}

// A worker stopped in the middle of a stream and another one started: nothing lost, nothing
// duplicated, no gap. Then two workers, one stopped: the other takes over its partitions.
func TestWorkerRestartAndFailover(t *testing.T) {
	p := newPipeline(t, delivery.Config{PinnedTTL: 2 * time.Second, Ingest: ingest.Config{Partitions: 2}})
	a, b := chat.UserID(teststack.ID(t)+"_a"), chat.UserID(teststack.ID(t)+"_b")
	conv, _, err := p.store.CreateDirect(context.Background(), a, b, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	stop1 := p.startWorker()
	for i := 0; i < 30; i++ {
		p.send(conv, a, i)
		if i == 10 {
			stop1() // mid-stream
			p.startWorker()
		}
	}
	checkLog(t, p.waitLog(conv, 30), 30)

	// A second worker; stop whichever is pinned by stopping the first-started one and check the
	// stream still drains (with two workers one of them is pinned per partition).
	stop3 := p.startWorker()
	for i := 30; i < 60; i++ {
		p.send(conv, a, i)
		if i == 40 {
			stop3()
		}
	}
	checkLog(t, p.waitLog(conv, 60), 60)
}

func TestConfigValidate(t *testing.T) {
	if err := (delivery.Config{}).Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	for name, c := range map[string]delivery.Config{
		"partitions": {Ingest: ingest.Config{Partitions: 5000}},
		"ack wait":   {AckWait: time.Millisecond},
		"max":        {MaxDeliver: 1},
		"pinned":     {PinnedTTL: time.Millisecond},
		"retry":      {RetryDelays: []time.Duration{-time.Second}},
		"window":     {Ingest: ingest.Config{DuplicateWindow: time.Millisecond}},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// An accepted message that cannot be sequenced is kept in the dead-letter stream with its
// reason, and a replay after the cause is fixed sequences it.
func TestDeadLettersAndReplay(t *testing.T) {
	p := newPipeline(t, delivery.Config{})
	p.startWorker()
	ctx := context.Background()

	// A malformed record published straight on a partition subject.
	if _, err := p.n.JetStream.Publish(ctx, p.cfg.Ingest.SubjectPrefix+"0", []byte("not a record")); err != nil {
		t.Fatal(err)
	}
	// A send to a conversation this keyspace does not have (yet).
	a, b := chat.UserID(teststack.ID(t)+"_a"), chat.UserID(teststack.ID(t)+"_b")
	conv := chat.DirectConversationID(a, b)
	p.send(conv, a, 1)

	var dead []delivery.DeadLetter
	if !teststack.Eventually(t, 20*time.Second, func() bool {
		var err error
		dead, err = delivery.ListDeadLetters(ctx, p.n.JetStream, p.cfg.Ingest, 10)
		return err == nil && len(dead) == 2
	}) {
		t.Fatalf("dead letters: %+v; want 2", dead)
	}
	var unknown delivery.DeadLetter
	for _, d := range dead {
		switch {
		case strings.Contains(d.Reason, "malformed"):
		case strings.Contains(d.Reason, "not found"):
			unknown = d
		default:
			t.Errorf("dead letter with reason %q", d.Reason)
		}
	}
	if unknown.ID == 0 {
		t.Fatalf("no dead letter for the unknown conversation in %+v", dead)
	}

	// Fix the cause, replay: the message is sequenced, once, and leaves the dead letters.
	if _, _, err := p.store.CreateDirect(ctx, a, b, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := delivery.ReplayDeadLetter(ctx, p.n.JetStream, p.cfg.Ingest, unknown.ID); err != nil {
		t.Fatal(err)
	}
	checkLog(t, p.waitLog(conv, 1), 1)
	left, err := delivery.ListDeadLetters(ctx, p.n.JetStream, p.cfg.Ingest, 10)
	if err != nil || len(left) != 1 {
		t.Errorf("after the replay %d dead letters remain (%v); want the malformed one only", len(left), err)
	}
	if err := delivery.ReplayDeadLetter(ctx, p.n.JetStream, p.cfg.Ingest, unknown.ID); err == nil {
		t.Error("replaying a deleted dead letter succeeded")
	}
}

// A worker that takes over a partition from one that died holding messages sequences those
// first: messages sent later, delivered to the new worker while the old ones are still out,
// wait for them. The dead worker is played by a raw pull in the sequencer's priority group
// that takes three messages and never acks them.
func TestTakeoverKeepsOrderWithMessagesStillOut(t *testing.T) {
	p := newPipeline(t, delivery.Config{PinnedTTL: 2 * time.Second, AckWait: 3 * time.Second, Batch: 8, Ingest: ingest.Config{Partitions: 1}})
	a, b := chat.UserID(teststack.ID(t)+"_a"), chat.UserID(teststack.ID(t)+"_b")
	conv, _, err := p.store.CreateDirect(context.Background(), a, b, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stop := p.startWorker() // creates the partition's consumer
	var cons jetstream.Consumer
	if !teststack.Eventually(t, 10*time.Second, func() bool {
		cons, err = p.n.JetStream.Consumer(ctx, p.cfg.Ingest.Stream, "sequencer-0")
		return err == nil
	}) {
		t.Fatalf("no consumer: %v", err)
	}
	stop()
	for i := 0; i < 3; i++ {
		p.send(conv, a, i)
	}
	var held int
	for held < 3 && ctx.Err() == nil {
		batch, err := cons.Fetch(3-held, jetstream.FetchPriorityGroup("sequencer"), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for range batch.Messages() {
			held++ // never acked: the "dead worker" holds them
		}
	}
	if held != 3 {
		t.Fatalf("the dead worker took %d messages; want 3", held)
	}
	for i := 3; i < 10; i++ {
		p.send(conv, a, i)
	}
	p.startWorker()
	log := p.waitLog(conv, 10)
	checkLog(t, log, 10)
	for i, m := range log {
		if want := fmt.Sprintf("%s %d", a, i); m.Body != want {
			t.Fatalf("seq %d holds %q; want %q (sent order)", m.Seq, m.Body, want)
		}
	}
}

// A backlog (sent before any worker runs) is taken in batches and each conversation's run
// stored at once: seqs stay contiguous, each sender's messages keep their order, and a send
// repeated after JetStream's duplicate window, waiting in the same backlog, is stored once.
func TestBacklogIsSequencedInBatches(t *testing.T) {
	p := newPipeline(t, delivery.Config{Ingest: ingest.Config{Partitions: 2, DuplicateWindow: 100 * time.Millisecond}})
	a, b := chat.UserID(teststack.ID(t)+"_a"), chat.UserID(teststack.ID(t)+"_b")
	conv, _, err := p.store.CreateDirect(context.Background(), a, b, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 30; i++ {
		p.send(conv, []chat.UserID{a, b}[i%2], i)
	}
	time.Sleep(300 * time.Millisecond) // past the duplicate window
	p.send(conv, b, 5)                 // b's send 5 again
	p.startWorker()
	p.waitLog(conv, 30)
	time.Sleep(500 * time.Millisecond) // a wrongly stored repeat would come right after
	log := p.waitLog(conv, 30)
	checkLog(t, log, 30)
	next := map[chat.UserID]int{a: 0, b: 1}
	for _, m := range log {
		if want := fmt.Sprintf("%s %d", m.Sender, next[m.Sender]); m.Body != want {
			t.Fatalf("seq %d holds %q; want %q (each sender's order)", m.Seq, m.Body, want)
		}
		next[m.Sender] += 2
	}
}
