package edge

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/nats-io/nats.go"
	"golang.org/x/time/rate"

	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/routing"
	"github.com/parleyhq/parley/internal/wire"
	"github.com/parleyhq/parley/presence"
	"github.com/parleyhq/parley/protocol"
)

// WatchPolicy decides whose presence a user may watch.
type WatchPolicy interface {
	// Refused returns the targets watcher may not watch.
	Refused(ctx context.Context, watcher chat.UserID, targets []chat.UserID) ([]chat.UserID, error)
}

// MemberLister lists a conversation's current members (typing goes to them).
type MemberLister interface {
	ActiveMembers(ctx context.Context, conv chat.ConversationID) ([]chat.UserID, error)
}

// watch is the set of this edge's connections watching one user.
type watch struct {
	conns map[*Conn]struct{}
	sub   *nats.Subscription
}

// EnablePresence registers sessions with p, and answers presence.subscribe and
// presence.unsubscribe under policy. Call before serving.
func (s *Server) EnablePresence(p *presence.Presence, policy WatchPolicy) {
	s.presence = p
	s.Handle(protocol.TypePresenceSubscribe, func(ctx context.Context, c *Conn, f protocol.Frame) {
		users, perr := parseUsers(f.Users)
		if perr != nil {
			c.SendError(f.ID, perr)
			return
		}
		s.mu.Lock()
		fresh := 0
		for _, u := range users {
			if _, ok := c.watching[u]; !ok {
				fresh++
			}
		}
		over := len(c.watching)+fresh > s.cfg.MaxSubscriptions
		s.mu.Unlock()
		if over {
			c.SendError(f.ID, protocol.Errorf(protocol.CodeTooManySubscriptions, "at most %d subscriptions per connection", s.cfg.MaxSubscriptions))
			return
		}
		ctx, cancel := context.WithTimeout(ctx, handlerTimeout)
		defer cancel()
		refused, err := policy.Refused(ctx, c.user, users)
		if err != nil {
			s.logger.Warn("presence policy", "err", err)
			c.SendError(f.ID, wire.ProtocolError(err))
			return
		}
		if len(refused) > 0 {
			names := make([]string, len(refused))
			for i, u := range refused {
				names[i] = string(u)
			}
			c.SendError(f.ID, protocol.Errorf(protocol.CodeForbidden, "you may not watch %s (you share no conversation)", strings.Join(names, ", ")))
			return
		}
		for _, u := range users {
			s.watch(c, u)
		}
		c.Send(protocol.Frame{Type: protocol.TypePresence, ID: f.ID, Presence: p.States(ctx, users)})
	})
	s.Handle(protocol.TypePresenceUnsubscribe, func(_ context.Context, c *Conn, f protocol.Frame) {
		users, perr := parseUsers(f.Users)
		if perr != nil {
			c.SendError(f.ID, perr)
			return
		}
		for _, u := range users {
			s.unwatch(c, u)
		}
		if f.ID != "" {
			c.Send(protocol.Frame{Type: protocol.TypeOK, ID: f.ID})
		}
	})
}

func parseUsers(in []string) ([]chat.UserID, *protocol.Error) {
	if len(in) == 0 {
		return nil, protocol.Errorf(protocol.CodeBadRequest, "users is empty")
	}
	out := make([]chat.UserID, 0, len(in))
	seen := map[chat.UserID]bool{}
	for _, s := range in {
		u, err := chat.ParseUserID(s)
		if err != nil {
			return nil, protocol.Errorf(protocol.CodeBadRequest, "users: %v", err)
		}
		if !seen[u] {
			seen[u] = true
			out = append(out, u)
		}
	}
	return out, nil
}

// watch adds c to u's watchers, subscribing to u's presence subject for the first one.
func (s *Server) watch(c *Conn, u chat.UserID) {
	s.mu.Lock()
	if _, live := s.buckets[c.bucket][c]; !live {
		s.mu.Unlock()
		return
	}
	if c.watching == nil {
		c.watching = map[chat.UserID]struct{}{}
	}
	c.watching[u] = struct{}{}
	w := s.watchers[u]
	if w == nil {
		w = &watch{conns: map[*Conn]struct{}{}}
		s.watchers[u] = w
	}
	w.conns[c] = struct{}{}
	need := w.sub == nil && s.nc != nil
	s.mu.Unlock()
	if !need {
		return
	}
	sub, err := s.nc.ChanSubscribe(routing.PresenceSubject(u), s.natsCh)
	if err != nil {
		s.logger.Warn("subscribe presence", "user", u, "err", err)
		return
	}
	s.mu.Lock()
	if w := s.watchers[u]; w != nil && w.sub == nil {
		w.sub, sub = sub, nil
	}
	s.mu.Unlock()
	if sub != nil {
		_ = sub.Unsubscribe()
	}
}

