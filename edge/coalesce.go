package edge

import (
	"time"

	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/protocol"
)

// presenceInterval coalesces presence events: a user's first event goes out at once, and
// further ones within the interval are held and only the latest is sent when it ends, so at
// most one event per watched user per interval reaches a connection. presenceTick is how
// often held events are checked.
const (
	presenceInterval = 250 * time.Millisecond
	presenceTick     = 50 * time.Millisecond
)

// coalescer decides which presence transitions go out and when. It is used only by the
// edge's routing goroutine (no lock).
type coalescer struct {
	interval time.Duration
	// sent is when the last event per user went out; pending holds the latest transition per
	// user until its interval ends.
	sent    map[chat.UserID]time.Time
	pending map[chat.UserID]protocol.PresenceState
}

func newCoalescer(interval time.Duration) *coalescer {
	return &coalescer{interval: interval, sent: map[chat.UserID]time.Time{}, pending: map[chat.UserID]protocol.PresenceState{}}
}

// event reports whether st is to be delivered now; if not, it is held (the latest wins) until
// due returns it.
func (c *coalescer) event(st protocol.PresenceState, now time.Time) bool {
	u := chat.UserID(st.User)
	if now.Sub(c.sent[u]) >= c.interval {
		c.sent[u] = now
		return true
	}
	c.pending[u] = st
	return false
}

// due returns the held events whose interval has ended (to deliver now), and forgets send
// times old enough not to matter.
func (c *coalescer) due(now time.Time) []protocol.PresenceState {
	var out []protocol.PresenceState
	for u, st := range c.pending {
		if now.Sub(c.sent[u]) >= c.interval {
			delete(c.pending, u)
			c.sent[u] = now
			out = append(out, st)
		}
	}
	for u, at := range c.sent {
		if _, held := c.pending[u]; !held && now.Sub(at) >= c.interval {
			delete(c.sent, u)
		}
	}
	return out
}
