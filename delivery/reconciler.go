package delivery

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/parleyhq/parley/internal/chat"
)

// The reconciler is the backstop of the projection: on a schedule it reads the recent log
// and checks that Cassandra has every entry (the same message at the same seq) and that each
// member's inbox row has the conversation's last entry, and repairs what is missing or
// different by projecting the log's entry again. The projector acknowledges only what it
// wrote, so the reconciler should find nothing: anything it repairs means Cassandra lost or
// never applied a write it acknowledged, and parley_delivery_reconciler_repairs_total is the
// alert. One node at a time runs it, holding a lease in NATS KV.

// ReconcilerConfig configures the reconciler. Zero values take the defaults.
type ReconcilerConfig struct {
	// Interval between passes. Default 1m.
	Interval time.Duration
	// Lookback is how far back each pass reads the log. It should cover Cassandra's
	// acknowledged-but-unsynced window and the time since the last pass. Default 15m.
	Lookback time.Duration
	// Node names this process in the lease (default: host name and pid).
	Node string
}

func (c ReconcilerConfig) withDefaults() ReconcilerConfig {
	if c.Interval == 0 {
		c.Interval = time.Minute
	}
	if c.Lookback == 0 {
		c.Lookback = 15 * time.Minute
	}
	if c.Node == "" {
		host, _ := os.Hostname()
		c.Node = host + "/" + strconv.Itoa(os.Getpid())
	}
	return c
}

// Repairs counts what a reconciler pass found and repaired.
type Repairs struct {
	// Entries is how many log entries the pass checked.
	Entries int
	// Messages were missing from Cassandra; Divergent held another message at their seq
	// (both rewritten from the log).
	Messages, Divergent int
	// InboxRows did not record their conversation's last entry.
	InboxRows int
}

// Total is every repair of the pass.
func (r Repairs) Total() int { return r.Messages + r.Divergent + r.InboxRows }

// leaseBucket is the KV bucket of the delivery leases of an ingest stream.
func (w *Worker) leaseBucket() string { return w.cfg.Ingest.Stream + "_LEASES" }

const reconcilerLease = "reconciler"

// errLeaseHeld: another node holds the reconciler's lease.
var errLeaseHeld = errors.New("the reconciler lease is held by another node")

// holdLease takes or renews the reconciler's lease; errLeaseHeld when another node holds it.
// The lease is a KV key that expires ttl after its last write.
func (w *Worker) holdLease(ctx context.Context, node string, ttl time.Duration) error {
	kv, err := w.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: w.leaseBucket(), TTL: ttl,
		Description: "Parley delivery leases (one reconciler at a time)", Storage: jetstream.FileStorage, Replicas: w.cfg.Ingest.Replicas})
	if err != nil {
		return fmt.Errorf("lease bucket: %w", err)
	}
	e, err := kv.Get(ctx, reconcilerLease)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		if _, err := kv.Create(ctx, reconcilerLease, []byte(node)); err != nil {
			if errors.Is(err, jetstream.ErrKeyExists) {
				return errLeaseHeld
			}
			return fmt.Errorf("take lease: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("read lease: %w", err)
	case string(e.Value()) != node:
		return errLeaseHeld
	}
	if _, err := kv.Update(ctx, reconcilerLease, []byte(node), e.Revision()); err != nil {
		return fmt.Errorf("renew lease: %w", err)
	}
	return nil
}

// RunReconciler runs a reconciler pass every Interval while this node holds the lease, until
// ctx ends. A pass that stops on an error (Cassandra or NATS away) is resumed where it
// stopped, after the RetryDelays (at most an Interval), not started again: with Cassandra
// killed every 20 s, a pass that began from scratch each time never reached the end of the
// lookback, and nothing was repaired (docs/reliability.md, session 6).
func (w *Worker) RunReconciler(ctx context.Context, cfg ReconcilerConfig) error {
	cfg = cfg.withDefaults()
	var (
		pass     *reconcilePass
		attempts uint64
	)
	wait := time.NewTimer(cfg.Interval)
	defer wait.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-wait.C:
		}
		wait.Reset(cfg.Interval)
		if err := w.holdLease(ctx, cfg.Node, 3*cfg.Interval); err != nil {
			if !errors.Is(err, errLeaseHeld) && ctx.Err() == nil {
				w.logger.Warn("reconciler lease", "err", err)
			}
			if errors.Is(err, errLeaseHeld) {
				pass = nil // another node reconciles now
			}
			continue
		}
		if pass == nil {
			pass, attempts = w.newPass(cfg.Lookback), 0
		}
		if err := w.runPass(ctx, pass); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			attempts++
			delay := min(w.cfg.retryDelay(attempts), cfg.Interval)
			w.logger.Warn("reconciler pass stopped; resuming where it stopped", "entries", pass.r.Entries,
				"repairs", pass.r.Total(), "next_stream_seq", pass.next, "end_stream_seq", pass.end, "in", delay, "err", err)
			wait.Reset(delay)
			continue
		}
		pass = nil
	}
}

