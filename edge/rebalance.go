package edge

import (
	"context"
	crand "crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/parleyhq/parley/protocol"
)

// Rebalancing. When an edge restarts, its clients reconnect to the others, and when it comes
// back they stay there: the load balancer places new connections, it does not move old ones.
// So the edges move them: each publishes its connection count every Config.RebalanceInterval
// to a NATS KV bucket that every edge reads (a key per edge; the bucket's TTL, three
// intervals, makes a dead edge's key vanish, and a draining edge deletes its own). An edge
// holding more than its fair share (total / edges) by more than Config.RebalanceSlack sheds
// half its excess each interval, at most Config.RebalanceRate connections a second: each gets
// a reconnect frame (reason "rebalance", after_ms spread over one interval) and is closed
// with 1001, and its client's reconnect goes through the load balancer (balance leastconn) to
// an emptier edge. Half, because the others' counts are up to an interval old: shedding all
// of the excess at once would overshoot when the moved clients are not yet counted where
// they landed; halving converges within a few intervals (a leastconn-placed 200 clients in
// about 8 s with the defaults, measured in TestRebalanceAcrossEdges).

// DefaultRebalanceBucket is the KV bucket of the edges' connection counts.
const DefaultRebalanceBucket = "PARLEY_EDGES"

// Defaults of the rebalancing.
const (
	DefaultRebalanceInterval = 2 * time.Second
	DefaultRebalanceSlack    = 0.1
	DefaultRebalanceRate     = 100.0
)

// shedFraction is the share of its excess an edge sheds in one interval.
const shedFraction = 0.5

// shedCount returns how many of its own connections an edge asks to move now: none unless
// it holds more than fair×(1+slack) and at least one more than fair, where fair is the mean
// of own and others (the counts of the other live edges); then half its excess over fair,
// rounded up, at most maxShed.
func shedCount(own int, others []int, slack float64, maxShed int) int {
	if len(others) == 0 || own <= 0 {
		return 0
	}
	total := own
	for _, n := range others {
		total += max(n, 0)
	}
	fair := float64(total) / float64(len(others)+1)
	excess := float64(own) - fair
	if float64(own) <= fair*(1+slack) || excess < 1 {
		return 0
	}
	return min(int(math.Ceil(excess*shedFraction)), maxShed)
}

// edgeLoad is the value of an edge's key.
type edgeLoad struct {
	Conns int `json:"conns"`
}

// rebalancer is the edge's part in the rebalancing (nil while not enabled).
type rebalancer struct {
	kv  jetstream.KeyValue
	key string // this edge's key

	// over counts the rounds in a row this edge was above its fair share; it sheds only from
	// the second (steady), so a burst of connections landing on it between two rounds of
	// the others' counts (a ramp, a reconnect wave) does not move anyone. last is its count at
	// the previous round: an edge still gaining connections is in a ramp (the others' counts
	// it compares with are up to a round old and gaining too) and sheds nothing.
	over int
	last int

	stopOnce sync.Once
	stop     chan struct{} // closed by stopRebalance
	done     chan struct{} // closed when the loop has ended (or never started)
	started  bool          // guarded by Server.mu
}

// EnableRebalance makes this edge publish its connection count to the KV bucket (created if
// need be, with replicas copies: 1 for one NATS server, 3 for a cluster) and shed its excess
// over the edges' fair share (see above). Call before Run, which runs it.
func (s *Server) EnableRebalance(ctx context.Context, js jetstream.JetStream, bucket string, replicas int) error {
	if bucket == "" {
		bucket = DefaultRebalanceBucket
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, History: 1,
		TTL: 3 * s.cfg.RebalanceInterval, Storage: jetstream.MemoryStorage, Replicas: max(replicas, 1),
		Description: "Parley edges' connection counts (rebalancing)"})
	if err != nil {
		return fmt.Errorf("edge rebalance bucket %s: %w", bucket, err)
	}
	s.rebal = &rebalancer{kv: kv, key: "edge." + crand.Text(), stop: make(chan struct{}), done: make(chan struct{})}
	return nil
}

