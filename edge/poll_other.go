//go:build !linux

package edge

import "errors"

// poller is Linux-only (epoll); elsewhere every connection is read by its own goroutine.
type poller struct{}

func newPoller(func(*Conn)) (*poller, error) {
	return nil, errors.New("event-driven reads need Linux (epoll)")
}

func (*poller) add(*Conn) error   { return errors.New("no poller") }
func (*poller) rearm(*Conn) error { return errors.New("no poller") }
func (*poller) remove(*Conn)      {}
func (*poller) close()            {}
