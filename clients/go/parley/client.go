package parley

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/protocol"
)

// TokenSource returns a JWT for the user. It is called for every (re)connection and token
// refresh, so it can hand out fresh tokens; after the server revoked the token, a source with
// nothing newer ends the client's reconnecting with ErrTokenRevoked.
type TokenSource func(ctx context.Context) (string, error)

// StaticToken is a TokenSource that always returns token.
func StaticToken(token string) TokenSource {
	return func(context.Context) (string, error) { return token, nil }
}

// Option configures a Client.
type Option func(*options)

type options struct {
	token      TokenSource
	device     string
	logger     *slog.Logger
	httpClient *http.Client
	apiURL     string
	store      Store
	autoAck    bool
	backoffMin time.Duration
	backoffMax time.Duration
	pingAfter  time.Duration
	deadAfter  time.Duration
}

// WithToken sets the token source (required).
func WithToken(ts TokenSource) Option { return func(o *options) { o.token = ts } }

// WithDevice names this device (sent as ?device= when the token names none).
func WithDevice(id string) Option { return func(o *options) { o.device = id } }

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithHTTPClient sets the HTTP client of the REST API and the WebSocket handshake.
func WithHTTPClient(c *http.Client) Option { return func(o *options) { o.httpClient = c } }

// WithAPIURL sets the REST API's base URL (default: the WebSocket URL's host over http/https).
func WithAPIURL(u string) Option { return func(o *options) { o.apiURL = strings.TrimSuffix(u, "/") } }

// WithStore sets where cursors and the outbox are kept (default: a MemoryStore). Use a
// FileStore to keep them across process restarts.
func WithStore(s Store) Option { return func(o *options) { o.store = s } }

// WithAutoAck says whether delivered messages are acknowledged to the server automatically
// (default true: the sender gets "delivered" receipts once the app has received them).
func WithAutoAck(on bool) Option { return func(o *options) { o.autoAck = on } }

// WithBackoff sets the reconnect backoff: exponential from min, capped at max, with full
// jitter (default 250ms, 30s).
func WithBackoff(min, max time.Duration) Option {
	return func(o *options) { o.backoffMin, o.backoffMax = min, max }
}

// WithLiveness sets how the client tells a frozen server from a quiet one: after pingAfter
// without any frame from the server it sends a ping, and after deadAfter without any it gives
// the connection up and reconnects (default 5s and 15s; docs/protocol.md, section 4).
func WithLiveness(pingAfter, deadAfter time.Duration) Option {
	return func(o *options) { o.pingAfter, o.deadAfter = pingAfter, deadAfter }
}

// ConnState is the connection's state, reported as events.
type ConnState int

// Connection states.
const (
	Connecting ConnState = iota
	Connected            // the socket is up and the first sync is done
	Disconnected
)

func (s ConnState) String() string {
	return [...]string{"connecting", "connected", "disconnected"}[s]
}

// EventKind says what an Event carries.
type EventKind int

// Event kinds.
const (
	// EventMessage: Message is a message (or event entry) of a conversation, delivered exactly
	// once per client and in seq order within its conversation.
	EventMessage EventKind = iota
	// EventAccepted: the message sent with ClientMsgID is durable on the server.
	EventAccepted
	// EventSendFailed: the message with ClientMsgID was refused for good (Err says why); it
	// has left the outbox.
	EventSendFailed
	// EventReceipt, EventPresence, EventTyping: Frame is the server's frame.
	EventReceipt
	EventPresence
	EventTyping
	// EventState: State is the new connection state (Err: why it dropped, if it did).
	EventState
)

// Event is something the client tells the app, in order, on Events().
type Event struct {
	Kind        EventKind
	Message     protocol.Message
	ClientMsgID string
	Frame       protocol.Frame
	State       ConnState
	Err         error
}

// ErrClosed is returned by calls on a closed client.
var ErrClosed = errors.New("parley: client closed")

// ErrTokenRevoked says the server refused the client's token as revoked (a logout, a lost
// device: the connection closed with 4003, or the handshake refused with 401 token_revoked)
// and the token source had no token the server accepts: it returned the revoked token again,
// or a new one refused as revoked too. The client then stops reconnecting: the last EventState
// (Disconnected) carries an error that matches it with errors.Is, and so do Dial, Send and
// every request from then on. Sign the user in again and Dial a new client; the outbox and
// cursors stay in the Store. A REST answer 401 token_revoked (an *APIError) matches it too.
var ErrTokenRevoked = errors.New("parley: token revoked: sign in again")

