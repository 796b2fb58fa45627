package loadtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/protocol"
)

// ChatConfig is the chat scenario: Users users, paired into direct conversations (user 2k with
// 2k+1), one device each, sending Rate messages per second in total for Duration through the
// WebSocket. Conversations are created through the REST API at API.
type ChatConfig struct {
	Users      int
	Rate       int
	Duration   time.Duration
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
	// Undelivered are expected deliveries not seen within 10 s after the run: lost, or late.
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

	var (
		mu        sync.Mutex
		sentAt    = map[string]time.Time{} // client_msg_id -> send time
		accepted  []int64
		delivered []int64
		lastSeq   = map[string]int64{} // user/conversation -> last seq seen
		seenSeq   = map[string]bool{}  // user/conversation/seq
		readers   sync.WaitGroup
	)
	for _, c := range conns {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				_, data, err := c.ws.ReadMessage()
				if err != nil {
					return
				}
				now := time.Now()
				var f protocol.Frame
				if json.Unmarshal(data, &f) != nil {
					continue
				}
				mu.Lock()
				switch f.Type {
				case protocol.TypeAccepted:
					if t, ok := sentAt[f.ClientMsgID]; ok {
						accepted = append(accepted, now.Sub(t).Nanoseconds())
						res.Accepted++
					}
				case protocol.TypeError:
					res.Errors++
				case protocol.TypeMessage:
					t, ok := sentAt[f.ClientMsgID]
					if !ok {
						res.Phantom++
						break
					}
					key := c.user + "/" + f.Conversation
					seqKey := fmt.Sprintf("%s/%d", key, f.Seq)
					switch {
					case seenSeq[seqKey]:
						res.Duplicated++
					case f.Seq != lastSeq[key]+1:
						res.Reordered++
					}
					seenSeq[seqKey] = true
					if f.Seq > lastSeq[key] {
						lastSeq[key] = f.Seq
					}
					delivered = append(delivered, now.Sub(t).Nanoseconds())
					res.Delivered++
				}
				mu.Unlock()
			}
		}()
	}

	start := time.Now()
	next := 0
	err := paced(ctx, cfg.Rate, cfg.Duration, func() error {
		c := conns[next%len(conns)]
		next++
		cmid := chat.NewConversationID().String() // any random UUID
		mu.Lock()
		sentAt[cmid] = time.Now()
		res.Sent++
		mu.Unlock()
		c.mu.Lock()
		defer c.mu.Unlock()
		if err := c.ws.WriteJSON(protocol.Frame{Type: protocol.TypeSend, ID: cmid[:8], Conversation: c.conv, ClientMsgID: cmid, Body: "load test message"}); err != nil {
			return fmt.Errorf("send: %w", err)
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	elapsed := time.Since(start)
	// Wait for stragglers: until every accepted message reached both members, or 10s.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		done := res.Delivered >= 2*res.Accepted && res.Accepted+res.Errors >= res.Sent
		mu.Unlock()
		if done {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, c := range conns {
		c.ws.Close()
	}
	readers.Wait()
	conns = nil

	res.Expected = 2 * res.Accepted // both members' devices, the sender's included
	res.Undelivered = max(0, res.Expected-(res.Delivered-res.Duplicated))
	res.Throughput = float64(res.Accepted) / elapsed.Seconds()
	ms := func(v []int64, p float64) float64 { return float64(percentile(v, p)) / 1e6 }
	sortInt64(accepted)
	sortInt64(delivered)
	res.AcceptedP50, res.AcceptedP99 = ms(accepted, 50), ms(accepted, 99)
	res.DeliveredP50, res.DeliveredP99 = ms(delivered, 50), ms(delivered, 99)
	if len(accepted) > 0 {
		res.AcceptedMax = float64(accepted[len(accepted)-1]) / 1e6
	}
	if len(delivered) > 0 {
		res.DeliveredMax = float64(delivered[len(delivered)-1]) / 1e6
	}
	return res, nil
}
