package edge

import (
	"context"
	crand "crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/routing"
	"github.com/parleyhq/parley/presence"
	"github.com/parleyhq/parley/protocol"
)

// Verifier checks a token and returns who it speaks for (internal/auth.Authority).
type Verifier interface {
	Verify(token string) (auth.Identity, error)
}

var _ Verifier = (*auth.Authority)(nil)

// Revocations says whether a token has been revoked (internal/revocation.Store): id is the
// verified token, device the device the connection settled on. It must answer from memory:
// it runs on every handshake and auth.refresh.
type Revocations interface {
	Revoked(id auth.Identity, device chat.DeviceID) bool
}

// Handler handles one client frame type. It runs on the goroutine reading the connection (one
// at a time per connection, in frame order), so a slow handler slows only its own connection,
// whose socket is not read meanwhile; it answers through c.Send or c.SendError.
type Handler func(ctx context.Context, c *Conn, f protocol.Frame)

// handlerTimeout bounds what one frame's handler waits for: a membership check, a durable
// publish, a store read. The connection's reader waits with it (see the lock order in doc.go).
const handlerTimeout = 5 * time.Second

// Server is the WebSocket edge.
type Server struct {
	cfg      Config
	verifier Verifier
	nc       *nats.Conn
	logger   *slog.Logger
	metrics  *metrics
	now      func() time.Time
	upgrader websocket.Upgrader
	handlers map[protocol.Type]Handler
	ctx      context.Context // cancelled by Shutdown's end; handlers' base context
	cancel   context.CancelFunc
	natsCh   chan *nats.Msg
	// membership caches membership answers for send and typing.
	membership *membershipCache
	presence   *presence.Presence // nil: presence disabled
	revoked    Revocations        // nil: no revocations
	coalesce   *coalescer         // presence events (Run's goroutine only)
	security   *securityLog       // security event records, rate-limited per kind (security.go)
	// refreshChecked, if set, runs in auth.refresh between the revocation check and installing
	// the new token (tests of a revocation landing there).
	refreshChecked func()
	// Handshake token buckets, per user and per client address (security.go).
	userHandshakes *keyedLimiter
	ipHandshakes   *keyedLimiter
	rebal          *rebalancer // nil: not rebalancing (rebalance.go)

	mu       sync.Mutex
	buckets  []map[*Conn]struct{} // the sweeper visits one bucket per tick
	next     int                  // bucket of the next connection
	count    int
	perIP    map[string]int
	watchers map[chat.UserID]*watch // users watched (presence) by connections here
	users    map[chat.UserID]*userConns
	draining bool

	wg sync.WaitGroup // readers and writers

	// The event-driven reader, started with the first connection; nil where it cannot run
	// (not Linux, or Config.GoroutineReads).
	pollOnce sync.Once
	pollStop sync.Once
	poll     *poller
	workers  *workers
	// writers run connections' writers (writeLoop), so a writer's stack, grown by the write
	// path, is reused by the next batch instead of grown again for each.
	writers *workers

	// Batched user subscriptions (subscribe.go); subQueue is guarded by mu.
	subOnce  sync.Once
	subKick  chan struct{}
	subDone  chan struct{}
	subQueue []pendingSub
}

// userConns are a user's connections on this edge and the NATS subscription that feeds them.
// reserved counts handshakes admitted but not yet upgraded: they count against the per-user
// limit but receive nothing until they are in conns.
type userConns struct {
	conns    []*Conn
	reserved int
	sub      *nats.Subscription
	subbing  chan struct{} // closed when the subscription being made is done (subscribe.go)
}

// sweepTick is how often the sweeper visits one bucket.
const sweepTick = 250 * time.Millisecond

