package edge

import (
	"fmt"
	"time"

	"github.com/parleyhq/parley/internal/origin"
)

// Config configures the edge. Zero values take the defaults below.
type Config struct {
	// MaxFrameBytes is the largest client frame read; larger closes with 1009. Default 64 KiB.
	MaxFrameBytes int
	// MaxBodyBytes is the largest message body accepted in send. Default 16 KiB (at most half
	// of MaxFrameBytes, leaving room for the rest of the frame and JSON escaping).
	MaxBodyBytes int
	// FramesPerSecond and FrameBurst limit client frames per connection (token bucket).
	// Defaults 20 and 40.
	FramesPerSecond int
	FrameBurst      int
	// RateStrikes is how many rate_limited errors a connection gets before it is closed with
	// 4008. Default 50.
	RateStrikes int
	// MaxSubscriptions is how many users one connection may watch. Default 1000.
	MaxSubscriptions int
	// MaxConns is the most connections this edge holds; above it handshakes get 503 with
	// Retry-After (load shedding). Default 19,000 (a process here may open 20,000 files).
	MaxConns int
	// MaxConnsPerUser (default 10) and MaxConnsPerIP (default 1000) refuse handshakes with 429.
	MaxConnsPerUser int
	MaxConnsPerIP   int
	// HandshakeRatePerUser and HandshakeBurstPerUser limit one user's handshakes on this edge
	// (a token bucket per user, taken once the token is verified); above them the handshake
	// gets 429 with Retry-After. Defaults 1 a second, bursts of 20: ten devices reconnecting at
	// once, twice over. HandshakeRatePerIP and HandshakeBurstPerIP do the same per client
	// address (the socket peer; an IPv6 address counts by its /64), before the token is read.
	// Defaults 100 a second and a burst of MaxConnsPerIP: an address may open all its
	// connections at once, and a drained edge's clients (spread over the drain window)
	// reconnect within the rate.
	HandshakeRatePerUser  float64
	HandshakeBurstPerUser int
	HandshakeRatePerIP    float64
	HandshakeBurstPerIP   int
	// HandshakeRateKeys bounds the users and the addresses whose handshake buckets are kept
	// (each, least recently used first out; a forgotten key starts again with a full bucket).
	// Default 65,536: about 15 MiB per table when full (230 to 260 bytes a key, measured).
	HandshakeRateKeys int
	// SecurityLogPerSecond is how many security event records of one kind are logged per
	// second (refused handshakes, rate-limit closes...); the others are counted and the count
	// is logged when logging resumes. Default 10.
	SecurityLogPerSecond int
	// AllowedOrigins lists the Origin values browsers may connect from ("https://app.example.com");
	// "*" allows any. Empty: no browser origin is allowed. The REST API's CORS grants the same
	// list (internal/origin: one setting, matched the same way by both).
	AllowedOrigins []string
	// AllowNoOrigin accepts handshakes without an Origin header (native apps, servers).
	// Browsers always send Origin, so this does not open the door to cross-site requests.
	AllowNoOrigin bool
	// HeartbeatInterval is how often a silent connection is pinged; one silent for two
	// intervals is closed. Default 25s.
	HeartbeatInterval time.Duration
	// WriteTimeout bounds one batch of writes to a connection. Default 10s.
	WriteTimeout time.Duration
	// QueueLen is the number of frames queued per connection before the overflow policy
	// applies (drop ephemeral frames, then close as slow consumer). Default 256.
	QueueLen int
	// QueueBytes bounds the bytes of the frames queued for a connection and being written to
	// it; above it the same overflow policy applies. A frame is always accepted by an empty
	// queue, so one larger frame still goes out. Default 1 MiB.
	QueueBytes int
	// SyncPageBytes bounds one sync.result frame in bytes of JSON, its conversation entries
	// and messages included (a single larger message goes alone); a page that reaches it
	// ends with more: true, and the client pages on. At most half of QueueBytes. Default
	// 256 KiB.
	SyncPageBytes int
	// ReadBufferSize and WriteBufferSize are the socket buffer sizes; the write buffer is
	// pooled. Defaults 512 and 4096.
	ReadBufferSize  int
	WriteBufferSize int
	// HandshakeTimeout bounds the WebSocket upgrade. Default 5s.
	HandshakeTimeout time.Duration
	// DrainWindow spreads the reconnect hints of a drain over this long. Default 10s.
	DrainWindow time.Duration
	// DrainDelay is the pause at the start of a drain, after the process's /readyz has turned
	// 503, before the edge refuses handshakes and sends reconnect hints: long enough for the
	// load balancer's health check to take it out of rotation (HAProxy "inter 1s fall 1":
	// 1 s plus a check's duration), so that the hinted clients land on other edges and none
	// is sent here to be refused. Meanwhile the edge serves as usual. Unlike the other
	// settings, zero means none (a lone edge, tests); parleyd's default is DefaultDrainDelay.
	DrainDelay time.Duration
	// RebalanceInterval is how often an edge that rebalances (Server.EnableRebalance)
	// publishes its connection count and sheds its excess. Default 2s.
	RebalanceInterval time.Duration
	// RebalanceSlack is how far above the fair share (total / edges) an edge may be before it
	// sheds: 0.1 sheds above 110%. Default 0.1.
	RebalanceSlack float64
	// RebalanceRate bounds the connections an edge sheds a second. Default 100: 9,500 extra
	// connections (19,000 on one edge of two) move in about two minutes, and each edge's
	// reconnects stay well within the handshake rates.
	RebalanceRate float64
	// GoroutineReads reads every connection with a goroutine of its own instead of the
	// event-driven reader (epoll, Linux only: an idle connection holds no goroutine). Off by
	// default; it is the fallback elsewhere and is kept for comparison.
	GoroutineReads bool
}

