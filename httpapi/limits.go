package httpapi

import (
	"sync"
	"time"

	"github.com/parleyhq/parley/internal/chat"
	"golang.org/x/time/rate"
)

// userLimits holds one token bucket per user (golang.org/x/time/rate). Buckets idle for a
// minute are dropped, so the map holds only recently active users.
type userLimits struct {
	limit rate.Limit
	burst int

	mu    sync.Mutex
	users map[chat.UserID]*userLimit
	swept time.Time
}

type userLimit struct {
	l    *rate.Limiter
	seen time.Time
}

func newUserLimits(limit rate.Limit, burst int) *userLimits {
	return &userLimits{limit: limit, burst: burst, users: map[chat.UserID]*userLimit{}}
}

func (u *userLimits) allow(user chat.UserID, now time.Time) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if now.Sub(u.swept) > time.Minute {
		for k, v := range u.users {
			if now.Sub(v.seen) > time.Minute {
				delete(u.users, k)
			}
		}
		u.swept = now
	}
	ul := u.users[user]
	if ul == nil {
		ul = &userLimit{l: rate.NewLimiter(u.limit, u.burst)}
		u.users[user] = ul
	}
	ul.seen = now
	return ul.l.AllowN(now, 1)
}
