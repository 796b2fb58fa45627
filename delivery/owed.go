package delivery

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/parleyhq/parley/internal/chat"
)

// Pushes the fan-out owes. An entry pushed before the projector wrote it (the projector was
// stalled) is invisible to sync until it is written. A device that was not connected when it
// was pushed and synced before it was written would not see it: a later message shows it the
// gap, but the last message of a conversation has no later one (the cluster smoke test found
// seven such messages after a NATS and an edge kill). So the fan-out owes, for each
// conversation it pushed unprojected entries of, a second push of the last of them once the
// projector has written it: a device connected by then receives it (and syncs any gap before
// it), and one that connects later finds it in its sync.
//
// The debts are kept in memory and marked in the owed bucket (<stream>_OWED, key = the
// partition, value = the first stream seq owed), written before the first such push and
// refreshed every markRefresh while debts are left. A worker that takes the partition's
// fan-out over reads the mark and owes the last entry of each conversation from that seq on
// again; when no message comes to make another worker the owner, the reconciler pays a mark
// nobody refreshes any more (settleMarks). A repeated push is dropped by the clients.

// owedPush is the last entry of a conversation pushed before it was projected.
type owedPush struct {
	streamSeq uint64
	m         chat.Message
}

// owedBucket is the KV bucket of the fan-out's debts of an ingest stream.
func (w *Worker) owedBucket() string { return OwedBucket(w.cfg) }

// OwedBucket is the KV bucket where the fan-out marks the partitions it owes pushes in
// (tests delete it).
func OwedBucket(cfg Config) string { return cfg.Ingest.WithDefaults().Stream + "_OWED" }

const (
	// settleEvery is how often a partition with debts looks at its own projector's progress
	// (free); settleAsk how often at the projector consumer's (a JetStream request, for a
	// projector in another process).
	settleEvery = 25 * time.Millisecond
	settleAsk   = 250 * time.Millisecond
	// markRefresh is how often a worker with debts rewrites its mark; orphanAge how long a
	// mark must have gone unrefreshed before the reconciler takes it for abandoned.
	markRefresh = time.Second
	markTimeout = 500 * time.Millisecond
	// markBackoff: after a failed write of the mark, the fan-out does not try again on its own
	// path for this long (the settler does, every markRefresh, without holding it up).
	markBackoff = 5 * time.Second
	orphanAge   = 5 * time.Second
)

func seqBytes(s uint64) []byte { return binary.BigEndian.AppendUint64(nil, s) }

func markSeq(e jetstream.KeyValueEntry) (uint64, error) {
	if len(e.Value()) != 8 {
		return 0, fmt.Errorf("owed mark %q is %d bytes, not a stream seq", e.Key(), len(e.Value()))
	}
	return binary.BigEndian.Uint64(e.Value()), nil
}

// owe records that e is pushed before it was projected; call it before the push (fs.mu
// held). The partition's mark is written first, once per debt: a mark that cannot be written
// is logged and the push goes on (only a takeover before the debt is paid would miss it).
func (w *Worker) owe(ctx context.Context, fs *fanState, e logEntry) {
	if o, ok := fs.owed[e.m.Conversation]; !ok || o.streamSeq < e.streamSeq {
		fs.owed[e.m.Conversation] = owedPush{streamSeq: e.streamSeq, m: e.m}
	}
	if fs.markRev == 0 && w.now().Sub(fs.markFailed) >= markBackoff {
		w.writeMark(ctx, fs, e.streamSeq) // after a failure the settler tries, off the fan-out's path
	}
	w.startSettling(ctx, fs)
}

// writeMark writes the partition's mark (fs.mu held, for at most markTimeout).
func (w *Worker) writeMark(ctx context.Context, fs *fanState, from uint64) {
	rev, err := w.putMark(ctx, fs.p, from, fs.markRev)
	if err != nil {
		fs.markFailed = w.now()
		w.logger.Warn("fan-out: mark the partition owed", "partition", fs.p, "err", err)
		return
	}
	fs.markRev = rev
}

