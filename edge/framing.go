package edge

import (
	"encoding/binary"
	"sync"
)

// Frame-aligned reads. The event-driven reader (poll_linux.go) reads a connection only when the
// kernel says its socket is readable. Bytes already read from the socket and held in a buffer
// are invisible to the kernel, so if gorilla's bufio.Reader held the start of the next frame
// when the reader went back to waiting, that frame would sit there until the client sent
// something else. A batchConn in framed mode prevents this: it reads the socket into a pooled
// buffer of its own and hands gorilla bytes only up to the end of the WebSocket frame being
// read. When gorilla has finished a message, its buffer is therefore empty, and pending says
// whether the next frame is already here (read it now) or not (wait for the kernel).
//
// The state below is used by the connection's reader only (one at a time), so it needs no lock.
type framing struct {
	on   bool    // framed mode: set once the handshake is over
	rbuf *[]byte // read-ahead, nil when empty: an idle connection holds no buffer
	roff int     // start of the unread bytes in *rbuf
	left uint64  // bytes of the current frame (header and payload) not yet handed out
}

// readAheadSize is the size of the pooled read-ahead buffers.
const readAheadSize = 4 << 10

var readAheadBufs = sync.Pool{New: func() any { b := make([]byte, 0, readAheadSize); return &b }}

// frameLen returns the length of the frame at the start of b (header plus payload), or 0 when
// b is too short to tell. Absurd lengths are capped: gorilla refuses such a frame (1009) and
// the connection ends before they matter.
func frameLen(b []byte) uint64 {
	if len(b) < 2 {
		return 0
	}
	hdr := 2
	if b[1]&0x80 != 0 {
		hdr += 4 // masking key
	}
	n := uint64(b[1] & 0x7f)
	switch n {
	case 126:
		if len(b) < 4 {
			return 0
		}
		hdr += 2
		n = uint64(binary.BigEndian.Uint16(b[2:4]))
	case 127:
		if len(b) < 10 {
			return 0
		}
		hdr += 8
		n = min(binary.BigEndian.Uint64(b[2:10]), 1<<62)
	}
	return uint64(hdr) + n
}

// pending reports whether bytes of the next frame have been read from the socket already.
func (c *batchConn) pending() bool {
	return c.rd.rbuf != nil && c.rd.roff < len(*c.rd.rbuf)
}

// frameOn switches to framed reads; call it when the stream is at a frame boundary (just
// after the handshake, before the first frame is read).
func (c *batchConn) frameOn() { c.rd.on = true }

// Read passes through until framed mode is on; then it never returns bytes past the end of
// the current frame.
func (c *batchConn) Read(p []byte) (int, error) {
	if !c.rd.on {
		return c.Conn.Read(p)
	}
	r := &c.rd
	for r.left == 0 { // at a frame boundary: wait for the whole header
		if c.pending() {
			if n := frameLen((*r.rbuf)[r.roff:]); n > 0 {
				r.left = n
				break
			}
		}
		if err := c.fill(); err != nil {
			return 0, err
		}
	}
	if !c.pending() {
		if err := c.fill(); err != nil {
			return 0, err
		}
	}
	b := (*r.rbuf)[r.roff:]
	if uint64(len(b)) > r.left {
		b = b[:r.left]
	}
	n := copy(p, b)
	r.left -= uint64(n)
	c.consume(n)
	return n, nil
}

// consume drops n read-ahead bytes, and the buffer once it is empty.
func (c *batchConn) consume(n int) {
	r := &c.rd
	r.roff += n
	if r.roff == len(*r.rbuf) {
		*r.rbuf = (*r.rbuf)[:0]
		readAheadBufs.Put(r.rbuf)
		r.rbuf, r.roff = nil, 0
	}
}

// fill reads once from the socket into the read-ahead buffer.
func (c *batchConn) fill() error {
	r := &c.rd
	if r.rbuf == nil {
		r.rbuf = readAheadBufs.Get().(*[]byte)
	} else if r.roff > 0 {
		n := copy(*r.rbuf, (*r.rbuf)[r.roff:])
		*r.rbuf = (*r.rbuf)[:n]
		r.roff = 0
	}
	b := *r.rbuf
	n, err := c.Conn.Read(b[len(b):cap(b)])
	*r.rbuf = b[:len(b)+n]
	if n > 0 {
		return nil // an error comes back on the next read
	}
	if len(*r.rbuf) == 0 {
		readAheadBufs.Put(r.rbuf)
		r.rbuf = nil
	}
	return err
}

// nextControl takes a ping or pong frame off the front of the stream, when the stream is at a
// frame boundary and such a frame is next, and returns its opcode and unmasked payload. The
// event-driven reader answers these itself: gorilla's NextReader would handle them and then
// wait, in the worker, for the next data frame. The rest of a control frame that has only
// partly arrived is waited for (it is at most 131 bytes). ok is false when the next frame is
// anything else, or a control frame that breaks the rules (unmasked, fragmented, reserved
// bits, over 125 bytes): gorilla reads those and answers as the protocol requires.
func (c *batchConn) nextControl() (op byte, payload []byte, ok bool, err error) {
	r := &c.rd
	if !r.on || r.left != 0 || !c.pending() {
		return 0, nil, false, nil
	}
	b := (*r.rbuf)[r.roff:]
	op = b[0] & 0x0f
	if b[0] != 0x80|op || (op != pingOp && op != pongOp) {
		return 0, nil, false, nil
	}
	for len(b) < 2 || uint64(len(b)) < frameLen(b) {
		if len(b) >= 2 && (b[1]&0x80 == 0 || b[1]&0x7f > 125) {
			return 0, nil, false, nil
		}
		if err := c.fill(); err != nil {
			return 0, nil, false, err
		}
		b = (*r.rbuf)[r.roff:]
	}
	if b[1]&0x80 == 0 || b[1]&0x7f > 125 {
		return 0, nil, false, nil
	}
	n := int(b[1] & 0x7f)
	if n > 0 {
		key := b[2:6]
		payload = make([]byte, n)
		for i := range payload {
			payload[i] = b[6+i] ^ key[i%4]
		}
	}
	c.consume(6 + n)
	return op, payload, true, nil
}

// WebSocket control opcodes (RFC 6455 section 11.8).
const (
	pingOp = 0x9
	pongOp = 0xa
)
