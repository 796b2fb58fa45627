package delivery

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/parleyhq/parley/delivery/ingest"
	"github.com/parleyhq/parley/history"
	"github.com/parleyhq/parley/inbox"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/teststack"
)

// The projector acknowledges a log entry only once it has written it, whatever order its
// entries reach it in. A worker does not receive a partition contiguously: nats.go drops
// messages of a pull subscription whose buffer is full (the "slow consumer" of the session 6
// run), and a takeover that gives up waiting for the previous owner goes on without its
// messages; either way the entry comes back later, after entries behind it were written.
// Here the previous owner is a stalled projector (a raw pull in the projector's priority
// group) that holds the first entry and keeps it alive past the takeover's patience, then
// goes silent. The worker writes entries 2..8, then receives entry 1 again. The first
// version took "finished a later entry" for "finished this one" and acknowledged entry 1
// without writing it: Cassandra never had seq 1, and the projector's ack floor said it did.
func TestProjectorNeverAcksAnEntryItDidNotWrite(t *testing.T) {
	id := teststack.ID(t)
	cfg := Config{AckWait: time.Second, PinnedTTL: 2 * time.Second, Batch: 8, RetryDelays: []time.Duration{100 * time.Millisecond},
		Ingest: ingest.Config{Stream: "T_" + id, SubjectPrefix: "test." + id + ".", Partitions: 1}}
	n := teststack.NATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := EnsureStreams(ctx, n.JetStream, cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, s := range StreamNames(cfg) {
			_ = n.JetStream.DeleteStream(context.Background(), s)
		}
		_ = n.JetStream.DeleteKeyValue(context.Background(), OwedBucket(cfg))
		_ = n.JetStream.DeleteKeyValue(context.Background(), WorkersBucket(cfg))
	})
	store, err := history.New(teststack.Cassandra(t), history.Config{})
	if err != nil {
		t.Fatal(err)
	}
	inb := inbox.New(teststack.Cassandra(t), store, inbox.Config{})
	a, b := chat.UserID(id+"_a"), chat.UserID(id+"_b")
	conv, _, err := store.CreateDirect(ctx, a, b, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewWorker(cfg, n.JetStream, n.Conn, store, inb, prometheus.NewRegistry(), teststack.Logger(t))
	if err != nil {
		t.Fatal(err)
	}

	// The log, as a sequencer appends it: seqs 1..8 of the conversation.
	const entries = 8
	for seq := int64(1); seq <= entries; seq++ {
		m := chat.Message{Conversation: conv, Kind: chat.MessageText, Sender: a, SenderDevice: "d",
			ClientMsgID: chat.NewClientMsgID(), Body: fmt.Sprintf("%s %d", a, seq), Seq: seq,
			CreatedAt: time.Now().UTC().Truncate(time.Millisecond)}
		data, err := encodeLogEntry(m, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		msg := nats.NewMsg(logSubject(w.cfg.Ingest, ingest.Partition(conv, 1), conv))
		msg.Data = data
		msg.Header.Set(jetstream.MsgIDHeader, entryID(conv, a, m.ClientMsgID))
		if _, err := n.JetStream.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}

	// The stalled projector takes the first entry and keeps it alive for longer than a
	// takeover waits (3 ack waits), then goes silent without acknowledging it.
	stream, cc := w.consumerConfig(stageProjector, 0)
	cons, err := n.JetStream.CreateOrUpdateConsumer(ctx, stream, cc)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchPriorityGroup(priorityGroup), jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var held jetstream.Msg
	for msg := range batch.Messages() {
		held = msg
	}
	if held == nil {
		t.Fatalf("the stalled projector got no entry: %v", batch.Error())
	}
	if meta, err := held.Metadata(); err != nil || meta.Sequence.Stream != 1 {
		t.Fatalf("the stalled projector holds %+v, %v; want the first entry", meta, err)
	}
	var stalled sync.WaitGroup
	stalled.Add(1)
	go func() {
		defer stalled.Done()
		for until := time.Now().Add(3*cfg.AckWait + 2*time.Second); time.Now().Before(until); {
			_ = held.InProgress()
			time.Sleep(cfg.AckWait / 4)
		}
	}()
	defer stalled.Wait()

	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	}()

	// Wait until the projector has acknowledged every entry (nothing pending or unacked).
	if !teststack.Eventually(t, 40*time.Second, func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.AckFloor.Stream == entries && info.NumAckPending == 0 && info.NumPending == 0
	}) {
		info, _ := cons.Info(ctx)
		t.Fatalf("the projector did not acknowledge the log in 40s: %+v", info)
	}
	for seq := int64(1); seq <= entries; seq++ {
		m, ok, err := store.MessageAt(ctx, conv, seq)
		if err != nil || !ok || m.Body != fmt.Sprintf("%s %d", a, seq) {
			t.Errorf("seq %d in Cassandra: %+v, %v, %v; the projector acknowledged its entry, so it must be written", seq, m, ok, err)
		}
	}
}

// finished remembers exactly the seqs it was given (not everything below the highest), and
// forgets the oldest past its limit.
func TestFinishedIsASetNotAWatermark(t *testing.T) {
	f := newFinished(3)
	for _, s := range []uint64{5, 7, 9} {
		f.add(s)
	}
	for s, want := range map[uint64]bool{5: true, 6: false, 7: true, 8: false, 9: true, 4: false} {
		if f.has(s) != want {
			t.Errorf("has(%d) = %v; want %v", s, !want, want)
		}
	}
	f.add(9) // again: no change
	f.add(11)
	if f.has(5) || !f.has(7) || !f.has(9) || !f.has(11) {
		t.Errorf("after a fourth seq: 5 %v 7 %v 9 %v 11 %v; want only the oldest (5) forgotten", f.has(5), f.has(7), f.has(9), f.has(11))
	}
}
