package edge

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// Client addresses behind a proxy. A load balancer in front of the edges (HAProxy in mode tcp)
// hides the clients' addresses; with the PROXY protocol (HAProxy's send-proxy or send-proxy-v2)
// it opens each connection with a header that names the client. ProxyListener reads that
// header, with github.com/pires/go-proxyproto, from the peers it trusts, and the connection's
// RemoteAddr is then the client's: the per-IP limits, the handshake buckets and the security
// events all see the client, on the REST API's requests too (net/http takes RemoteAddr from
// the connection).
//
// Who may send a header, and who must:
//   - a trusted peer (an address in ProxyConfig.Trusted) must open with one (v1 or v2): one
//     without is refused. The receiver of the protocol must not guess whether a header is
//     coming, and a proxy that forgot send-proxy would otherwise lump all its clients under
//     its own address, the very fault this fixes, without a word;
//   - any other peer is served as a direct client, and one that sends a header is refused:
//     it is a spoofing attempt or a proxy missing from the trusted list, and both should be
//     seen rather than ignored (ignoring would admit a misconfigured proxy's clients all under
//     its one address).
//
// Both refusals close the connection before any HTTP is read and are logged as the security
// event proxy_header_refused (reason untrusted_peer, missing or malformed, remote the peer).
// X-Forwarded-For is not read: the edge's WebSockets pass HAProxy in mode tcp, where there are
// no HTTP headers to add, and the PROXY header is checked once per connection, before any
// request, instead of per request.

// ProxyConfig configures ProxyListener.
type ProxyConfig struct {
	// Trusted lists the proxies' addresses. Empty: nobody is trusted and ProxyListener
	// returns the listener unchanged (a PROXY header is then a malformed HTTP request, 400).
	Trusted []netip.Prefix
	// HeaderTimeout bounds the wait for a trusted peer's header (and for an untrusted peer's
	// first bytes, which tell whether it sent one). Default 5s.
	HeaderTimeout time.Duration
	// Logger receives the security events, at most LogPerSecond (default 10) a second.
	Logger       *slog.Logger
	LogPerSecond int
}

// eventProxyHeaderRefused: a connection refused for its PROXY protocol header (reason
// untrusted_peer: a header from a peer not trusted; missing: none from a trusted proxy;
// malformed: one that does not parse).
const eventProxyHeaderRefused = "proxy_header_refused"

// ParseTrustedProxies parses a comma-separated list of CIDR prefixes or single addresses
// ("10.0.0.0/8, 192.0.2.7, ::1"). Empty: none.
func ParseTrustedProxies(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !strings.Contains(f, "/") {
			a, err := netip.ParseAddr(f)
			if err != nil {
				return nil, fmt.Errorf("trusted proxy %q: want an address or a CIDR prefix (10.0.0.0/8)", f)
			}
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("trusted proxy %q: want an address or a CIDR prefix (10.0.0.0/8)", f)
		}
		if p != p.Masked() {
			return nil, fmt.Errorf("trusted proxy %q has host bits set; did you mean %s?", f, p.Masked())
		}
		out = append(out, p)
	}
	return out, nil
}

// ProxyListener wraps ln so that the connections of trusted proxies carry their client's
// address (see above). Wrap it in Listener, not the other way round.
func ProxyListener(ln net.Listener, cfg ProxyConfig) net.Listener {
	if len(cfg.Trusted) == 0 {
		return ln
	}
	if cfg.HeaderTimeout <= 0 {
		cfg.HeaderTimeout = 5 * time.Second
	}
	if cfg.LogPerSecond <= 0 {
		cfg.LogPerSecond = DefaultSecurityLogPerSecond
	}
	trusted := cfg.Trusted
	policy := func(o proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) {
		if trustedPeer(trusted, o.Upstream) {
			return proxyproto.REQUIRE, nil
		}
		return proxyproto.REJECT, nil
	}
	return &proxyListener{
		Listener: &proxyproto.Listener{Listener: ln, ConnPolicy: policy, ReadHeaderTimeout: cfg.HeaderTimeout},
		security: newSecurityLog(cfg.Logger, cfg.LogPerSecond),
	}
}

func trustedPeer(trusted []netip.Prefix, a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return false
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	if !ok {
		return false
	}
	ip = ip.Unmap()
	for _, p := range trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

type proxyListener struct {
	net.Listener
	security *securityLog
}

func (l *proxyListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	pc, ok := c.(*proxyproto.Conn)
	if !ok {
		return c, nil
	}
	return &proxyConn{Conn: pc, security: l.security}, nil
}

// proxyConn logs the refusal of a connection's header, which its first read reports (and
// every read after it: net/http then closes the connection without a response).
type proxyConn struct {
	*proxyproto.Conn
	security *securityLog
	checked  atomic.Bool
}

func (c *proxyConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if !c.checked.Load() {
		c.checked.Store(true) // one reader at a time
		if reason := headerRefusal(err); reason != "" {
			peer := c.Raw().RemoteAddr().String()
			if host, _, err := net.SplitHostPort(peer); err == nil {
				peer = host
			}
			c.security.log(time.Now(), eventProxyHeaderRefused,
				[]any{"reason", reason, "remote", peer, "error", err.Error()})
		}
	}
	return n, err
}

// headerRefusal names why a read's error refused the connection's PROXY header, or "" when the
// error is not about the header.
func headerRefusal(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, proxyproto.ErrSuperfluousProxyHeader):
		return "untrusted_peer"
	case errors.Is(err, proxyproto.ErrNoProxyProtocol):
		return "missing"
	case strings.HasPrefix(err.Error(), "proxyproto:"):
		return "malformed"
	}
	return ""
}

// socketOf is the connection under a proxyConn (whose header has been read by then: the
// handshake read past it), which the poller watches and whose read side a close shuts.
func socketOf(c net.Conn) net.Conn {
	if r, ok := c.(interface{ Raw() net.Conn }); ok {
		return r.Raw()
	}
	return c
}