// Defaults.
const (
	DefaultMaxFrameBytes     = 64 << 10
	DefaultMaxBodyBytes      = 16 << 10
	DefaultFramesPerSecond   = 20
	DefaultFrameBurst        = 40
	DefaultRateStrikes       = 50
	DefaultMaxSubscriptions  = 1000
	DefaultMaxConns          = 19000
	DefaultMaxConnsPerUser   = 10
	DefaultMaxConnsPerIP     = 1000
	DefaultHeartbeatInterval = 25 * time.Second
	DefaultWriteTimeout      = 10 * time.Second
	DefaultQueueLen          = 256
	DefaultQueueBytes        = 1 << 20
	DefaultSyncPageBytes     = 256 << 10
	DefaultReadBufferSize    = 512
	DefaultWriteBufferSize   = 4096
	DefaultHandshakeTimeout  = 5 * time.Second
	DefaultDrainWindow       = 10 * time.Second
	DefaultDrainDelay        = 2 * time.Second
)

// Defaults of the handshake limits and the security log. The per-IP burst has none of its
// own: it follows MaxConnsPerIP.
const (
	DefaultHandshakeRatePerUser  = 1.0
	DefaultHandshakeBurstPerUser = 20
	DefaultHandshakeRatePerIP    = 100.0
	DefaultHandshakeRateKeys     = 65536
	DefaultSecurityLogPerSecond  = 10
)

func (c Config) withDefaults() Config {
	set := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	setD := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	set(&c.MaxFrameBytes, DefaultMaxFrameBytes)
	set(&c.MaxBodyBytes, min(DefaultMaxBodyBytes, c.MaxFrameBytes/2))
	set(&c.FramesPerSecond, DefaultFramesPerSecond)
	set(&c.FrameBurst, DefaultFrameBurst)
	set(&c.RateStrikes, DefaultRateStrikes)
	set(&c.MaxSubscriptions, DefaultMaxSubscriptions)
	set(&c.MaxConns, DefaultMaxConns)
	set(&c.MaxConnsPerUser, DefaultMaxConnsPerUser)
	set(&c.MaxConnsPerIP, DefaultMaxConnsPerIP)
	set(&c.HandshakeBurstPerUser, DefaultHandshakeBurstPerUser)
	set(&c.HandshakeBurstPerIP, c.MaxConnsPerIP)
	set(&c.HandshakeRateKeys, DefaultHandshakeRateKeys)
	set(&c.SecurityLogPerSecond, DefaultSecurityLogPerSecond)
	if c.HandshakeRatePerUser == 0 {
		c.HandshakeRatePerUser = DefaultHandshakeRatePerUser
	}
	if c.HandshakeRatePerIP == 0 {
		c.HandshakeRatePerIP = DefaultHandshakeRatePerIP
	}
	set(&c.QueueLen, DefaultQueueLen)
	set(&c.QueueBytes, DefaultQueueBytes)
	set(&c.SyncPageBytes, min(DefaultSyncPageBytes, c.QueueBytes/2))
	set(&c.ReadBufferSize, DefaultReadBufferSize)
	set(&c.WriteBufferSize, DefaultWriteBufferSize)
	setD(&c.HeartbeatInterval, DefaultHeartbeatInterval)
	setD(&c.WriteTimeout, DefaultWriteTimeout)
	setD(&c.HandshakeTimeout, DefaultHandshakeTimeout)
	setD(&c.DrainWindow, DefaultDrainWindow)
	setD(&c.RebalanceInterval, DefaultRebalanceInterval)
	if c.RebalanceSlack == 0 {
		c.RebalanceSlack = DefaultRebalanceSlack
	}
	if c.RebalanceRate == 0 {
		c.RebalanceRate = DefaultRebalanceRate
	}
	return c
}