// New returns an edge Server. nc carries live events to users' connections; it may be nil for
// an edge that only answers its own frames (tests of the handshake and limits).
func New(cfg Config, verifier Verifier, nc *nats.Conn, reg prometheus.Registerer, logger *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("edge metrics: %w", err)
	}
	nb := max(1, int(cfg.HeartbeatInterval/sweepTick))
	s := &Server{
		cfg: cfg, verifier: verifier, nc: nc, logger: logger, metrics: m, now: time.Now,
		handlers: map[protocol.Type]Handler{},
		buckets:  make([]map[*Conn]struct{}, nb),
		perIP:    map[string]int{},
		users:    map[chat.UserID]*userConns{},
		// Every NATS subscription of the edge feeds this one channel; when it is full NATS drops
		// messages (counted as slow-consumer events). A message to a 1,000-member group arrives
		// as 1,000 at once, so it holds a few such bursts.
		natsCh:   make(chan *nats.Msg, 65536),
		watchers: map[chat.UserID]*watch{},
		coalesce: newCoalescer(presenceInterval),
		security: newSecurityLog(logger, cfg.SecurityLogPerSecond),

		userHandshakes: newKeyedLimiter(cfg.HandshakeRatePerUser, cfg.HandshakeBurstPerUser, cfg.HandshakeRateKeys),
		ipHandshakes:   newKeyedLimiter(cfg.HandshakeRatePerIP, cfg.HandshakeBurstPerIP, cfg.HandshakeRateKeys),
	}
	s.writers = newWorkers((*Conn).writeLoop, m.workers.WithLabelValues("write"))
	s.membership = newMembershipCache(nil, func() time.Time { return s.now() })
	for i := range s.buckets {
		s.buckets[i] = map[*Conn]struct{}{}
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.upgrader = websocket.Upgrader{
		HandshakeTimeout: cfg.HandshakeTimeout,
		ReadBufferSize:   cfg.ReadBufferSize,
		WriteBufferSize:  cfg.WriteBufferSize,
		WriteBufferPool:  &sync.Pool{},
		Subprotocols:     []string{protocol.Subprotocol},
		// Origin is checked before the upgrade, with the configured allowlist.
		CheckOrigin: func(*http.Request) bool { return true },
		// Compression stays off: permessage-deflate without a decompressed-size limit lets a
		// small frame expand without bound.
		EnableCompression: false,
		Error: func(w http.ResponseWriter, _ *http.Request, status int, reason error) {
			httpError(w, status, protocol.CodeBadRequest, reason.Error())
		},
	}
	s.Handle(protocol.TypePing, s.handlePing)
	s.Handle(protocol.TypeAuthRefresh, s.handleRefresh)
	return s, nil
}

// Handle registers the handler of a client frame type. Types without a handler are answered
// with the error "unsupported". Register before serving.
func (s *Server) Handle(t protocol.Type, h Handler) { s.handlers[t] = h }

// ServeHTTP serves GET /v1/ws: the handshake, then this goroutine returns, so that net/http's
// per-request state (its 4 KiB read and write buffers, the request and response) is freed
// rather than held for the life of the connection. The connection is then read event-driven
// (the edge's poller watches its socket, and a worker reads it when it is readable: no
// goroutine per idle connection) or, where that cannot run, by a goroutine of its own.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.wg.Add(1)
	defer s.wg.Done()
	c, ok := s.handshake(w, r)
	if !ok {
		return
	}
	c.prepareRead()
	s.wg.Add(1) // done when the connection's reading ends
	if p := s.poller(); p != nil && c.batch != nil {
		c.batch.frameOn()
		err := p.add(c)
		if err == nil {
			return
		}
		s.logger.Warn("edge: connection read by a goroutine instead", "err", err)
	}
	go func() {
		defer s.wg.Done()
		defer s.unregister(c)
		c.readLoop()
	}()
}

// poller returns the event-driven reader, starting it on first use; nil if it cannot run.
func (s *Server) poller() *poller {
	s.pollOnce.Do(func() {
		if s.cfg.GoroutineReads {
			return
		}
		w := newWorkers((*Conn).readReady, s.metrics.workers.WithLabelValues("read"))
		p, err := newPoller(w.submit)
		if err != nil {
			s.logger.Warn("edge: event-driven reads unavailable; one goroutine per connection", "err", err)
			return
		}
		s.poll, s.workers = p, w
	})
	return s.poll
}