// Client is a connection to Parley that survives disconnects: it reconnects with backoff,
// resumes with sync, resends its outbox, and delivers every message to the app once, in seq
// order per conversation. Methods are safe for concurrent use.
type Client struct {
	url    string
	opts   options
	events chan Event
	rest   *REST

	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once

	deliverMu sync.Mutex // serializes offers to the tracker and event delivery (order)
	track     *tracker

	// tok is the token of the current (or last) connection and revokedTok the last one the
	// server refused as revoked; both are used by Dial, then by the loop only.
	tok, revokedTok string

	mu      sync.Mutex
	stopErr error // why the client stopped reconnecting (ErrTokenRevoked), nil while it tries
	st      State // the persisted state (cursors are copied from the tracker on save)
	outSeq  int64
	ws      *websocket.Conn
	wmu     sync.Mutex // one writer at a time on ws
	replies map[string]chan protocol.Frame
	nextID  int64
	sentAt  map[string]time.Time // outbox entries in flight on the current connection
	retryAt map[string]time.Time // per conversation: no send before (after a retryable refusal)
	acks    map[string]int64     // per conversation: the highest seq to acknowledge at the next flush
	kick    chan struct{}        // wakes the sender
	// watching is the users subscribed (presence) on the current connection, to subscribe
	// again for a fresh snapshot when the server says presence.resync.
	watching map[string]struct{}
	syncing  bool
	resyncTo bool // a gap was found while syncing: sync again when done
	// resyncTimer is a pending sync after one that left a gap open; resyncWait its pause.
	resyncTimer *time.Timer
	resyncWait  time.Duration
}

