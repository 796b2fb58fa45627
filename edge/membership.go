package edge

import (
	"context"
	"sync"
	"time"

	"github.com/parleyhq/parley/internal/chat"
)

// The membership check of every send is answered from a cache of positive answers, so a send
// costs no store read in the common case and is still accepted while the store is down (the
// message waits durably in the ingest stream; DESIGN.md: accepting must not depend on
// Cassandra). The delivery worker announces every membership change it applies on
// routing.MembershipSubject; the edge drops the conversation's entries when it hears one, and
// the TTL bounds staleness if an announcement is lost.
const (
	membershipTTL = 30 * time.Second
	// membershipStale is how old an entry may be and still answer when the store fails.
	membershipStale = 10 * time.Minute
	// membershipMax bounds the entries; past it expired ones are swept, then all dropped.
	membershipMax = 200_000
)

type membershipCache struct {
	inner Membership
	now   func() time.Time

	mu    sync.Mutex
	convs map[chat.ConversationID]map[chat.UserID]time.Time // when the positive answer was read
	n     int
	lists map[chat.ConversationID]memberList // typing's recipients
}

type memberList struct {
	users []chat.UserID
	at    time.Time
}

// activeMembers returns the conversation's current members, cached like the answers above
// (and dropped with them on an announcement).
func (c *membershipCache) activeMembers(ctx context.Context, lister MemberLister, conv chat.ConversationID) ([]chat.UserID, error) {
	now := c.now()
	c.mu.Lock()
	l, ok := c.lists[conv]
	c.mu.Unlock()
	if ok && now.Sub(l.at) < membershipTTL {
		return l.users, nil
	}
	users, err := lister.ActiveMembers(ctx, conv)
	if err != nil {
		if ok && now.Sub(l.at) < membershipStale {
			return l.users, nil
		}
		return nil, err
	}
	c.mu.Lock()
	if len(c.lists) >= membershipMax/10 {
		c.lists = map[chat.ConversationID]memberList{}
	}
	c.lists[conv] = memberList{users: users, at: now}
	c.mu.Unlock()
	return users, nil
}

func newMembershipCache(inner Membership, now func() time.Time) *membershipCache {
	return &membershipCache{inner: inner, now: now, convs: map[chat.ConversationID]map[chat.UserID]time.Time{},
		lists: map[chat.ConversationID]memberList{}}
}

func (c *membershipCache) IsActiveMember(ctx context.Context, conv chat.ConversationID, user chat.UserID) (bool, error) {
	now := c.now()
	c.mu.Lock()
	at, cached := c.convs[conv][user]
	c.mu.Unlock()
	if cached && now.Sub(at) < membershipTTL {
		return true, nil
	}
	ok, err := c.inner.IsActiveMember(ctx, conv, user)
	if err != nil {
		if cached && now.Sub(at) < membershipStale {
			return true, nil // the store is failing: the last answer stands
		}
		return false, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !ok {
		c.drop(conv, user)
		return false, nil
	}
	if c.n >= membershipMax {
		c.sweep(now)
	}
	users := c.convs[conv]
	if users == nil {
		users = map[chat.UserID]time.Time{}
		c.convs[conv] = users
	}
	if _, had := users[user]; !had {
		c.n++
	}
	users[user] = now
	return true, nil
}

// invalidate forgets every answer about conv (its membership changed).
func (c *membershipCache) invalidate(conv chat.ConversationID) {
	c.mu.Lock()
	c.n -= len(c.convs[conv])
	delete(c.convs, conv)
	delete(c.lists, conv)
	c.mu.Unlock()
}

func (c *membershipCache) drop(conv chat.ConversationID, user chat.UserID) {
	if users := c.convs[conv]; users != nil {
		if _, had := users[user]; had {
			delete(users, user)
			c.n--
		}
	}
}

// sweep removes entries too old to answer even in an outage, and everything if that was not
// enough. Called with mu held.
func (c *membershipCache) sweep(now time.Time) {
	for conv, users := range c.convs {
		for u, at := range users {
			if now.Sub(at) >= membershipStale {
				delete(users, u)
				c.n--
			}
		}
		if len(users) == 0 {
			delete(c.convs, conv)
		}
	}
	if c.n >= membershipMax {
		c.convs, c.n = map[chat.ConversationID]map[chat.UserID]time.Time{}, 0
	}
}
