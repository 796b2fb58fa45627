package edge

import (
	"bytes"
	"errors"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/protocol"
)

// Conn is one client connection, as handlers see it.
type Conn struct {
	s       *Server
	ws      *websocket.Conn
	batch   *batchConn // nil when not served on Listener
	session string
	user    chat.UserID
	device  chat.DeviceID
	ip      string
	bucket  int

	expires  atomic.Int64                  // token's exp plus the verifier's leeway (Identity.ValidUntil), Unix nanoseconds
	lastSeen atomic.Int64                  // last frame, ping or pong from the client, Unix nanoseconds
	ident    atomic.Pointer[auth.Identity] // the current token (handshake, then auth.refresh): revocations match it

	// Event-driven reads (poll_linux.go): the socket, and the tag that tells its reports
	// apart from those of a reused descriptor.
	pfd  int32
	ptag uint32

	// Reader-only state. rmu is held while a worker reads; workers take turns on a
	// connection, and the lock makes each one see the last one's writes.
	rmu     sync.Mutex
	limiter *rate.Limiter
	strikes int
	typing  *rate.Limiter // typing frames; nil until the first one

	// acks is the acks waiting to be applied (EnableAck); nil until the first ack. Set by the
	// reader, then shared with the goroutine that applies them.
	acks *ackQueue

	// watching is the users this connection watches (presence); guarded by s.mu.
	watching map[chat.UserID]struct{}

	mu     sync.Mutex
	queue  []outFrame // nil while idle, so an idle connection holds no queue
	queued int        // bytes of the frames in queue and of the batch being written
	// held is the latest state of each watched user whose presence update found the queue
	// full (nil while none did): written after the queue, a newer state replacing an older
	// one, so a burst of updates is coalesced instead of dropped. heldLost: an update could
	// not be held either; the writer sends presence.resync.
	held      map[chat.UserID]protocol.PresenceState
	heldLost  bool
	writing   bool // a writer runs, or the handshake holds the socket (holdWrites)
	closed    bool // no more frames are queued
	closeCode int  // when non-zero, the writer sends this close after the queue
	closeText string
}

// closeWait is how long the client has to answer the edge's close frame.
const closeWait = 2 * time.Second

// outFrame is one queued frame: encoded JSON, or a ping when ping is set.
type outFrame struct {
	data []byte
	typ  protocol.Type
	// st is the state a presence update carries (shared by every watcher's frame, read
	// only): an update that finds no room, or is evicted, is held instead (Conn.held).
	st   *protocol.PresenceState
	ping bool
	// ephemeral frames may be dropped under backpressure (typing, pings); replies never are.
	ephemeral bool
}

// Send queues a frame for the client. It never blocks; it reports false when the frame was
// dropped (connection closing, or the overflow policy).
func (c *Conn) Send(f protocol.Frame) bool {
	data, err := protocol.Encode(f)
	if err != nil {
		c.s.logger.Error("encode frame", "type", f.Type, "err", err)
		return false
	}
	// A reply (a presence snapshot has the request's id) is not ephemeral: the client waits for it.
	return c.enqueue(outFrame{data: data, typ: f.Type, ephemeral: protocol.Ephemeral(f.Type) && f.ID == ""})
}

// SendError queues an error frame answering the request id.
func (c *Conn) SendError(id string, e *protocol.Error) {
	c.s.metrics.errors.WithLabelValues(string(e.Code)).Inc()
	c.Send(protocol.ErrorFrame(id, e))
}