// Dial connects to the edge at url (ws://host:port/v1/ws) and keeps a connection up until
// Close. It fails only if the first connection fails (a bad URL or token, the server down);
// after that every disconnect is repaired in the background. The first sync runs at once:
// EventState Connected says it is done.
func Dial(ctx context.Context, url string, opts ...Option) (*Client, error) {
	o := options{logger: slog.New(slog.NewTextHandler(io.Discard, nil)), autoAck: true, httpClient: http.DefaultClient,
		backoffMin: 250 * time.Millisecond, backoffMax: 30 * time.Second, pingAfter: 5 * time.Second, deadAfter: 15 * time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	if o.token == nil {
		return nil, errors.New("parley: WithToken is required")
	}
	if o.store == nil {
		o.store = NewMemoryStore()
	}
	if o.apiURL == "" {
		o.apiURL = apiFromWS(url)
	}
	st, err := o.store.Load()
	if err != nil {
		return nil, fmt.Errorf("parley: load state: %w", err)
	}
	st = st.clone()
	c := &Client{url: url, opts: o, events: make(chan Event, 256), st: st, track: newTracker(st.Cursors),
		replies: map[string]chan protocol.Frame{}, sentAt: map[string]time.Time{}, retryAt: map[string]time.Time{},
		acks: map[string]int64{}, kick: make(chan struct{}, 1)}
	for _, p := range st.Outbox {
		c.outSeq = max(c.outSeq, p.Seq)
	}
	c.rest = &REST{base: o.apiURL, http: o.httpClient, token: o.token}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	ws, hello, err := c.connect(ctx)
	if err != nil {
		c.cancel()
		return nil, err
	}
	c.wg.Add(1)
	go c.loop(ws, hello)
	return c, nil
}

// apiFromWS turns ws://host/v1/ws into http://host (wss into https).
func apiFromWS(u string) string {
	rest, scheme := strings.CutPrefix(u, "wss://")
	if scheme {
		return "https://" + strings.SplitN(rest, "/", 2)[0]
	}
	rest, _ = strings.CutPrefix(u, "ws://")
	return "http://" + strings.SplitN(rest, "/", 2)[0]
}

// Events returns the channel of events, closed by Close. Read it continuously: delivery
// waits for the app.
func (c *Client) Events() <-chan Event { return c.events }

// REST returns the typed client of the history REST API, authenticated like the socket.
func (c *Client) REST() *REST { return c.rest }

// Close stops the client: the socket is closed and every goroutine it started has ended when
// Close returns. The outbox and cursors stay in the Store.
func (c *Client) Close() error {
	c.cancel()
	c.mu.Lock()
	ws := c.ws
	c.mu.Unlock()
	if ws != nil {
		_ = ws.Close()
	}
	c.wg.Wait()
	c.closeOnce.Do(func() { close(c.events) })
	return nil
}

// Send queues a message for conversation and returns its client_msg_id. The message is in
// the outbox (and the Store) when Send returns; it is sent now if connected and resent with the
// same id after any disconnect until the server accepts it (EventAccepted) or refuses it for
// good (EventSendFailed).
func (c *Client) Send(ctx context.Context, conversation, body string) (string, error) {
	if c.ctx.Err() != nil {
		return "", ErrClosed
	}
	id := newUUID()
	c.mu.Lock()
	if c.stopErr != nil {
		c.mu.Unlock()
		return "", c.stopErr
	}
	c.outSeq++
	p := Pending{ClientMsgID: id, Conversation: conversation, Body: body, Seq: c.outSeq}
	c.st.Outbox[id] = p
	err := c.saveLocked()
	c.mu.Unlock()
	if err != nil {
		return "", fmt.Errorf("parley: persist outbox: %w", err)
	}
	c.wake()
	return id, nil
}

// MarkRead tells the server the user has read conversation up to seq (the other members get
// a read receipt, the user's other devices the new position).
func (c *Client) MarkRead(ctx context.Context, conversation string, seq int64) error {
	_, err := c.request(ctx, protocol.Frame{Type: protocol.TypeRead, Conversation: conversation, Seq: seq})
	return err
}

// Typing tells the other members' devices the user is typing (renew every few seconds).
func (c *Client) Typing(ctx context.Context, conversation string) error {
	_, err := c.request(ctx, protocol.Frame{Type: protocol.TypeTyping, Conversation: conversation})
	return err
}

// Subscribe watches users' presence: it returns their current states, and changes arrive as
// EventPresence. Subscriptions end with the connection: subscribe again after a reconnect
// (EventState Connected). When the server says some updates were lost (presence.resync), the
// client subscribes again to the users it watches and delivers the fresh snapshot as
// EventPresence (a Frame with the states of those users).
func (c *Client) Subscribe(ctx context.Context, users ...string) ([]protocol.PresenceState, error) {
	f, ws, err := c.requestOn(ctx, protocol.Frame{Type: protocol.TypePresenceSubscribe, Users: users})
	if err == nil {
		c.mu.Lock()
		if c.ws == ws { // still the connection the subscription was made on
			if c.watching == nil {
				c.watching = map[string]struct{}{}
			}
			for _, u := range users {
				c.watching[u] = struct{}{}
			}
		}
		c.mu.Unlock()
	}
	return f.Presence, err
}

// Unsubscribe stops watching users.
func (c *Client) Unsubscribe(ctx context.Context, users ...string) error {
	_, _, err := c.requestOn(ctx, protocol.Frame{Type: protocol.TypePresenceUnsubscribe, Users: users})
	if err == nil {
		c.mu.Lock()
		for _, u := range users {
			delete(c.watching, u)
		}
		c.mu.Unlock()
	}
	return err
}

// resubscribe answers presence.resync on ws: it subscribes again to the users watched there,
// in frames of at most protocol.MaxUsersPerCall users, and delivers each fresh snapshot as
// EventPresence, so the app's picture is right again.
func (c *Client) resubscribe(ws *websocket.Conn) {
	c.mu.Lock()
	if c.ws != ws {
		c.mu.Unlock()
		return
	}
	users := make([]string, 0, len(c.watching))
	for u := range c.watching {
		users = append(users, u)
	}
	c.mu.Unlock()
	sort.Strings(users)
	for len(users) > 0 {
		n := min(len(users), protocol.MaxUsersPerCall)
		ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
		f, on, err := c.requestOn(ctx, protocol.Frame{Type: protocol.TypePresenceSubscribe, Users: users[:n]})
		cancel()
		if err != nil || on != ws {
			c.opts.logger.Warn("parley: presence snapshot after presence.resync", "err", err)
			return // a new connection starts without subscriptions: the app subscribes again
		}
		c.emit(Event{Kind: EventPresence, Frame: protocol.Frame{Type: protocol.TypePresence, Presence: f.Presence}})
		users = users[n:]
	}
}

// ServerError is an error frame from the server.
type ServerError struct {
	Code      protocol.Code
	Message   string
	Retryable bool
}

func (e *ServerError) Error() string { return fmt.Sprintf("parley: %s: %s", e.Code, e.Message) }

// ErrNotConnected is returned by requests (MarkRead, Typing, Subscribe, ...) made while the
// client is reconnecting; Send never returns it (the outbox waits).
var ErrNotConnected = errors.New("parley: not connected (reconnecting)")

// request sends f with a fresh id and waits for the frame answering it.
func (c *Client) request(ctx context.Context, f protocol.Frame) (protocol.Frame, error) {
	r, _, err := c.requestOn(ctx, f)
	return r, err
}

// requestOn is request, also returning the connection the request went out on.
func (c *Client) requestOn(ctx context.Context, f protocol.Frame) (protocol.Frame, *websocket.Conn, error) {
	c.mu.Lock()
	if c.ws == nil {
		stopErr := c.stopErr
		c.mu.Unlock()
		switch {
		case c.ctx.Err() != nil:
			return protocol.Frame{}, nil, ErrClosed
		case stopErr != nil:
			return protocol.Frame{}, nil, stopErr
		}
		return protocol.Frame{}, nil, ErrNotConnected
	}
	c.nextID++
	f.ID = "c" + strconv.FormatInt(c.nextID, 10)
	ch := make(chan protocol.Frame, 1)
	c.replies[f.ID] = ch
	ws := c.ws
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.replies, f.ID)
		c.mu.Unlock()
	}()
	if err := c.write(ws, f); err != nil {
		return protocol.Frame{}, ws, err
	}
	select {
	case r, ok := <-ch:
		if !ok {
			return protocol.Frame{}, ws, ErrNotConnected // the connection dropped first
		}
		if r.Type == protocol.TypeError {
			return r, ws, &ServerError{Code: r.Code, Message: r.Message, Retryable: r.Retryable}
		}
		return r, ws, nil
	case <-ctx.Done():
		return protocol.Frame{}, ws, ctx.Err()
	case <-c.ctx.Done():
		return protocol.Frame{}, ws, ErrClosed
	}
}