// MaxHeaderBytes is the http.Server.MaxHeaderBytes to serve the edge with: a handshake with
// larger headers (an oversized Authorization header, say) is refused with 431 before any of
// it is parsed.
const MaxHeaderBytes = 16 << 10

// handshake authenticates and admits a connection, in order of cost: shed load first, then
// Origin, then the token, then the per-IP and per-user limits; then it upgrades and writes
// hello. Each step answers its own rejection.
func (s *Server) handshake(w http.ResponseWriter, r *http.Request) (*Conn, bool) {
	if !s.admit(w, r) {
		return nil, false
	}
	id, device, ok := s.authenticate(w, r)
	if !ok {
		return nil, false
	}
	if wait := s.userHandshakes.take(string(id.User), s.now()); wait > 0 {
		w.Header().Set("Retry-After", retryAfter(wait))
		s.reject(w, r, "rate_limited_user", http.StatusTooManyRequests, protocol.CodeRateLimited,
			"too many handshakes of this user; retry after Retry-After seconds", "user", id.User)
		return nil, false
	}
	c := &Conn{s: s, session: crand.Text(), user: id.User, device: device, ip: remoteIP(r),
		limiter: rate.NewLimiter(rate.Limit(s.cfg.FramesPerSecond), s.cfg.FrameBurst)}
	c.expires.Store(id.ValidUntil.UnixNano())
	c.ident.Store(&id)
	c.lastSeen.Store(s.now().UnixNano())
	if result, msg := s.reserve(c); result != "" {
		w.Header().Set("Retry-After", "10")
		s.reject(w, r, result, http.StatusTooManyRequests, protocol.CodeRateLimited, msg, "user", c.user)
		return nil, false
	}
	if !s.upgrade(w, r, c, id) {
		return nil, false
	}
	s.metrics.handshakes.WithLabelValues("ok").Inc()
	// A revocation that arrived while this handshake was between its check and register did
	// not find the connection; it is in the copy by now, so this second look catches it.
	if s.revoked != nil && s.revoked.Revoked(id, device) {
		s.closeRevoked(c, "recheck")
	}
	return c, true
}

// admit makes the cheap checks: the method, whether this edge takes connections now, the
// Origin, and that this is a WebSocket upgrade.
func (s *Server) admit(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		s.reject(w, r, "bad_request", http.StatusMethodNotAllowed, protocol.CodeBadRequest, "use GET with a WebSocket upgrade")
		return false
	}
	s.mu.Lock()
	draining, full := s.draining, s.count >= s.cfg.MaxConns
	s.mu.Unlock()
	if draining || full {
		w.Header().Set("Retry-After", strconv.Itoa(1+rand.IntN(5)))
		result, msg := "overloaded", "this edge is at its connection limit; retry later or elsewhere"
		if draining {
			result, msg = "draining", "this edge is shutting down; reconnect elsewhere"
		}
		s.reject(w, r, result, http.StatusServiceUnavailable, protocol.CodeUnavailable, msg)
		return false
	}
	// Every address's attempts count, before the costlier checks: a flood of bad tokens from
	// one address is refused without verifying them.
	if wait := s.ipHandshakes.take(handshakeIPKey(remoteIP(r)), s.now()); wait > 0 {
		w.Header().Set("Retry-After", retryAfter(wait))
		s.reject(w, r, "rate_limited_ip", http.StatusTooManyRequests, protocol.CodeRateLimited,
			"too many handshakes from this address; retry after Retry-After seconds")
		return false
	}
	if origin := r.Header.Get("Origin"); !s.cfg.originAllowed(origin) {
		s.reject(w, r, "forbidden_origin", http.StatusForbidden, protocol.CodeForbidden, "origin not allowed",
			"origin", truncate(origin, 256))
		return false
	}
	if !websocket.IsWebSocketUpgrade(r) {
		s.reject(w, r, "bad_request", http.StatusBadRequest, protocol.CodeBadRequest, "not a WebSocket upgrade request")
		return false
	}
	return true
}