// Validate reports the first invalid setting.
func (c Config) Validate() error {
	c = c.withDefaults()
	checks := []struct {
		name      string
		v, lo, hi int
	}{
		{"max frame bytes", c.MaxFrameBytes, 1024, 16 << 20},
		{"max body bytes", c.MaxBodyBytes, 1, c.MaxFrameBytes},
		{"frames per second", c.FramesPerSecond, 1, 100000},
		{"frame burst", c.FrameBurst, 1, 100000},
		{"rate strikes", c.RateStrikes, 1, 1000000},
		{"max subscriptions", c.MaxSubscriptions, 1, 100000},
		{"max connections", c.MaxConns, 1, 10000000},
		{"max connections per user", c.MaxConnsPerUser, 1, 10000},
		{"max connections per IP", c.MaxConnsPerIP, 1, 10000000},
		{"handshake burst per user", c.HandshakeBurstPerUser, 1, 1000000},
		{"handshake burst per IP", c.HandshakeBurstPerIP, 1, 10000000},
		{"handshake rate keys", c.HandshakeRateKeys, 16, 10000000},
		{"security log per second", c.SecurityLogPerSecond, 1, 100000},
		{"queue length", c.QueueLen, 4, 100000},
		{"queue bytes", c.QueueBytes, 64 << 10, 1 << 30},
		{"sync page bytes", c.SyncPageBytes, 16 << 10, c.QueueBytes / 2},
		{"read buffer size", c.ReadBufferSize, 128, 1 << 20},
		{"write buffer size", c.WriteBufferSize, 128, 1 << 20},
	}
	for _, k := range checks {
		if k.v < k.lo || k.v > k.hi {
			return fmt.Errorf("edge %s %d out of range [%d, %d]", k.name, k.v, k.lo, k.hi)
		}
	}
	for _, r := range []struct {
		name string
		v    float64
	}{{"handshake rate per user", c.HandshakeRatePerUser}, {"handshake rate per IP", c.HandshakeRatePerIP}, {"rebalance rate", c.RebalanceRate}} {
		if !(r.v >= 0.001 && r.v <= 1e6) { // also refuses NaN
			return fmt.Errorf("edge %s %g out of range [0.001, 1e+06] per second", r.name, r.v)
		}
	}
	if !(c.RebalanceSlack >= 0.01 && c.RebalanceSlack <= 10) {
		return fmt.Errorf("edge rebalance slack %g out of range [0.01, 10]", c.RebalanceSlack)
	}
	if c.RebalanceInterval < 100*time.Millisecond || c.RebalanceInterval > time.Hour {
		return fmt.Errorf("edge rebalance interval %v out of range [100ms, 1h]", c.RebalanceInterval)
	}
	if c.HeartbeatInterval < 100*time.Millisecond || c.WriteTimeout <= 0 || c.HandshakeTimeout <= 0 || c.DrainWindow < 0 || c.DrainDelay < 0 {
		return fmt.Errorf("edge timeouts must be positive (heartbeat at least 100ms)")
	}
	if err := origin.Validate(c.AllowedOrigins); err != nil {
		return fmt.Errorf("edge: %w", err)
	}
	return nil
}

// originAllowed reports whether an Origin header value may connect.
func (c Config) originAllowed(o string) bool {
	if o == "" {
		return c.AllowNoOrigin
	}
	return origin.Allowed(c.AllowedOrigins, o)
}