// putMark writes partition p's mark, from or an earlier seq the mark already holds (another
// worker's debt, not paid yet), over revision rev (0: a new mark), and returns its revision.
// It takes at most markTimeout: the fan-out of the partition may be waiting for it (NATS
// electing the bucket's leader can take seconds; the push goes on without the mark).
func (w *Worker) putMark(ctx context.Context, p int, from, rev uint64) (uint64, error) {
	if w.owedKV == nil {
		return 0, errors.New("no owed bucket")
	}
	ctx, cancel := context.WithTimeout(ctx, markTimeout)
	defer cancel()
	key := strconv.Itoa(p)
	if rev != 0 {
		if r, err := w.owedKV.Update(ctx, key, seqBytes(from), rev); err == nil {
			return r, nil
		}
	} else if r, err := w.owedKV.Create(ctx, key, seqBytes(from)); err == nil {
		return r, nil
	}
	// Someone else wrote or removed it meanwhile: keep the earlier of the two.
	if e, err := w.owedKV.Get(ctx, key); err == nil {
		if old, err := markSeq(e); err == nil && old < from {
			from = old
		}
	}
	return w.owedKV.Put(ctx, key, seqBytes(from))
}

// takeOverDebts reads the partition's mark when this worker takes its fan-out over, and owes
// again the last entry of each conversation from the marked seq on (fs.mu held).
func (w *Worker) takeOverDebts(ctx context.Context, fs *fanState) {
	if w.owedKV == nil {
		return
	}
	e, err := w.owedKV.Get(ctx, strconv.Itoa(fs.p))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return
	}
	var from uint64
	if err == nil {
		from, err = markSeq(e)
	}
	if err != nil {
		w.logger.Warn("fan-out: read the partition's owed mark", "partition", fs.p, "err", err)
		return
	}
	tails, err := w.tails(ctx, fs.p, from)
	if err != nil {
		w.logger.Warn("fan-out: take over the owed pushes", "partition", fs.p, "err", err)
	}
	for _, t := range tails {
		if o, ok := fs.owed[t.m.Conversation]; !ok || o.streamSeq < t.streamSeq {
			fs.owed[t.m.Conversation] = t
		}
	}
	fs.markRev = e.Revision()
	w.logger.Info("fan-out: took over owed pushes", "partition", fs.p, "from_stream_seq", from, "conversations", len(tails))
	w.startSettling(ctx, fs)
}

// tails is the last log entry of each conversation of partition p from stream seq from on.
func (w *Worker) tails(ctx context.Context, p int, from uint64) ([]owedPush, error) {
	end, err := w.logEnd(ctx)
	if err != nil || end < from {
		return nil, err
	}
	last := map[chat.ConversationID]owedPush{}
	err = w.readLog(ctx, logFrom{seq: from, filter: partitionFilter(w.cfg.Ingest, p)}, end, func(run []logEntry) error {
		e := run[len(run)-1]
		last[e.m.Conversation] = owedPush{streamSeq: e.streamSeq, m: e.m}
		return nil
	})
	out := make([]owedPush, 0, len(last))
	for _, t := range last {
		out = append(out, t)
	}
	return out, err
}

func (w *Worker) startSettling(ctx context.Context, fs *fanState) {
	if !fs.settling && len(fs.owed) > 0 {
		fs.settling = true
		go w.settle(ctx, fs)
	}
}

