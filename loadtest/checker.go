package loadtest

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/protocol"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Checker is the verdict of a run: every accepted message must reach each device that should
// get it exactly once, and each device must see a conversation's seqs in increasing order. It
// is safe for concurrent use.
type Checker struct {
	mu       sync.Mutex
	sent     map[string]time.Time      // client_msg_id -> when sent
	accepted map[string]bool           // client_msg_id accepted
	expect   map[string][]string       // client_msg_id -> the devices that must get it
	got      map[string]map[string]int // client_msg_id -> device -> times received
	maxSeq   map[string]int64          // device/conversation -> highest seq seen
	seqSeen  map[string]bool           // device/conversation/seq
	phantom  int
	reorder  int
	errors   int

	acceptLat  *Histogram
	deliverLat *Histogram
	series     *Series
}

// NewChecker returns an empty Checker; series (may be nil) receives the events over time.
func NewChecker(series *Series) *Checker {
	return &Checker{sent: map[string]time.Time{}, accepted: map[string]bool{}, expect: map[string][]string{},
		got: map[string]map[string]int{}, maxSeq: map[string]int64{}, seqSeen: map[string]bool{},
		acceptLat: NewHistogram(), deliverLat: NewHistogram(), series: series}
}

// Sent records a send of cmid that devices must receive once accepted.
func (c *Checker) Sent(cmid string, at time.Time, devices ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sent[cmid] = at
	c.expect[cmid] = devices
	c.series.add(at, func(b *bucket) { b.sent++ })
}

// Accepted records the server's accepted answer to cmid.
func (c *Checker) Accepted(cmid string, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.sent[cmid]
	if !ok || c.accepted[cmid] {
		return
	}
	c.accepted[cmid] = true
	c.acceptLat.Record(at.Sub(t))
	c.series.add(at, func(b *bucket) { b.accepted++; b.acceptLat.Record(at.Sub(t)) })
}

// Delivered records device receiving the message cmid at seq of conversation.
func (c *Checker) Delivered(device, conversation string, seq int64, cmid string, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.sent[cmid]
	if !ok {
		c.phantom++
		return
	}
	key := device + "/" + conversation
	if seq < c.maxSeq[key] && !c.seqSeen[key+"/"+itoa(seq)] {
		c.reorder++ // arrived after a later seq of the same conversation
	}
	c.seqSeen[key+"/"+itoa(seq)] = true
	c.maxSeq[key] = max(c.maxSeq[key], seq)
	d := c.got[cmid]
	if d == nil {
		d = map[string]int{}
		c.got[cmid] = d
	}
	d[device]++
	if d[device] == 1 {
		c.deliverLat.Record(at.Sub(t))
		c.series.add(at, func(b *bucket) { b.delivered++; b.deliverLat.Record(at.Sub(t)) })
	}
}

// Feed reads frames from a device's connection until it fails, recording accepted answers,
// message deliveries and error answers.
func (c *Checker) Feed(ws *websocket.Conn, device string) {
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			return
		}
		now := time.Now()
		var f protocol.Frame
		if json.Unmarshal(data, &f) != nil {
			continue
		}
		switch f.Type {
		case protocol.TypeAccepted:
			c.Accepted(f.ClientMsgID, now)
		case protocol.TypeError:
			c.mu.Lock()
			c.errors++
			c.mu.Unlock()
		case protocol.TypeMessage:
			c.Delivered(device, f.Conversation, f.Seq, f.ClientMsgID, now)
		}
	}
}

// Errors is how many error frames Feed saw.
func (c *Checker) Errors() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.errors
}

// Verdict is what the checker found. Lost, Duplicated, Reordered and Phantom must all be 0.
type Verdict struct {
	Sent     int `json:"sent"`
	Accepted int `json:"accepted"`
	// Expected and Delivered count (message, device) pairs of accepted messages.
	Expected   int `json:"expected_deliveries"`
	Delivered  int `json:"delivered"`
	Lost       int `json:"lost"`
	Duplicated int `json:"duplicated"`
	Reordered  int `json:"reordered"`
	Phantom    int `json:"phantom"`
}

