package loadtest

import (
	"context"
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// IdleConfig is the idle scenario: open Conns authenticated connections (one user each),
// Concurrency handshakes at a time, hold them, and measure the server.
type IdleConfig struct {
	Conns       int
	Concurrency int
	Hold        time.Duration
	UserPrefix  string
}

// IdleResult is what the idle scenario measured.
type IdleResult struct {
	Conns            int            `json:"conns"`
	Failed           int            `json:"failed"`
	FailReasons      map[string]int `json:"fail_reasons,omitempty"`
	HandshakeSeconds float64        `json:"handshake_seconds"`
	HandshakesPerSec float64        `json:"handshakes_per_sec"`
	// ServerCPUSeconds is the server process's CPU time from before the first handshake to
	// one second after the last (so presence and subscriptions queued by the handshakes are
	// counted, the closing at the end is not); HandshakesPerCPUSecond divides by it. Both are
	// the edge's alone only when the metrics URL is one edge process that nothing else loads.
	ServerCPUSeconds       float64     `json:"server_cpu_seconds"`
	HandshakesPerCPUSecond float64     `json:"handshakes_per_server_cpu_second"`
	Before                 ServerStats `json:"before"`
	After                  ServerStats `json:"after"`
	RSSPerConn             float64     `json:"rss_bytes_per_conn"`
	HeapPerConn            float64     `json:"heap_bytes_per_conn"`
	StackPerConn           float64     `json:"stack_bytes_per_conn"`
	GoroutinesPerConn      float64     `json:"goroutines_per_conn"`
}

// RunIdle runs the idle scenario. Connections are closed before it returns.
func RunIdle(ctx context.Context, d *Dialer, metricsURL string, cfg IdleConfig, progress io.Writer) (IdleResult, error) {
	if cfg.Conns <= 0 || cfg.Concurrency <= 0 {
		return IdleResult{}, fmt.Errorf("conns and concurrency must be positive")
	}
	res := IdleResult{FailReasons: map[string]int{}}
	var err error
	if res.Before, err = Scrape(ctx, metricsURL); err != nil {
		return res, fmt.Errorf("scrape before: %w", err)
	}
	conns := make([]*Conn, cfg.Conns)
	var (
		next    atomic.Int64
		failMu  sync.Mutex
		wg      sync.WaitGroup
		readers sync.WaitGroup
	)
	start := time.Now()
	for w := 0; w < cfg.Concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= cfg.Conns || ctx.Err() != nil {
					return
				}
				c, err := d.Dial(ctx, i, fmt.Sprintf("%s%d", cfg.UserPrefix, i), "d")
				if err != nil {
					failMu.Lock()
					res.FailReasons[reason(err)]++
					failMu.Unlock()
					continue
				}
				conns[i] = c
				readers.Add(1)
				go func() { // answers pings; discards frames
					defer readers.Done()
					for {
						if _, _, err := c.WS.ReadMessage(); err != nil {
							return
						}
					}
				}()
			}
		}()
	}
	wg.Wait()
	res.HandshakeSeconds = time.Since(start).Seconds()
	for _, c := range conns {
		if c != nil {
			res.Conns++
		}
	}
	res.Failed = cfg.Conns - res.Conns
	res.HandshakesPerSec = float64(res.Conns) / res.HandshakeSeconds
	select {
	case <-ctx.Done():
	case <-time.After(time.Second):
	}
	if connected, err := scrape(context.Background(), metricsURL, false); err == nil {
		res.ServerCPUSeconds = connected.CPUSeconds - res.Before.CPUSeconds
		if res.ServerCPUSeconds > 0 {
			res.HandshakesPerCPUSecond = float64(res.Conns) / res.ServerCPUSeconds
		}
	}
	fmt.Fprintf(progress, "idle: %d connected, %d failed in %.1fs (%.0f handshakes/s, %.0f per second of server CPU); holding %v\n",
		res.Conns, res.Failed, res.HandshakeSeconds, res.HandshakesPerSec, res.HandshakesPerCPUSecond, cfg.Hold)

	select {
	case <-ctx.Done():
	case <-time.After(cfg.Hold):
	}
	res.After, err = Scrape(context.Background(), metricsURL)
	for _, c := range conns {
		if c != nil {
			c.WS.Close()
		}
	}
	readers.Wait()
	if err != nil {
		return res, fmt.Errorf("scrape after: %w", err)
	}
	if res.Conns > 0 {
		n := float64(res.Conns)
		res.RSSPerConn = (res.After.RSS - res.Before.RSS) / n
		res.HeapPerConn = (res.After.HeapInuse - res.Before.HeapInuse) / n
		res.StackPerConn = (res.After.StackInuse - res.Before.StackInuse) / n
		res.GoroutinesPerConn = (res.After.Goroutines - res.Before.Goroutines) / n
	}
	return res, nil
}

// reason shortens an error to a label for the failure table.
func reason(err error) string {
	s := err.Error()
	if len(s) > 60 {
		s = s[:60]
	}
	return s
}

// percentile returns the p-th percentile (0-100) of sorted values.
func percentile(sorted []int64, p float64) int64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p / 100 * float64(len(sorted)-1))
	return sorted[i]
}

func sortInt64(v []int64) { sort.Slice(v, func(i, j int) bool { return v[i] < v[j] }) }

// paced calls fn rate times a second until duration has passed or ctx ends, and stops at the
// first error fn returns. The schedule is open-loop: the calls due by now are made even when
// the process fell behind (a busy box delays ticks), so the rate asked is the rate sent and a
// slow server cannot lower the load it is measured under. Ticks come at most every
// millisecond; each makes every call due by then.
func paced(ctx context.Context, rate int, duration time.Duration, fn func() error) error {
	tick := time.NewTicker(max(time.Second/time.Duration(rate), time.Millisecond))
	defer tick.Stop()
	end := time.NewTimer(duration)
	defer end.Stop()
	start := time.Now()
	total := int64(duration.Seconds() * float64(rate))
	var done int64
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-end.C:
			return nil
		case now := <-tick.C:
			due := min(int64(now.Sub(start).Seconds()*float64(rate)), total)
			for ; done < due; done++ {
				if err := fn(); err != nil {
					return err
				}
				if ctx.Err() != nil {
					return nil
				}
			}
		}
	}
}
