package delivery

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Rebalance: the pinned-client policy keeps a partition with the worker that holds it, so a
// worker that joins would get nothing until some worker dies. Instead every worker writes a
// heartbeat into a KV bucket (<stream>_WORKERS, key = its id, every PinnedTTL/3), watches the
// bucket to count the live workers N, and a worker that holds more than ceil(P/N) of a stage's
// P partitions hands the excess over, one partition at a time, HandoverSpacing apart: the
// partition's consumer stops pulling, finishes and acks what it has, and unpins; the server
// pins a worker waiting in the priority group with the next message. That worker finds
// nothing of the old owner's pending, so it starts at once (no ack wait, no redelivery). The
// old owner pulls again at once as a standby: its pull requests carry its old pin id, which
// the server refuses (423) rather than pin, so the partition goes to another worker.

// heartbeatsPerTTL: a worker writes its heartbeat this many times per PinnedTTL, and counts
// as gone after two missed ones (before its pins expire, so a dead worker's partitions are
// not handed round while it is still counted).
const heartbeatsPerTTL = 3

// workersBucket is the KV bucket of the live workers of an ingest stream.
func (w *Worker) workersBucket() string { return w.cfg.Ingest.Stream + "_WORKERS" }

// WorkersBucket is the KV bucket where the workers of cfg's ingest stream announce
// themselves (tests delete it).
func WorkersBucket(cfg Config) string { return cfg.Ingest.WithDefaults().Stream + "_WORKERS" }

// liveWorkers is the workers seen in the bucket and when each was last heard of.
type liveWorkers struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

func (l *liveWorkers) saw(id string, at time.Time) {
	l.mu.Lock()
	l.seen[id] = at
	l.mu.Unlock()
}

func (l *liveWorkers) gone(id string) {
	l.mu.Lock()
	delete(l.seen, id)
	l.mu.Unlock()
}

// count is how many were heard of within window before now (at least one: this worker).
func (l *liveWorkers) count(now time.Time, window time.Duration) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, at := range l.seen {
		if now.Sub(at) < window {
			n++
		}
	}
	return max(n, 1)
}

// ensureBucket creates or updates a KV bucket. Creating a replicated bucket waits for its group
// to elect a leader, which on a busy cluster can outlast one JetStream API call: it tries
// again until the bucket exists or ctx ends (then nil, nil).
func (w *Worker) ensureBucket(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	for {
		kv, err := w.js.CreateOrUpdateKeyValue(ctx, cfg)
		if err == nil {
			return kv, nil
		}
		if ctx.Err() != nil {
			return nil, nil
		}
		w.logger.Warn("KV bucket: trying again", "bucket", cfg.Bucket, "err", err)
		select {
		case <-ctx.Done():
			return nil, nil
		case <-time.After(time.Second):
		}
	}
}

// joinWorkers announces this worker in the workers bucket and starts, under wg, its
// heartbeat, the watch of the others and the rebalancer, until ctx ends.
func (w *Worker) joinWorkers(ctx context.Context, wg *sync.WaitGroup) error {
	kv, err := w.ensureBucket(ctx, jetstream.KeyValueConfig{Bucket: w.workersBucket(),
		Description: "Parley delivery workers (heartbeats, for the fair share of partitions)",
		TTL:         time.Minute, Storage: jetstream.MemoryStorage, Replicas: w.cfg.Ingest.Replicas})
	if err != nil || kv == nil {
		return err
	}
	watch, err := kv.WatchAll(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("watch workers bucket: %w", err)
	}
	live := &liveWorkers{seen: map[string]time.Time{}}
	live.saw(w.id, w.now())
	if _, err := kv.Put(ctx, w.id, []byte(w.id)); err != nil && ctx.Err() == nil {
		w.logger.Warn("worker heartbeat", "err", err)
	}
	wg.Add(3)
	go func() {
		defer wg.Done()
		w.heartbeat(ctx, kv, live)
	}()
	go func() {
		defer wg.Done()
		defer func() { _ = watch.Stop() }()
		w.watchWorkers(ctx, watch, live)
	}()
	go func() {
		defer wg.Done()
		w.rebalance(ctx, live)
	}()
	return nil
}