// ReconcileOnce takes the lease, runs one pass and gives the lease back (parleyd reconcile
// --once).
func (w *Worker) ReconcileOnce(ctx context.Context, cfg ReconcilerConfig) (Repairs, error) {
	cfg = cfg.withDefaults()
	if err := w.holdLease(ctx, cfg.Node, 3*cfg.Interval); err != nil {
		return Repairs{}, err
	}
	defer w.releaseLease(context.WithoutCancel(ctx), cfg.Node)
	return w.Reconcile(ctx, cfg.Lookback)
}

// releaseLease gives the lease back if this node holds it.
func (w *Worker) releaseLease(ctx context.Context, node string) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	kv, err := w.js.KeyValue(ctx, w.leaseBucket())
	if err != nil {
		return
	}
	if e, err := kv.Get(ctx, reconcilerLease); err == nil && string(e.Value()) == node {
		_ = kv.Delete(ctx, reconcilerLease, jetstream.LastRevision(e.Revision()))
	}
}

// reconcilePass is a reconciler pass in progress: it checks the log from the entries of its
// start time (until it has a position) or from next, to end.
type reconcilePass struct {
	from time.Time
	// next is the stream seq the pass goes on from: every entry before it was checked (and
	// repaired) and, at the end of a conversation's run, its members' inbox rows too. 0: from
	// the first entry at or after from.
	next uint64
	// end is the log's last stream seq when the pass began (0: not read yet).
	end uint64
	r   Repairs
}

func (w *Worker) newPass(lookback time.Duration) *reconcilePass {
	return &reconcilePass{from: w.now().Add(-lookback)}
}

// Reconcile checks the log's entries of the last lookback against Cassandra and repairs what
// is missing or different, in one go: it returns the first error (RunReconciler resumes a
// stopped pass instead). It logs and counts what it repaired.
func (w *Worker) Reconcile(ctx context.Context, lookback time.Duration) (Repairs, error) {
	pass := w.newPass(lookback)
	err := w.runPass(ctx, pass)
	return pass.r, err
}

// runPass checks the pass's entries from where it stands to its end, moving pass.next past
// each one checked. On an error it returns with the pass where it stopped; run it again to go
// on. At the end it logs and counts the whole pass.
func (w *Worker) runPass(ctx context.Context, pass *reconcilePass) error {
	before := pass.r
	err := w.checkLog(ctx, pass)
	if err == nil {
		_, err = w.settleMarks(ctx)
	}
	for what, n := range map[string]int{"message": pass.r.Messages - before.Messages,
		"divergent": pass.r.Divergent - before.Divergent, "inbox": pass.r.InboxRows - before.InboxRows} {
		w.metrics.reconcilerRepairs.WithLabelValues(what).Add(float64(n))
	}
	if err != nil {
		return err
	}
	w.metrics.reconcilerRuns.Inc()
	r := pass.r
	if r.Total() > 0 {
		w.logger.Error("reconciler repaired the projection from the log", "entries", r.Entries,
			"messages", r.Messages, "divergent", r.Divergent, "inbox_rows", r.InboxRows)
	} else {
		w.logger.Info("reconciler pass", "entries", r.Entries, "repairs", 0)
	}
	return nil
}

// checkLog reads the pass's part of the log and checks it run by run.
func (w *Worker) checkLog(ctx context.Context, pass *reconcilePass) error {
	if pass.end == 0 {
		end, err := w.logEnd(ctx)
		if err != nil {
			return err
		}
		if end == 0 {
			return nil
		}
		pass.end = end
	}
	if pass.next > pass.end {
		return nil
	}
	pos := logFrom{seq: pass.next}
	if pos.seq == 0 {
		pos.time = &pass.from
	}
	return w.readLog(ctx, pos, pass.end, func(run []logEntry) error { return w.reconcileRun(ctx, run, pass) })
}

// Reproject writes every log entry (since start, or all when start is nil) into Cassandra
// again, checking nothing: after restoring Cassandra from a backup, or to rebuild it.
func (w *Worker) Reproject(ctx context.Context, start *time.Time) (int, error) {
	end, err := w.logEnd(ctx)
	if err != nil || end == 0 {
		return 0, err
	}
	n := 0
	err = w.readLog(ctx, logFrom{time: start}, end, func(run []logEntry) error {
		if err := w.projectEntries(ctx, run); err != nil {
			return err
		}
		n += len(run)
		return nil
	})
	return n, err
}