// runRebalance publishes and sheds every interval until ctx ends or Shutdown begins, then
// deletes this edge's key.
func (s *Server) runRebalance(ctx context.Context) {
	r := s.rebal
	defer close(r.done)
	defer r.remove()
	t := time.NewTicker(s.cfg.RebalanceInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.stop:
			return
		case <-t.C:
			if err := s.rebalanceOnce(ctx); err != nil && ctx.Err() == nil {
				s.logger.Warn("edge: rebalance", "err", err)
			}
		}
	}
}

// remove deletes this edge's key, so the others stop counting it at once.
func (r *rebalancer) remove() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = r.kv.Delete(ctx, r.key)
}

// stopRebalance ends the rebalancing for good (Shutdown: a draining edge is nobody's peer)
// and waits until the key is deleted.
func (s *Server) stopRebalance() {
	r := s.rebal
	if r == nil {
		return
	}
	r.stopOnce.Do(func() { close(r.stop) })
	s.mu.Lock()
	started := r.started
	r.started = true // a Run after this does not start the loop
	s.mu.Unlock()
	if !started {
		r.remove()
		close(r.done)
		return
	}
	<-r.done
}

// rebalanceOnce publishes this edge's count, reads the others' and sheds what shedCount says.
func (s *Server) rebalanceOnce(ctx context.Context) error {
	r := s.rebal
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RebalanceInterval)
	defer cancel()
	own := s.connCount()
	data, _ := json.Marshal(edgeLoad{Conns: own})
	if _, err := r.kv.Put(ctx, r.key, data); err != nil {
		return fmt.Errorf("publish the connection count: %w", err)
	}
	others, err := r.peers(ctx)
	if err != nil {
		return err
	}
	s.metrics.rebalancePeers.Set(float64(len(others) + 1))
	maxShed := max(1, int(math.Ceil(s.cfg.RebalanceRate*s.cfg.RebalanceInterval.Seconds())))
	now := s.connCount()
	n := r.steady(shedCount(now, others, s.cfg.RebalanceSlack, maxShed), now)
	if n == 0 {
		return nil
	}
	s.shed(n)
	return nil
}

// steady passes n on when this is the second round or later in a row with something to shed
// and the edge's count (own) has not grown since the last round, else 0.
func (r *rebalancer) steady(n, own int) int {
	growing := own > r.last
	r.last = own
	if n == 0 {
		r.over = 0
		return 0
	}
	r.over++
	if r.over < 2 || growing {
		return 0
	}
	return n
}

// peers returns the connection counts of the other edges with a live key.
func (r *rebalancer) peers(ctx context.Context) ([]int, error) {
	w, err := r.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("read the edges' counts: %w", err)
	}
	defer func() { _ = w.Stop() }()
	var out []int
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("read the edges' counts: %w", ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("read the edges' counts: the watch ended")
			}
			if e == nil {
				return out, nil
			}
			var l edgeLoad
			if e.Key() != r.key && json.Unmarshal(e.Value(), &l) == nil {
				out = append(out, l.Conns)
			}
		}
	}
}

// shed asks n connections (as the registry's map order gives them) to reconnect elsewhere,
// after a delay spread over one interval, and closes them.
func (s *Server) shed(n int) {
	conns := make([]*Conn, 0, n)
	s.mu.Lock()
	if !s.draining {
	pick:
		for _, b := range s.buckets {
			for c := range b {
				if len(conns) == n {
					break pick
				}
				conns = append(conns, c)
			}
		}
	}
	s.mu.Unlock()
	spread := s.cfg.RebalanceInterval
	for _, c := range conns {
		after := time.Duration(rand.Int64N(int64(spread)))
		c.Send(protocol.Frame{Type: protocol.TypeReconnect, AfterMS: after.Milliseconds(), Reason: "rebalance"})
		c.close(protocol.CloseGoingAway, "rebalance", false)
	}
	s.metrics.rebalanceHints.Add(float64(len(conns)))
}