// authenticate verifies the token and settles the device id (the token's device claim, or
// ?device= when the token has none; both must agree).
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (auth.Identity, chat.DeviceID, bool) {
	token, offered := credentials(r)
	if !offered {
		s.reject(w, r, "bad_request", http.StatusBadRequest, protocol.CodeBadRequest,
			"offer the subprotocol "+protocol.Subprotocol+" in Sec-WebSocket-Protocol")
		return auth.Identity{}, "", false
	}
	if token == "" || len(token) > protocol.MaxTokenBytes {
		w.Header().Set("WWW-Authenticate", `Bearer realm="parley"`)
		s.reject(w, r, "unauthorized", http.StatusUnauthorized, protocol.CodeUnauthorized,
			"missing or oversized token: send Authorization: Bearer <JWT> or the subprotocol "+protocol.TokenSubprotocolPrefix+"<JWT>")
		return auth.Identity{}, "", false
	}
	id, err := s.verifier.Verify(token)
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="parley", error="invalid_token"`)
		code := protocol.CodeUnauthorized
		if errors.Is(err, auth.ErrExpiredToken) {
			code = protocol.CodeTokenExpired
		}
		// The reason is logged (without the token); the client learns only the code.
		s.reject(w, r, "unauthorized", http.StatusUnauthorized, code, "invalid or expired token", "error", err.Error())
		return auth.Identity{}, "", false
	}
	device := id.Device
	if q := r.URL.Query().Get("device"); q != "" {
		d, err := chat.ParseDeviceID(q)
		switch {
		case err != nil:
			s.reject(w, r, "bad_request", http.StatusBadRequest, protocol.CodeBadRequest, err.Error())
			return auth.Identity{}, "", false
		case device != "" && d != device:
			s.reject(w, r, "forbidden", http.StatusForbidden, protocol.CodeForbidden, "device differs from the token's device claim")
			return auth.Identity{}, "", false
		}
		device = d
	}
	if device == "" {
		s.reject(w, r, "bad_request", http.StatusBadRequest, protocol.CodeBadRequest,
			"no device id: put a device claim in the token or ?device=ID in the URL")
		return auth.Identity{}, "", false
	}
	if s.revoked != nil && s.revoked.Revoked(id, device) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="parley", error="invalid_token"`)
		s.reject(w, r, "revoked", http.StatusUnauthorized, protocol.CodeTokenRevoked, "token revoked: sign in again")
		return auth.Identity{}, "", false
	}
	return id, device, true
}

// upgrade subscribes the user, upgrades the connection, registers it and writes hello. On
// failure the reservation is released.
func (s *Server) upgrade(w http.ResponseWriter, r *http.Request, c *Conn, id auth.Identity) bool {
	// The user's subject is subscribed before hello, so what the client's first sync does not
	// return is pushed live.
	s.subscribeUser(c)
	// On a batching connection the handshake response is held back and leaves in one write
	// with the hello frame.
	bc, _ := r.Context().Value(connKey{}).(*batchConn)
	if bc != nil {
		bc.begin()
	}
	ws, err := s.upgrader.Upgrade(w, r, http.Header{})
	if err != nil {
		if bc != nil {
			_ = bc.flush() // the error response follows unbatched
		}
		s.release(c)
		s.metrics.handshakes.WithLabelValues("upgrade_failed").Inc()
		return false
	}
	c.ws = ws
	c.batch, _ = ws.NetConn().(*batchConn) // served on Listener (bc is that too, with ConnContext)
	// The connection is registered before hello is written, so frames routed to the user from
	// now on reach it (its subscription is already confirmed: nothing published after the
	// client has hello is missed). Until hello is out the handshake holds the socket, and those
	// frames queue behind it: hello is always the first frame.
	c.holdWrites()
	s.register(c)
	hello, err := protocol.Encode(s.helloFrame(c, id))
	if err == nil {
		_ = ws.SetWriteDeadline(s.now().Add(s.cfg.WriteTimeout))
		err = ws.WriteMessage(websocket.TextMessage, hello)
	}
	if bc != nil {
		if ferr := bc.flush(); err == nil {
			err = ferr
		}
	}
	if err != nil {
		s.unregister(c) // closes the socket
		s.metrics.handshakes.WithLabelValues("hello_failed").Inc()
		return false
	}
	s.metrics.out(protocol.TypeHello)
	c.releaseWrites()
	return true
}

