package edge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/parleyhq/parley/internal/teststack"
	"github.com/parleyhq/parley/protocol"
)

// clientFrame encodes one masked client frame (RFC 6455 section 5.2).
func clientFrame(op byte, fin bool, payload []byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	f := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		f = append(f, 0x80|byte(n))
	case n < 1<<16:
		f = append(f, 0x80|126, byte(n>>8), byte(n))
	default:
		f = append(f, 0x80|127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	f = append(f, key[:]...)
	for i, b := range payload {
		f = append(f, b^key[i%4])
	}
	return f
}

func pingText(id string) []byte { return fmt.Appendf(nil, `{"type":"ping","id":%q}`, id) }

// modes runs a test with the event-driven reader (the default) and with a goroutine per
// connection.
func modes(t *testing.T, test func(t *testing.T, cfg Config)) {
	t.Run("event-driven", func(t *testing.T) { test(t, Config{}) })
	t.Run("goroutine", func(t *testing.T) { test(t, Config{GoroutineReads: true}) })
}

// Frames that arrive together are all answered: the reader must not go back to waiting for
// the socket while the next frame sits in a buffer.
func TestFramesArrivingTogetherAreAllRead(t *testing.T) {
	modes(t, func(t *testing.T, cfg Config) {
		te := newTestEdge(t, cfg, nil)
		ws := te.connect("alice", "phone")
		var burst []byte
		for i := range 5 {
			burst = append(burst, clientFrame(websocket.TextMessage, true, pingText(fmt.Sprint("b", i)))...)
		}
		// A fragmented message with a ping control frame between its fragments, in the same write.
		msg := pingText("fragmented")
		burst = append(burst, clientFrame(websocket.TextMessage, false, msg[:7])...)
		burst = append(burst, clientFrame(websocket.PingMessage, true, []byte("hb"))...)
		burst = append(burst, clientFrame(0 /* continuation */, true, msg[7:])...)
		if _, err := ws.NetConn().Write(burst); err != nil {
			t.Fatal(err)
		}
		var pongs []string
		ws.SetPongHandler(func(data string) error { pongs = append(pongs, data); return nil })
		for i := range 5 {
			if f := readFrame(t, ws); f.Type != protocol.TypePong || f.ID != fmt.Sprint("b", i) {
				t.Fatalf("reply %d = %+v; want pong b%d", i, f, i)
			}
		}
		if f := readFrame(t, ws); f.Type != protocol.TypePong || f.ID != "fragmented" {
			t.Fatalf("reply to the fragmented ping = %+v", f)
		}
		if len(pongs) != 1 || pongs[0] != "hb" {
			t.Errorf("WebSocket pongs = %q; want [hb]", pongs)
		}
	})
}

// A frame that arrives a byte at a time, header included, is read once it is whole, and the
// connection stays usable.
func TestFrameArrivingInPiecesIsRead(t *testing.T) {
	modes(t, func(t *testing.T, cfg Config) {
		te := newTestEdge(t, cfg, nil)
		ws := te.connect("alice", "phone")
		f := clientFrame(websocket.TextMessage, true, pingText("slow"))
		for i := range f {
			if _, err := ws.NetConn().Write(f[i : i+1]); err != nil {
				t.Fatal(err)
			}
			if i < 12 {
				time.Sleep(5 * time.Millisecond)
			}
		}
		if got := readFrame(t, ws); got.Type != protocol.TypePong || got.ID != "slow" {
			t.Fatalf("reply = %+v; want pong slow", got)
		}
		write(t, ws, `{"type":"ping","id":"after"}`)
		if got := readFrame(t, ws); got.Type != protocol.TypePong || got.ID != "after" {
			t.Fatalf("reply = %+v; want pong after", got)
		}
	})
}

// Idle connections cost no goroutine with the event-driven reader, and closing them lets the
// edge forget them.
func TestIdleConnectionsHoldNoGoroutine(t *testing.T) {
	te := newTestEdge(t, Config{}, nil)
	te.connect("warmup", "d") // starts the poller
	const n = 50
	time.Sleep(50 * time.Millisecond)
	before := runtime.NumGoroutine()
	conns := make([]*websocket.Conn, n)
	for i := range conns {
		conns[i] = te.connect(fmt.Sprint("u", i), "d")
	}
	// Each connection's client side has no goroutine either (gorilla reads in the caller), so
	// any growth is the server's. Allow a few for net/http's and the workers' churn.
	time.Sleep(50 * time.Millisecond)
	if grew := runtime.NumGoroutine() - before; grew > n/5 {
		buf := make([]byte, 1<<20)
		t.Errorf("%d idle connections added %d goroutines; want almost none\n%s", n, grew, buf[:runtime.Stack(buf, true)])
	}
	for _, ws := range conns {
		ws.Close()
	}
	if !teststack.Eventually(t, 5*time.Second, func() bool { return te.s.connCount() == 1 }) {
		t.Fatalf("%d connections still registered after their clients closed", te.s.connCount()-1)
	}
}

// chunkConn serves a byte stream in reads of random sizes.
type chunkConn struct {
	net.Conn
	data []byte
	rng  *rand.Rand
}

func (c *chunkConn) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), len(c.data), 1+c.rng.IntN(300))
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

