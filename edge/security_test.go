package edge

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/parleyhq/parley/internal/teststack"
	"github.com/parleyhq/parley/protocol"
)

// logBuffer collects an edge's JSON log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// records returns the log records whose msg is one of msgs.
func (b *logBuffer) records(t *testing.T, msgs ...string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if line == "" {
			continue
		}
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		for _, m := range msgs {
			if r["msg"] == m {
				out = append(out, r)
			}
		}
	}
	return out
}

// Control frames (WebSocket pings and pongs) count against the connection's frame rate like
// data frames: over it a ping is not answered, and after RateStrikes in a row the connection
// is closed with 4008.
func TestControlFrameFloodIsClosed(t *testing.T) {
	modes(t, func(t *testing.T, cfg Config) {
		cfg.FramesPerSecond, cfg.FrameBurst, cfg.RateStrikes = 5, 5, 10
		te := newTestEdge(t, cfg, nil)
		ws := te.connect("pinger", "d")
		var pongs atomic.Int64
		ws.SetPongHandler(func(string) error { pongs.Add(1); return nil })
		const pings = 2000
		start := time.Now()
		done := make(chan struct{})
		go func() {
			defer close(done)
			for range pings {
				if ws.WriteControl(websocket.PingMessage, []byte("x"), time.Now().Add(time.Second)) != nil {
					return
				}
			}
		}()
		code := closeCode(t, ws)
		elapsed := time.Since(start)
		<-done
		if code != protocol.CloseRateLimited {
			t.Fatalf("after %d pings: connection ended with %d, %d pings answered; want close 4008", pings, code, pongs.Load())
		}
		// At most the burst and the rate over the time it took were answered.
		if n, most := pongs.Load(), int64(5+5*(elapsed.Seconds()+1)); n > most {
			t.Errorf("%d pings answered in %v; want at most %d (burst 5, 5 a second)", n, elapsed, most)
		}
		if got := testutil.ToFloat64(te.s.metrics.closes.WithLabelValues("4008")); got != 1 {
			t.Errorf("closes{code=4008} = %v; want 1", got)
		}
	})
}