// helloFrame is the first frame of a connection: its session, identity, the protocol version
// and the limits the edge enforces.
func (s *Server) helloFrame(c *Conn, id auth.Identity) protocol.Frame {
	return protocol.Frame{
		Type: protocol.TypeHello, Session: c.session, User: string(c.user), Device: string(c.device),
		Version: protocol.Version, TS: s.now().UnixMilli(), HeartbeatMS: s.cfg.HeartbeatInterval.Milliseconds(),
		ExpiresAt: id.ExpiresAt.UnixMilli(),
		Limits: &protocol.Limits{MaxFrameBytes: s.cfg.MaxFrameBytes, MaxBodyBytes: s.cfg.MaxBodyBytes,
			FramesPerSecond: s.cfg.FramesPerSecond, FrameBurst: s.cfg.FrameBurst, MaxSubscriptions: s.cfg.MaxSubscriptions},
	}
}

// credentials returns the token (Authorization: Bearer, or the token subprotocol) and whether
// the client offered Parley's subprotocol.
func credentials(r *http.Request) (token string, offered bool) {
	for _, p := range websocket.Subprotocols(r) {
		switch {
		case p == protocol.Subprotocol:
			offered = true
		case strings.HasPrefix(p, protocol.TokenSubprotocolPrefix):
			token = strings.TrimPrefix(p, protocol.TokenSubprotocolPrefix)
		}
	}
	if h := r.Header.Get("Authorization"); h != "" {
		if scheme, t, ok := strings.Cut(h, " "); ok && strings.EqualFold(scheme, "Bearer") {
			token = strings.TrimSpace(t)
		}
	}
	return token, offered
}

func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// reserve takes the connection's per-IP and per-user slots and one of the edge's, or says
// which limit refused it.
func (s *Server) reserve(c *Conn) (result, msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perIP[c.ip] >= s.cfg.MaxConnsPerIP {
		return "limited_ip", fmt.Sprintf("more than %d connections from this address", s.cfg.MaxConnsPerIP)
	}
	if u := s.users[c.user]; u != nil && len(u.conns)+u.reserved >= s.cfg.MaxConnsPerUser {
		return "limited_user", fmt.Sprintf("more than %d connections of this user on this edge", s.cfg.MaxConnsPerUser)
	}
	s.perIP[c.ip]++
	s.count++
	u := s.users[c.user]
	if u == nil {
		u = &userConns{}
		s.users[c.user] = u
	}
	u.reserved++
	return "", ""
}

// register makes an upgraded connection visible to the sweeper and to the routing of its
// user's frames (the user's subscription was made by the handshake).
func (s *Server) register(c *Conn) {
	s.mu.Lock()
	c.bucket = s.next
	s.next = (s.next + 1) % len(s.buckets)
	s.buckets[c.bucket][c] = struct{}{}
	u := s.users[c.user]
	u.reserved--
	u.conns = append(u.conns, c) // routed frames reach it only now that its socket is set
	draining := s.draining
	s.mu.Unlock()
	s.metrics.connections.Inc()
	if draining {
		// Shutdown began after this handshake was admitted and did not see it: it gets the
		// drain's reconnect hint too (after hello), and is closed with the rest.
		c.Send(protocol.Frame{Type: protocol.TypeReconnect, AfterMS: 0, Reason: "draining"})
	}
	if s.presence != nil {
		s.presence.Connected(c.user, c.session)
	}
}

// release undoes reserve for a connection that never upgraded.
func (s *Server) release(c *Conn) {
	s.mu.Lock()
	s.users[c.user].reserved--
	sub := s.removeLocked(c)
	s.mu.Unlock()
	if sub != nil {
		_ = sub.Unsubscribe()
	}
}

