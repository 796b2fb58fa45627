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
// target's dial to its watcher receiving "online". With Disconnect, the targets then close
// their connections, Rate per second, and it measures the time from a close to the watcher
// receiving "offline": the server's grace period (default 5 s, so a quick reconnect does not
// flap) plus the time to notice and deliver it.
type PresenceConfig struct {
	API        string
	Pairs      int
	Rate       int
	Disconnect bool
	UserPrefix string
}

// PresenceResult is what the presence scenario measured.
type PresenceResult struct {
	Pairs int `json:"pairs"`
	// Missed are targets whose watcher saw no "online" within 10 s of their connect.
	Missed int     `json:"missed"`
	Online Latency `json:"connect_to_watcher_online"`
	// MissedOffline are targets whose watcher saw no "offline" within 30 s of their close
	// (only with Disconnect).
	MissedOffline int      `json:"missed_offline"`
	Offline       *Latency `json:"disconnect_to_watcher_offline,omitempty"`
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
		closeAt = make([]time.Time, cfg.Pairs)
		seenOff = make([]bool, cfg.Pairs)
		recOff  = newRecorder()
		targets = make([]*Conn, cfg.Pairs)
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
				if f.Type != protocol.TypePresence || f.ID != "" || len(f.Presence) != 1 {
					continue
				}
				mu.Lock()
				switch f.Presence[0].State {
				case protocol.PresenceOnline:
					if !seen[i] && !dialAt[i].IsZero() {
						seen[i] = true
						rec.ok(now.Sub(dialAt[i]))
					}
				case protocol.PresenceOffline:
					if !seenOff[i] && !closeAt[i].IsZero() {
						seenOff[i] = true
						recOff.ok(now.Sub(closeAt[i]))
					}
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
		targets[i] = c
		mu.Unlock()
		return nil
	})
	if err != nil {
		return res, err
	}
	waitFor(ctx, 10*time.Second, func() bool { return rec.count() == cfg.Pairs })
	rec.elapsed = time.Since(start)
	mu.Lock()
	for _, s := range seen {
		if !s {
			res.Missed++
		}
	}
	mu.Unlock()
	res.Online = rec.summary()
	if !cfg.Disconnect {
		return res, nil
	}

	fmt.Fprintf(progress, "presence: targets disconnect at %d/s\n", cfg.Rate)
	start, next = time.Now(), 0
	if err := paced(ctx, cfg.Rate, time.Duration(cfg.Pairs)*time.Second/time.Duration(cfg.Rate)+time.Second, func() error {
		if next >= cfg.Pairs {
			return nil
		}
		i := next
		next++
		mu.Lock()
		closeAt[i] = time.Now()
		mu.Unlock()
		targets[i].WS.Close()
		return nil
	}); err != nil {
		return res, err
	}
	waitFor(ctx, 30*time.Second, func() bool { return recOff.count() == cfg.Pairs })
	recOff.elapsed = time.Since(start)
	mu.Lock()
	for _, s := range seenOff {
		if !s {
			res.MissedOffline++
		}
	}
	mu.Unlock()
	off := recOff.summary()
	res.Offline = &off
	return res, nil
}

// waitFor polls done every 50 ms until it reports true, timeout passes or ctx ends.
func waitFor(ctx context.Context, timeout time.Duration, done func() bool) {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline) && ctx.Err() == nil && !done(); {
		time.Sleep(50 * time.Millisecond)
	}
}
