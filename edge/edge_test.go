package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/routing"
	"github.com/parleyhq/parley/internal/teststack"
	"github.com/parleyhq/parley/protocol"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var testSecret = []byte("edge-test-secret-0123456789abcdef")

type testEdge struct {
	t    *testing.T
	s    *Server
	hs   *httptest.Server
	auth *auth.Authority
	reg  *prometheus.Registry
	url  string
	logs *logBuffer // the edge's log, JSON lines at debug level and above
}

// newTestEdge serves an edge on loopback; nc may be nil (no live routing).
func newTestEdge(t *testing.T, cfg Config, nc *nats.Conn) *testEdge {
	t.Helper()
	return newTestEdgeLeeway(t, cfg, nc, time.Millisecond)
}

// newTestEdgeLeeway is newTestEdge with the token verifier's clock-skew leeway.
func newTestEdgeLeeway(t *testing.T, cfg Config, nc *nats.Conn, leeway time.Duration) *testEdge {
	t.Helper()
	return newTestEdgeSetup(t, cfg, nc, leeway, nil)
}

// newTestEdgeSetup is newTestEdgeLeeway with setup (if not nil) run on the server before it
// runs and serves.
func newTestEdgeSetup(t *testing.T, cfg Config, nc *nats.Conn, leeway time.Duration, setup func(*Server)) *testEdge {
	t.Helper()
	a, err := auth.New(auth.Config{HS256Secret: testSecret, Leeway: leeway}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = time.Minute
	}
	cfg.AllowNoOrigin = true
	reg := prometheus.NewRegistry()
	logs := &logBuffer{}
	s, err := New(cfg, a, nc, reg, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { _ = s.Run(ctx); close(runDone) }()
	mux := http.NewServeMux()
	mux.Handle(protocol.Path, s)
	hs := httptest.NewUnstartedServer(mux)
	hs.Listener = Listener(hs.Listener)
	hs.Config.MaxHeaderBytes = MaxHeaderBytes
	hs.Config.ConnContext = ConnContext
	hs.Start()
	te := &testEdge{t: t, s: s, hs: hs, auth: a, reg: reg, logs: logs, url: "ws" + strings.TrimPrefix(hs.URL, "http") + protocol.Path}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		s.cfg.DrainWindow = 0
		_ = s.Shutdown(sctx)
		cancel()
		<-runDone
		hs.Close()
	})
	return te
}

func (te *testEdge) token(user, device string, ttl time.Duration) string {
	tok, err := te.auth.Mint(chat.UserID(user), chat.DeviceID(device), ttl)
	if err != nil {
		te.t.Fatal(err)
	}
	return tok
}

// dial connects with a bearer token and the Parley subprotocol.
func (te *testEdge) dial(token string, hdr http.Header) (*websocket.Conn, *http.Response, error) {
	if hdr == nil {
		hdr = http.Header{}
	}
	if token != "" {
		hdr.Set("Authorization", "Bearer "+token)
	}
	d := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}, HandshakeTimeout: 5 * time.Second}
	ws, resp, err := d.Dial(te.url, hdr)
	if ws != nil {
		te.t.Cleanup(func() { ws.Close() })
	}
	return ws, resp, err
}

// connect dials as user/device and reads hello.
func (te *testEdge) connect(user, device string) *websocket.Conn {
	te.t.Helper()
	ws, resp, err := te.dial(te.token(user, device, time.Hour), nil)
	if err != nil {
		te.t.Fatalf("dial: %v (status %v)", err, status(resp))
	}
	if f := readFrame(te.t, ws); f.Type != protocol.TypeHello {
		te.t.Fatalf("first frame %+v; want hello", f)
	}
	return ws
}

func status(resp *http.Response) int {
	if resp == nil {
		return 0
	}
	return resp.StatusCode
}

func readFrame(t *testing.T, ws *websocket.Conn) protocol.Frame {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	mt, data, err := ws.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if mt != websocket.TextMessage {
		t.Fatalf("message type %d; want text", mt)
	}
	var f protocol.Frame
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatalf("frame %q: %v", data, err)
	}
	return f
}