// removeLocked frees c's slots and returns the user's subscription to close if c was the
// user's last connection here.
func (s *Server) removeLocked(c *Conn) *nats.Subscription {
	if s.perIP[c.ip]--; s.perIP[c.ip] <= 0 {
		delete(s.perIP, c.ip)
	}
	s.count--
	u := s.users[c.user]
	for i, x := range u.conns {
		if x == c {
			u.conns = append(u.conns[:i], u.conns[i+1:]...)
			break
		}
	}
	if len(u.conns) > 0 || u.reserved > 0 {
		return nil
	}
	delete(s.users, c.user)
	return u.sub
}

// unregister removes a connection whose reader ended and closes its socket.
func (s *Server) unregister(c *Conn) {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	s.mu.Lock()
	delete(s.buckets[c.bucket], c)
	sub := s.removeLocked(c)
	s.mu.Unlock()
	s.dropWatches(c)
	if s.presence != nil {
		s.presence.Disconnected(c.user, c.session)
	}
	s.metrics.connections.Dec()
	if sub != nil {
		_ = sub.Unsubscribe()
	}
	_ = c.ws.Close()
}

// dispatch runs the handler of a decoded frame.
func (s *Server) dispatch(c *Conn, f protocol.Frame) {
	if f.Type == protocol.TypeSend && len(f.Body) > s.cfg.MaxBodyBytes {
		c.SendError(f.ID, protocol.Errorf(protocol.CodeBodyTooLarge, "body is %d bytes, at most %d allowed", len(f.Body), s.cfg.MaxBodyBytes))
		return
	}
	if f.Type == protocol.TypePresenceSubscribe && len(f.Users) > s.cfg.MaxSubscriptions {
		c.SendError(f.ID, protocol.Errorf(protocol.CodeTooManySubscriptions, "at most %d subscriptions per connection", s.cfg.MaxSubscriptions))
		return
	}
	h, ok := s.handlers[f.Type]
	if !ok {
		c.SendError(f.ID, protocol.Errorf(protocol.CodeUnsupported, "frame type %q is not handled by this server", f.Type))
		return
	}
	h(s.ctx, c, f)
}

func (s *Server) handlePing(_ context.Context, c *Conn, f protocol.Frame) {
	c.Send(protocol.Frame{Type: protocol.TypePong, ID: f.ID, TS: s.now().UnixMilli()})
}

// handleRefresh replaces the connection's token. The new token must be for the same user and,
// if it names a device, the same device. A bad token leaves the old one in force.
func (s *Server) handleRefresh(_ context.Context, c *Conn, f protocol.Frame) {
	id, err := s.verifier.Verify(f.Token)
	switch {
	case errors.Is(err, auth.ErrExpiredToken):
		c.SendError(f.ID, protocol.Errorf(protocol.CodeTokenExpired, "the new token has expired"))
		return
	case err != nil:
		c.SendError(f.ID, protocol.Errorf(protocol.CodeUnauthorized, "invalid token"))
		return
	case id.User != c.user || (id.Device != "" && id.Device != c.device):
		c.SendError(f.ID, protocol.Errorf(protocol.CodeForbidden, "the new token is for another user or device"))
		return
	case s.revoked != nil && s.revoked.Revoked(id, c.device):
		c.SendError(f.ID, protocol.Errorf(protocol.CodeTokenRevoked, "the new token is revoked"))
		return
	}
	if s.refreshChecked != nil {
		s.refreshChecked()
	}
	c.ident.Store(&id)
	c.expires.Store(id.ValidUntil.UnixNano())
	// A revocation of the new token that arrived between the check and the store was matched
	// by Revoke against the old token; the new one is in place now, so this second look
	// catches it (as the handshake's after register).
	if s.revoked != nil && s.revoked.Revoked(id, c.device) {
		s.closeRevoked(c, "recheck")
		return
	}
	c.Send(protocol.Frame{Type: protocol.TypeOK, ID: f.ID, ExpiresAt: id.ExpiresAt.UnixMilli()})
}

// EnableRevocations makes handshakes and auth.refresh refuse revoked tokens (401 and the
// error token_revoked). Call before serving; feed new revocations to Revoke.
func (s *Server) EnableRevocations(r Revocations) { s.revoked = r }