// settle pays the partition's debts as the projector writes them, until none is left (then
// it removes the mark) or ctx ends (the mark stays, for the next owner or the reconciler).
func (w *Worker) settle(ctx context.Context, fs *fanState) {
	t := time.NewTicker(settleEvery)
	defer t.Stop()
	var asked, marked time.Time
	for {
		select {
		case <-ctx.Done():
			fs.mu.Lock()
			fs.settling = false
			fs.mu.Unlock()
			return
		case <-t.C:
		}
		var remote uint64
		if now := w.now(); now.Sub(asked) >= settleAsk {
			asked = now
			if f, err := w.projectedFloor(ctx, fs.p); err == nil { // not under mu: a request
				remote = f
			}
		}
		fs.mu.Lock()
		fs.floor = max(fs.floor, remote, w.written[fs.p].Load())
		w.payDue(ctx, fs, fs.floor)
		if len(fs.owed) == 0 {
			if fs.markRev != 0 {
				dctx, cancel := context.WithTimeout(ctx, markTimeout)
				err := w.owedKV.Delete(dctx, strconv.Itoa(fs.p), jetstream.LastRevision(fs.markRev))
				cancel()
				if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) && ctx.Err() == nil {
					w.logger.Info("fan-out: leave the partition's owed mark (written since)", "partition", fs.p, "err", err)
				}
				fs.markRev = 0
			}
			fs.settling = false
			fs.mu.Unlock()
			return
		}
		if now := w.now(); now.Sub(marked) >= markRefresh {
			marked = now
			from := uint64(0)
			for _, o := range fs.owed {
				if from == 0 || o.streamSeq < from {
					from = o.streamSeq
				}
			}
			rev := fs.markRev
			fs.mu.Unlock() // a JetStream request: the fan-out goes on meanwhile
			nrev, err := w.putMark(ctx, fs.p, from, rev)
			fs.mu.Lock()
			switch {
			case err != nil:
				fs.markFailed = now
				if ctx.Err() == nil {
					w.logger.Warn("fan-out: mark the partition owed", "partition", fs.p, "err", err)
				}
			case fs.markRev == rev:
				fs.markRev = nrev
			}
		}
		fs.mu.Unlock()
	}
}

// payDue pushes again every owed entry at or below floor, the projector's ack floor. An entry
// whose member list cannot be read stays owed.
func (w *Worker) payDue(ctx context.Context, fs *fanState, floor uint64) {
	for conv, o := range fs.owed {
		if o.streamSeq > floor {
			continue
		}
		users, err := w.members(ctx, fs.members, conv)
		if err != nil {
			continue
		}
		delete(fs.owed, conv)
		w.push(o.m, withLeaver(users, o.m))
		w.metrics.fanoutRepaid.Inc()
	}
}

// settleMarks is the reconciler's part: it pays the debts of every mark nobody has refreshed
// for orphanAge (its worker stopped, and no message came since to give the partition's fan-out
// to another), once the projector has written them, and removes the mark. It returns the
// pushes it made.
func (w *Worker) settleMarks(ctx context.Context) (int, error) {
	kv, err := w.js.KeyValue(ctx, w.owedBucket())
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("owed bucket: %w", err)
	}
	keys, err := kv.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("owed marks: %w", err)
	}
	pushed := 0
	for _, key := range keys {
		p, err := strconv.Atoi(key)
		if err != nil || p < 0 || p >= w.cfg.Ingest.Partitions {
			w.logger.Error("reconciler: an owed mark of no partition", "key", key)
			continue
		}
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return pushed, fmt.Errorf("owed mark %s: %w", key, err)
		}
		if w.now().Sub(e.Created()) < orphanAge {
			continue // its worker is paying it
		}
		from, err := markSeq(e)
		if err != nil {
			w.logger.Error("reconciler: unreadable owed mark", "err", err)
			continue
		}
		floor, err := w.projectedFloor(ctx, p)
		if err != nil {
			return pushed, err
		}
		tails, err := w.tails(ctx, p, from)
		if err != nil {
			return pushed, err
		}
		mc := &memberCache{entries: map[chat.ConversationID]cachedMembers{}}
		fs := &fanState{p: p, members: mc, owed: map[chat.ConversationID]owedPush{}}
		for _, t := range tails {
			fs.owed[t.m.Conversation] = t
		}
		n := len(fs.owed)
		w.payDue(ctx, fs, floor)
		pushed += n - len(fs.owed)
		if len(fs.owed) > 0 {
			continue // not all written yet: the next pass
		}
		if err := kv.Delete(ctx, key, jetstream.LastRevision(e.Revision())); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			w.logger.Info("reconciler: owed mark rewritten meanwhile; left", "partition", p, "err", err)
		}
		w.logger.Warn("reconciler paid an abandoned fan-out debt", "partition", p, "from_stream_seq", from, "pushes", n)
	}
	return pushed, nil
}
