package edge

import (
	"context"
	"net"
	"sync"
	"time"
)

// Listener wraps the public listener so the edge can write all the frames queued for a
// connection in one system call. gorilla/websocket writes each frame to the connection with its
// own Write; on the connections this listener returns, the edge's writer brackets a batch with
// begin and flush, and the frames are gathered in a pooled buffer in between. Under load, when
// frames queue up, this turns N system calls into one; an idle connection holds no buffer.
// Serve the edge on a listener that is not wrapped and it writes frame by frame.
func Listener(ln net.Listener) net.Listener { return batchListener{ln} }

type batchListener struct{ net.Listener }

type connKey struct{}

// ConnContext is the http.Server.ConnContext to serve the edge with on a Listener: it lets the
// handshake reach its connection, so the handshake response and the hello frame leave in one
// write.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

func (l batchListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &batchConn{Conn: c}, nil
}

// batchConn gathers writes while a batch is open. Writes from other goroutines during a batch
// (gorilla's pong and close replies) join the batch: whole frames in order, which is valid
// WebSocket framing, flushed a moment later.
type batchConn struct {
	net.Conn
	mu       sync.Mutex
	buf      *[]byte   // non-nil while a batch is open
	deadline time.Time // write deadline last set on Conn

	rd framing // the read side (framing.go)
}

// SetWriteDeadline rounds the deadline up to the next whole second and skips the call when
// that is the one already set. gorilla sets a deadline before every frame, and each change
// re-arms a runtime timer: at 100,000 frames a second that was 17% of the edge's CPU. A write
// deadline is a guard against stuck peers, so a second of slack costs nothing.
func (c *batchConn) SetWriteDeadline(t time.Time) error {
	if !t.IsZero() {
		t = t.Truncate(time.Second).Add(time.Second)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.Equal(c.deadline) {
		return nil
	}
	c.deadline = t
	return c.Conn.SetWriteDeadline(t)
}

// SetDeadline keeps the cached write deadline true.
func (c *batchConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = t
	return c.Conn.SetDeadline(t)
}

var batchBufs = sync.Pool{New: func() any { b := make([]byte, 0, 8<<10); return &b }}

// maxGather bounds what a batch gathers before it is written: a large frame (a sync page)
// is written as it comes rather than copied, so a connection's frames are not held twice.
const maxGather = 64 << 10

func (c *batchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.buf == nil {
		return c.Conn.Write(p)
	}
	if len(*c.buf)+len(p) > maxGather {
		if len(*c.buf) > 0 {
			if _, err := c.Conn.Write(*c.buf); err != nil {
				return 0, err
			}
			*c.buf = (*c.buf)[:0]
		}
		if len(p) >= maxGather {
			return c.Conn.Write(p)
		}
	}
	*c.buf = append(*c.buf, p...)
	return len(p), nil
}

func (c *batchConn) begin() {
	c.mu.Lock()
	if c.buf == nil {
		c.buf = batchBufs.Get().(*[]byte)
	}
	c.mu.Unlock()
}

// flush writes the batch in one call (under the connection's write deadline) and closes it.
func (c *batchConn) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.buf
	if b == nil {
		return nil
	}
	c.buf = nil
	var err error
	if len(*b) > 0 {
		_, err = c.Conn.Write(*b)
	}
	if cap(*b) <= 256<<10 {
		*b = (*b)[:0]
		batchBufs.Put(b)
	}
	return err
}