func write(t *testing.T, ws *websocket.Conn, s string) {
	t.Helper()
	if err := ws.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// closeCode reads until the connection ends and returns the close code (1006 when the
// connection ended without a close frame).
func closeCode(t *testing.T, ws *websocket.Conn) int {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, _, err := ws.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code
		}
		return websocket.CloseAbnormalClosure
	}
}

func TestHelloAndPing(t *testing.T) {
	te := newTestEdge(t, Config{}, nil)
	ws, resp, err := te.dial(te.token("alice", "phone", time.Hour), nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != protocol.Subprotocol {
		t.Errorf("selected subprotocol %q; want %q", got, protocol.Subprotocol)
	}
	hello := readFrame(t, ws)
	if hello.Type != protocol.TypeHello || hello.User != "alice" || hello.Device != "phone" ||
		hello.Version != protocol.Version || hello.Session == "" || hello.Limits == nil ||
		hello.Limits.MaxFrameBytes != DefaultMaxFrameBytes || hello.HeartbeatMS == 0 {
		t.Fatalf("hello = %+v", hello)
	}
	write(t, ws, `{"type":"ping","id":"p1"}`)
	if f := readFrame(t, ws); f.Type != protocol.TypePong || f.ID != "p1" || f.TS == 0 {
		t.Errorf("reply to ping = %+v; want pong p1", f)
	}
}

func TestTokenInSubprotocolAndDeviceInQuery(t *testing.T) {
	te := newTestEdge(t, Config{}, nil)
	d := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol, protocol.TokenSubprotocolPrefix + te.token("bob", "", time.Hour)}}
	ws, resp, err := d.Dial(te.url+"?device=web", nil)
	if err != nil {
		t.Fatalf("dial with token subprotocol: %v (%d)", err, status(resp))
	}
	defer ws.Close()
	if resp.Header.Get("Sec-WebSocket-Protocol") != protocol.Subprotocol {
		t.Errorf("server selected %q; it must never echo the token", resp.Header.Get("Sec-WebSocket-Protocol"))
	}
	if f := readFrame(t, ws); f.Device != "web" || f.User != "bob" {
		t.Errorf("hello = %+v; want bob on device web", f)
	}
}