// want429 checks a handshake refused by a rate: 429, Retry-After in whole seconds, and the
// rate_limited code.
func want429(t *testing.T, what string, resp *http.Response, err error, maxRetry int) {
	t.Helper()
	if err == nil || status(resp) != http.StatusTooManyRequests {
		t.Fatalf("%s: status %d, err %v; want 429", what, status(resp), err)
	}
	ra, perr := strconv.Atoi(resp.Header.Get("Retry-After"))
	if perr != nil || ra < 1 || ra > maxRetry {
		t.Errorf("%s: Retry-After %q; want whole seconds in [1, %d]", what, resp.Header.Get("Retry-After"), maxRetry)
	}
	var body struct {
		Code      protocol.Code `json:"code"`
		Retryable bool          `json:"retryable"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&body)
	if body.Code != protocol.CodeRateLimited || !body.Retryable {
		t.Errorf("%s: body %+v; want code rate_limited, retryable", what, body)
	}
}

func TestHandshakeRateLimits(t *testing.T) {
	t.Run("per user", func(t *testing.T) {
		te := newTestEdge(t, Config{HandshakeRatePerUser: 0.1, HandshakeBurstPerUser: 3}, nil)
		for i := range 3 {
			te.connect("hasty", fmt.Sprint("d", i)).Close()
		}
		_, resp, err := te.dial(te.token("hasty", "d9", time.Hour), nil)
		want429(t, "4th handshake of one user", resp, err, 10)
		te.connect("calm", "d") // another user from the same address is not affected
		if got := testutil.ToFloat64(te.s.metrics.handshakes.WithLabelValues("rate_limited_user")); got != 1 {
			t.Errorf("handshakes{result=rate_limited_user} = %v; want 1", got)
		}
	})
	t.Run("per IP with different users", func(t *testing.T) {
		te := newTestEdge(t, Config{HandshakeRatePerIP: 0.1, HandshakeBurstPerIP: 3}, nil)
		for i := range 3 {
			te.connect(fmt.Sprint("u", i), "d")
		}
		_, resp, err := te.dial(te.token("u9", "d", time.Hour), nil)
		want429(t, "4th handshake from one address", resp, err, 10)
		// The address is refused before its token is read: a bad token gets 429 too, not 401.
		_, resp, err = te.dial("not-a-jwt", nil)
		want429(t, "bad token from a limited address", resp, err, 10)
		if got := testutil.ToFloat64(te.s.metrics.handshakes.WithLabelValues("rate_limited_ip")); got != 2 {
			t.Errorf("handshakes{result=rate_limited_ip} = %v; want 2", got)
		}
	})
}

// The per-key buckets stay within their bound however many keys come, and the keys kept are
// the ones used last.
func TestKeyedLimiterIsBounded(t *testing.T) {
	k := newKeyedLimiter(1, 2, 100)
	now := time.Unix(1000, 0)
	for i := range 10000 {
		if w := k.take(fmt.Sprint("10.0.", i/256, ".", i%256), now); w != 0 {
			t.Fatalf("first handshake of key %d refused (wait %v)", i, w)
		}
		k.take("busy", now) // used all along: kept, and its bucket stays empty
	}
	if n := k.len(); n != 100 {
		t.Errorf("%d keys kept; want the bound, 100", n)
	}
	if w := k.take("busy", now); w <= 0 || w > time.Second {
		t.Errorf("busy key: wait %v; want its bucket empty, refilling within 1s", w)
	}
	if w := k.take("busy", now.Add(time.Second)); w != 0 {
		t.Errorf("busy key a second later: wait %v; want a token", w)
	}
}

// A bucket that has filled up again is forgotten by prune (it decides as a new one would), so
// an edge full of idle users does not keep a bucket per user; a bucket still refilling stays.
func TestKeyedLimiterPrunesFullBuckets(t *testing.T) {
	k := newKeyedLimiter(1, 2, 100)
	now := time.Unix(1000, 0)
	k.take("once", now)
	k.take("twice", now)
	k.take("twice", now)
	k.prune(now.Add(1500 * time.Millisecond)) // once: full again; twice: 1.5 of 2 tokens
	if n := k.len(); n != 1 {
		t.Errorf("%d keys after prune; want 1 (the one still refilling)", n)
	}
	if w := k.take("twice", now.Add(1500*time.Millisecond)); w != 0 {
		t.Errorf("twice after 1.5 s: wait %v; want a token", w)
	}
	if w := k.take("twice", now.Add(1500*time.Millisecond)); w == 0 {
		t.Error("twice: a second token at once; want its bucket kept, not reset by prune")
	}
}

func TestHandshakeIPKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7":                "192.0.2.7",
		"::ffff:192.0.2.7":         "192.0.2.7",
		"2001:db8:1:2:3:4:5:6":     "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff::1":     "2001:db8:1:2::/64",
		"fe80::1%eth0":             "fe80::/64",
		"not an address":           "not an address",
		"2001:db8:1:3::1":          "2001:db8:1:3::/64",
		"[2001:db8::1]:80 (bogus)": "[2001:db8::1]:80 (bogus)",
	} {
		if got := handshakeIPKey(in); got != want {
			t.Errorf("handshakeIPKey(%q) = %q; want %q", in, got, want)
		}
	}
}

// closeSeries returns the edge's parley_edge_closes_total series by code.
func closeSeries(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "parley_edge_closes_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "code" {
					out[l.GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}

// Every close code the edge can send (docs/protocol.md) has its parley_edge_closes_total
// series from the start, and each close counts once in it, also those that gorilla sends
// itself (1002, 1009) and slow consumers cut by the write timeout.
func TestCloseCodesAreCounted(t *testing.T) {
	codes := []string{"1001", "1002", "1003", "1007", "1009", "4001", "4008", "4009", "dead"}
	t.Run("series exist before any close", func(t *testing.T) {
		te := newTestEdge(t, Config{}, nil)
		got := closeSeries(t, te.reg)
		for _, c := range codes {
			if v, ok := got[c]; !ok || v != 0 {
				t.Errorf("closes{code=%s}: present %v, value %v; want present at 0", c, ok, v)
			}
		}
	})
	connect := func(te *testEdge) *websocket.Conn { return te.connect(teststack.ID(te.t), "d") }
	cases := []struct {
		code    string
		cfg     Config
		provoke func(t *testing.T, te *testEdge)
	}{
		{"1001", Config{DrainWindow: 100 * time.Millisecond}, func(t *testing.T, te *testEdge) {
			ws := connect(te)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			done := make(chan struct{})
			go func() { _ = te.s.Shutdown(ctx); close(done) }()
			if code := closeCode(t, ws); code != protocol.CloseGoingAway {
				t.Errorf("close %d; want 1001", code)
			}
			<-done
		}},
		{"1002", Config{}, func(t *testing.T, te *testEdge) {
			ws := connect(te)
			// A text frame with RSV2 set breaks RFC 6455: gorilla answers 1002 itself.
			if _, err := ws.NetConn().Write(clientFrame(0x20|0x1, true, pingText("p"))); err != nil {
				t.Fatal(err)
			}
			if code := closeCode(t, ws); code != websocket.CloseProtocolError {
				t.Errorf("close %d; want 1002", code)
			}
		}},
		{"1003", Config{}, func(t *testing.T, te *testEdge) {
			ws := connect(te)
			_ = ws.WriteMessage(websocket.BinaryMessage, []byte("{}"))
			if code := closeCode(t, ws); code != protocol.CloseUnsupportedData {
				t.Errorf("close %d; want 1003", code)
			}
		}},
		{"1007", Config{}, func(t *testing.T, te *testEdge) {
			ws := connect(te)
			_ = ws.WriteMessage(websocket.TextMessage, []byte("\xff"))
			if code := closeCode(t, ws); code != protocol.CloseInvalidPayload {
				t.Errorf("close %d; want 1007", code)
			}
		}},
		{"1009", Config{MaxFrameBytes: 4096}, func(t *testing.T, te *testEdge) {
			ws := connect(te)
			_ = ws.WriteMessage(websocket.TextMessage, bytes.Repeat([]byte("z"), 8192))
			if code := closeCode(t, ws); code != protocol.CloseMessageTooBig {
				t.Errorf("close %d; want 1009", code)
			}
		}},
		{"4001", Config{HeartbeatInterval: 300 * time.Millisecond}, func(t *testing.T, te *testEdge) {
			ws, _, err := te.dial(te.token(teststack.ID(t), "d", 1500*time.Millisecond), nil)
			if err != nil {
				t.Fatal(err)
			}
			if code := closeCode(t, ws); code != protocol.CloseTokenExpired {
				t.Errorf("close %d; want 4001", code)
			}
		}},
		{"4008", Config{FramesPerSecond: 1, FrameBurst: 1, RateStrikes: 2}, func(t *testing.T, te *testEdge) {
			ws := connect(te)
			for range 5 {
				write(t, ws, `{"type":"ping"}`)
			}
			if code := closeCode(t, ws); code != protocol.CloseRateLimited {
				t.Errorf("close %d; want 4008", code)
			}
		}},
		{"4009", Config{QueueLen: 8, WriteTimeout: 200 * time.Millisecond}, func(t *testing.T, te *testEdge) {
			te.s.Handle(protocol.TypeSync, func(_ context.Context, c *Conn, f protocol.Frame) {
				for range 2000 {
					if !c.Send(protocol.Frame{Type: protocol.TypeMessage, Body: strings.Repeat("m", 30<<10)}) {
						return
					}
				}
			})
			ws := connect(te)
			write(t, ws, `{"type":"sync"}`) // and never read
			teststack.Eventually(t, 10*time.Second, func() bool { return te.s.connCount() == 0 })
		}},
		{"4009", Config{QueueLen: 4096, QueueBytes: 1 << 30, WriteTimeout: 200 * time.Millisecond}, func(t *testing.T, te *testEdge) {
			// The queue never fills (in frames or bytes): the client, reading nothing, is cut by
			// the write timeout.
			te.s.Handle(protocol.TypeSync, func(_ context.Context, c *Conn, f protocol.Frame) {
				for range 2000 {
					if !c.Send(protocol.Frame{Type: protocol.TypeMessage, Body: strings.Repeat("m", 30<<10)}) {
						return
					}
				}
			})
			ws := connect(te)
			write(t, ws, `{"type":"sync"}`) // and never read
			teststack.Eventually(t, 20*time.Second, func() bool { return te.s.connCount() == 0 })
			if got := testutil.ToFloat64(te.s.metrics.drops.WithLabelValues("slow_consumer")); got != 0 {
				t.Errorf("drops{slow_consumer} = %v; want 0 (the queue was not to fill)", got)
			}
		}},
		{"dead", Config{HeartbeatInterval: 300 * time.Millisecond}, func(t *testing.T, te *testEdge) {
			_, _, err := te.dial(te.token(teststack.ID(t), "d", time.Hour), nil) // never read: no pong
			if err != nil {
				t.Fatal(err)
			}
			teststack.Eventually(t, 5*time.Second, func() bool { return te.s.connCount() == 0 })
		}},
	}
	for _, tc := range cases {
		t.Run(tc.code, func(t *testing.T) {
			modes(t, func(t *testing.T, mode Config) {
				cfg := tc.cfg
				cfg.GoroutineReads = mode.GoroutineReads
				te := newTestEdge(t, cfg, nil)
				tc.provoke(t, te)
				ok := teststack.Eventually(t, 5*time.Second, func() bool { return closeSeries(t, te.reg)[tc.code] == 1 })
				if !ok {
					t.Errorf("closes{code=%s} = %v; want 1 (all series: %v)", tc.code, closeSeries(t, te.reg)[tc.code], closeSeries(t, te.reg))
				}
			})
		})
	}
	t.Run("client closes count nothing", func(t *testing.T) {
		modes(t, func(t *testing.T, cfg Config) {
			te := newTestEdge(t, cfg, nil)
			ws := connect(te)
			_ = ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"))
			closeCode(t, ws)
			connect(te).NetConn().Close() // gone without a close frame
			teststack.Eventually(t, 5*time.Second, func() bool { return te.s.connCount() == 0 })
			for code, v := range closeSeries(t, te.reg) {
				if v != 0 {
					t.Errorf("closes{code=%s} = %v after the clients closed; want 0", code, v)
				}
			}
		})
	})
}

// Refused handshakes are security events: logged at info with the reason, never the token.
func TestRefusedHandshakesAreLogged(t *testing.T) {
	te := newTestEdge(t, Config{AllowedOrigins: []string{"https://app.example.com"}}, nil)
	now := time.Now()
	sign := func(key []byte, exp time.Time) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{Subject: "alice", ExpiresAt: jwt.NewNumericDate(exp)}).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	wrongKey := sign([]byte("another-secret-0123456789abcdef!"), now.Add(time.Hour))
	expired := sign(testSecret, now.Add(-time.Minute))
	good := te.token("alice", "d", time.Hour)
	for _, tok := range []string{wrongKey, expired} {
		if _, resp, err := te.dial(tok, nil); err == nil || status(resp) != http.StatusUnauthorized {
			t.Fatalf("bad token: status %d; want 401", status(resp))
		}
	}
	if _, resp, err := te.dial(good, http.Header{"Origin": {"https://evil.example.com"}}); err == nil || status(resp) != http.StatusForbidden {
		t.Fatalf("bad origin: status %d; want 403", status(resp))
	}
	want := []struct{ kind, reason, code string }{
		{eventHandshakeRefused, "unauthorized", string(protocol.CodeUnauthorized)},
		{eventHandshakeRefused, "unauthorized", string(protocol.CodeTokenExpired)},
		{eventOriginRefused, "forbidden_origin", string(protocol.CodeForbidden)},
	}
	recs := te.logs.records(t, "security event")
	if len(recs) != len(want) {
		t.Fatalf("%d security event records; want %d. Log:\n%s", len(recs), len(want), te.logs)
	}
	for i, w := range want {
		r := recs[i]
		if r["level"] != "INFO" || r["kind"] != w.kind || r["reason"] != w.reason || r["code"] != w.code || r["remote"] != "127.0.0.1" {
			t.Errorf("record %d = %v; want level INFO, kind %s, reason %s, code %s, remote 127.0.0.1", i, r, w.kind, w.reason, w.code)
		}
	}
	if e, _ := recs[0]["error"].(string); !strings.Contains(e, "signature") {
		t.Errorf("wrong-key record's error %q does not say why (signature)", e)
	}
	if o := recs[2]["origin"]; o != "https://evil.example.com" {
		t.Errorf("origin record names origin %v; want https://evil.example.com", o)
	}
	log := te.logs.String()
	for _, tok := range []string{wrongKey, expired, good} {
		for _, part := range strings.Split(tok, ".") {
			if strings.Contains(log, part) {
				t.Errorf("the log contains part of a token (%.20s...)", part)
			}
		}
	}
}

// A flood of refused handshakes logs a bounded number of records: every refusal is either
// logged or counted in a later record's suppressed attribute.
func TestRefusedHandshakeFloodLogsBounded(t *testing.T) {
	const perSecond, n = 5, 200
	te := newTestEdge(t, Config{SecurityLogPerSecond: perSecond}, nil)
	start := time.Now()
	for range n {
		if _, resp, err := te.dial("not-a-jwt", nil); err == nil || status(resp) != http.StatusUnauthorized {
			t.Fatalf("status %d; want 401", status(resp))
		}
	}
	count := func() (records, events int) {
		for _, r := range te.logs.records(t, "security event", "security events suppressed") {
			if r["kind"] != eventHandshakeRefused {
				continue
			}
			records++
			if r["msg"] == "security event" {
				events++
			}
			if s, ok := r["suppressed"].(float64); ok {
				events += int(s)
			}
		}
		return records, events
	}
	// The sweeper reports the suppressed count once the budget allows a record again.
	teststack.Eventually(t, 10*time.Second, func() bool { _, e := count(); return e == n })
	records, events := count()
	if events != n {
		t.Fatalf("%d refused handshakes accounted for in the log (logged or suppressed); want %d. Log:\n%.3000s", events, n, te.logs)
	}
	// Within the kind's budget: a burst of perSecond, then perSecond a second.
	if most := perSecond + int(perSecond*(time.Since(start).Seconds()+1)); records > most {
		t.Errorf("%d records for %d refusals; want at most %d", records, n, most)
	}
	if records >= n/2 {
		t.Errorf("%d records for %d refusals; want far fewer", records, n)
	}
}
