package loadtest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/routing"
	"github.com/parleyhq/parley/protocol"
)

// BroadcastConfig is the edge fan-out scenario: Users x Devices connections; Rate frames per
// second for Duration, each published on every user's subject as the delivery pipeline does,
// so each frame reaches every connection.
type BroadcastConfig struct {
	Users, Devices int
	Rate           int
	Duration       time.Duration
	NATSURL        string
	UserPrefix     string
}

// BroadcastResult is one run's outcome. Latency is from publish to the client reading the frame.
type BroadcastResult struct {
	Conns     int     `json:"conns"`
	Sent      int     `json:"sent"`
	Expected  int     `json:"expected"`
	Received  int     `json:"received"`
	Lost      int     `json:"lost"`
	Reordered int     `json:"reordered"`
	P50MS     float64 `json:"p50_ms"`
	P90MS     float64 `json:"p90_ms"`
	P99MS     float64 `json:"p99_ms"`
	MaxMS     float64 `json:"max_ms"`
}

// intField parses the decimal integer that follows key in data (0 if absent).
func intField(data []byte, key string) int64 {
	i := bytes.Index(data, []byte(key))
	if i < 0 {
		return 0
	}
	var n int64
	for _, c := range data[i+len(key):] {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int64(c-'0')
	}
	return n
}

// RunBroadcast runs the scenario once.
func RunBroadcast(ctx context.Context, d *Dialer, cfg BroadcastConfig, progress io.Writer) (BroadcastResult, error) {
	var res BroadcastResult
	nc, err := nats.Connect(cfg.NATSURL, nats.Name("parley-loadtest"))
	if err != nil {
		return res, fmt.Errorf("nats: %w", err)
	}
	defer nc.Close()

	type recv struct {
		lat       []int64
		last      int64
		reordered int
	}
	n := cfg.Users * cfg.Devices
	recvs := make([]*recv, n)
	conns := make([]*Conn, 0, n)
	var wg sync.WaitGroup
	defer func() {
		for _, c := range conns {
			c.WS.Close()
		}
		wg.Wait()
	}()
	for u := 0; u < cfg.Users; u++ {
		for dv := 0; dv < cfg.Devices; dv++ {
			i := u*cfg.Devices + dv
			c, err := d.Dial(ctx, i, fmt.Sprintf("%s%d", cfg.UserPrefix, u), "d"+strconv.Itoa(dv))
			if err != nil {
				return res, fmt.Errorf("connection %d: %w", i, err)
			}
			conns = append(conns, c)
			r := &recv{lat: make([]int64, 0, cfg.Rate*int(cfg.Duration.Seconds()+1))}
			recvs[i] = r
			wg.Add(1)
			go func() {
				defer wg.Done()
				// The client must not be the bottleneck: frames are read into one reused buffer
				// and only the two fields needed are picked out, without a JSON decoder.
				var buf bytes.Buffer
				for {
					_, rd, err := c.WS.NextReader()
					if err != nil {
						return
					}
					buf.Reset()
					if _, err := buf.ReadFrom(rd); err != nil {
						return
					}
					now := time.Now().UnixNano()
					data := buf.Bytes()
					if !bytes.HasPrefix(data, []byte(`{"type":"message"`)) {
						continue
					}
					seq, sent := intField(data, `"seq":`), intField(data, `"body":"`)
					r.lat = append(r.lat, now-sent)
					if seq != r.last+1 {
						r.reordered++
					}
					r.last = seq
				}
			}()
		}
	}
	res.Conns = len(conns)
	fmt.Fprintf(progress, "broadcast: %d connections (%d users x %d devices); %d frames/s for %v\n",
		res.Conns, cfg.Users, cfg.Devices, cfg.Rate, cfg.Duration)
	// Let the edge's user subscriptions settle before the first frame.
	time.Sleep(time.Second)

	subjects := make([]string, cfg.Users)
	for u := range subjects {
		subjects[u] = routing.UserSubject(chat.UserID(fmt.Sprintf("%s%d", cfg.UserPrefix, u)))
	}
	seq := int64(0)
	err = paced(ctx, cfg.Rate, cfg.Duration, func() error {
		seq++
		data, _ := protocol.Encode(protocol.Frame{Type: protocol.TypeMessage, Seq: seq,
			Conversation: "7d1f3a52-5b0e-4c1a-9a57-2f1e0c6b9d10", Body: strconv.FormatInt(time.Now().UnixNano(), 10)})
		for _, s := range subjects {
			m := nats.NewMsg(s)
			m.Header.Set(routing.HeaderFrameType, string(protocol.TypeMessage))
			m.Data = data
			if err := nc.PublishMsg(m); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	_ = nc.Flush()
	res.Sent = int(seq)
	time.Sleep(2 * time.Second) // let the last frames arrive
	for _, c := range conns {
		c.WS.Close()
	}
	wg.Wait()
	conns = nil

	var all []int64
	for _, r := range recvs {
		all = append(all, r.lat...)
		res.Reordered += r.reordered
	}
	res.Expected = res.Sent * res.Conns
	res.Received = len(all)
	res.Lost = res.Expected - res.Received
	sortInt64(all)
	ms := func(ns int64) float64 { return float64(ns) / 1e6 }
	res.P50MS, res.P90MS, res.P99MS = ms(percentile(all, 50)), ms(percentile(all, 90)), ms(percentile(all, 99))
	if len(all) > 0 {
		res.MaxMS = ms(all[len(all)-1])
	}
	return res, nil
}
