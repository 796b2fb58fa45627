package loadtest

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/protocol"
)

// ChatConfig is the chat scenario: Users users, paired into direct conversations (user 2k with
// 2k+1), one device each, sending Rate messages per second in total for Duration through the
// WebSocket. Conversations are created through the REST API at API. After sending, the run
// waits up to Grace (default 10 s) for every accepted message to arrive; what has not arrived
// by then counts as lost.
type ChatConfig struct {
	Users      int
	Rate       int
	Duration   time.Duration
	Grace      time.Duration
	API        string
	UserPrefix string
}

// ChatResult is what the chat scenario measured and what its checker found. Every accepted
// message must reach both members' devices exactly once, in seq order.
type ChatResult struct {
	Users     int `json:"users"`
	Sent      int `json:"sent"`
	Accepted  int `json:"accepted"`
	Errors    int `json:"errors"`
	Delivered int `json:"delivered"`
	Expected  int `json:"expected"`
	// Undelivered are expected deliveries not seen within the grace period after the run: lost, or late.
	Undelivered  int     `json:"undelivered"`
	Duplicated   int     `json:"duplicated"`
	Reordered    int     `json:"reordered"`
	Phantom      int     `json:"phantom"`
	AcceptedP50  float64 `json:"accepted_p50_ms"`
	AcceptedP99  float64 `json:"accepted_p99_ms"`
	AcceptedMax  float64 `json:"accepted_max_ms"`
	DeliveredP50 float64 `json:"delivered_p50_ms"`
	DeliveredP99 float64 `json:"delivered_p99_ms"`
	DeliveredMax float64 `json:"delivered_max_ms"`
	Throughput   float64 `json:"accepted_per_sec"`
	checkedRun
}

// checkedRun is what the scenarios whose deliveries are checked (chat, fanout) have in common:
// the checker's verdict, the full latency distributions (HDR histograms) and the timing.
type checkedRun struct {
	Verdict          Verdict        `json:"verdict"`
	AcceptedLatency  LatencySummary `json:"send_to_accepted"`
	DeliveredLatency LatencySummary `json:"send_to_delivered"`
	Started          time.Time      `json:"started"`
	Elapsed          time.Duration  `json:"elapsed_ns"`

	checker *Checker
}

// report returns the run's HTML report; conns is the number of connections it held.
func (r checkedRun) report(title, command string, settings [][2]string, conns int) *Report {
	rep := NewReport(title, command, r.Started, r.checker)
	rep.Duration, rep.Settings, rep.Verdict = r.Elapsed.Round(time.Millisecond), settings, r.Verdict
	rep.Accepted, rep.Deliver, rep.Conns = r.AcceptedLatency, r.DeliveredLatency, conns
	return rep
}

// Report returns the run's HTML report.
func (r ChatResult) Report(command string, settings [][2]string) *Report {
	return r.report("Parley load test: chat", command, settings, r.Users)
}

// bar is a 20-character progress bar.
func bar(done, total time.Duration) string {
	n := int(20 * done / max(total, 1))
	n = min(max(n, 0), 20)
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", 20-n) + "]"
}

type chatConn struct {
	user string
	conv string // its direct conversation
	ws   *websocket.Conn
	mu   sync.Mutex // writes
}

