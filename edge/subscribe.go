package edge

import (
	"time"

	"github.com/nats-io/nats.go"

	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/routing"
)

// A user's subject is subscribed before the user's first connection here gets hello, and the
// subscription is known to the NATS server by then (a round trip confirms it). A client syncs
// after hello, so every message is either in its sync result (stored before the sync read) or
// published after the subscription took effect, and pushed live: no message falls between
// the two. Handshakes that need a subscription queue their user; one goroutine subscribes
// every queued user and confirms them all with one round trip, so a burst of handshakes (a
// reconnect storm) costs NATS one write and one PING for many subscriptions instead of one
// write each.

// subscribeWait bounds how long a handshake waits for its subscription: when NATS is slow the
// connection is admitted anyway (live push is best effort; sync repairs).
const subscribeWait = 2 * time.Second

// pendingSub is a queued subscription and the channel closed when it is done.
type pendingSub struct {
	user chat.UserID
	done chan struct{}
}

// subscribeUser makes sure c's user has a subscription, waiting for it if it is being made.
// The user's entry exists (reserve made it).
func (s *Server) subscribeUser(c *Conn) {
	if s.nc == nil {
		return
	}
	s.mu.Lock()
	u := s.users[c.user]
	if u.sub != nil {
		s.mu.Unlock()
		return
	}
	if u.subbing == nil {
		u.subbing = make(chan struct{})
		s.subQueue = append(s.subQueue, pendingSub{c.user, u.subbing})
		s.subOnce.Do(func() {
			s.subKick = make(chan struct{}, 1)
			s.subDone = make(chan struct{})
			go s.subscribeLoop()
		})
		select {
		case s.subKick <- struct{}{}:
		default:
		}
	}
	done := u.subbing
	s.mu.Unlock()
	t := time.NewTimer(subscribeWait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		s.logger.Warn("edge: user subscription not confirmed in time; admitted anyway", "user", c.user)
	}
}

// subscribeLoop makes the queued subscriptions in batches until stopSubscriber.
func (s *Server) subscribeLoop() {
	defer close(s.subDone)
	for range s.subKick {
		s.mu.Lock()
		batch := s.subQueue
		s.subQueue = nil
		s.mu.Unlock()
		if len(batch) == 0 {
			continue
		}
		subs := make([]*nats.Subscription, len(batch))
		for i, p := range batch {
			sub, err := s.nc.ChanSubscribe(routing.UserSubject(p.user), s.natsCh)
			if err != nil {
				s.logger.Warn("subscribe user subject", "user", p.user, "err", err)
			}
			subs[i] = sub
		}
		if s.nc.IsConnected() {
			// One round trip: the server has every subscription of the batch after it.
			if err := s.nc.FlushTimeout(subscribeWait); err != nil {
				s.logger.Warn("edge: confirm user subscriptions", "n", len(batch), "err", err)
			}
		}
		var extra []*nats.Subscription
		s.mu.Lock()
		for i, p := range batch {
			u := s.users[p.user]
			if u != nil && u.subbing == p.done {
				u.subbing = nil
			}
			switch {
			case subs[i] == nil:
			case u != nil && u.sub == nil && (len(u.conns) > 0 || u.reserved > 0):
				u.sub = subs[i]
			default:
				extra = append(extra, subs[i]) // the user left meanwhile
			}
			close(p.done)
		}
		s.mu.Unlock()
		for _, sub := range extra {
			_ = sub.Unsubscribe()
		}
	}
}

// stopSubscriber ends subscribeLoop, if it ever started; call it once no handshake runs.
func (s *Server) stopSubscriber() {
	s.subOnce.Do(func() {}) // none starts after this
	if s.subKick != nil {
		close(s.subKick)
		<-s.subDone
	}
}