// Framed reads hand out the stream unchanged, never a byte past the end of the frame being
// read, and say exactly when the next frame's bytes are already buffered.
func TestFramedReadsStopAtFrameEnds(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		var stream []byte
		var ends []int // offsets where frames end
		for range 1 + rng.IntN(20) {
			size := rng.IntN(300)
			if rng.IntN(10) == 0 {
				size = 126 + rng.IntN(70000)
			}
			stream = append(stream, clientFrame(websocket.TextMessage, true, bytes.Repeat([]byte{'x'}, size))...)
			ends = append(ends, len(stream))
		}
		src := &chunkConn{data: stream, rng: rng}
		bc := &batchConn{Conn: src}
		bc.frameOn()
		var got []byte
		for {
			p := make([]byte, 1+rng.IntN(600))
			n, err := bc.Read(p)
			start := len(got)
			got = append(got, p[:n]...)
			for _, e := range ends {
				if start < e && len(got) > e {
					t.Fatalf("round %d: a read of [%d, %d) crosses the frame end at %d", round, start, len(got), e)
				}
			}
			// Bytes taken from the socket but not handed out must be reported as pending.
			if pulled := len(stream) - len(src.data); bc.pending() != (pulled > len(got)) {
				t.Fatalf("round %d: pending() = %v with %d bytes pulled and %d handed out", round, bc.pending(), pulled, len(got))
			}
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(got, stream) {
			t.Fatalf("round %d: stream changed (%d bytes read of %d)", round, len(got), len(stream))
		}
	}
}

// Pings and pongs between messages are answered without a worker staying behind to wait for
// a data frame.
func TestControlFramesLeaveNoWorkerWaiting(t *testing.T) {
	modes(t, func(t *testing.T, cfg Config) {
		te := newTestEdge(t, cfg, nil)
		const n = 20
		conns := make([]*websocket.Conn, n)
		pongs := make([][]string, n)
		for i := range conns {
			conns[i] = te.connect(fmt.Sprint("u", i), "d")
			conns[i].SetPongHandler(func(data string) error { pongs[i] = append(pongs[i], data); return nil })
			if err := conns[i].WriteControl(websocket.PingMessage, []byte(fmt.Sprint("hb", i)), time.Now().Add(time.Second)); err != nil {
				t.Fatal(err)
			}
			if err := conns[i].WriteControl(websocket.PongMessage, nil, time.Now().Add(time.Second)); err != nil {
				t.Fatal(err)
			}
		}
		if cfg.GoroutineReads {
			return // each connection's reader waits by design
		}
		time.Sleep(100 * time.Millisecond)
		buf := make([]byte, 1<<20)
		if waiting := bytes.Count(buf[:runtime.Stack(buf, true)], []byte("edge.(*Conn).readReady(")); waiting != 0 {
			t.Errorf("%d workers still reading after pings and pongs; want 0", waiting)
		}
		for i, ws := range conns {
			write(t, ws, `{"type":"ping","id":"after"}`)
			if f := readFrame(t, ws); f.Type != protocol.TypePong || f.ID != "after" {
				t.Fatalf("reply = %+v; want pong after", f)
			}
			if len(pongs[i]) != 1 || pongs[i][0] != fmt.Sprint("hb", i) {
				t.Errorf("connection %d got WebSocket pongs %q; want [hb%d]", i, pongs[i], i)
			}
		}
	})
}