// Revoke closes this edge's connections whose current token r revokes, with an error
// token_revoked and close 4003, and returns how many.
func (s *Server) Revoke(r auth.Revocation) int {
	var conns []*Conn
	s.mu.Lock()
	if r.TokenID == "" {
		if u := s.users[r.User]; u != nil {
			conns = append(conns, u.conns...)
		}
	} else { // rare (an operator's action): look at every connection
		for _, b := range s.buckets {
			for c := range b {
				conns = append(conns, c)
			}
		}
	}
	s.mu.Unlock()
	n := 0
	for _, c := range conns {
		if id := c.ident.Load(); id != nil && r.Matches(*id, c.device) {
			s.closeRevoked(c, revocationKind(r))
			n++
		}
	}
	return n
}

// closeRevoked tells c its token is revoked and closes it with 4003.
func (s *Server) closeRevoked(c *Conn, kind string) {
	c.SendError("", protocol.Errorf(protocol.CodeTokenRevoked, "token revoked: sign in again"))
	c.close(protocol.CloseTokenRevoked, "token revoked", false)
	c.securityEvent(eventRevocationClose, "revoked_by", kind)
}

// revocationKind names what r revokes, for logs: "user", "device", "jti".
func revocationKind(r auth.Revocation) string {
	switch {
	case r.TokenID != "":
		return "jti"
	case r.Device != "":
		return "device"
	}
	return "user"
}

// Run runs the sweeper and the NATS router until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	t := time.NewTicker(sweepTick)
	defer t.Stop()
	flush := time.NewTicker(presenceTick)
	defer flush.Stop()
	if s.nc != nil {
		sub, err := s.nc.ChanSubscribe(routing.MembershipSubject("*"), s.natsCh)
		if err != nil {
			return fmt.Errorf("edge: subscribe to membership changes: %w", err)
		}
		defer func() { _ = sub.Unsubscribe() }()
	}
	if r := s.rebal; r != nil {
		s.mu.Lock()
		start := !r.started
		r.started = true
		s.mu.Unlock()
		if start {
			go s.runRebalance(ctx)
			defer func() { <-r.done }()
		}
	}
	bucket := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case m := <-s.natsCh:
			s.route(m)
		case <-flush.C:
			s.flushPresence()
		case <-t.C:
			s.security.flush(s.now())
			s.sweep(bucket)
			if bucket == 0 { // once a heartbeat interval
				s.userHandshakes.prune(s.now())
				s.ipHandshakes.prune(s.now())
			}
			bucket = (bucket + 1) % len(s.buckets)
		}
	}
}

// route forwards a frame published on a user subject to that user's connections here.
func (s *Server) route(m *nats.Msg) {
	if conv, ok := strings.CutPrefix(m.Subject, routing.MembershipSubjectPrefix); ok {
		if id, err := chat.ParseConversationID(conv); err == nil {
			s.membership.invalidate(id)
		}
		return
	}
	if strings.HasPrefix(m.Subject, routing.PresenceSubjectPrefix) {
		s.presenceEvent(m)
		return
	}
	user := chat.UserID(strings.TrimPrefix(m.Subject, routing.UserSubjectPrefix))
	typ := protocol.Type(m.Header.Get(routing.HeaderFrameType))
	s.mu.Lock()
	u := s.users[user]
	var conns []*Conn
	if u != nil {
		conns = append(conns, u.conns...)
	}
	s.mu.Unlock()
	s.metrics.natsMsgs.Inc()
	for _, c := range conns {
		c.enqueue(outFrame{data: m.Data, typ: typ, ephemeral: protocol.Ephemeral(typ)})
	}
}

// sweep visits one bucket: tokens past their exp plus the verifier's leeway (when the
// handshake stops accepting them) are closed with 4001, connections silent for two
// heartbeat intervals are closed, and those silent for one are pinged.
func (s *Server) sweep(bucket int) {
	now := s.now().UnixNano()
	hb := s.cfg.HeartbeatInterval.Nanoseconds()
	s.mu.Lock()
	conns := make([]*Conn, 0, len(s.buckets[bucket]))
	for c := range s.buckets[bucket] {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		silent := now - c.lastSeen.Load()
		switch {
		case now >= c.expires.Load():
			c.SendError("", protocol.Errorf(protocol.CodeTokenExpired, "token expired; reconnect with a new token"))
			c.close(protocol.CloseTokenExpired, "token expired", false)
		case silent >= 2*hb:
			s.metrics.closes.WithLabelValues("dead").Inc()
			c.abort() // no pong for a whole interval: the reader ends
		case silent >= hb-sweepTick.Nanoseconds():
			c.enqueue(outFrame{ping: true, ephemeral: true})
		}
	}
}

