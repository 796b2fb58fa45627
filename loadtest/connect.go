package loadtest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// ConnectConfig is the connect scenario: Conns connections (one user each) spread over the
// target's edges (Target.WS, a list) and over Workers processes of this harness (a process
// here may hold at most about 19,000 sockets), Concurrency handshakes in flight per worker;
// the connections are held while the edges' memory is measured (Settle after the last one
// connected), then closed.
type ConnectConfig struct {
	Conns       int
	Workers     int
	Concurrency int
	Settle      time.Duration
	UserPrefix  string
	// Self is the harness binary (os.Executable) the workers are started from.
	Self string
	// WorkerArgs are passed to each worker (the target flags).
	WorkerArgs []string
}

// ConnectResult is what the connect scenario measured, over all edges.
type ConnectResult struct {
	Conns            int            `json:"conns"`
	Failed           int            `json:"failed"`
	FailReasons      map[string]int `json:"fail_reasons,omitempty"`
	Edges            int            `json:"edges"`
	Workers          int            `json:"workers"`
	HandshakeSeconds float64        `json:"handshake_seconds"`
	HandshakesPerSec float64        `json:"handshakes_per_sec"`
	Before           []ServerStats  `json:"before"`
	After            []ServerStats  `json:"after"`
	RSSPerConn       float64        `json:"rss_bytes_per_conn"`
	HeapPerConn      float64        `json:"heap_bytes_per_conn"`
	StackPerConn     float64        `json:"stack_bytes_per_conn"`
}

// workerReport is the line a worker prints once its connections are open.
type workerReport struct {
	Connected   int            `json:"connected"`
	Failed      int            `json:"failed"`
	Seconds     float64        `json:"seconds"`
	FailReasons map[string]int `json:"fail_reasons,omitempty"`
}

// RunConnect coordinates the workers and measures the edges.
func RunConnect(ctx context.Context, t Target, cfg ConnectConfig, progress io.Writer) (ConnectResult, error) {
	res := ConnectResult{FailReasons: map[string]int{}, Workers: cfg.Workers}
	metrics := split(t.Metrics)
	res.Edges = len(split(t.WS))
	if cfg.Workers < 1 || cfg.Conns < cfg.Workers || (cfg.Conns+cfg.Workers-1)/cfg.Workers > 19000 {
		return res, fmt.Errorf("connect: at most 19,000 connections per worker: use --workers %d or more", (cfg.Conns+18999)/19000)
	}
	for _, m := range metrics {
		s, err := Scrape(ctx, m)
		if err != nil {
			return res, fmt.Errorf("scrape %s: %w", m, err)
		}
		res.Before = append(res.Before, s)
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		ready    atomic.Int64
		release  = make(chan struct{})
		cmds     []*exec.Cmd
		firstErr error
	)
	start := time.Now()
	per := (cfg.Conns + cfg.Workers - 1) / cfg.Workers
	for w := 0; w < cfg.Workers; w++ {
		offset, n := w*per, min(per, cfg.Conns-w*per)
		args := append([]string{"connect-worker", "--offset", strconv.Itoa(offset), "--conns", strconv.Itoa(n),
			"--concurrency", strconv.Itoa(cfg.Concurrency), "--prefix", cfg.UserPrefix}, cfg.WorkerArgs...)
		cmd := exec.CommandContext(ctx, cfg.Self, args...)
		cmd.Env = os.Environ()
		cmd.Stderr = progress
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return res, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return res, err
		}
		if err := cmd.Start(); err != nil {
			return res, fmt.Errorf("start worker: %w", err)
		}
		cmds = append(cmds, cmd)
		wg.Add(1)
		go func() {
			defer wg.Done()
			var rep workerReport
			line, err := bufio.NewReader(stdout).ReadString('\n')
			if err == nil {
				err = json.Unmarshal([]byte(line), &rep)
			}
			mu.Lock()
			if err != nil && firstErr == nil {
				firstErr = fmt.Errorf("worker %d: %v", w, err)
			}
			res.Conns += rep.Connected
			res.Failed += rep.Failed
			for k, v := range rep.FailReasons {
				res.FailReasons[k] += v
			}
			mu.Unlock()
			fmt.Fprintf(progress, "connect: worker %d: %d connected, %d failed in %.1fs (%d of %d workers ready)\n",
				w, rep.Connected, rep.Failed, rep.Seconds, ready.Add(1), cfg.Workers)
			<-release
			stdin.Close() // the worker closes its connections and exits
		}()
	}
	for ready.Load() < int64(cfg.Workers) && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	res.HandshakeSeconds = time.Since(start).Seconds()
	res.HandshakesPerSec = float64(res.Conns) / res.HandshakeSeconds
	fmt.Fprintf(progress, "connect: %d connections over %d edges in %.1fs (%.0f handshakes/s); settling %v\n",
		res.Conns, res.Edges, res.HandshakeSeconds, res.HandshakesPerSec, cfg.Settle)
	select {
	case <-ctx.Done():
	case <-time.After(cfg.Settle):
	}
	var scrapeErr error
	for _, m := range metrics {
		s, err := Scrape(context.Background(), m)
		if err != nil && scrapeErr == nil {
			scrapeErr = err
		}
		res.After = append(res.After, s)
	}
	close(release)
	wg.Wait()
	for _, c := range cmds {
		_ = c.Wait()
	}
	if firstErr != nil {
		return res, firstErr
	}
	if scrapeErr != nil {
		return res, scrapeErr
	}
	if res.Conns > 0 {
		var rss, heap, stack float64
		for i := range res.After {
			rss += res.After[i].RSS - res.Before[i].RSS
			heap += res.After[i].HeapInuse - res.Before[i].HeapInuse
			stack += res.After[i].StackInuse - res.Before[i].StackInuse
		}
		n := float64(res.Conns)
		res.RSSPerConn, res.HeapPerConn, res.StackPerConn = rss/n, heap/n, stack/n
	}
	return res, nil
}

// RunConnectWorker is one worker process: it opens conns connections (global indexes from
// offset, which choose the edge and the source address), prints its workerReport line, holds
// them until stdin closes (the coordinator is done) or ctx ends, and closes them.
func RunConnectWorker(ctx context.Context, d *Dialer, offset, conns, concurrency int, prefix string, stdin io.Reader, stdout io.Writer) error {
	var (
		next    atomic.Int64
		mu      sync.Mutex
		open    []*Conn
		rep     = workerReport{FailReasons: map[string]int{}}
		wg      sync.WaitGroup
		readers sync.WaitGroup
	)
	start := time.Now()
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= conns || ctx.Err() != nil {
					return
				}
				g := offset + i
				c, err := d.Dial(ctx, g, prefix+strconv.Itoa(g), "d")
				mu.Lock()
				if err != nil {
					rep.Failed++
					rep.FailReasons[reason(err)]++
					mu.Unlock()
					continue
				}
				open = append(open, c)
				rep.Connected++
				mu.Unlock()
				readers.Add(1)
				go func() {
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
	rep.Seconds = time.Since(start).Seconds()
	line, _ := json.Marshal(rep)
	fmt.Fprintln(stdout, string(line))
	done := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, stdin); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	case <-time.After(10 * time.Minute): // bounded even if the coordinator vanished
	}
	for _, c := range open {
		c.WS.Close()
	}
	readers.Wait()
	return nil
}