func (c *Client) write(ws *websocket.Conn, f protocol.Frame) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return ws.WriteJSON(f)
}

// emit hands an event to the app, or gives up when the client closes.
func (c *Client) emit(e Event) bool {
	select {
	case c.events <- e:
		return true
	case <-c.ctx.Done():
		return false
	}
}

// handshakeError is a refused handshake, with the server's error code and Retry-After.
type handshakeError struct {
	status     int
	code       protocol.Code // "" when the body named none
	retryAfter time.Duration
}

func (e *handshakeError) Error() string {
	if e.code != "" {
		return fmt.Sprintf("parley: handshake refused: HTTP %d %s", e.status, e.code)
	}
	return fmt.Sprintf("parley: handshake refused: HTTP %d", e.status)
}

// Unwrap makes a refusal of a revoked token match ErrTokenRevoked.
func (e *handshakeError) Unwrap() error {
	if e.code == protocol.CodeTokenRevoked {
		return ErrTokenRevoked
	}
	return nil
}

// connect dials and reads hello.
func (c *Client) connect(ctx context.Context) (*websocket.Conn, protocol.Frame, error) {
	var hello protocol.Frame
	tok, err := c.opts.token(ctx)
	if err != nil {
		return nil, hello, fmt.Errorf("parley: token: %w", err)
	}
	if c.revokedTok != "" && tok == c.revokedTok {
		return nil, hello, fmt.Errorf("%w (the token source returned the revoked token again)", ErrTokenRevoked)
	}
	c.tok = tok
	u := c.url
	if c.opts.device != "" {
		sep := "?"
		if strings.Contains(u, "?") {
			sep = "&"
		}
		u += sep + "device=" + c.opts.device
	}
	d := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}, HandshakeTimeout: 10 * time.Second,
		ReadBufferSize: 4096, WriteBufferSize: 4096}
	ws, resp, err := d.DialContext(ctx, u, http.Header{"Authorization": {"Bearer " + tok}})
	if err != nil {
		if resp != nil {
			he := &handshakeError{status: resp.StatusCode}
			if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
				he.retryAfter = time.Duration(s) * time.Second
			}
			// The body is the server's {"code", "message", "retryable"} (the dialer keeps
			// its first KiB).
			var body struct {
				Code protocol.Code `json:"code"`
			}
			if resp.Body != nil && json.NewDecoder(resp.Body).Decode(&body) == nil {
				he.code = body.Code
			}
			if he.code == protocol.CodeTokenRevoked {
				c.revokedTok = tok
			}
			return nil, hello, he
		}
		return nil, hello, err
	}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := ws.ReadJSON(&hello); err != nil || hello.Type != protocol.TypeHello {
		ws.Close()
		return nil, hello, fmt.Errorf("parley: no hello: %v", err)
	}
	_ = ws.SetReadDeadline(time.Time{})
	return ws, hello, nil
}

// loop runs connections one after another until Close, or until the server has refused two
// tokens in a row as revoked (the revoked one, then the next one the token source gave).
func (c *Client) loop(ws *websocket.Conn, hello protocol.Frame) {
	defer c.wg.Done()
	attempt := 0
	revoked := 0 // tokens refused as revoked in a row
	for {
		var hint time.Duration
		if ws != nil {
			attempt, revoked = 0, 0
			var code int
			hint, code = c.session(ws, hello)
			if c.ctx.Err() != nil {
				return
			}
			if code == protocol.CloseTokenRevoked {
				// Ask the token source for another token. Not before a second has passed: a
				// revocation by user or device also covers tokens issued in its own second
				// (iat is in whole seconds), so one signed in again at once would be refused.
				c.opts.logger.Warn("parley: token revoked (close 4003); asking the token source for a new one")
				revoked, c.revokedTok = 1, c.tok
				hint = max(hint, time.Second)
			}
			c.emit(Event{Kind: EventState, State: Disconnected})
		}
		wait := hint
		if wait == 0 {
			wait = c.backoff(attempt)
		}
		select {
		case <-c.ctx.Done():
			return
		case <-time.After(wait):
		}
		c.emit(Event{Kind: EventState, State: Connecting})
		var err error
		ws, hello, err = c.connect(c.ctx)
		if err != nil {
			attempt++
			c.opts.logger.Warn("parley: connect", "attempt", attempt, "err", err)
			if errors.Is(err, ErrTokenRevoked) {
				if revoked++; revoked >= 2 {
					c.stop(err)
					return
				}
				ws = nil
				continue // the token source is asked again after the backoff
			}
			var he *handshakeError
			if errors.As(err, &he) && he.retryAfter > 0 {
				select {
				case <-c.ctx.Done():
					return
				case <-time.After(he.retryAfter):
				}
			}
			ws = nil
		}
	}
}

