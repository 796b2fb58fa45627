package loadtest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/protocol"
)

// Target is the deployment under test.
type Target struct {
	// WS is the WebSocket URL, e.g. ws://127.0.0.1:8080/v1/ws; several edges as a
	// comma-separated list (connection i goes to edge i modulo their number).
	WS string
	// Metrics is the server's Prometheus endpoint, e.g. http://127.0.0.1:8081/metrics (a
	// comma-separated list, one per edge, for several); its /debug/pprof/heap?gc=1 (same host)
	// is used to settle the heap before measuring.
	Metrics string
	// Secret is the HS256 secret to mint virtual users' tokens with.
	Secret []byte
	// AllowRemote permits targets outside 127.0.0.0/8.
	AllowRemote bool
}

// Check refuses targets outside the loopback range unless AllowRemote is set.
func (t Target) Check() error {
	for _, raw := range append(split(t.WS), split(t.Metrics)...) {
		u, err := url.Parse(raw)
		if err != nil {
			return fmt.Errorf("target %q: %v", raw, err)
		}
		ip := net.ParseIP(u.Hostname())
		if u.Hostname() == "localhost" {
			ip = net.IPv4(127, 0, 0, 1)
		}
		if !t.AllowRemote && (ip == nil || !ip.IsLoopback()) {
			return fmt.Errorf("target %s is not a loopback address; pass --allow-remote to load-test another machine you own", u.Host)
		}
	}
	return nil
}

// split splits a comma-separated list, dropping empty entries.
func split(list string) []string {
	var out []string
	for _, s := range strings.Split(list, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// Dialer opens WebSocket connections from a rotating set of loopback source addresses
// (127.0.0.2, 127.0.0.3, ...), at most PerSource connections each, so the kernel's
// ephemeral-port search stays fast.
type Dialer struct {
	target    Target
	auth      *auth.Authority
	PerSource int
}

// NewDialer returns a Dialer minting tokens with the target's secret.
func NewDialer(t Target) (*Dialer, error) {
	if err := t.Check(); err != nil {
		return nil, err
	}
	a, err := auth.New(auth.Config{HS256Secret: t.Secret}, nil)
	if err != nil {
		return nil, err
	}
	return &Dialer{target: t, auth: a, PerSource: 5000}, nil
}

// Conn is one virtual device's connection.
type Conn struct {
	WS    *websocket.Conn
	Hello protocol.Frame
}

// Dial connects virtual device i of user, and reads hello.
func (d *Dialer) Dial(ctx context.Context, i int, user, device string) (*Conn, error) {
	tok, err := d.auth.Mint(chat.UserID(user), chat.DeviceID(device), 2*time.Hour)
	if err != nil {
		return nil, err
	}
	src := net.IPv4(127, 0, byte(i/d.PerSource/254), byte(2+i/d.PerSource%254))
	nd := &net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: 10 * time.Second}
	wd := websocket.Dialer{
		NetDialContext:   nd.DialContext,
		Subprotocols:     []string{protocol.Subprotocol},
		HandshakeTimeout: 10 * time.Second,
		ReadBufferSize:   1024,
		WriteBufferSize:  1024,
	}
	edges := split(d.target.WS)
	ws, resp, err := wd.DialContext(ctx, edges[i%len(edges)], http.Header{"Authorization": {"Bearer " + tok}})
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("handshake: HTTP %d", resp.StatusCode)
		}
		return nil, err
	}
	var hello protocol.Frame
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := ws.ReadJSON(&hello); err != nil || hello.Type != protocol.TypeHello {
		ws.Close()
		return nil, fmt.Errorf("no hello: %v", err)
	}
	_ = ws.SetReadDeadline(time.Time{})
	return &Conn{WS: ws, Hello: hello}, nil
}

// ServerStats are read from the target's /metrics.
type ServerStats struct {
	RSS         float64 // process_resident_memory_bytes
	HeapInuse   float64 // go_memstats_heap_inuse_bytes
	StackInuse  float64 // go_memstats_stack_inuse_bytes
	Goroutines  float64 // go_goroutines
	Connections float64 // parley_edge_connections
	CPUSeconds  float64 // process_cpu_seconds_total (user and system)
}

// Scrape settles the server's heap (a GC through pprof) and reads its memory figures.
func Scrape(ctx context.Context, metricsURL string) (ServerStats, error) {
	return scrape(ctx, metricsURL, true)
}

// scrape reads the server's figures, after a GC when gc is set (not before a CPU reading that
// must not include one).
func scrape(ctx context.Context, metricsURL string, gc bool) (ServerStats, error) {
	if u, err := url.Parse(metricsURL); err == nil && gc {
		u.Path, u.RawQuery = "/debug/pprof/heap", "gc=1"
		if req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil); err == nil {
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL, nil)
	if err != nil {
		return ServerStats{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ServerStats{}, err
	}
	defer resp.Body.Close()
	var s ServerStats
	want := map[string]*float64{
		"process_resident_memory_bytes": &s.RSS,
		"go_memstats_heap_inuse_bytes":  &s.HeapInuse,
		"go_memstats_stack_inuse_bytes": &s.StackInuse,
		"go_goroutines":                 &s.Goroutines,
		"parley_edge_connections":       &s.Connections,
		"process_cpu_seconds_total":     &s.CPUSeconds,
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if p := want[name]; ok && p != nil {
			*p, _ = strconv.ParseFloat(strings.TrimSpace(val), 64)
		}
	}
	return s, sc.Err()
}