// logFrom is where a read of the log starts: at stream seq seq if it is set, else at the
// first entry at or after time (nil: the beginning).
type logFrom struct {
	seq  uint64
	time *time.Time
	// filter, if set, reads only the subjects it matches (a partition's: partitionFilter).
	filter string
}

// logEnd is the log's last stream seq (0: empty).
func (w *Worker) logEnd(ctx context.Context) (uint64, error) {
	st, err := w.js.Stream(ctx, LogStream(w.cfg.Ingest))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, fmt.Errorf("no log stream %s (has a delivery worker run with this --delivery-stream?): %w", LogStream(w.cfg.Ingest), err)
	}
	if err != nil {
		return 0, fmt.Errorf("log stream %s: %w", LogStream(w.cfg.Ingest), err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("log stream: %w", err)
	}
	return info.State.LastSeq, nil
}

// readLog reads the log from start to stream seq end, handing each conversation's
// consecutive entries to fn as a run.
func (w *Worker) readLog(ctx context.Context, start logFrom, end uint64, fn func(run []logEntry) error) error {
	filter := logPrefix(w.cfg.Ingest) + ">"
	if start.filter != "" {
		filter = start.filter
	}
	cc := jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}, DeliverPolicy: jetstream.DeliverAllPolicy}
	switch {
	case start.seq > 0:
		cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, start.seq
	case start.time != nil:
		cc.DeliverPolicy, cc.OptStartTime = jetstream.DeliverByStartTimePolicy, start.time
	}
	cons, err := w.js.OrderedConsumer(ctx, LogStream(w.cfg.Ingest), cc)
	if err != nil {
		return fmt.Errorf("read the log: %w", err)
	}
	var run []logEntry
	flush := func() error {
		if len(run) == 0 {
			return nil
		}
		err := fn(run)
		run = nil
		return err
	}
	for {
		batch, err := cons.Fetch(256, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return fmt.Errorf("read the log: %w", err)
		}
		got := 0
		for msg := range batch.Messages() {
			got++
			meta, err := msg.Metadata()
			if err != nil {
				continue
			}
			if meta.Sequence.Stream > end {
				return flush()
			}
			e, err := decodeLogEntry(msg.Data(), meta.Sequence.Stream)
			if err != nil {
				w.logger.Error("reconciler: undecodable log entry", "stream_seq", meta.Sequence.Stream, "err", err)
			} else {
				if len(run) > 0 && run[0].m.Conversation != e.m.Conversation {
					if err := flush(); err != nil {
						return err
					}
				}
				run = append(run, e)
			}
			if meta.Sequence.Stream >= end || meta.NumPending == 0 {
				return flush()
			}
		}
		if err := batch.Error(); err != nil {
			return fmt.Errorf("read the log: %w", err)
		}
		if got == 0 {
			return flush() // nothing (more) from start on
		}
	}
}

// reconcileRun checks and repairs one run of a conversation's entries (one read of the run's
// seqs per bucket), entry by entry, moving
// pass.next past each entry once it is checked (and repaired): a pass that stops here goes on
// from the entry it stopped at. The members' inbox rows are checked at the run's last entry,
// which counts as checked only after them.
func (w *Worker) reconcileRun(ctx context.Context, run []logEntry, pass *reconcilePass) error {
	from, to := run[0].m.Seq, run[0].m.Seq
	for _, e := range run {
		from, to = min(from, e.m.Seq), max(to, e.m.Seq)
	}
	rows, err := w.store.Stored(ctx, run[0].m.Conversation, from, to)
	if err != nil {
		return err
	}
	bySeq := make(map[int64]chat.Message, len(rows))
	for _, m := range rows {
		bySeq[m.Seq] = m
	}
	for i, e := range run {
		stored, ok := bySeq[e.m.Seq]
		divergent := ok && (stored.Sender != e.m.Sender || stored.ClientMsgID != e.m.ClientMsgID)
		if !ok || divergent {
			if err := w.projectEntries(ctx, []logEntry{e}); err != nil {
				return err
			}
			if divergent {
				pass.r.Divergent++
			} else {
				pass.r.Messages++
			}
		}
		if i < len(run)-1 {
			pass.r.Entries++
			pass.next = e.streamSeq + 1
		}
	}
	last := run[len(run)-1]
	members, err := w.store.Members(ctx, last.m.Conversation)
	if err != nil {
		return err
	}
	behind, err := w.inbox.Behind(ctx, last.m.Conversation, withLeaver(membersAt(members, last.m.Seq), last.m), last.m.Seq)
	if err != nil {
		return err
	}
	if len(behind) > 0 {
		if err := w.inbox.Record(ctx, last.m, behind); err != nil {
			return err
		}
		pass.r.InboxRows += len(behind)
	}
	pass.r.Entries++
	pass.next = last.streamSeq + 1
	return nil
}