// stop ends the reconnecting for good: requests and sends answer err from now on, and the
// app is told with a last Disconnected state that carries err.
func (c *Client) stop(err error) {
	c.mu.Lock()
	c.stopErr = err
	c.mu.Unlock()
	c.opts.logger.Warn("parley: not reconnecting", "err", err)
	c.emit(Event{Kind: EventState, State: Disconnected, Err: err})
}

// backoff is exponential from backoffMin, capped at backoffMax, with full jitter.
func (c *Client) backoff(attempt int) time.Duration {
	ceil := c.opts.backoffMin << min(attempt, 20)
	if ceil <= 0 || ceil > c.opts.backoffMax {
		ceil = c.opts.backoffMax
	}
	n, _ := rand.Int(rand.Reader, big.NewInt(int64(ceil)+1))
	return time.Duration(n.Int64())
}

// session serves one connection: it reads frames, syncs, resends the outbox, and returns
// when the socket fails (with the server's reconnect delay, if it sent one, and its close
// code, 0 if none).
func (c *Client) session(ws *websocket.Conn, hello protocol.Frame) (hint time.Duration, closeCode int) {
	c.mu.Lock()
	c.ws = ws
	c.watching = nil // subscriptions end with the connection
	c.sentAt = map[string]time.Time{}
	c.retryAt = map[string]time.Time{}
	c.mu.Unlock()
	done := make(chan struct{})
	var (
		hintMu   sync.Mutex
		lastRead atomic.Int64 // when the server was last heard from, Unix nanoseconds
	)
	lastRead.Store(time.Now().UnixNano())
	ws.SetPingHandler(func(data string) error {
		lastRead.Store(time.Now().UnixNano())
		err := ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
		if errors.Is(err, websocket.ErrCloseSent) {
			return nil
		}
		return err
	})
	c.wg.Add(1)
	go func() { // the reader
		defer c.wg.Done()
		defer close(done)
		for {
			var f protocol.Frame
			if err := ws.ReadJSON(&f); err != nil {
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					hintMu.Lock()
					closeCode = ce.Code
					hintMu.Unlock()
				}
				return
			}
			lastRead.Store(time.Now().UnixNano())
			if f.Type == protocol.TypeReconnect {
				hintMu.Lock()
				hint = time.Duration(f.AfterMS) * time.Millisecond
				hintMu.Unlock()
			}
			c.handle(ws, f)
		}
	}()
	c.wg.Add(1)
	go func() { // first sync, then the sender
		defer c.wg.Done()
		if err := c.sync(ws); err != nil {
			c.opts.logger.Warn("parley: sync", "err", err)
			_ = ws.Close()
			return
		}
		c.emit(Event{Kind: EventState, State: Connected})
		c.sender(ws, hello, done)
	}()
	if hello.ExpiresAt > 0 {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.refresher(hello.ExpiresAt, done)
		}()
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.liveness(ws, &lastRead, done)
	}()
	select {
	case <-done:
	case <-c.ctx.Done():
	}
	_ = ws.Close()
	<-done
	c.mu.Lock()
	c.ws = nil
	for id, ch := range c.replies {
		close(ch)
		delete(c.replies, id)
	}
	c.mu.Unlock()
	hintMu.Lock()
	defer hintMu.Unlock()
	return hint, closeCode
}

