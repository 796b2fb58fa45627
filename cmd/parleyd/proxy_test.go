package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	proxyproto "github.com/pires/go-proxyproto"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/teststack"
	"github.com/parleyhq/parley/protocol"
)

// syncBuffer is a log sink read while parleyd writes to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// records returns the JSON log records whose msg is msg.
func (b *syncBuffer) records(msg string) []map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b.buf.Bytes()))
	for sc.Scan() {
		var r map[string]any
		if json.Unmarshal(sc.Bytes(), &r) == nil && r["msg"] == msg {
			out = append(out, r)
		}
	}
	return out
}

// dialViaProxy opens a WebSocket to the edge at addr as a proxy would forward it: header (a
// PROXY protocol v1 line or v2 block; nil: none) first, then the handshake.
func dialViaProxy(a *auth.Authority, addr string, user chat.UserID, header []byte) (*websocket.Conn, *http.Response, error) {
	tok, _ := a.Mint(user, "d", time.Hour)
	d := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}, HandshakeTimeout: 5 * time.Second,
		NetDialContext: func(ctx context.Context, network, address string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, address)
			if err == nil && header != nil {
				if _, err = c.Write(header); err != nil {
					c.Close()
				}
			}
			return c, err
		}}
	return d.Dial("ws://"+addr+protocol.Path, http.Header{"Authorization": {"Bearer " + tok}})
}

// proxyV2 is a PROXY protocol v2 header for a client at src.
func proxyV2(t *testing.T, src, dst string) []byte {
	t.Helper()
	s, _ := net.ResolveTCPAddr("tcp", src)
	d, _ := net.ResolveTCPAddr("tcp", dst)
	b, err := proxyproto.HeaderProxyFromAddrs(2, s, d).Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Behind a trusted proxy that speaks the PROXY protocol (HAProxy's send-proxy-v2), the edge
// takes each client's address from the header: the per-IP connection limit counts clients, not
// the proxy, and the security event of a refused handshake names the client. A connection from
// the trusted proxy without a header is refused and logged.
func TestClientAddressFromTrustedProxy(t *testing.T) {
	id := teststack.ID(t)
	admin, public := teststack.FreeAddr(t), teststack.FreeAddr(t)
	vars := map[string]string{
		"PARLEY_ADMIN_ADDR": admin, "PARLEY_LISTEN_ADDR": public,
		"PARLEY_AUTH_HS256_SECRET": testSecret, "PARLEY_LOG_LEVEL": "info",
		"PARLEY_CASSANDRA_KEYSPACE": teststack.Keyspace, "PARLEY_CASSANDRA_CONSISTENCY": "ONE",
		"PARLEY_DELIVERY_STREAM": "T_" + id, "PARLEY_DELIVERY_SUBJECT_PREFIX": "test." + id + ".",
		"PARLEY_EDGE_DRAIN_WINDOW":    "200ms",
		"PARLEY_EDGE_TRUSTED_PROXIES": "127.0.0.0/8, ::1/128", "PARLEY_EDGE_MAX_CONNS_PER_IP": "1",
		"PARLEY_EDGE_HANDSHAKE_BURST_PER_IP": "5",
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"run"}, stackEnv(vars), io.Discard, logs) }()
	t.Cleanup(func() {
		cancel()
		<-done
		teststack.DeleteStreams(t, vars["PARLEY_DELIVERY_STREAM"])
	})
	if !teststack.Eventually(t, 60*time.Second, func() bool { return teststack.Ready(admin) }) {
		t.Fatal("parleyd never ready")
	}
	a, _ := auth.New(auth.Config{HS256Secret: []byte(testSecret)}, nil)

	// Two clients behind the same proxy, one connection each: both fit the limit of one per IP.
	for i, h := range [][]byte{
		proxyV2(t, "203.0.113.7:40000", public),
		[]byte(fmt.Sprintf("PROXY TCP4 203.0.113.8 127.0.0.1 40001 %s\r\n", public[strings.LastIndex(public, ":")+1:])),
	} {
		ws, resp, err := dialViaProxy(a, public, chat.UserID(fmt.Sprintf("%s_u%d", id, i)), h)
		if err != nil {
			t.Fatalf("client %d through the proxy: %v (status %v); want admitted", i, err, statusOf(resp))
		}
		defer ws.Close()
	}
	// A second connection of the first client is over its limit of one, and the refusal's
	// security event names the client, not the proxy.
	ws, resp, err := dialViaProxy(a, public, chat.UserID(id+"_u9"), proxyV2(t, "203.0.113.7:40002", public))
	if err == nil {
		ws.Close()
	}
	if statusOf(resp) != http.StatusTooManyRequests {
		t.Fatalf("second connection of 203.0.113.7: %v (status %v); want 429 limited_ip", err, statusOf(resp))
	}
	var remotes []any
	for _, r := range logs.records("security event") {
		if r["reason"] == "limited_ip" {
			remotes = append(remotes, r["remote"])
		}
	}
	if len(remotes) != 1 || remotes[0] != "203.0.113.7" {
		t.Errorf("limited_ip security events name %v; want the client 203.0.113.7; security events: %v", remotes, logs.records("security event"))
	}
	// The trusted proxy must send the header: without one the connection is refused.
	ws, resp, err = dialViaProxy(a, public, chat.UserID(id+"_bare"), nil)
	if err == nil {
		ws.Close()
		t.Fatalf("a trusted peer without a PROXY header was admitted (status %v); want refused", statusOf(resp))
	}
	if !teststack.Eventually(t, 2*time.Second, func() bool {
		for _, r := range logs.records("security event") {
			if r["kind"] == "proxy_header_refused" && r["reason"] == "missing" && r["remote"] == "127.0.0.1" {
				return true
			}
		}
		return false
	}) {
		t.Errorf("no proxy_header_refused security event for the headerless connection; security events: %v", logs.records("security event"))
	}
}

func statusOf(resp *http.Response) int {
	if resp == nil {
		return 0
	}
	return resp.StatusCode
}