func (s *Server) unwatch(c *Conn, u chat.UserID) {
	s.mu.Lock()
	sub := s.unwatchLocked(c, u)
	s.mu.Unlock()
	if sub != nil {
		_ = sub.Unsubscribe()
	}
}

// unwatchLocked removes c from u's watchers and returns the subscription to close when it
// was the last one.
func (s *Server) unwatchLocked(c *Conn, u chat.UserID) *nats.Subscription {
	delete(c.watching, u)
	w := s.watchers[u]
	if w == nil {
		return nil
	}
	delete(w.conns, c)
	if len(w.conns) > 0 {
		return nil
	}
	delete(s.watchers, u)
	return w.sub
}

// dropWatches removes every watch of a closing connection.
func (s *Server) dropWatches(c *Conn) {
	s.mu.Lock()
	var subs []*nats.Subscription
	for u := range c.watching {
		if sub := s.unwatchLocked(c, u); sub != nil {
			subs = append(subs, sub)
		}
	}
	s.mu.Unlock()
	for _, sub := range subs {
		_ = sub.Unsubscribe()
	}
}

// presenceEvent handles a transition heard on NATS: delivered at once unless the coalescer
// holds it (see coalescer).
func (s *Server) presenceEvent(m *nats.Msg) {
	var st protocol.PresenceState
	if json.Unmarshal(m.Data, &st) != nil || st.User == "" {
		return
	}
	if s.coalesce.event(st, s.now()) {
		s.deliverPresence(chat.UserID(st.User), st)
	}
}

// flushPresence delivers the held events whose interval has ended.
func (s *Server) flushPresence() {
	for _, st := range s.coalesce.due(s.now()) {
		s.deliverPresence(chat.UserID(st.User), st)
	}
}

// deliverPresence queues one presence frame to every connection here watching u.
func (s *Server) deliverPresence(u chat.UserID, st protocol.PresenceState) {
	data, err := protocol.Encode(protocol.Frame{Type: protocol.TypePresence, Presence: []protocol.PresenceState{st}})
	if err != nil {
		return
	}
	s.mu.Lock()
	var conns []*Conn
	if w := s.watchers[u]; w != nil {
		for c := range w.conns {
			conns = append(conns, c)
		}
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.enqueue(outFrame{data: data, typ: protocol.TypePresence, st: &st, ephemeral: true})
	}
}

// typingRate bounds typing frames per connection: one a second, bursts of three.
const typingRate, typingBurst = 1, 3

// EnableTyping forwards typing frames of members to the other members' devices (never
// stored). Call after EnableSend (it shares its membership cache) and before serving.
func (s *Server) EnableTyping(members MemberLister) {
	s.Handle(protocol.TypeTyping, func(ctx context.Context, c *Conn, f protocol.Frame) {
		conv, err := chat.ParseConversationID(f.Conversation)
		if err != nil {
			c.SendError(f.ID, protocol.Errorf(protocol.CodeBadRequest, "conversation is not a UUID"))
			return
		}
		if c.typing == nil {
			c.typing = rate.NewLimiter(typingRate, typingBurst) // the connection's reader only
		}
		if !c.typing.Allow() {
			s.metrics.drops.WithLabelValues("typing_rate").Inc()
			c.SendError(f.ID, protocol.Errorf(protocol.CodeRateLimited, "at most %d typing frames a second", typingRate))
			return
		}
		ctx, cancel := context.WithTimeout(ctx, handlerTimeout)
		defer cancel()
		users, err := s.membership.activeMembers(ctx, members, conv)
		if err != nil {
			c.SendError(f.ID, protocol.Errorf(protocol.CodeUnavailable, "cannot read the members now"))
			return
		}
		var others []chat.UserID
		member := false
		for _, u := range users {
			if u == c.user {
				member = true
			} else {
				others = append(others, u)
			}
		}
		if !member {
			c.SendError(f.ID, protocol.Errorf(protocol.CodeNotFound, "no such conversation"))
			return
		}
		data, err := protocol.Encode(protocol.Frame{Type: protocol.TypeTyping, Conversation: conv.String(), User: string(c.user), TS: s.now().UnixMilli()})
		if err == nil && s.nc != nil {
			routing.Publish(s.nc, others, string(protocol.TypeTyping), data)
		}
		if f.ID != "" {
			c.Send(protocol.Frame{Type: protocol.TypeOK, ID: f.ID})
		}
	})
}
