package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleyhq/parley/internal/chat"
)

// HistoryConfig is the history scenario: it seeds a group of Members members with Messages
// messages and one reader with Conversations direct conversations, all through the REST API,
// then reads random pages of 50 messages at PageRate requests per second (spread over the
// members, so the per-user rate limit is not what is measured) and the reader's whole inbox at
// InboxRate, for Duration.
type HistoryConfig struct {
	API           string
	Members       int
	Messages      int
	Conversations int
	PageRate      int
	InboxRate     int
	Duration      time.Duration
	UserPrefix    string
}

// Latency summarises one kind of request.
type Latency struct {
	Requests int            `json:"requests"`
	Errors   map[string]int `json:"errors,omitempty"` // by HTTP status or error
	Rate     float64        `json:"per_sec"`
	Min      float64        `json:"min_ms"`
	P50      float64        `json:"p50_ms"`
	P90      float64        `json:"p90_ms"`
	P99      float64        `json:"p99_ms"`
	P999     float64        `json:"p99_9_ms"`
	Max      float64        `json:"max_ms"`
}

// HistoryResult is what the history scenario measured.
type HistoryResult struct {
	Messages      int     `json:"messages"`
	Conversations int     `json:"inbox_conversations"`
	Pages         Latency `json:"pages"`
	Inbox         Latency `json:"inbox"`
}

// RunHistory runs the history scenario once.
func RunHistory(ctx context.Context, d *Dialer, cfg HistoryConfig, progress io.Writer) (HistoryResult, error) {
	var res HistoryResult
	if cfg.Members < 2 || cfg.Members > 1000 || cfg.Messages < 50 || cfg.Conversations < 1 || cfg.PageRate < 0 || cfg.InboxRate < 0 {
		return res, errors.New("history: members 2-1000, messages at least 50, conversations at least 1; rates not negative (0 skips that part)")
	}
	api := newREST(d, cfg.API)
	members := make([]string, cfg.Members)
	for i := range members {
		members[i] = fmt.Sprintf("%sm%d", cfg.UserPrefix, i)
	}
	var group struct {
		ID string `json:"id"`
	}
	if _, err := api.do(ctx, "POST", "/v1/conversations", members[0], map[string]any{"kind": "group", "title": "history load", "members": members[1:]}, nil, &group); err != nil {
		return res, fmt.Errorf("create group: %w", err)
	}
	fmt.Fprintf(progress, "history: seeding %d messages from %d members\n", cfg.Messages, cfg.Members)
	if err := forEach(ctx, cfg.Messages, 32, func(i int) error {
		hdr := map[string]string{"Idempotency-Key": chat.NewConversationID().String()}
		_, err := api.do(ctx, "POST", "/v1/conversations/"+group.ID+"/messages", members[i%len(members)],
			map[string]string{"body": fmt.Sprintf("history load message %d, long enough to look like a real one", i)}, hdr, nil)
		return err
	}); err != nil {
		return res, fmt.Errorf("seed messages: %w", err)
	}
	// Wait until every message is sequenced.
	for deadline := time.Now().Add(2 * time.Minute); ; {
		var conv struct {
			LastSeq int `json:"last_seq"`
		}
		if _, err := api.do(ctx, "GET", "/v1/conversations/"+group.ID, members[0], nil, nil, &conv); err != nil {
			return res, err
		}
		if conv.LastSeq >= cfg.Messages {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return res, fmt.Errorf("only %d of %d messages sequenced after 2 minutes", conv.LastSeq, cfg.Messages)
		}
		time.Sleep(250 * time.Millisecond)
	}
	res.Messages = cfg.Messages

	reader := cfg.UserPrefix + "reader"
	fmt.Fprintf(progress, "history: seeding an inbox of %d conversations\n", cfg.Conversations)
	if err := forEach(ctx, cfg.Conversations, 32, func(i int) error {
		_, err := api.do(ctx, "POST", "/v1/conversations", fmt.Sprintf("%sp%d", cfg.UserPrefix, i), map[string]any{"kind": "direct", "with": reader}, nil, nil)
		return err
	}); err != nil {
		return res, fmt.Errorf("seed inbox: %w", err)
	}
	res.Conversations = cfg.Conversations

	fmt.Fprintf(progress, "history: %d pages/s and %d inbox listings/s for %v\n", cfg.PageRate, cfg.InboxRate, cfg.Duration)
	var (
		wg    sync.WaitGroup
		pages = newRecorder()
		inbox = newRecorder()
		next  atomic.Int64
	)
	run := func(rate int, rec *recorder, req func() (string, string)) {
		defer wg.Done()
		if rate == 0 {
			return
		}
		start := time.Now()
		_ = paced(ctx, rate, cfg.Duration, func() error {
			if rec.inFlight.Load() > 1000 {
				rec.fail("overloaded: over 1000 in flight")
				return nil
			}
			user, path := req()
			rec.inFlight.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer rec.inFlight.Add(-1)
				t0 := time.Now()
				status, err := api.do(ctx, "GET", path, user, nil, nil, nil)
				switch {
				case err != nil && status != 0:
					rec.fail(strconv.Itoa(status))
				case err != nil:
					rec.fail(err.Error())
				default:
					rec.ok(time.Since(t0))
				}
			}()
			return nil
		})
		rec.elapsed = time.Since(start)
	}
	wg.Add(2)
	go run(cfg.PageRate, pages, func() (string, string) {
		i := next.Add(1)
		before := 51 + rand.IntN(cfg.Messages-49) // 51..Messages+1: always a full page
		return members[int(i)%len(members)], fmt.Sprintf("/v1/conversations/%s/messages?before=%d&limit=50", group.ID, before)
	})
	go run(cfg.InboxRate, inbox, func() (string, string) { return reader, "/v1/conversations?limit=200" })
	wg.Wait()
	res.Pages, res.Inbox = pages.summary(), inbox.summary()
	return res, nil
}

