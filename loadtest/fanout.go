package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/protocol"
)

// FanoutConfig is the fanout scenario: one group of Members members (created through the REST
// API at API), one device each; Rate messages per second are sent for Duration through the
// whole pipeline, by member 0 alone up to senderRate a second, else by the first members in
// turn, and every member's device must receive each one once, in order.
// senderRate is the most messages a second one fanout sender sends.
const senderRate = 10

type FanoutConfig struct {
	API        string
	Members    int
	Rate       int
	Duration   time.Duration
	Grace      time.Duration // how long to wait for stragglers after sending; default 30 s
	UserPrefix string
}

// FanoutResult is what the fanout scenario measured (deliveries count member devices).
type FanoutResult struct {
	Members int `json:"members"`
	Errors  int `json:"errors"`
	checkedRun
}

// Report returns the run's HTML report.
func (r FanoutResult) Report(command string, settings [][2]string) *Report {
	return r.report("Parley load test: fanout", command, settings, r.Members)
}

// RunFanout runs the fanout scenario once.
func RunFanout(ctx context.Context, d *Dialer, cfg FanoutConfig, progress io.Writer) (FanoutResult, error) {
	res := FanoutResult{Members: cfg.Members}
	if cfg.Members < 2 || cfg.Members > 1000 || cfg.Rate < 1 {
		return res, errors.New("fanout: members 2 to 1000, rate at least 1")
	}
	api := newREST(d, cfg.API)
	users := make([]string, cfg.Members)
	for i := range users {
		users[i] = fmt.Sprintf("%sf%d", cfg.UserPrefix, i)
	}
	var group struct {
		ID string `json:"id"`
	}
	if _, err := api.do(ctx, "POST", "/v1/conversations", users[0], map[string]any{"kind": "group", "title": "fanout", "members": users[1:]}, nil, &group); err != nil {
		return res, fmt.Errorf("create group: %w", err)
	}
	started := time.Now()
	checker := NewChecker(NewSeries(started))
	res.checker, res.Started = checker, started
	var (
		wsMu    sync.Mutex // writes on the senders' sockets
		readers sync.WaitGroup
		conns   []*Conn
	)
	defer func() {
		for _, c := range conns {
			c.WS.Close()
		}
		readers.Wait()
	}()
	for i, u := range users {
		c, err := d.Dial(ctx, i, u, "d")
		if err != nil {
			return res, fmt.Errorf("connect %s: %w", u, err)
		}
		conns = append(conns, c)
		readers.Add(1)
		go func() {
			defer readers.Done()
			checker.Feed(c.WS, u)
		}()
	}
	fmt.Fprintf(progress, "fanout: a group of %d, %d messages/s for %v\n", cfg.Members, cfg.Rate, cfg.Duration)
	// Members take turns sending, each at most senderRate a second: the edge allows a
	// connection 20 frames a second by default, and a flood is refused, not queued.
	senders := min((cfg.Rate+senderRate-1)/senderRate, len(conns))
	next := 0
	err := paced(ctx, cfg.Rate, cfg.Duration, func() error {
		cmid := chat.NewClientMsgID().String()
		sender := conns[next%senders]
		next++
		checker.Sent(cmid, time.Now(), users...)
		wsMu.Lock()
		defer wsMu.Unlock()
		return sender.WS.WriteJSON(protocol.Frame{Type: protocol.TypeSend, ID: cmid[:8], Conversation: group.ID, ClientMsgID: cmid, Body: "fanout"})
	})
	if err != nil {
		return res, err
	}
	if cfg.Grace <= 0 {
		cfg.Grace = 30 * time.Second
	}
	for deadline := time.Now().Add(cfg.Grace); time.Now().Before(deadline) && !checker.Done(); {
		time.Sleep(100 * time.Millisecond)
	}
	res.Elapsed = time.Since(started)
	res.Verdict, res.Errors = checker.Verdict(), checker.Errors()
	res.AcceptedLatency, res.DeliveredLatency = checker.Latencies()
	return res, nil
}