// RunChat runs the chat scenario once.
func RunChat(ctx context.Context, d *Dialer, cfg ChatConfig, progress io.Writer) (ChatResult, error) {
	var res ChatResult
	if cfg.Users < 2 || cfg.Users%2 != 0 || cfg.Rate < 1 {
		return res, fmt.Errorf("chat: users must be even and at least 2, rate at least 1")
	}
	conns := make([]*chatConn, cfg.Users)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.ws.Close()
			}
		}
	}()
	api := newREST(d, cfg.API)
	for i := 0; i < cfg.Users; i += 2 {
		a, b := fmt.Sprintf("%s%d", cfg.UserPrefix, i), fmt.Sprintf("%s%d", cfg.UserPrefix, i+1)
		var created struct {
			ID string `json:"id"`
		}
		if _, err := api.do(ctx, "POST", "/v1/conversations", a, map[string]string{"kind": "direct", "with": b}, nil, &created); err != nil {
			return res, fmt.Errorf("create conversation: %w", err)
		}
		conv := created.ID
		for k, u := range []string{a, b} {
			c, err := d.Dial(ctx, i+k, u, "d")
			if err != nil {
				return res, fmt.Errorf("connect %s: %w", u, err)
			}
			conns[i+k] = &chatConn{user: u, conv: conv, ws: c.WS}
		}
	}
	res.Users = cfg.Users
	fmt.Fprintf(progress, "chat: %d users in %d conversations; %d messages/s for %v\n", cfg.Users, cfg.Users/2, cfg.Rate, cfg.Duration)

	started := time.Now()
	checker := NewChecker(NewSeries(started))
	res.checker = checker
	var readers sync.WaitGroup
	for _, c := range conns {
		readers.Add(1)
		go func() {
			defer readers.Done()
			checker.Feed(c.ws, c.user)
		}()
	}

	next := 0
	progressTick := time.NewTicker(time.Second)
	defer progressTick.Stop()
	err := paced(ctx, cfg.Rate, cfg.Duration, func() error {
		i := next % len(conns)
		c, partner := conns[i], conns[i^1]
		next++
		cmid := chat.NewClientMsgID().String() // a UUIDv7, as the SDKs mint them
		checker.Sent(cmid, time.Now(), c.user, partner.user)
		c.mu.Lock()
		defer c.mu.Unlock()
		if err := c.ws.WriteJSON(protocol.Frame{Type: protocol.TypeSend, ID: cmid[:8], Conversation: c.conv, ClientMsgID: cmid, Body: "load test message"}); err != nil {
			return fmt.Errorf("send: %w", err)
		}
		select {
		case <-progressTick.C:
			v := checker.Verdict()
			acc, del := checker.Latencies()
			fmt.Fprintf(progress, "\r%s %5.0fs  sent %d  accepted %d  delivered %d/%d  accepted p99 %.1fms  delivered p99 %.1fms   ",
				bar(time.Since(started), cfg.Duration), time.Since(started).Seconds(), v.Sent, v.Accepted, v.Delivered, v.Expected, acc.P99, del.P99)
		default:
		}
		return nil
	})
	fmt.Fprintln(progress)
	if err != nil {
		return res, err
	}
	elapsed := time.Since(started)
	// Wait for stragglers: until every accepted message reached both members, or the grace.
	if cfg.Grace <= 0 {
		cfg.Grace = 10 * time.Second
	}
	deadline := time.Now().Add(cfg.Grace)
	for time.Now().Before(deadline) && !checker.Done() {
		time.Sleep(100 * time.Millisecond)
	}
	for _, c := range conns {
		c.ws.Close()
	}
	readers.Wait()
	conns = nil

	v := checker.Verdict()
	res.Verdict, res.Errors = v, checker.Errors()
	res.Sent, res.Accepted, res.Delivered, res.Expected = v.Sent, v.Accepted, v.Delivered, v.Expected
	res.Undelivered, res.Duplicated, res.Reordered, res.Phantom = v.Lost, v.Duplicated, v.Reordered, v.Phantom
	res.Throughput = float64(res.Accepted) / elapsed.Seconds()
	res.AcceptedLatency, res.DeliveredLatency = checker.Latencies()
	res.AcceptedP50, res.AcceptedP99, res.AcceptedMax = res.AcceptedLatency.P50, res.AcceptedLatency.P99, res.AcceptedLatency.Max
	res.DeliveredP50, res.DeliveredP99, res.DeliveredMax = res.DeliveredLatency.P50, res.DeliveredLatency.P99, res.DeliveredLatency.Max
	res.Started, res.Elapsed = started, elapsed
	return res, nil
}