// Every refused handshake gets its status and a JSON error body, and no upgrade.
func TestHandshakeRejections(t *testing.T) {
	te := newTestEdge(t, Config{AllowedOrigins: []string{"https://app.example.com"}}, nil)
	now := time.Now()
	sign := func(m jwt.SigningMethod, key any, c jwt.Claims) string {
		s, err := jwt.NewWithClaims(m, c).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	claims := jwt.RegisteredClaims{Subject: "alice", ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour))}
	expired := sign(jwt.SigningMethodHS256, testSecret, jwt.RegisteredClaims{Subject: "alice", ExpiresAt: jwt.NewNumericDate(now.Add(-time.Minute))})
	hdr := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	tests := []struct {
		name   string
		token  string
		hdr    http.Header
		status int
		code   protocol.Code
	}{
		{"no token", "", nil, http.StatusUnauthorized, protocol.CodeUnauthorized},
		{"garbage token", "not-a-jwt", nil, http.StatusUnauthorized, protocol.CodeUnauthorized},
		{"wrong key", sign(jwt.SigningMethodHS256, []byte("another-secret-0123456789abcdef!"), claims), nil, http.StatusUnauthorized, protocol.CodeUnauthorized},
		{"alg none", sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims), nil, http.StatusUnauthorized, protocol.CodeUnauthorized},
		{"expired", expired, nil, http.StatusUnauthorized, protocol.CodeTokenExpired},
		{"no device", te.token("alice", "", time.Hour), nil, http.StatusBadRequest, protocol.CodeBadRequest},
		{"token over 8 KiB", strings.Repeat("a", 9000), nil, http.StatusUnauthorized, protocol.CodeUnauthorized},
		{"origin not allowed", te.token("alice", "d", time.Hour), hdr("Origin", "https://evil.example.com"), http.StatusForbidden, protocol.CodeForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ws, resp, err := te.dial(tt.token, tt.hdr)
			if err == nil {
				ws.Close()
				t.Fatal("handshake succeeded")
			}
			if status(resp) != tt.status {
				t.Fatalf("status %d; want %d", status(resp), tt.status)
			}
			var body struct {
				Code protocol.Code `json:"code"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&body)
			if body.Code != tt.code {
				t.Errorf("error code %q; want %q", body.Code, tt.code)
			}
		})
	}
	// An allowed browser origin connects.
	if ws, resp, err := te.dial(te.token("alice", "d", time.Hour), hdr("Origin", "https://app.example.com")); err != nil {
		t.Errorf("allowed origin refused: %v (%d)", err, status(resp))
	} else {
		ws.Close()
	}
	// A huge Authorization header is refused by the HTTP server before any parsing (431).
	_, resp, err := te.dial("", hdr("Authorization", "Bearer "+strings.Repeat("x", 64<<10)))
	if err == nil || status(resp) != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("64 KiB Authorization header: status %d, err %v; want 431", status(resp), err)
	}
	// Without Parley's subprotocol the handshake is refused.
	d := websocket.Dialer{}
	if _, resp, err := d.Dial(te.url, hdr("Authorization", "Bearer "+te.token("alice", "d", time.Hour))); err == nil || status(resp) != http.StatusBadRequest {
		t.Errorf("no subprotocol: status %d; want 400", status(resp))
	}
	if got := testutil.ToFloat64(te.s.metrics.handshakes.WithLabelValues("unauthorized")); got < 5 {
		t.Errorf("handshakes{result=unauthorized} = %v; want at least 5", got)
	}
}

func TestNoOriginRefusedUnlessAllowed(t *testing.T) {
	a, _ := auth.New(auth.Config{HS256Secret: testSecret}, nil)
	s, err := New(Config{}, a, nil, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodGet, protocol.Path, nil)
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	if rec.Code != http.StatusForbidden {
		t.Errorf("no Origin with AllowNoOrigin false: status %d; want 403", rec.Code)
	}
}

// Bad frames on a live connection: the connection is kept, with an error frame naming the
// request, for malformed JSON, unknown types, server-only types and invalid fields.
func TestBadFramesKeepTheConnection(t *testing.T) {
	te := newTestEdge(t, Config{}, nil)
	ws := te.connect("alice", "phone")
	cases := []struct {
		frame string
		id    string
		code  protocol.Code
	}{
		{`{"type":"ping","id":"x1"`, "", protocol.CodeBadRequest},
		{`nonsense`, "", protocol.CodeBadRequest},
		{`{"type":"shout","id":"x2"}`, "x2", protocol.CodeUnknownType},
		{`{"type":"hello","id":"x3"}`, "x3", protocol.CodeUnknownType},
		{`{"type":"ack","id":"x4","conversation":"nope","seq":1}`, "x4", protocol.CodeBadRequest},
		{`{"type":"send","id":"x5","conversation":"7d1f3a52-5b0e-4c1a-9a57-2f1e0c6b9d10","client_msg_id":"0b8e4f1c-3d2a-4e6b-8c9d-1a2b3c4d5e6f","body":"` + strings.Repeat("b", DefaultMaxBodyBytes+1) + `"}`, "x5", protocol.CodeBodyTooLarge},
		{`{"type":"sync","id":"x6"}`, "x6", protocol.CodeUnsupported},
		// Strict JSON: a duplicate key, or a key in another case than the field's, is refused
		// (it used to be read as the last "type", matched case-insensitively: a ping).
		{`{"type":"send","id":"x7","type":"ping"}`, "x7", protocol.CodeBadRequest},
		{`{"type":"send","id":"x8","TYPE":"ping"}`, "x8", protocol.CodeBadRequest},
		{`{"Type":"ping","id":"x9"}`, "x9", protocol.CodeBadRequest},
	}
	for _, c := range cases {
		write(t, ws, c.frame)
		f := readFrame(t, ws)
		if f.Type != protocol.TypeError || f.Code != c.code || f.ID != c.id || f.Message == "" {
			t.Errorf("after %.60s: got %+v; want error %s for id %q", c.frame, f, c.code, c.id)
		}
	}
	write(t, ws, `{"type":"ping","id":"still-here"}`)
	if f := readFrame(t, ws); f.Type != protocol.TypePong || f.ID != "still-here" {
		t.Errorf("connection not usable after bad frames: %+v", f)
	}
}

func TestProtocolViolationsClose(t *testing.T) {
	te := newTestEdge(t, Config{MaxFrameBytes: 4096}, nil)
	t.Run("invalid UTF-8 closes 1007", func(t *testing.T) {
		ws := te.connect("u1", "d")
		if err := ws.WriteMessage(websocket.TextMessage, []byte("{\"type\":\"ping\",\"id\":\"\xff\xfe\"}")); err != nil {
			t.Fatal(err)
		}
		if code := closeCode(t, ws); code != protocol.CloseInvalidPayload {
			t.Errorf("close code %d; want 1007", code)
		}
	})
	t.Run("binary frame closes 1003", func(t *testing.T) {
		ws := te.connect("u2", "d")
		if err := ws.WriteMessage(websocket.BinaryMessage, []byte(`{"type":"ping"}`)); err != nil {
			t.Fatal(err)
		}
		if code := closeCode(t, ws); code != protocol.CloseUnsupportedData {
			t.Errorf("close code %d; want 1003", code)
		}
	})
	t.Run("oversize frame closes 1009", func(t *testing.T) {
		ws := te.connect("u3", "d")
		// The server refuses on the frame header's length, before reading the payload.
		_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"ping","id":"`+strings.Repeat("z", 1<<20)+`"}`))
		if code := closeCode(t, ws); code != protocol.CloseMessageTooBig {
			t.Errorf("close code %d; want 1009", code)
		}
	})
}