// A client that never answers the edge's close frame is dropped after closeWait, whether or
// not its socket is being read.
func TestUnansweredCloseEndsTheConnection(t *testing.T) {
	modes(t, func(t *testing.T, cfg Config) {
		te := newTestEdge(t, cfg, nil)
		ws := te.connect("mute", "d")
		if err := ws.WriteMessage(websocket.BinaryMessage, []byte{1, 2, 3}); err != nil {
			t.Fatal(err)
		}
		// The edge answers with close 1003; this client neither reads it nor answers.
		if !teststack.Eventually(t, closeWait+3*time.Second, func() bool { return te.s.connCount() == 0 }) {
			t.Fatal("connection still registered after its close went unanswered")
		}
	})
}

// FuzzFramedReads feeds arbitrary bytes (valid frames or not) through framed reads in chunks
// of arbitrary sizes, taking control frames off with nextControl now and then: the bytes
// handed out and taken off must be the stream, in order, and pending must be exact.
func FuzzFramedReads(f *testing.F) {
	f.Add(clientFrame(websocket.TextMessage, true, pingText("a")), uint64(1))
	f.Add(append(clientFrame(websocket.PingMessage, true, []byte("hb")), clientFrame(websocket.TextMessage, true, make([]byte, 300))...), uint64(7))
	f.Add(append(clientFrame(websocket.PongMessage, true, nil), clientFrame(websocket.PingMessage, true, nil)...), uint64(2))
	f.Add([]byte{0x81, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3}, uint64(3))
	f.Add([]byte{0x81, 0x7e, 0x00}, uint64(5))
	f.Fuzz(func(t *testing.T, stream []byte, seed uint64) {
		rng := rand.New(rand.NewPCG(seed, seed))
		src := &chunkConn{data: stream, rng: rng}
		bc := &batchConn{Conn: src}
		bc.frameOn()
		var got []byte // the stream as consumed so far
		for {
			if rng.IntN(2) == 0 {
				op, payload, ok, err := bc.nextControl()
				if err != nil {
					break
				}
				if ok {
					frame := stream[len(got) : len(got)+6+len(payload)]
					want := make([]byte, len(payload))
					for i := range want {
						want[i] = frame[6+i] ^ frame[2+i%4]
					}
					if frame[0]&0x0f != op || int(frame[1]&0x7f) != len(payload) || !bytes.Equal(want, payload) {
						t.Fatalf("nextControl returned op %x payload %q for frame % x", op, payload, frame)
					}
					got = append(got, frame...)
					continue
				}
			}
			p := make([]byte, 1+rng.IntN(200))
			n, err := bc.Read(p)
			got = append(got, p[:n]...)
			if !bytes.HasPrefix(stream, got) {
				t.Fatalf("stream changed: consumed %d bytes that are not a prefix of the %d sent", len(got), len(stream))
			}
			if pulled := len(stream) - len(src.data); bc.pending() != (pulled > len(got)) {
				t.Fatalf("pending() = %v with %d bytes pulled and %d consumed", bc.pending(), pulled, len(got))
			}
			if err != nil {
				break
			}
		}
	})
}

// The worker gauges count live workers: read workers appear with traffic and all are gone after
// Shutdown.
func TestWorkerGauges(t *testing.T) {
	te := newTestEdge(t, Config{}, nil)
	ws := te.connect("alice", "phone")
	write(t, ws, `{"type":"ping","id":"p"}`)
	readFrame(t, ws)
	read := te.s.metrics.workers.WithLabelValues("read")
	if got := testutil.ToFloat64(read); got < 1 {
		t.Fatalf("read workers = %v after a frame was read; want at least 1", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	te.s.cfg.DrainWindow = 0
	_ = te.s.Shutdown(ctx)
	for _, pool := range []string{"read", "write"} {
		if got := testutil.ToFloat64(te.s.metrics.workers.WithLabelValues(pool)); got != 0 {
			t.Errorf("%s workers = %v after Shutdown; want 0", pool, got)
		}
	}
}