// enqueue adds a frame under the overflow policy. The queue is bounded in frames
// (Config.QueueLen) and in bytes (Config.QueueBytes, counting the batch being written too;
// an empty queue takes any one frame). When a frame does not fit: a presence update is held
// (Conn.held) and goes out after the queue; another ephemeral frame (typing, a ping) is
// dropped; anything else makes room by evicting the oldest queued ephemeral frames (an evicted
// presence update is held too). If that is not enough the client is too slow: it is closed
// with 4009 after a reconnect hint, and loses nothing because it resumes with sync.
func (c *Conn) enqueue(f outFrame) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.s.metrics.queueDepth.Observe(float64(len(c.queue)))
	if f.st != nil && c.held != nil {
		// Updates are being held: this one joins them, so it goes out after the older ones.
		c.holdLocked(*f.st, true)
		return true
	}
	for !c.roomLocked(len(f.data)) {
		if f.st != nil {
			c.holdLocked(*f.st, true)
			c.startWriterLocked()
			return true
		}
		if f.ephemeral {
			c.s.metrics.drops.WithLabelValues("queue_full_ephemeral").Inc()
			return false
		}
		i := 0
		for i < len(c.queue) && !c.queue[i].ephemeral {
			i++
		}
		if i == len(c.queue) {
			c.s.metrics.drops.WithLabelValues("slow_consumer").Inc()
			c.closeLocked(protocol.CloseSlowConsumer, "slow consumer: reconnect and sync", true)
			return false
		}
		if ev := c.queue[i]; ev.st != nil {
			c.holdEvictedLocked(i)
		} else {
			c.s.metrics.drops.WithLabelValues("evicted_ephemeral").Inc()
		}
		c.queued -= len(c.queue[i].data)
		c.queue = append(c.queue[:i], c.queue[i+1:]...)
	}
	c.queue = append(c.queue, f)
	c.queued += len(f.data)
	c.startWriterLocked()
	return true
}

// roomLocked reports whether a frame of n bytes fits in the queue.
func (c *Conn) roomLocked(n int) bool {
	return len(c.queue) < c.s.cfg.QueueLen && (c.queued == 0 || c.queued+n <= c.s.cfg.QueueBytes)
}

// holdLocked keeps st as the latest presence of its user to write after the queue (newer
// replaces the held one; an older one is ignored when one is held). The held states are
// bounded by twice the subscription limit (a user watched, then unwatched and another
// watched, may leave a state behind); past it the update is dropped and the client is told
// to take a fresh snapshot (presence.resync).
func (c *Conn) holdLocked(st protocol.PresenceState, newer bool) {
	u := chat.UserID(st.User)
	if _, ok := c.held[u]; ok {
		if newer {
			c.held[u] = st
		}
		return
	}
	if len(c.held) >= 2*c.s.cfg.MaxSubscriptions {
		c.s.metrics.drops.WithLabelValues("presence_resync").Inc()
		c.heldLost = true
		return
	}
	if c.held == nil {
		c.held = map[chat.UserID]protocol.PresenceState{}
	}
	c.held[u] = st
}

// holdEvictedLocked holds the state of the queued presence update at i, which is being
// evicted, unless a later queued update of the same user supersedes it.
func (c *Conn) holdEvictedLocked(i int) {
	st := c.queue[i].st
	for _, f := range c.queue[i+1:] {
		if f.st != nil && f.st.User == st.User {
			return
		}
	}
	// Held states arrived after every queued one: a held state of this user is newer.
	c.holdLocked(*st, false)
}

// holdWrites keeps frames queued (no writer starts) while the handshake writes hello.
func (c *Conn) holdWrites() {
	c.mu.Lock()
	c.writing = true
	c.mu.Unlock()
}

// releaseWrites ends holdWrites: a writer starts if frames or a close were queued meanwhile.
func (c *Conn) releaseWrites() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writing = false
	if len(c.queue) > 0 || c.closeCode != 0 {
		c.startWriterLocked()
	}
}

func (c *Conn) startWriterLocked() {
	if c.writing {
		return
	}
	c.writing = true
	c.s.wg.Add(1)
	c.s.writers.submit(c)
}

// close asks the writer to send a close frame with code after what is queued (or, with
// discard, instead of it) and stops accepting frames.
func (c *Conn) close(code int, text string, discard bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeLocked(code, text, discard)
}

func (c *Conn) closeLocked(code int, text string, discard bool) {
	if c.closed {
		return
	}
	c.closed = true
	c.closeCode, c.closeText = code, text
	c.s.metrics.closes.WithLabelValues(closeLabel(code)).Inc()
	if discard {
		for _, f := range c.queue {
			c.queued -= len(f.data)
		}
		c.queue, c.held, c.heldLost = nil, nil, false
		if code == protocol.CloseSlowConsumer {
			hint, _ := protocol.Encode(protocol.Frame{Type: protocol.TypeReconnect, AfterMS: 0, Reason: "slow_consumer"})
			c.queue = []outFrame{{data: hint, typ: protocol.TypeReconnect}}
			c.queued += len(hint)
		}
	}
	c.startWriterLocked()
}