func TestFloodIsRateLimitedThenClosed(t *testing.T) {
	te := newTestEdge(t, Config{FramesPerSecond: 5, FrameBurst: 5, RateStrikes: 10}, nil)
	ws := te.connect("flooder", "d")
	limited := 0
	go func() {
		for i := 0; i < 200; i++ {
			if ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"ping","id":"f"}`)) != nil {
				return
			}
		}
	}()
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != protocol.CloseRateLimited {
				t.Fatalf("connection ended with %v; want close 4008", err)
			}
			break
		}
		var f protocol.Frame
		_ = json.Unmarshal(data, &f)
		if f.Type == protocol.TypeError && f.Code == protocol.CodeRateLimited {
			limited++
			if !f.Retryable || f.RetryAfterMS <= 0 || f.ID != "f" {
				t.Errorf("rate_limited frame %+v; want retryable with retry_after_ms and the id", f)
			}
		}
	}
	if limited != 10 {
		t.Errorf("%d rate_limited errors before the close; want exactly RateStrikes = 10", limited)
	}
}

// A client that never reads: its queue stays bounded, and it is closed as a slow consumer.
func TestNeverReadingClientIsClosedAsSlowConsumer(t *testing.T) {
	te := newTestEdge(t, Config{QueueLen: 8, WriteTimeout: 200 * time.Millisecond}, nil)
	big := strings.Repeat("m", 30<<10)
	te.s.Handle(protocol.TypeSync, func(_ context.Context, c *Conn, f protocol.Frame) {
		for i := 0; i < 2000; i++ {
			if !c.Send(protocol.Frame{Type: protocol.TypeMessage, Body: big}) {
				return
			}
		}
	})
	ws := te.connect("sleepy", "d")
	write(t, ws, `{"type":"sync","id":"s"}`) // and never read again
	ok := teststack.Eventually(t, 10*time.Second, func() bool {
		return testutil.ToFloat64(te.s.metrics.drops.WithLabelValues("slow_consumer")) == 1 && te.s.connCount() == 0
	})
	if !ok {
		t.Fatalf("slow consumer not closed: drops %v, connections %d",
			testutil.ToFloat64(te.s.metrics.drops.WithLabelValues("slow_consumer")), te.s.connCount())
	}
}

func TestConnectionLimits(t *testing.T) {
	t.Run("per user 429", func(t *testing.T) {
		te := newTestEdge(t, Config{MaxConnsPerUser: 2}, nil)
		te.connect("carol", "a")
		te.connect("carol", "b")
		_, resp, err := te.dial(te.token("carol", "c", time.Hour), nil)
		if err == nil || status(resp) != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
			t.Errorf("third connection: status %d; want 429 with Retry-After", status(resp))
		}
		te.connect("dave", "a") // other users are not affected
	})
	t.Run("per IP 429", func(t *testing.T) {
		te := newTestEdge(t, Config{MaxConnsPerIP: 2}, nil)
		te.connect("u1", "a")
		te.connect("u2", "a")
		if _, resp, err := te.dial(te.token("u3", "a", time.Hour), nil); err == nil || status(resp) != http.StatusTooManyRequests {
			t.Errorf("third connection from one IP: status %d; want 429", status(resp))
		}
	})
	t.Run("edge full 503", func(t *testing.T) {
		te := newTestEdge(t, Config{MaxConns: 2}, nil)
		te.connect("u1", "a")
		ws := te.connect("u2", "a")
		_, resp, err := te.dial(te.token("u3", "a", time.Hour), nil)
		if err == nil || status(resp) != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Errorf("connection over MaxConns: status %d; want 503 with Retry-After", status(resp))
		}
		// A freed slot is usable again.
		ws.Close()
		if !teststack.Eventually(t, 5*time.Second, func() bool { return te.s.connCount() == 1 }) {
			t.Fatal("closed connection not released")
		}
		te.connect("u3", "a")
	})
}

func TestAuthRefreshAndExpiry(t *testing.T) {
	te := newTestEdge(t, Config{HeartbeatInterval: 500 * time.Millisecond}, nil)
	ws, _, err := te.dial(te.token("erin", "p", 2*time.Second), nil)
	if err != nil {
		t.Fatal(err)
	}
	readFrame(t, ws)
	write(t, ws, `{"type":"auth.refresh","id":"r1","token":"`+te.token("mallory", "p", time.Hour)+`"}`)
	if f := readFrame(t, ws); f.Code != protocol.CodeForbidden || f.ID != "r1" {
		t.Errorf("refresh with another user's token: %+v; want forbidden", f)
	}
	write(t, ws, `{"type":"auth.refresh","id":"r2","token":"garbage"}`)
	if f := readFrame(t, ws); f.Code != protocol.CodeUnauthorized {
		t.Errorf("refresh with a bad token: %+v; want unauthorized", f)
	}
	// The connection with a refreshed token outlives the first token.
	ws2, _, err := te.dial(te.token("erin", "q", 2*time.Second), nil)
	if err != nil {
		t.Fatal(err)
	}
	readFrame(t, ws2)
	write(t, ws2, `{"type":"auth.refresh","id":"r3","token":"`+te.token("erin", "", time.Hour)+`"}`)
	if f := readFrame(t, ws2); f.Type != protocol.TypeOK || f.ID != "r3" || f.ExpiresAt < time.Now().Add(30*time.Minute).UnixMilli() {
		t.Errorf("good refresh: %+v; want ok with the new expiry", f)
	}
	// Keep reading ws2 (which answers the server's pings) while waiting for ws to expire.
	frames2 := make(chan protocol.Frame, 16)
	_ = ws2.SetReadDeadline(time.Now().Add(20 * time.Second))
	go func() {
		defer close(frames2)
		for {
			_, data, err := ws2.ReadMessage()
			if err != nil {
				return
			}
			var f protocol.Frame
			_ = json.Unmarshal(data, &f)
			frames2 <- f
		}
	}()
	// The unrefreshed connection is told and closed with 4001 once its token expires.
	var sawError bool
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != protocol.CloseTokenExpired {
				t.Fatalf("expired connection ended with %v; want close 4001", err)
			}
			break
		}
		sawError = sawError || strings.Contains(string(data), `"token_expired"`)
	}
	if !sawError {
		t.Error("no token_expired error frame before the close")
	}
	write(t, ws2, `{"type":"ping","id":"alive"}`)
	for f := range frames2 {
		if f.Type == protocol.TypePong && f.ID == "alive" {
			return
		}
	}
	t.Error("refreshed connection ended after the first token's expiry")
}

// A client that answers no ping is closed after two heartbeat intervals.
func TestSilentClientIsClosed(t *testing.T) {
	te := newTestEdge(t, Config{HeartbeatInterval: 300 * time.Millisecond}, nil)
	ws, _, err := te.dial(te.token("ghost", "d", time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = ws // never read: pings are never answered
	if !teststack.Eventually(t, 5*time.Second, func() bool { return te.s.connCount() == 0 }) {
		t.Fatal("silent connection still open")
	}
	if got := testutil.ToFloat64(te.s.metrics.closes.WithLabelValues("dead")); got != 1 {
		t.Errorf("closes{code=dead} = %v; want 1", got)
	}
}

func TestShutdownSendsReconnectThenCloses(t *testing.T) {
	te := newTestEdge(t, Config{DrainWindow: 300 * time.Millisecond}, nil)
	ws := te.connect("frank", "d")
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- te.s.Shutdown(ctx)
	}()
	f := readFrame(t, ws)
	if f.Type != protocol.TypeReconnect || f.Reason != "draining" || f.AfterMS < 0 || f.AfterMS > 300 {
		t.Errorf("drain frame %+v; want reconnect within the 300ms window", f)
	}
	if code := closeCode(t, ws); code != protocol.CloseGoingAway {
		t.Errorf("close code %d; want 1001", code)
	}
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if _, resp, err := te.dial(te.token("late", "d", time.Hour), nil); err == nil || status(resp) != http.StatusServiceUnavailable {
		t.Errorf("handshake while draining: %d; want 503", status(resp))
	}
}

// Frames published on a user's subject reach every device of that user on this edge, and the
// subscription goes away with the user's last connection.
func TestRoutingToAllDevicesOverNATS(t *testing.T) {
	n := teststack.NATS(t)
	te := newTestEdge(t, Config{}, n.Conn)
	user := teststack.ID(t)
	phone := te.connect(user, "phone")
	laptop := te.connect(user, "laptop")
	other := te.connect(user+"x", "phone")

	msg := nats.NewMsg(routing.UserSubject(chat.UserID(user)))
	msg.Header.Set(routing.HeaderFrameType, string(protocol.TypeMessage))
	msg.Data = []byte(`{"type":"message","conversation":"7d1f3a52-5b0e-4c1a-9a57-2f1e0c6b9d10","seq":1,"body":"hi"}`)
	// The subscriptions are made when the connections register; publish until both see it.
	if err := n.Conn.FlushTimeout(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := n.Conn.PublishMsg(msg); err != nil {
		t.Fatal(err)
	}
	for name, ws := range map[string]*websocket.Conn{"phone": phone, "laptop": laptop} {
		if f := readFrame(t, ws); f.Type != protocol.TypeMessage || f.Body != "hi" {
			t.Errorf("%s got %+v; want the message", name, f)
		}
	}
	write(t, other, `{"type":"ping","id":"o"}`)
	if f := readFrame(t, other); f.Type != protocol.TypePong {
		t.Errorf("another user received %+v; want only its pong", f)
	}
	phone.Close()
	laptop.Close()
	if !teststack.Eventually(t, 5*time.Second, func() bool {
		te.s.mu.Lock()
		defer te.s.mu.Unlock()
		return te.s.users[chat.UserID(user)] == nil
	}) {
		t.Error("user entry (and its subscription) kept after the last connection closed")
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	for name, c := range map[string]Config{
		"tiny frames":   {MaxFrameBytes: 10},
		"body > frame":  {MaxFrameBytes: 4096, MaxBodyBytes: 8192},
		"queue":         {QueueLen: 1},
		"origin":        {AllowedOrigins: []string{"example.com"}},
		"heartbeat":     {HeartbeatInterval: time.Millisecond},
		"negative rate": {FramesPerSecond: -1},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// A frame published for a user from any NATS connection as soon as the user's client has hello
// reaches it: the subscription is confirmed by the NATS server before hello is sent, so
// nothing falls between the client's first sync and live push.
func TestSubscribedBeforeHello(t *testing.T) {
	pub := teststack.NATS(t) // a connection of its own, like the delivery pipeline's
	te := newTestEdge(t, Config{}, teststack.NATS(t).Conn)
	for i := range 30 {
		user := fmt.Sprintf("%s-%d", teststack.ID(t), i)
		ws := te.connect(user, "phone")
		msg := nats.NewMsg(routing.UserSubject(chat.UserID(user)))
		msg.Header.Set(routing.HeaderFrameType, string(protocol.TypeMessage))
		msg.Data = []byte(`{"type":"message","conversation":"7d1f3a52-5b0e-4c1a-9a57-2f1e0c6b9d10","seq":1,"body":"first"}`)
		if err := pub.Conn.PublishMsg(msg); err != nil {
			t.Fatal(err)
		}
		if f := readFrame(t, ws); f.Type != protocol.TypeMessage || f.Body != "first" {
			t.Fatalf("connection %d got %+v; want the message published right after its hello", i, f)
		}
	}
}

// A connection whose token expires is closed with 4001 once exp plus the verifier's leeway
// has passed (the handshake accepts the token until then), and within one heartbeat
// interval (the sweep interval) after that: docs/protocol.md section 4.
func TestExpiryClosesAfterLeewayWithinOneSweep(t *testing.T) {
	const leeway, hb, tolerance = 2 * time.Second, time.Second, 500 * time.Millisecond
	te := newTestEdgeLeeway(t, Config{HeartbeatInterval: hb}, nil, leeway)
	ws, _, err := te.dial(te.token("fay", "d", time.Second), nil)
	if err != nil {
		t.Fatal(err)
	}
	hello := readFrame(t, ws)
	if hello.Type != protocol.TypeHello || hello.ExpiresAt == 0 {
		t.Fatalf("first frame %+v; want hello with expires_at", hello)
	}
	closeAt := time.UnixMilli(hello.ExpiresAt).Add(leeway)
	_ = ws.SetReadDeadline(closeAt.Add(hb + 5*time.Second))
	go func() { // answer the server's pings: the connection must not be closed as silent
		for {
			if err := ws.WriteJSON(protocol.Frame{Type: protocol.TypePing, ID: "p"}); err != nil {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	for {
		_, _, err := ws.ReadMessage()
		if err == nil {
			continue
		}
		got := time.Now()
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != protocol.CloseTokenExpired {
			t.Fatalf("connection ended with %v; want close 4001", err)
		}
		if got.Before(closeAt) {
			t.Errorf("closed %v before exp + leeway (%v); the handshake would still accept this token", closeAt.Sub(got), leeway)
		}
		if late := got.Sub(closeAt); late > hb+tolerance {
			t.Errorf("closed %v after exp + leeway; want within one sweep interval (%v)", late, hb)
		}
		return
	}
}

// fakeRevocations revokes every token whose jti is in the set (a unit test of the edge's
// side; internal/revocation has the store's own tests against NATS).
type fakeRevocations struct {
	mu   sync.Mutex
	jtis map[string]bool
}

func (f *fakeRevocations) Revoked(id auth.Identity, _ chat.DeviceID) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.jtis[id.TokenID]
}

// A revoked token is refused at the handshake (401 token_revoked) and in auth.refresh, and
// Revoke closes the connections it names with 4003, leaving the others open.
func TestRevokedTokens(t *testing.T) {
	te := newTestEdge(t, Config{}, nil)
	revs := &fakeRevocations{jtis: map[string]bool{}}
	te.s.EnableRevocations(revs)
	jti := func(tok string) string {
		var c jwt.RegisteredClaims
		if _, _, err := jwt.NewParser().ParseUnverified(tok, &c); err != nil {
			t.Fatal(err)
		}
		return c.ID
	}
	bad, good := te.token("gus", "phone", time.Hour), te.token("gus", "tablet", time.Hour)
	revs.jtis[jti(bad)] = true
	_, resp, err := te.dial(bad, nil)
	if err == nil || status(resp) != http.StatusUnauthorized {
		t.Fatalf("revoked token: %v, status %v; want 401", err, status(resp))
	}
	var body struct{ Code protocol.Code }
	_ = json.NewDecoder(resp.Body).Decode(&body)
	if body.Code != protocol.CodeTokenRevoked {
		t.Errorf("revoked token's code %q; want token_revoked", body.Code)
	}
	ws := te.connect("gus", "tablet")
	other := te.connect("gus", "laptop")
	write(t, ws, `{"type":"auth.refresh","id":"r1","token":"`+te.token("gus", "tablet", time.Hour)+`"}`)
	if f := readFrame(t, ws); f.Type != protocol.TypeOK {
		t.Fatalf("refresh: %+v", f)
	}
	revs.mu.Lock()
	revs.jtis[jti(good)] = true
	revs.mu.Unlock()
	write(t, ws, `{"type":"auth.refresh","id":"r2","token":"`+good+`"}`)
	if f := readFrame(t, ws); f.Type != protocol.TypeError || f.Code != protocol.CodeTokenRevoked || f.ID != "r2" {
		t.Errorf("refresh with a revoked token: %+v; want token_revoked", f)
	}
	// Revoke by the user's device: the tablet's connection closes, the laptop's stays.
	if n := te.s.Revoke(auth.Revocation{User: "gus", Device: "tablet", At: time.Now().Add(time.Second)}); n != 1 {
		t.Errorf("Revoke closed %d connections; want 1", n)
	}
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, _, err := ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != protocol.CloseTokenRevoked {
				t.Errorf("revoked connection ended with %v; want close 4003", err)
			}
			break
		}
	}
	write(t, other, `{"type":"ping","id":"p"}`)
	if f := readFrame(t, other); f.Type != protocol.TypePong {
		t.Errorf("the other device's connection: %+v; want pong", f)
	}
}

// A jti revocation of the new token that lands while auth.refresh is between its check and
// installing the token finds the old token in Revoke; the refresh's second look closes the
// connection instead of letting it run on the revoked token until it expires.
func TestRefreshRevokedMidway(t *testing.T) {
	te := newTestEdge(t, Config{}, nil)
	revs := &fakeRevocations{jtis: map[string]bool{}}
	te.s.EnableRevocations(revs)
	fresh := te.token("ida", "phone", time.Hour)
	var c jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(fresh, &c); err != nil {
		t.Fatal(err)
	}
	closed := make(chan int, 1)
	te.s.refreshChecked = func() { // after the check, before the store: the revocation arrives
		revs.mu.Lock()
		revs.jtis[c.ID] = true
		revs.mu.Unlock()
		closed <- te.s.Revoke(auth.Revocation{TokenID: c.ID, At: time.Now()})
	}
	ws := te.connect("ida", "phone")
	write(t, ws, `{"type":"auth.refresh","id":"r1","token":"`+fresh+`"}`)
	if n := <-closed; n != 0 {
		t.Fatalf("Revoke closed %d connections while the old token was in force; the hook is misplaced", n)
	}
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != protocol.CloseTokenRevoked {
				t.Fatalf("connection ended with %v; want close 4003", err)
			}
			return
		}
		var f protocol.Frame
		_ = json.Unmarshal(data, &f)
		if f.Type == protocol.TypeOK && f.ID == "r1" {
			write(t, ws, `{"type":"ping","id":"p"}`) // still open: show it keeps serving
		}
		if f.Type == protocol.TypePong {
			t.Fatalf("the connection serves frames on a revoked token (got %s after the refresh)", f.Type)
		}
	}
}
