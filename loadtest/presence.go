package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/parleyhq/parley/protocol"
)

// PresenceConfig is the presence scenario: Pairs watcher/target pairs, each sharing a direct
// conversation (created through the REST API at API). Every watcher subscribes to its target;
// then the targets connect, Rate per second, and the scenario measures the time from a
// target's dial to its watcher receiving "online".
type PresenceConfig struct {
	API        string
	Pairs      int
	Rate       int
	UserPrefix string
}

// PresenceResult is what the presence scenario measured.
type PresenceResult struct {
	Pairs int `json:"pairs"`
	// Missed are targets whose watcher saw no "online" within 10 s of their connect.
	Missed int     `json:"missed"`
	Online Latency `json:"connect_to_watcher_online"`
}

// RunPresence runs the presence scenario once.
func RunPresence(ctx context.Context, d *Dialer, cfg PresenceConfig, progress io.Writer) (PresenceResult, error) {
	res := PresenceResult{Pairs: cfg.Pairs}
	if cfg.Pairs < 1 || cfg.Pairs > 9000 || cfg.Rate < 1 {
		return res, errors.New("presence: pairs 1 to 9000, rate at least 1")
	}
	api := newREST(d, cfg.API)
	watcher := func(i int) string { return fmt.Sprintf("%sw%d", cfg.UserPrefix, i) }
	target := func(i int) string { return fmt.Sprintf("%st%d", cfg.UserPrefix, i) }
	fmt.Fprintf(progress, "presence: %d watcher/target pairs; targets connect at %d/s\n", cfg.Pairs, cfg.Rate)
	if err := forEach(ctx, cfg.Pairs, 32, func(i int) error {
		_, err := api.do(ctx, "POST", "/v1/conversations", watcher(i), map[string]string{"kind": "direct", "with": target(i)}, nil, nil)
		return err
	}); err != nil {
		return res, fmt.Errorf("create conversations: %w", err)
	}

	var (
		mu      sync.Mutex
		dialAt  = make([]time.Time, cfg.Pairs)
		seen    = make([]bool, cfg.Pairs)
		rec     = newRecorder()
		conns   []*Conn
		readers sync.WaitGroup
	)
	defer func() {
		for _, c := range conns {
			c.WS.Close()
		}
		readers.Wait()
	}()
	for i := 0; i < cfg.Pairs; i++ {
		c, err := d.Dial(ctx, i, watcher(i), "w")
		if err != nil {
			return res, fmt.Errorf("connect watcher %d: %w", i, err)
		}
		conns = append(conns, c)
		if err := c.WS.WriteJSON(protocol.Frame{Type: protocol.TypePresenceSubscribe, ID: "p", Users: []string{target(i)}}); err != nil {
			return res, err
		}
		var snap protocol.Frame
		if err := c.WS.ReadJSON(&snap); err != nil || snap.Type != protocol.TypePresence {
			return res, fmt.Errorf("watcher %d: subscribe answered %+v, %v", i, snap, err)
		}
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				var f protocol.Frame
				if c.WS.ReadJSON(&f) != nil {
					return
				}
				now := time.Now()
				if f.Type != protocol.TypePresence || f.ID != "" || len(f.Presence) != 1 || f.Presence[0].State != protocol.PresenceOnline {
					continue
				}
				mu.Lock()
				if !seen[i] && !dialAt[i].IsZero() {
					seen[i] = true
					rec.ok(now.Sub(dialAt[i]))
				}
				mu.Unlock()
			}
		}()
	}

	start, next := time.Now(), 0
	err := paced(ctx, cfg.Rate, time.Duration(cfg.Pairs)*time.Second/time.Duration(cfg.Rate)+time.Second, func() error {
		if next >= cfg.Pairs {
			return nil
		}
		i := next
		next++
		mu.Lock()
		dialAt[i] = time.Now()
		mu.Unlock()
		c, err := d.Dial(ctx, cfg.Pairs+i, target(i), "t")
		if err != nil {
			return fmt.Errorf("connect target %d: %w", i, err)
		}
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
		return nil
	})
	if err != nil {
		return res, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		mu.Lock()
		n := len(rec.lat)
		mu.Unlock()
		if n == cfg.Pairs {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	rec.elapsed = time.Since(start)
	mu.Lock()
	for _, s := range seen {
		if !s {
			res.Missed++
		}
	}
	mu.Unlock()
	res.Online = rec.summary()
	return res, nil
}