// heartbeat renews this worker's key every PinnedTTL/heartbeatsPerTTL and deletes it when
// ctx ends (the others count one worker less at once).
func (w *Worker) heartbeat(ctx context.Context, kv jetstream.KeyValue, live *liveWorkers) {
	t := time.NewTicker(w.cfg.PinnedTTL / heartbeatsPerTTL)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_ = kv.Delete(dctx, w.id)
			return
		case <-t.C:
		}
		live.saw(w.id, w.now()) // this worker counts itself even while NATS is away
		if _, err := kv.Put(ctx, w.id, []byte(w.id)); err != nil && ctx.Err() == nil {
			w.logger.Warn("worker heartbeat", "err", err)
		}
	}
}

// watchWorkers keeps live up to date with the bucket: the initial values by the time they
// were written, then each heartbeat as it arrives.
func (w *Worker) watchWorkers(ctx context.Context, watch jetstream.KeyWatcher, live *liveWorkers) {
	initial := true
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-watch.Updates():
			if !ok {
				return
			}
			if e == nil { // the initial values are all in
				initial = false
				continue
			}
			if e.Operation() != jetstream.KeyValuePut {
				live.gone(e.Key())
				continue
			}
			at := w.now()
			if initial {
				at = e.Created()
			}
			live.saw(e.Key(), at)
		}
	}
}

// rebalance hands over, every HandoverSpacing, at most one partition's stages that this
// worker holds beyond its fair share, and waits until they are handed over (or an ack wait
// passed: a stage busy with a batch it cannot finish, Cassandra being down, answers when it
// has finished) before the next.
func (w *Worker) rebalance(ctx context.Context, live *liveWorkers) {
	window := 2 * w.cfg.PinnedTTL / heartbeatsPerTTL
	t := time.NewTicker(w.cfg.HandoverSpacing)
	defer t.Stop()
	// asked[s][p] is a request not answered yet: that stage is not asked again meanwhile.
	var asked [numStages]map[int]chan bool
	for s := range asked {
		asked[s] = map[int]chan bool{}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n := live.count(w.now(), window)
		w.metrics.liveWorkers.Set(float64(n))
		var owned [numStages][]bool
		for s := range numStages {
			for p, ch := range asked[s] {
				select {
				case <-ch:
					delete(asked[s], p)
				default:
				}
			}
			owned[s] = make([]bool, w.cfg.Ingest.Partitions)
			for p := range owned[s] {
				pin, _ := w.pins[s][p].Load().(string)
				_, pending := asked[s][p]
				owned[s][p] = pin != "" && !pending
			}
		}
		share := fairShare(w.cfg.Ingest.Partitions, n)
		p, stages := nextHandover(owned, share)
		if len(stages) == 0 {
			continue
		}
		w.logger.Info("handing a partition over (more than the fair share)", "partition", p, "stages", len(stages),
			"workers", n, "share", share)
		var reqs []chan bool
		for _, s := range stages {
			req := make(chan bool, 1)
			select {
			case w.release[s][p] <- req:
				asked[s][p] = req
				reqs = append(reqs, req)
			default: // a request is still queued there
			}
		}
		w.awaitHandovers(ctx, reqs)
	}
}

// awaitHandovers waits until every request is answered, for at most an ack wait. The answers
// stay in the requests' buffers for the rebalancer to see.
func (w *Worker) awaitHandovers(ctx context.Context, reqs []chan bool) {
	deadline := time.NewTimer(w.cfg.AckWait)
	defer deadline.Stop()
	for _, req := range reqs {
		select {
		case ok := <-req:
			req <- ok // put back: rebalance reads it as answered
		case <-deadline.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// fairShare is the most partitions of a stage one of n workers should hold.
func fairShare(partitions, n int) int {
	if n < 1 {
		n = 1
	}
	return (partitions + n - 1) / n
}

// nextHandover picks the partition to hand over next and which of its stages: among the
// stages held beyond share, the partition that has most of them here (so a partition's
// stages move together and stay together), the highest-numbered on a tie. No stages when
// nothing is beyond the share.
func nextHandover(owned [numStages][]bool, share int) (int, []int) {
	var over [numStages]bool
	for s := range numStages {
		n := 0
		for _, o := range owned[s] {
			if o {
				n++
			}
		}
		over[s] = n > share
	}
	best, bestStages := -1, []int(nil)
	for p := len(owned[0]) - 1; p >= 0; p-- {
		var stages []int
		for s := range numStages {
			if over[s] && owned[s][p] {
				stages = append(stages, s)
			}
		}
		if len(stages) > len(bestStages) {
			best, bestStages = p, stages
		}
	}
	return best, bestStages
}