// Shutdown drains the edge. For Config.DrainDelay first it serves as before, while the load
// balancer, told by /readyz, takes it out of rotation; then new handshakes get 503, every
// connection gets a reconnect hint with a delay spread over the drain window (so clients do not
// all reconnect at once), and connections still open when the window (or ctx) ends are closed
// with 1001. It returns when every reader and writer has finished. The pause and the window
// are shortened to fit ctx's deadline (at most a quarter and half of what is left).
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopRebalance()
	if delay := s.cfg.DrainDelay; delay > 0 {
		if d, ok := ctx.Deadline(); ok {
			delay = min(delay, time.Until(d)/4)
		}
		pause := time.NewTimer(delay)
		select {
		case <-pause.C:
		case <-ctx.Done():
			pause.Stop()
		}
	}
	s.mu.Lock()
	s.draining = true
	var conns []*Conn
	for _, b := range s.buckets {
		for c := range b {
			conns = append(conns, c)
		}
	}
	s.mu.Unlock()

	window := s.cfg.DrainWindow
	if d, ok := ctx.Deadline(); ok {
		window = min(window, time.Until(d)/2)
	}
	for _, c := range conns {
		after := time.Duration(0)
		if window > 0 {
			after = time.Duration(rand.Int64N(int64(window)))
		}
		c.Send(protocol.Frame{Type: protocol.TypeReconnect, AfterMS: after.Milliseconds(), Reason: "draining"})
	}
	deadline := time.NewTimer(window + time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
wait:
	for s.connCount() > 0 {
		select {
		case <-ctx.Done():
			break wait
		case <-deadline.C:
			break wait
		case <-tick.C:
		}
	}
	s.mu.Lock()
	for _, b := range s.buckets {
		for c := range b {
			c.close(protocol.CloseGoingAway, "server shutting down", false)
		}
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.mu.Lock()
		for _, b := range s.buckets {
			for c := range b {
				c.abort()
			}
		}
		s.mu.Unlock()
		<-done
	}
	s.pollOnce.Do(func() {}) // no poller starts after this
	s.pollStop.Do(func() {
		if s.poll != nil {
			s.poll.close()
			s.workers.close()
		}
		s.writers.close()
		s.stopSubscriber()
	})
	s.cancel()
	return ctx.Err()
}

func (s *Server) connCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count
}

// reject answers a refused handshake with a JSON error body, counts it by result, and logs it
// as a security event (with attrs, key-value pairs that never include the token), except the
// refusals of an edge that is full or draining, which say nothing about the client.
func (s *Server) reject(w http.ResponseWriter, r *http.Request, result string, status int, code protocol.Code, msg string, attrs ...any) {
	s.metrics.handshakes.WithLabelValues(result).Inc()
	kind := eventHandshakeRefused
	switch result {
	case "draining", "overloaded":
		kind = ""
	case "forbidden_origin":
		kind = eventOriginRefused
	case "rate_limited_user", "rate_limited_ip", "limited_user", "limited_ip":
		kind = eventHandshakeLimited
	}
	if kind != "" {
		s.securityEvent(kind, append([]any{"reason", result, "status", status, "code", code, "message", msg,
			"remote", remoteIP(r)}, attrs...)...)
	}
	httpError(w, status, code, msg)
}

// truncate cuts a client-supplied string for a log record.
func truncate(v string, n int) string {
	if len(v) <= n {
		return v
	}
	return strings.ToValidUTF8(v[:n], "") + "..."
}

func httpError(w http.ResponseWriter, status int, code protocol.Code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"code": code, "message": msg, "retryable": code.Retryable()})
}
