package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/protocol"
)

// StormConfig is the reconnect-storm scenario: Users users in direct pairs, one device each,
// all connected; every connection is dropped at once, Missed messages per conversation are
// posted while they are away (through the REST API), then every device reconnects at the same
// moment and syncs from its cursor. It measures how long until each device is back (hello) and
// caught up (its sync delivered everything it missed), and checks nothing was lost or
// duplicated.
type StormConfig struct {
	API        string
	Users      int
	Missed     int
	UserPrefix string
}

// StormResult is what the reconnect storm measured.
type StormResult struct {
	Users int `json:"users"`
	// Back is from the storm's start to each device's hello; CaughtUp to its last sync page.
	Back     LatencySummary `json:"reconnected"`
	CaughtUp LatencySummary `json:"caught_up"`
	// AllCaughtUp is when the last device had caught up.
	AllCaughtUp time.Duration `json:"all_caught_up_ns"`
	Failed      int           `json:"failed"`
	Verdict     Verdict       `json:"verdict"`
}

// RunStorm runs the reconnect storm once.
func RunStorm(ctx context.Context, d *Dialer, cfg StormConfig, progress io.Writer) (StormResult, error) {
	res := StormResult{Users: cfg.Users}
	if cfg.Users < 2 || cfg.Users%2 != 0 || cfg.Users > 19000 || cfg.Missed < 1 || cfg.Missed > 1000 {
		return res, errors.New("reconnect-storm: users even, 2 to 19,000; missed 1 to 1,000")
	}
	api := newREST(d, cfg.API)
	user := func(i int) string { return fmt.Sprintf("%ss%d", cfg.UserPrefix, i) }
	convs := make([]string, cfg.Users/2)
	if err := forEach(ctx, len(convs), 32, func(k int) error {
		var c struct {
			ID string `json:"id"`
		}
		_, err := api.do(ctx, "POST", "/v1/conversations", user(2*k), map[string]string{"kind": "direct", "with": user(2*k + 1)}, nil, &c)
		convs[k] = c.ID
		return err
	}); err != nil {
		return res, fmt.Errorf("create conversations: %w", err)
	}
	// Everyone connects, then everyone drops at once.
	conns := make([]*Conn, cfg.Users)
	if err := forEach(ctx, cfg.Users, 128, func(i int) (err error) {
		conns[i], err = d.Dial(ctx, i, user(i), "d")
		return err
	}); err != nil {
		return res, fmt.Errorf("connect: %w", err)
	}
	for _, c := range conns {
		c.WS.Close()
	}
	fmt.Fprintf(progress, "reconnect-storm: %d devices dropped; posting %d messages to each of %d conversations\n", cfg.Users, cfg.Missed, len(convs))
	checker := NewChecker(nil)
	now := time.Now()
	if err := forEach(ctx, len(convs)*cfg.Missed, 32, func(j int) error {
		k := j % len(convs)
		cmid := chat.NewClientMsgID().String()
		checker.Sent(cmid, now, user(2*k), user(2*k+1))
		_, err := api.do(ctx, "POST", "/v1/conversations/"+convs[k]+"/messages", user(2*k), map[string]string{"body": "missed"},
			map[string]string{"Idempotency-Key": cmid}, nil)
		if err == nil {
			checker.Accepted(cmid, now)
		}
		return err
	}); err != nil {
		return res, fmt.Errorf("post: %w", err)
	}
	// Wait until the server has sequenced them all (the last conversation's last seq).
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(200 * time.Millisecond) {
		done := 0
		for k := range convs {
			var c struct {
				LastSeq int `json:"last_seq"`
			}
			if _, err := api.do(ctx, "GET", "/v1/conversations/"+convs[k], user(2*k), nil, nil, &c); err == nil && c.LastSeq >= cfg.Missed {
				done++
			}
		}
		if done == len(convs) {
			break
		}
		if time.Now().After(deadline) {
			return res, errors.New("messages not sequenced within 2 minutes")
		}
	}

	fmt.Fprintf(progress, "reconnect-storm: %d devices reconnect at once\n", cfg.Users)
	back, caught := NewHistogram(), NewHistogram()
	var (
		failed atomic.Int64
		mu     sync.Mutex
		last   time.Duration
		wg     sync.WaitGroup
	)
	start := time.Now()
	for i := 0; i < cfg.Users; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := d.Dial(ctx, i, user(i), "d")
			if err != nil {
				failed.Add(1)
				return
			}
			defer c.WS.Close()
			tBack := time.Since(start)
			cursor := protocol.Cursor{Conversation: convs[i/2], Seq: 0}
			since := ""
			for page := 0; page < 100; page++ {
				_ = c.WS.WriteJSON(protocol.Frame{Type: protocol.TypeSync, ID: "y", Since: since, Cursors: []protocol.Cursor{cursor}, Limit: 500})
				var f protocol.Frame
				for f.ID != "y" {
					f = protocol.Frame{}
					if err := c.WS.ReadJSON(&f); err != nil {
						failed.Add(1)
						return
					}
				}
				for _, m := range f.Messages {
					checker.Delivered(user(i), m.Conversation, m.Seq, m.ClientMsgID, time.Now())
					cursor.Seq = max(cursor.Seq, m.Seq)
				}
				if !f.More {
					break
				}
				since = f.Since
			}
			tCaught := time.Since(start)
			mu.Lock()
			back.Record(tBack)
			caught.Record(tCaught)
			last = max(last, tCaught)
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.Failed = int(failed.Load())
	res.Back, res.CaughtUp, res.AllCaughtUp = back.Summary(), caught.Summary(), last
	res.Verdict = checker.Verdict()
	return res, nil
}
