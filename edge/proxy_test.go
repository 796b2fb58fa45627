package edge

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	proxyproto "github.com/pires/go-proxyproto"

	"github.com/parleyhq/parley/internal/teststack"
	"github.com/parleyhq/parley/protocol"
)

// serveBehindProxy serves te's edge on a second listener that reads PROXY headers from the
// peers in trusted, logging to the edge's log, and returns its WebSocket URL.
func serveBehindProxy(t *testing.T, te *testEdge, trusted ...string) string {
	t.Helper()
	var ps []netip.Prefix
	for _, s := range trusted {
		ps = append(ps, netip.MustParsePrefix(s))
	}
	mux := http.NewServeMux()
	mux.Handle(protocol.Path, te.s)
	hs := httptest.NewUnstartedServer(mux)
	hs.Listener = Listener(ProxyListener(hs.Listener, ProxyConfig{Trusted: ps, HeaderTimeout: time.Second,
		Logger: slog.New(slog.NewJSONHandler(te.logs, nil))}))
	hs.Config.ConnContext = ConnContext
	hs.Start()
	// Before te's cleanup (cleanups run last first), which waits for its connections.
	t.Cleanup(hs.Close)
	return "ws" + strings.TrimPrefix(hs.URL, "http") + protocol.Path
}

// dialWithHeader dials url writing header (nil: none) before the handshake.
func (te *testEdge) dialWithHeader(url, user string, header []byte) (*websocket.Conn, *http.Response, error) {
	d := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}, HandshakeTimeout: 5 * time.Second,
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil && header != nil {
				_, err = c.Write(header)
			}
			return c, err
		}}
	ws, resp, err := d.Dial(url, http.Header{"Authorization": {"Bearer " + te.token(user, "d", time.Hour)}})
	if ws != nil {
		te.t.Cleanup(func() { ws.Close() })
	}
	return ws, resp, err
}

func v2Header(t *testing.T, src string) []byte {
	t.Helper()
	s, _ := net.ResolveTCPAddr("tcp", src)
	b, err := proxyproto.HeaderProxyFromAddrs(2, s, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 80}).Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A peer that is not a trusted proxy is served as the client it is, and refused (with a
// security event naming it) if it sends a PROXY header: a client cannot choose its address.
func TestProxyHeaderFromUntrustedPeerIsRefused(t *testing.T) {
	te := newTestEdge(t, Config{}, nil)
	url := serveBehindProxy(t, te, "192.0.2.0/24") // not loopback
	if _, resp, err := te.dialWithHeader(url, "spoofer", v2Header(t, "198.51.100.1:1234")); err == nil {
		t.Fatalf("a PROXY header from an untrusted peer was accepted (status %d); want the connection refused", status(resp))
	}
	ws, resp, err := te.dialWithHeader(url, "direct", nil)
	if err != nil {
		t.Fatalf("direct client without a header: %v (status %d); want admitted", err, status(resp))
	}
	if f := readFrame(t, ws); f.Type != protocol.TypeHello {
		t.Fatalf("first frame %+v; want hello", f)
	}
	var refused []map[string]any
	teststack.Eventually(t, 2*time.Second, func() bool {
		refused = nil
		for _, r := range te.logs.records(t, "security event") {
			if r["kind"] == eventProxyHeaderRefused {
				refused = append(refused, r)
			}
		}
		return len(refused) > 0
	})
	if len(refused) != 1 || refused[0]["reason"] != "untrusted_peer" || refused[0]["remote"] != "127.0.0.1" {
		t.Errorf("proxy_header_refused events %v; want one, reason untrusted_peer, remote 127.0.0.1 (the peer)", refused)
	}
}

// A trusted proxy's connection carries its client's address (the per-IP count is the
// client's), and is still read by the event-driven reader: frames flow both ways after the
// handshake, without the fallback to a goroutine per connection.
func TestProxiedConnectionIsServedEventDriven(t *testing.T) {
	te := newTestEdge(t, Config{}, nil)
	url := serveBehindProxy(t, te, "127.0.0.0/8")
	ws, resp, err := te.dialWithHeader(url, "proxied", v2Header(t, "203.0.113.50:5555"))
	if err != nil {
		t.Fatalf("through the trusted proxy: %v (status %d)", err, status(resp))
	}
	if f := readFrame(t, ws); f.Type != protocol.TypeHello {
		t.Fatalf("first frame %+v; want hello", f)
	}
	for i := range 3 {
		write(t, ws, `{"type":"ping","id":"p`+string(rune('0'+i))+`"}`)
		if f := readFrame(t, ws); f.Type != protocol.TypePong {
			t.Fatalf("reply %+v; want pong", f)
		}
	}
	te.s.mu.Lock()
	perIP := map[string]int{}
	for k, v := range te.s.perIP {
		perIP[k] = v
	}
	te.s.mu.Unlock()
	if perIP["203.0.113.50"] != 1 || len(perIP) != 1 {
		t.Errorf("connections per IP %v; want 203.0.113.50: 1", perIP)
	}
	if strings.Contains(te.logs.String(), "read by a goroutine instead") {
		t.Errorf("the proxied connection fell back to a reader goroutine:\n%s", te.logs.String())
	}
}

func TestParseTrustedProxies(t *testing.T) {
	got, err := ParseTrustedProxies(" 10.0.0.0/8, 192.0.2.7 ,::1,")
	if err != nil || len(got) != 3 || got[0].String() != "10.0.0.0/8" || got[1].String() != "192.0.2.7/32" || got[2].String() != "::1/128" {
		t.Errorf("ParseTrustedProxies = %v, %v", got, err)
	}
	for _, bad := range []string{"10.0.0.1/8", "example.com", "10.0.0.0/33"} {
		if _, err := ParseTrustedProxies(bad); err == nil {
			t.Errorf("ParseTrustedProxies(%q) accepted", bad)
		}
	}
}