// writeLoop writes queued frames in batches until the queue is empty, then returns its
// worker to the pool: an idle connection has no writer.
func (c *Conn) writeLoop() {
	defer c.s.wg.Done()
	written := 0 // bytes of the last batch, counted in c.queued until it is written
	for {
		c.mu.Lock()
		c.queued -= written
		batch, held, lost := c.queue, c.held, c.heldLost
		c.queue, c.held, c.heldLost = nil, nil, false
		code, text := c.closeCode, c.closeText
		if len(batch) == 0 && len(held) == 0 && !lost && code == 0 {
			c.writing = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		written = 0
		for _, f := range batch {
			written += len(f.data)
		}
		batch = appendHeld(batch, held, lost)

		start := time.Now()
		deadline := start.Add(c.s.cfg.WriteTimeout)
		if code != 0 {
			// A closing connection (slow consumer, drain) gets a short deadline.
			deadline = start.Add(min(c.s.cfg.WriteTimeout, time.Second))
		}
		_ = c.ws.SetWriteDeadline(deadline)
		if c.batch != nil && len(batch) > 1 {
			c.batch.begin()
		}
		var err error
		for _, f := range batch {
			if f.ping {
				err = c.ws.WriteControl(websocket.PingMessage, nil, deadline)
			} else {
				err = c.ws.WriteMessage(websocket.TextMessage, f.data)
				c.s.metrics.out(f.typ)
			}
			if err != nil {
				break
			}
		}
		if c.batch != nil {
			if ferr := c.batch.flush(); err == nil {
				err = ferr
			}
		}
		c.s.metrics.batchSize.Observe(float64(len(batch)))
		c.s.metrics.writeTime.Observe(time.Since(start).Seconds())
		if err == nil && code != 0 {
			err = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), deadline)
			// Give the client a moment to answer the close, then the reader gives up.
			_ = c.ws.SetReadDeadline(time.Now().Add(closeWait))
			time.AfterFunc(closeWait, c.abort) // an idle polled socket has no reader to time out
		}
		if err != nil || code != 0 {
			if err != nil {
				// The socket is broken or the client stopped reading: end the reader.
				c.writeFailed(err)
				c.abort()
			}
			c.mu.Lock()
			c.closed = true
			c.queue, c.queued, c.held = nil, 0, nil
			c.writing = false
			c.mu.Unlock()
			return
		}
	}
}

// writeFailed counts a write that timed out on a connection the edge had not closed already
// as a slow-consumer close (4009): the client stopped reading for WriteTimeout, and the queue
// had not filled first. No close frame can reach such a client.
func (c *Conn) writeFailed(err error) {
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		return // the socket broke: the client went away
	}
	c.mu.Lock()
	closing := c.closeCode != 0
	c.mu.Unlock()
	if !closing {
		c.s.metrics.closes.WithLabelValues(closeLabel(protocol.CloseSlowConsumer)).Inc()
	}
}

// appendHeld adds to batch the held presence states, in frames of at most
// protocol.MaxUsersPerCall states, then a presence.resync frame if an update was lost.
func appendHeld(batch []outFrame, held map[chat.UserID]protocol.PresenceState, lost bool) []outFrame {
	var states []protocol.PresenceState
	flush := func() {
		if data, err := protocol.Encode(protocol.Frame{Type: protocol.TypePresence, Presence: states}); err == nil {
			batch = append(batch, outFrame{data: data, typ: protocol.TypePresence})
		}
		states = states[:0]
	}
	for _, st := range held {
		if states == nil {
			states = make([]protocol.PresenceState, 0, min(len(held), protocol.MaxUsersPerCall))
		}
		states = append(states, st)
		if len(states) == protocol.MaxUsersPerCall {
			flush()
		}
	}
	if len(states) > 0 {
		flush()
	}
	if lost {
		data, _ := protocol.Encode(protocol.Frame{Type: protocol.TypePresenceResync})
		batch = append(batch, outFrame{data: data, typ: protocol.TypePresenceResync})
	}
	return batch
}

var readBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// prepareRead sets the read limit and the ping and pong handlers; call it before the first read.
func (c *Conn) prepareRead() {
	c.ws.SetReadLimit(int64(c.s.cfg.MaxFrameBytes))
	c.ws.SetPongHandler(func(string) error { return c.control(pongOp, nil) })
	c.ws.SetPingHandler(func(data string) error { return c.control(pingOp, []byte(data)) })
}

// control handles a ping or pong from the client, read by gorilla (the handlers above) or by
// the event-driven reader: the client is alive, and a ping is answered. Control frames count
// against the frame rate like data frames: over it a ping is not answered, and the strike
// policy applies (strike).
func (c *Conn) control(op byte, payload []byte) error {
	c.lastSeen.Store(c.s.now().UnixNano())
	if !c.limiter.Allow() {
		c.strike("", false)
		return nil
	}
	c.strikes = 0
	if op != pingOp {
		return nil
	}
	err := c.ws.WriteControl(websocket.PongMessage, payload, c.s.now().Add(time.Second))
	if err == nil || errors.Is(err, websocket.ErrCloseSent) {
		return nil
	}
	return pongError{err}
}

// pongError is a failed pong write, which ends the connection's read like a broken socket.
type pongError struct{ error }

func (e pongError) Unwrap() error { return e.error }

// readFailed counts the close that gorilla sent itself when a read failed on the client's
// fault: 1009 (a message over the read limit) or 1002 (a frame that breaks RFC 6455). gorilla
// gives its protocol errors no type, so 1002 is what remains once the end of the stream, a
// socket error, a failed pong and the client's own close (all of which end the connection
// without a close from the edge) are set aside. A connection the edge had closed already was
// counted then.
func (c *Conn) readFailed(err error) {
	var (
		ce *websocket.CloseError
		ne net.Error
		pe pongError
	)
	code := websocket.CloseProtocolError
	switch {
	case errors.Is(err, websocket.ErrReadLimit):
		code = protocol.CloseMessageTooBig
	case errors.As(err, &ce), errors.As(err, &ne), errors.As(err, &pe),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return
	}
	if !c.isClosed() {
		c.s.metrics.closes.WithLabelValues(closeLabel(code)).Inc()
	}
}

// readLoop reads the connection in its own goroutine until it ends (when the edge does not
// read it event-driven).
func (c *Conn) readLoop() {
	for c.readMessage() {
	}
}

// readReady is a worker's turn on a connection the poller found readable: it reads every
// frame whose bytes are already here, then re-arms the socket. It ends the connection when
// the read fails.
func (c *Conn) readReady() {
	c.rmu.Lock()
	ok := c.readAvailable()
	c.rmu.Unlock()
	if ok {
		err := c.s.poll.rearm(c)
		if err == nil {
			return
		}
		c.s.logger.Error("re-arm connection", "user", c.user, "err", err)
	}
	c.s.poll.remove(c)
	c.s.unregister(c)
	c.s.wg.Done()
}

// readAvailable reads the frames that have arrived, answering pings and pongs itself (gorilla
// would wait for a data frame after them); false means the connection has ended. A data frame
// that has only partly arrived is waited for.
func (c *Conn) readAvailable() bool {
	if !c.batch.pending() {
		if err := c.batch.fill(); err != nil { // the socket is readable: this does not wait
			return false
		}
	}
	for c.batch.pending() {
		op, payload, ok, err := c.batch.nextControl()
		switch {
		case err != nil:
			return false
		case ok:
			_ = c.control(op, payload) // a failed pong means a broken socket: the next read ends it
		case !c.readMessage():
			return false
		}
	}
	return true
}

// readMessage reads and handles one message; false means the connection has ended.
func (c *Conn) readMessage() bool {
	mt, r, err := c.ws.NextReader()
	if err != nil {
		c.readFailed(err)
		return false
	}
	c.lastSeen.Store(c.s.now().UnixNano())
	if c.isClosed() || mt == websocket.BinaryMessage {
		if mt == websocket.BinaryMessage {
			c.close(protocol.CloseUnsupportedData, "binary frames are not supported; send JSON text", true)
		}
		// Closing: discard until the client answers the close. Read to the message's end, so
		// the stream is at a frame boundary again (the read limit bounds this).
		_, err := io.Copy(io.Discard, r)
		return err == nil
	}
	buf := readBufs.Get().(*bytes.Buffer)
	buf.Reset()
	if _, err := buf.ReadFrom(r); err != nil {
		readBufs.Put(buf)
		c.readFailed(err)
		return false
	}
	c.handle(buf.Bytes())
	if buf.Cap() <= 16<<10 {
		readBufs.Put(buf) // large buffers are left to the GC so the pool stays small
	}
	return true
}

