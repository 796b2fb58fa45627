package edge

import (
	"log/slog"
	"math"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"golang.org/x/time/rate"
)

// Security events: what an operator looks for after an attack or a misbehaving client, logged
// at info as "security event" records with a kind (docs/operations.md lists them). A flood
// must not fill the disk, so each kind has a token bucket (Config.SecurityLogPerSecond): the
// records over it are counted, and the count is logged with the kind's next record (attribute
// suppressed) or, when the flood has stopped, by the sweeper in a record of its own
// ("security events suppressed"). Tokens are never logged.
const (
	// eventHandshakeRefused: a handshake refused for its credentials or its request (reason:
	// the parley_edge_handshakes_total result, such as unauthorized or bad_request).
	eventHandshakeRefused = "handshake_refused"
	// eventHandshakeLimited: a handshake refused by a per-user or per-IP limit (reason
	// rate_limited_user, rate_limited_ip, limited_user, limited_ip).
	eventHandshakeLimited = "handshake_limited"
	// eventOriginRefused: a browser Origin that is not allowed.
	eventOriginRefused = "origin_refused"
	// eventRateLimitClose: a connection closed with 4008 for sending too many frames.
	eventRateLimitClose = "rate_limit_close"
	// eventRevocationClose: a connection closed because its token was revoked.
	eventRevocationClose = "revocation_close"
)

// securityEvent logs a security event of kind at info, within the kind's budget. attrs are
// slog key-value pairs; never pass a token.
func (s *Server) securityEvent(kind string, attrs ...any) {
	s.security.log(s.now(), kind, attrs)
}

// securityEvent logs a security event about this connection: its user, device, session and
// address come first.
func (c *Conn) securityEvent(kind string, attrs ...any) {
	c.s.securityEvent(kind, append([]any{"user", c.user, "device", c.device, "session", c.session, "remote", c.ip}, attrs...)...)
}

// securityLog rate-limits security event records per kind. Kinds are the constants above, so
// the map stays small.
type securityLog struct {
	logger *slog.Logger
	limit  rate.Limit
	burst  int

	mu    sync.Mutex
	kinds map[string]*eventKind
}

type eventKind struct {
	lim        *rate.Limiter
	suppressed int64 // records over the budget since the last one logged
}

func newSecurityLog(logger *slog.Logger, perSecond int) *securityLog {
	return &securityLog{logger: logger, limit: rate.Limit(perSecond), burst: perSecond, kinds: map[string]*eventKind{}}
}

func (l *securityLog) log(now time.Time, kind string, attrs []any) {
	l.mu.Lock()
	k := l.kinds[kind]
	if k == nil {
		k = &eventKind{lim: rate.NewLimiter(l.limit, l.burst)}
		l.kinds[kind] = k
	}
	if !k.lim.AllowN(now, 1) {
		k.suppressed++
		l.mu.Unlock()
		return
	}
	n := k.suppressed
	k.suppressed = 0
	l.mu.Unlock()
	args := append(make([]any, 0, len(attrs)+4), "kind", kind)
	args = append(args, attrs...)
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	l.logger.Info("security event", args...)
}

// flush logs the count of each kind's suppressed records once its budget allows a record, so
// the end of a flood is reported without waiting for the kind's next event.
func (l *securityLog) flush(now time.Time) {
	type pending struct {
		kind string
		n    int64
	}
	var out []pending
	l.mu.Lock()
	for kind, k := range l.kinds {
		if k.suppressed > 0 && k.lim.AllowN(now, 1) {
			out = append(out, pending{kind, k.suppressed})
			k.suppressed = 0
		}
	}
	l.mu.Unlock()
	for _, p := range out {
		l.logger.Info("security events suppressed", "kind", p.kind, "suppressed", p.n)
	}
}

// keyedLimiter is a token bucket per key (a user, a client address) in bounded memory: at
// most size keys are kept, the least recently used forgotten first. Forgetting a key is
// harmless when its bucket has refilled (a new bucket is full too), and the keys used least
// recently are the likeliest to have; a flood of distinct keys can only make others start
// again with a full bucket, never grow the table. simplelru (hashicorp/golang-lru) is the
// LRU: a small, well-kept library, used under our own lock so that get-or-create is atomic.
type keyedLimiter struct {
	limit rate.Limit
	burst int

	mu   sync.Mutex
	keys *simplelru.LRU[string, *rate.Limiter]
}

func newKeyedLimiter(perSecond float64, burst, size int) *keyedLimiter {
	keys, err := simplelru.NewLRU[string, *rate.Limiter](size, nil)
	if err != nil {
		panic(err) // size is validated positive
	}
	return &keyedLimiter{limit: rate.Limit(perSecond), burst: burst, keys: keys}
}

// take takes a token from key's bucket; when there is none it takes nothing and returns how
// long until there is one.
func (k *keyedLimiter) take(key string, now time.Time) time.Duration {
	k.mu.Lock()
	defer k.mu.Unlock()
	lim, ok := k.keys.Get(key)
	if !ok {
		lim = rate.NewLimiter(k.limit, k.burst)
		k.keys.Add(key, lim)
	}
	if lim.AllowN(now, 1) {
		return 0
	}
	wait := (1 - lim.TokensAt(now)) / float64(k.limit)
	return time.Duration(math.Ceil(wait * float64(time.Second)))
}

// prune forgets the keys whose bucket has filled up again: a full bucket decides exactly as
// a new one does, so forgetting it changes nothing, and the table holds only the keys that
// made handshakes lately (not one per connected user, which an idle edge would keep).
func (k *keyedLimiter) prune(now time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, key := range k.keys.Keys() {
		if lim, ok := k.keys.Peek(key); ok && lim.TokensAt(now) >= float64(k.burst) {
			k.keys.Remove(key)
		}
	}
}

func (k *keyedLimiter) len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.keys.Len()
}

// retryAfter is a Retry-After value (whole seconds, at least 1) for a wait.
func retryAfter(wait time.Duration) string {
	return strconv.Itoa(max(1, int(math.Ceil(wait.Seconds()))))
}

// handshakeIPKey is the key of a client address in the per-IP handshake buckets: the address,
// or for IPv6 its /64 (one host's share: a host that rotates addresses within it is still one
// client).
func handshakeIPKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	a = a.Unmap()
	if a.Is4() {
		return a.String()
	}
	p, err := a.WithZone("").Prefix(64)
	if err != nil {
		return a.String()
	}
	return p.String()
}