// sender sends the outbox and the acknowledgements on one connection, within the frame rate
// the server announced in hello (three quarters of it, leaving room for the app's own
// requests). One message per conversation is in flight at a time, so a conversation's
// messages are accepted, and sequenced, in Send order; an unanswered one is resent (same
// client_msg_id) after 5 s, a refused-but-retryable one after the server's retry delay.
func (c *Client) sender(ws *websocket.Conn, hello protocol.Frame, done <-chan struct{}) {
	fps := 20
	if hello.Limits != nil && hello.Limits.FramesPerSecond > 0 {
		fps = hello.Limits.FramesPerSecond
	}
	gap := time.Second / time.Duration(max(1, fps*3/4))
	ackTick := time.NewTicker(500 * time.Millisecond)
	defer ackTick.Stop()
	for {
		if f, ok := c.nextFrame(); ok {
			if err := c.write(ws, f); err != nil {
				return
			}
			select {
			case <-done:
				return
			case <-c.ctx.Done():
				return
			case <-time.After(gap):
			}
			continue
		}
		select {
		case <-done:
			return
		case <-c.ctx.Done():
			return
		case <-c.kick:
		case <-ackTick.C:
			c.mu.Lock()
			for conv, seq := range c.acks {
				c.acks[conv] = -seq // due: sent by nextFrame
			}
			c.mu.Unlock()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// liveness pings a silent server and gives the connection up when the server stays silent
// for deadAfter (a frozen or partitioned edge keeps the TCP connection open; only silence
// tells). Closing the socket ends the session; the client reconnects.
func (c *Client) liveness(ws *websocket.Conn, lastRead *atomic.Int64, done <-chan struct{}) {
	tick := time.NewTicker(max(c.opts.pingAfter/5, 100*time.Millisecond))
	defer tick.Stop()
	var pinged time.Time
	for n := 0; ; {
		select {
		case <-done:
			return
		case <-c.ctx.Done():
			return
		case <-tick.C:
		}
		silent := time.Since(time.Unix(0, lastRead.Load()))
		switch {
		case silent >= c.opts.deadAfter:
			c.opts.logger.Warn("parley: the server is silent; reconnecting", "silent", silent.Round(time.Millisecond))
			_ = ws.Close()
			return
		case silent >= c.opts.pingAfter && time.Since(pinged) >= c.opts.pingAfter:
			n++
			pinged = time.Now()
			if err := c.write(ws, protocol.Frame{Type: protocol.TypePing, ID: "l:" + strconv.Itoa(n)}); err != nil {
				_ = ws.Close()
				return
			}
		}
	}
}

// refresher replaces the connection's token before it expires (auth.refresh), from the
// token source, at 80% of its remaining life; a failed refresh is retried every 5 s until the
// token expires (the server then closes the connection and the reconnect fetches a token).
func (c *Client) refresher(expiresMS int64, done <-chan struct{}) {
	wait := time.Until(time.UnixMilli(expiresMS)) * 4 / 5
	for {
		select {
		case <-done:
			return
		case <-c.ctx.Done():
			return
		case <-time.After(wait):
		}
		ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
		tok, err := c.opts.token(ctx)
		var f protocol.Frame
		if err == nil {
			f, err = c.request(ctx, protocol.Frame{Type: protocol.TypeAuthRefresh, Token: tok})
		}
		cancel()
		if err == nil && f.ExpiresAt > expiresMS {
			expiresMS = f.ExpiresAt
			wait = time.Until(time.UnixMilli(expiresMS)) * 4 / 5
			continue
		}
		c.opts.logger.Warn("parley: token refresh", "err", err)
		if time.Until(time.UnixMilli(expiresMS)) < 5*time.Second {
			return
		}
		wait = 5 * time.Second
	}
}

// nextFrame picks the next frame to send: a due acknowledgement, else the oldest sendable
// outbox message of a conversation with nothing in flight.
func (c *Client) nextFrame() (protocol.Frame, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for conv, seq := range c.acks {
		if seq < 0 {
			delete(c.acks, conv)
			// Acks carry an id, so an error (a store outage) names the ack that failed.
			return protocol.Frame{Type: protocol.TypeAck, ID: "a:" + strconv.FormatInt(-seq, 10) + ":" + conv, Conversation: conv, Seq: -seq}, true
		}
	}
	now := time.Now()
	busy := map[string]bool{}
	for _, p := range c.st.ordered() {
		if busy[p.Conversation] {
			continue
		}
		busy[p.Conversation] = true // later messages of this conversation wait for this one
		if at, inFlight := c.sentAt[p.ClientMsgID]; inFlight && now.Sub(at) < 5*time.Second {
			continue
		}
		if now.Before(c.retryAt[p.Conversation]) {
			continue
		}
		c.sentAt[p.ClientMsgID] = now
		return protocol.Frame{Type: protocol.TypeSend, ID: "s:" + p.ClientMsgID, Conversation: p.Conversation,
			ClientMsgID: p.ClientMsgID, Body: p.Body}, true
	}
	return protocol.Frame{}, false
}

// wake tells the sender there may be something to send.
func (c *Client) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// handle processes one frame from the server (on the reader goroutine).
func (c *Client) handle(ws *websocket.Conn, f protocol.Frame) {
	switch {
	case f.Type == protocol.TypeMessage:
		c.offer(ws, []protocol.Message{frameMessage(f)}, false, 0, nil)
	case f.Type == protocol.TypeAccepted:
		c.settleSend(f.ClientMsgID, nil)
	case f.Type == protocol.TypeError && strings.HasPrefix(f.ID, "s:"):
		id := strings.TrimPrefix(f.ID, "s:")
		if f.Retryable {
			c.mu.Lock()
			delete(c.sentAt, id)
			if p, ok := c.st.Outbox[id]; ok {
				c.retryAt[p.Conversation] = time.Now().Add(max(time.Duration(f.RetryAfterMS)*time.Millisecond, time.Second))
			}
			c.mu.Unlock()
			return
		}
		c.settleSend(id, &ServerError{Code: f.Code, Message: f.Message})
	case f.Type == protocol.TypeError && strings.HasPrefix(f.ID, "a:"):
		// A failed ack is due again at the next flush (unless a later one is queued).
		seqText, conv, _ := strings.Cut(strings.TrimPrefix(f.ID, "a:"), ":")
		if seq, err := strconv.ParseInt(seqText, 10, 64); err == nil && f.Retryable {
			c.mu.Lock()
			if cur := c.acks[conv]; seq > cur && seq > -cur {
				c.acks[conv] = seq
			}
			c.mu.Unlock()
		}
	case f.ID != "":
		c.mu.Lock()
		ch := c.replies[f.ID]
		delete(c.replies, f.ID)
		c.mu.Unlock()
		if ch != nil {
			ch <- f
		}
	case f.Type == protocol.TypePresenceResync:
		c.wg.Add(1)
		go func() { // the snapshot's reply comes through this reader
			defer c.wg.Done()
			c.resubscribe(ws)
		}()
	case f.Type == protocol.TypeReceipt:
		c.emit(Event{Kind: EventReceipt, Frame: f})
	case f.Type == protocol.TypePresence:
		c.emit(Event{Kind: EventPresence, Frame: f})
	case f.Type == protocol.TypeTyping:
		c.emit(Event{Kind: EventTyping, Frame: f})
	}
}

// settleSend removes an answered message from the outbox and tells the app.
func (c *Client) settleSend(id string, err error) {
	c.mu.Lock()
	_, ok := c.st.Outbox[id]
	delete(c.st.Outbox, id)
	delete(c.sentAt, id)
	serr := c.saveLocked()
	c.mu.Unlock()
	if serr != nil {
		c.opts.logger.Warn("parley: persist outbox", "err", serr)
	}
	c.wake()
	if !ok {
		return // a duplicate answer
	}
	if err != nil {
		c.emit(Event{Kind: EventSendFailed, ClientMsgID: id, Err: err})
		return
	}
	c.emit(Event{Kind: EventAccepted, ClientMsgID: id})
}

func frameMessage(f protocol.Frame) protocol.Message {
	return protocol.Message{Conversation: f.Conversation, Seq: f.Seq, Sender: f.Sender, SenderDevice: f.SenderDevice,
		ClientMsgID: f.ClientMsgID, Kind: f.Kind, Body: f.Body, TargetSeq: f.TargetSeq, User: f.User, TS: f.TS}
}

// offer runs messages through the tracker and delivers what is ready, in order. With settle
// (the last page of a sync that started at clock start and covered reached), gaps the sync
// proved invisible are settled. A gap left open starts a sync: at once after a live message,
// after a pause after a sync (the server had not stored the missing seqs yet).
func (c *Client) offer(ws *websocket.Conn, msgs []protocol.Message, settle bool, start int64, reached map[string]int64) {
	c.deliverMu.Lock()
	var ready []protocol.Message
	gap := false
	for _, m := range msgs {
		r, g := c.track.offer(m)
		ready = append(ready, r...)
		gap = gap || g
	}
	if settle {
		ready = append(ready, c.track.settle(start, reached)...)
		gap = false
		for _, m := range msgs {
			gap = gap || c.track.gap(m.Conversation)
		}
		for conv := range c.track.pending {
			gap = gap || c.track.gap(conv)
		}
	}
	for i, m := range ready {
		if !c.emit(Event{Kind: EventMessage, Message: m}) {
			// The client is closing: the cursors stay at what the app was given, so the
			// next client on the store is given the rest.
			ready = ready[:i]
			break
		}
	}
	c.mu.Lock()
	for _, m := range ready {
		c.st.Cursors[m.Conversation] = max(c.st.Cursors[m.Conversation], m.Seq)
	}
	err := c.saveLocked()
	c.mu.Unlock()
	c.deliverMu.Unlock()
	if err != nil {
		c.opts.logger.Warn("parley: persist cursors", "err", err)
	}
	if c.opts.autoAck && len(ready) > 0 {
		c.mu.Lock()
		for _, m := range ready { // acknowledged by the sender's next flush (at most every 500 ms)
			if cur := c.acks[m.Conversation]; m.Seq > cur && m.Seq > -cur {
				c.acks[m.Conversation] = m.Seq
			}
		}
		c.mu.Unlock()
	}
	switch {
	case gap && !settle:
		c.startSync(ws)
	case gap:
		c.resyncLater(ws)
	case settle:
		c.mu.Lock()
		c.resyncWait = 0
		c.mu.Unlock()
	}
}

// resyncLater syncs again after a pause while a gap stays open after a sync (one pending at a
// time; the pause doubles up to 5 s while the gap stays).
func (c *Client) resyncLater(ws *websocket.Conn) {
	c.mu.Lock()
	if c.resyncTimer != nil {
		c.mu.Unlock()
		return
	}
	c.resyncWait = min(max(c.resyncWait*2, 250*time.Millisecond), 5*time.Second)
	wait := c.resyncWait
	c.resyncTimer = time.AfterFunc(wait, func() {
		c.mu.Lock()
		c.resyncTimer = nil
		current := c.ws == ws
		c.mu.Unlock()
		if current && c.ctx.Err() == nil {
			c.startSync(ws)
		}
	})
	c.mu.Unlock()
}

// startSync fetches a gap in the background (once at a time; again if asked meanwhile).
func (c *Client) startSync(ws *websocket.Conn) {
	c.mu.Lock()
	if c.syncing {
		c.resyncTo = true
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		if err := c.sync(ws); err != nil {
			c.opts.logger.Warn("parley: gap sync", "err", err)
		}
	}()
}

// sync pages through sync.result until the server has nothing more (each page asks with the
// page token of the one before), feeding the messages to the tracker, then stores the new
// since-token. A since-token or page token the server refuses (bad_request) is dropped and
// the sync starts a new catch-up from an empty since, once; if that is refused too, sync
// returns the refusal.
func (c *Client) sync(ws *websocket.Conn) error {
	c.mu.Lock()
	if c.syncing {
		c.resyncTo = true
		c.mu.Unlock()
		return nil
	}
	c.syncing = true
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.syncing = false
		again := c.resyncTo
		c.resyncTo = false
		c.mu.Unlock()
		if again && c.ctx.Err() == nil {
			c.startSync(ws)
		}
	}()
	// reached gathers the conversations' last_seq over the pages: each page carries the
	// conversations it reaches, each once in a catch-up. page is the token of the next page.
	reached := map[string]int64{}
	refused := false // the server refused the since-token or page token; since then, syncing from ""
	page := ""
	for round := 0; ; round++ {
		c.deliverMu.Lock()
		start := c.track.now()
		cursors := c.track.cursors()
		c.deliverMu.Unlock()
		if page != "" {
			// The catch-up has passed the conversations it returned (the page token holds the
			// one in progress): their cursors are not needed, and leaving them out keeps a
			// device that is catching up on many conversations under the cursor limit.
			kept := cursors[:0]
			for _, cur := range cursors {
				if _, passed := reached[cur.Conversation]; !passed {
					kept = append(kept, cur)
				}
			}
			cursors = kept
		}
		c.mu.Lock()
		since := c.st.Since
		c.mu.Unlock()
		ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
		res, err := c.request(ctx, protocol.Frame{Type: protocol.TypeSync, Since: since, Page: page, Cursors: cursors, Limit: 500})
		cancel()
		if se := (*ServerError)(nil); errors.As(err, &se) && se.Code == protocol.CodeBadRequest && (since != "" || page != "") && !refused {
			// The server refuses the since-token (signed with a key it no longer has, or not
			// one it issued): asking again with it would be refused forever. Sync from an
			// empty since instead, once; the cursors keep it incremental. Forgotten in the
			// store too, so a restart does not send it again.
			c.opts.logger.Warn("parley: since-token or page token refused; syncing from an empty since", "err", err)
			refused, page = true, ""
			c.mu.Lock()
			if c.st.Since == since {
				c.st.Since = ""
			}
			serr := c.saveLocked()
			c.mu.Unlock()
			if serr != nil {
				c.opts.logger.Warn("parley: persist since", "err", serr)
			}
			continue
		}
		if err != nil {
			if refused {
				return fmt.Errorf("parley: sync from an empty since after the since-token or page token was refused: %w", err)
			}
			return err
		}
		for _, p := range res.Conversations {
			reached[p.Conversation] = max(reached[p.Conversation], p.LastSeq)
		}
		c.offer(ws, res.Messages, !res.More, start, reached)
		if !res.More {
			c.mu.Lock()
			c.st.Since = res.Since
			err := c.saveLocked()
			c.mu.Unlock()
			return err
		}
		if res.Page == "" {
			return errors.New("parley: sync.result with more and no page token")
		}
		page = res.Page
		if round > 10000 {
			return errors.New("parley: sync did not end")
		}
	}
}

// saveLocked persists the state (c.mu held).
func (c *Client) saveLocked() error { return c.opts.store.Save(c.st) }

// newUUID returns a time-ordered UUID (version 7, RFC 9562: 48 bits of Unix milliseconds,
// then random bits). Client message ids are v7 so that, while the server's store is down, it
// can tell a fresh send from a late resend by the id alone and keep sequencing fresh ones
// (docs/delivery.md, step 6).
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	ms := uint64(time.Now().UnixMilli())
	for i := 0; i < 6; i++ {
		b[i] = byte(ms >> (40 - 8*i))
	}
	b[6] = b[6]&0x0f | 0x70
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