// abort ends the connection from outside its reader: the reader sees the end of the stream
// and unregisters the connection. The socket is shut down for reading rather than closed: an
// event-driven connection's reader must still run (the poller reports the shutdown as
// readable) to stop watching the descriptor before it is closed.
func (c *Conn) abort() {
	nc := c.ws.NetConn()
	_ = nc.SetReadDeadline(time.Unix(1, 0)) // a reader inside a read stops now
	if c.batch != nil {
		if tc, ok := socketOf(c.batch.Conn).(interface{ CloseRead() error }); ok {
			_ = tc.CloseRead()
			return
		}
	}
	_ = nc.Close()
}

func (c *Conn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// handle checks and dispatches one text frame.
func (c *Conn) handle(data []byte) {
	if !utf8.Valid(data) {
		c.close(protocol.CloseInvalidPayload, "text frame is not valid UTF-8", true)
		return
	}
	if !c.limiter.Allow() {
		c.strike(peekID(data), true)
		return
	}
	c.strikes = 0
	f, err := protocol.Decode(data)
	c.s.metrics.in(f.Type)
	if err != nil {
		var pe *protocol.Error
		if !errors.As(err, &pe) {
			pe = protocol.Errorf(protocol.CodeBadRequest, "%v", err)
		}
		c.SendError(f.ID, pe)
		return
	}
	c.s.dispatch(c, f)
}

// strike counts a frame (data or control) over the connection's frame rate. After RateStrikes
// in a row the connection is closed with 4008; until then a data frame is answered with a
// rate_limited error naming its request id, and a control frame is not answered.
func (c *Conn) strike(id string, data bool) {
	c.strikes++
	if c.strikes > c.s.cfg.RateStrikes {
		if !c.isClosed() {
			c.securityEvent(eventRateLimitClose, "frames_per_second", c.s.cfg.FramesPerSecond, "frame_burst", c.s.cfg.FrameBurst)
		}
		// The rate_limited errors already queued go out before the close.
		c.close(protocol.CloseRateLimited, "too many frames", false)
		return
	}
	if !data {
		return
	}
	e := protocol.Errorf(protocol.CodeRateLimited, "more than %d frames per second", c.s.cfg.FramesPerSecond)
	c.s.metrics.errors.WithLabelValues(string(e.Code)).Inc()
	ef := protocol.ErrorFrame(id, e)
	ef.RetryAfterMS = int64(1000 / c.s.cfg.FramesPerSecond)
	c.Send(ef)
}

// peekID reads a request id without decoding the frame (for a rate-limited frame, whose
// decoding is the work being refused). Best effort: "" when not found cheaply.
func peekID(data []byte) string {
	i := bytes.Index(data, []byte(`"id":"`))
	if i < 0 {
		return ""
	}
	rest := data[i+6:]
	j := bytes.IndexByte(rest, '"')
	if j < 0 || j > protocol.MaxIDBytes || bytes.IndexByte(rest[:j], '\\') >= 0 {
		return ""
	}
	return string(rest[:j])
}

// closeCodes are the close codes the edge counts by name in parley_edge_closes_total (the
// series of each exists from the start); any other code counts as "other". A new close code
// the edge sends belongs here.
var closeCodes = []int{
	protocol.CloseNormal, protocol.CloseGoingAway, protocol.CloseProtocolError, protocol.CloseUnsupportedData,
	protocol.CloseInvalidPayload, protocol.ClosePolicyViolation, protocol.CloseMessageTooBig,
	protocol.CloseInternalError, protocol.CloseTokenExpired, protocol.CloseTokenRevoked, protocol.CloseRateLimited, protocol.CloseSlowConsumer,
}

func closeLabel(code int) string {
	if slices.Contains(closeCodes, code) {
		return strconv.Itoa(code)
	}
	return "other"
}