// OK reports whether the run lost, duplicated, reordered and invented nothing.
func (v Verdict) OK() bool {
	return v.Lost == 0 && v.Duplicated == 0 && v.Reordered == 0 && v.Phantom == 0
}

// Verdict computes the verdict now (call it after the grace period for stragglers).
func (c *Checker) Verdict() Verdict {
	c.mu.Lock()
	defer c.mu.Unlock()
	v := Verdict{Sent: len(c.sent), Accepted: len(c.accepted), Phantom: c.phantom, Reordered: c.reorder}
	for cmid := range c.accepted {
		for _, dev := range c.expect[cmid] {
			v.Expected++
			switch n := c.got[cmid][dev]; {
			case n == 0:
				v.Lost++
			case n > 1:
				v.Duplicated += n - 1
				v.Delivered++
			default:
				v.Delivered++
			}
		}
	}
	return v
}

// Latencies returns the send->accepted and send->delivered summaries.
func (c *Checker) Latencies() (accepted, delivered LatencySummary) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.acceptLat.Summary(), c.deliverLat.Summary()
}

// Done reports whether every accepted message reached all its devices and every send was
// answered (an error frame counts as an answer).
func (c *Checker) Done() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.accepted)+c.errors < len(c.sent) {
		return false
	}
	for cmid := range c.accepted {
		for _, dev := range c.expect[cmid] {
			if c.got[cmid][dev] == 0 {
				return false
			}
		}
	}
	return true
}

func itoa(n int64) string {
	var b [20]byte
	i := len(b)
	neg := n < 0
	if neg {
		n = -n
	}
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			break
		}
	}
	if neg {
		i--
		b[i] = '-'
	}
	return string(b[i:])
}

// Histogram is an HDR histogram of latencies (1 µs to 10 min, 3 significant digits).
type Histogram struct{ h *hdrhistogram.Histogram }

// NewHistogram returns an empty Histogram.
func NewHistogram() *Histogram {
	return &Histogram{h: hdrhistogram.New(1, int64(10*time.Minute/time.Microsecond), 3)}
}

// Record adds one latency (clamped to the histogram's range).
func (h *Histogram) Record(d time.Duration) {
	us := max(1, min(d.Microseconds(), h.h.HighestTrackableValue()))
	_ = h.h.RecordValue(us)
}

// LatencySummary is a latency distribution in milliseconds.
type LatencySummary struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p99_9_ms"`
	Max   float64 `json:"max_ms"`
}

// Summary returns the percentiles.
func (h *Histogram) Summary() LatencySummary {
	ms := func(us int64) float64 { return float64(us) / 1000 }
	if h.h.TotalCount() == 0 {
		return LatencySummary{}
	}
	return LatencySummary{Count: h.h.TotalCount(), P50: ms(h.h.ValueAtQuantile(50)), P90: ms(h.h.ValueAtQuantile(90)),
		P99: ms(h.h.ValueAtQuantile(99)), P999: ms(h.h.ValueAtQuantile(99.9)), Max: ms(h.h.Max())}
}

// Quantile returns the latency at quantile q (0-100) in milliseconds.
func (h *Histogram) Quantile(q float64) float64 { return float64(h.h.ValueAtQuantile(q)) / 1000 }

// Series counts a run's events per second, for the report's charts.
type Series struct {
	start   time.Time
	buckets []*bucket
}

type bucket struct {
	sent, accepted, delivered int
	acceptLat, deliverLat     *Histogram
}

// NewSeries starts a series at start.
func NewSeries(start time.Time) *Series { return &Series{start: start} }

func (s *Series) add(at time.Time, f func(*bucket)) {
	if s == nil {
		return
	}
	i := int(at.Sub(s.start) / time.Second)
	if i < 0 {
		i = 0
	}
	for len(s.buckets) <= i {
		s.buckets = append(s.buckets, &bucket{acceptLat: NewHistogram(), deliverLat: NewHistogram()})
	}
	f(s.buckets[i])
}