// recorder collects the latencies and failures of one kind of request.
type recorder struct {
	mu       sync.Mutex
	lat      []int64
	errs     map[string]int
	inFlight atomic.Int64
	elapsed  time.Duration
}

func newRecorder() *recorder { return &recorder{errs: map[string]int{}} }

func (r *recorder) ok(d time.Duration) {
	r.mu.Lock()
	r.lat = append(r.lat, d.Nanoseconds())
	r.mu.Unlock()
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.lat)
}

func (r *recorder) fail(reason string) {
	r.mu.Lock()
	r.errs[reason]++
	r.mu.Unlock()
}

func (r *recorder) summary() Latency {
	r.mu.Lock()
	defer r.mu.Unlock()
	sortInt64(r.lat)
	ms := func(p float64) float64 { return float64(percentile(r.lat, p)) / 1e6 }
	l := Latency{Requests: len(r.lat), P50: ms(50), P90: ms(90), P99: ms(99), P999: ms(99.9)}
	for _, n := range r.errs {
		l.Requests += n
	}
	if len(r.errs) > 0 {
		l.Errors = r.errs
	}
	if len(r.lat) > 0 {
		l.Min, l.Max = float64(r.lat[0])/1e6, float64(r.lat[len(r.lat)-1])/1e6
	}
	if r.elapsed > 0 {
		l.Rate = float64(len(r.lat)) / r.elapsed.Seconds()
	}
	return l
}

// forEach runs fn(0..n-1) with at most par calls at once and returns the first error.
func forEach(ctx context.Context, n, par int, fn func(i int) error) error {
	var (
		wg    sync.WaitGroup
		sem   = make(chan struct{}, par)
		mu    sync.Mutex
		first error
	)
	for i := 0; i < n && ctx.Err() == nil; i++ {
		mu.Lock()
		failed := first != nil
		mu.Unlock()
		if failed {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := fn(i); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// rest calls the history REST API as any user (tokens minted from the target's secret).
type rest struct {
	d      *Dialer
	base   string
	client *http.Client
	mu     sync.Mutex
	tokens map[string]string
}

func newREST(d *Dialer, base string) *rest {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost = 512, 512
	return &rest{d: d, base: strings.TrimSuffix(base, "/"), client: &http.Client{Transport: tr, Timeout: 30 * time.Second},
		tokens: map[string]string{}}
}

func (r *rest) token(user string) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t, ok := r.tokens[user]; ok {
		return t, nil
	}
	t, err := r.d.auth.Mint(chat.UserID(user), "", 2*time.Hour)
	if err != nil {
		return "", err
	}
	r.tokens[user] = t
	return t, nil
}

// do sends one request and decodes a 2xx answer into out. A 429 or 503 is retried after its
// Retry-After (at most 5 times) when the request is part of the setup (out or body given);
// measured requests are not retried.
func (r *rest) do(ctx context.Context, method, path, user string, body any, hdr map[string]string, out any) (int, error) {
	tok, err := r.token(user)
	if err != nil {
		return 0, err
	}
	var data []byte
	if body != nil {
		data, _ = json.Marshal(body)
	}
	setup := method != "GET" || out != nil
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, method, r.base+path, bytes.NewReader(data))
		if err != nil {
			return 0, err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := r.client.Do(req)
		if err != nil {
			return 0, err
		}
		if (resp.StatusCode == 429 || resp.StatusCode == 503) && setup && attempt < 5 {
			wait, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
			resp.Body.Close()
			time.Sleep(time.Duration(max(wait, 1)) * time.Second)
			continue
		}
		defer resp.Body.Close()
		if resp.StatusCode >= 300 {
			_, _ = io.Copy(io.Discard, resp.Body)
			return resp.StatusCode, fmt.Errorf("%s %s: HTTP %d", method, path, resp.StatusCode)
		}
		if out == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			return resp.StatusCode, err
		}
		return resp.StatusCode, json.NewDecoder(resp.Body).Decode(out)
	}
}
