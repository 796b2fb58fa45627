//go:build linux

package edge

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// poller is the edge's event-driven reader: one epoll instance watches every idle connection's
// socket, so an idle connection needs no goroutine (and no goroutine stack, 4 KiB or more each).
// When a socket becomes readable its connection is handed to a worker (workers.go), which reads
// the messages that are there and re-arms the socket. Each socket is registered one-shot, so
// at most one worker reads a connection at a time. The runtime's own poller keeps working as
// usual underneath: a worker that meets half a frame blocks in an ordinary read until the rest
// arrives (or the connection's deadline or close ends it).
type poller struct {
	epfd  int
	file  *os.File        // epfd, watched by the runtime's poller: the loop parks like a socket read
	raw   syscall.RawConn // file's
	ready func(*Conn)
	done  chan struct{}

	mu    sync.Mutex
	conns map[int32]*Conn // by socket; a connection's tag tells a reused descriptor apart
	tag   uint32
}

// pollEvents arms a socket for one readiness report (readable, or the peer closed).
const pollEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT

var errNotPollable = errors.New("connection has no socket to poll")

// newPoller starts the epoll loop; ready runs (on the loop's goroutine) for each connection
// whose socket is readable, and must not block.
//
// The loop never blocks a thread in epoll_wait: with one core, a goroutine blocked in a system
// call keeps the only P until the runtime's monitor takes it back, which stalled handshakes. The
// epoll descriptor is itself pollable (readable while it has events), so it is handed to the
// runtime's poller, and the loop waits for it as a network read waits for its socket.
func newPoller(ready func(*Conn)) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("epoll descriptor: %w", err)
	}
	file := os.NewFile(uintptr(epfd), "edge-epoll") // non-blocking: the runtime polls it
	raw, err := file.SyscallConn()
	if err != nil {
		_ = file.Close()
		return nil, fmt.Errorf("epoll descriptor: %w", err)
	}
	p := &poller{epfd: epfd, file: file, raw: raw, ready: ready, done: make(chan struct{}), conns: map[int32]*Conn{}}
	go p.loop()
	return p, nil
}

// socketFD returns the descriptor of a TCP (or Unix) connection. The descriptor stays owned by
// the net package; the poller only watches it.
func socketFD(c net.Conn) (int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1, errNotPollable
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return -1, err
	}
	return fd, nil
}

// add watches c's socket.
func (p *poller) add(c *Conn) error {
	fd, err := socketFD(socketOf(c.batch.Conn))
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.tag++
	c.pfd, c.ptag = int32(fd), p.tag
	p.conns[c.pfd] = c // before the socket is armed: its first report must find c
	p.mu.Unlock()
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, c.pollEvent()); err != nil {
		p.mu.Lock()
		delete(p.conns, c.pfd)
		p.mu.Unlock()
		return fmt.Errorf("epoll_ctl add: %w", err)
	}
	return nil
}

func (c *Conn) pollEvent() *unix.EpollEvent {
	return &unix.EpollEvent{Events: pollEvents, Fd: c.pfd, Pad: int32(c.ptag)}
}

// rearm asks for the next readiness report of c's socket.
func (p *poller) rearm(c *Conn) error {
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, int(c.pfd), c.pollEvent()); err != nil {
		return fmt.Errorf("epoll_ctl mod: %w", err)
	}
	return nil
}

// remove stops watching c's socket; call it before the socket is closed.
func (p *poller) remove(c *Conn) {
	_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(c.pfd), nil)
	p.mu.Lock()
	if p.conns[c.pfd] == c {
		delete(p.conns, c.pfd)
	}
	p.mu.Unlock()
}

func (p *poller) loop() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 256)
	ready := make([]*Conn, 0, len(events))
	for {
		var n int
		var werr error
		err := p.raw.Read(func(fd uintptr) bool {
			n, werr = unix.EpollWait(int(fd), events, 0)
			if errors.Is(werr, unix.EINTR) {
				n, werr = 0, nil
				return true // try again at once
			}
			return n > 0 || werr != nil // none yet: park until the descriptor is readable
		})
		if err != nil {
			return // closed
		}
		if werr != nil {
			panic(fmt.Sprintf("edge: epoll_wait: %v", werr)) // only a bad descriptor can cause this
		}
		ready = ready[:0]
		p.mu.Lock()
		for _, ev := range events[:n] {
			// A report for a descriptor closed and reused meanwhile carries the old tag.
			if c := p.conns[ev.Fd]; c != nil && c.ptag == uint32(ev.Pad) {
				ready = append(ready, c)
			}
		}
		p.mu.Unlock()
		for _, c := range ready {
			p.ready(c)
		}
	}
}

// close stops the loop and closes the epoll instance. Connections still registered are not
// touched.
func (p *poller) close() {
	_ = p.file.Close() // wakes the loop's wait with an error
	<-p.done
}
