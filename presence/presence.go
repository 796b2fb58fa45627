package presence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/parleyhq/parley/internal/breaker"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/routing"
	"github.com/parleyhq/parley/protocol"
)

// Config configures presence. Zero values take the defaults.
type Config struct {
	// TTL is how long a session stays alive without a heartbeat: an edge that dies takes its
	// users offline within TTL + Heartbeat. Default 30s.
	TTL time.Duration
	// Heartbeat is how often an edge renews its sessions (in pipelined batches). Default 10s.
	Heartbeat time.Duration
	// Grace is how long a user whose last device disconnected stays online, so a quick
	// reconnect does not flap. Default 5s.
	Grace time.Duration
	// KeyPrefix prefixes every Redis key. Default "parley:presence:".
	KeyPrefix string
	// BatchSize is how many sessions one heartbeat pipeline carries. Default 1000.
	BatchSize int
}

// Defaults.
const (
	DefaultTTL       = 30 * time.Second
	DefaultHeartbeat = 10 * time.Second
	DefaultGrace     = 5 * time.Second
)

func (c Config) withDefaults() Config {
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = DefaultHeartbeat
	}
	if c.Grace == 0 {
		c.Grace = DefaultGrace
	}
	if c.KeyPrefix == "" {
		c.KeyPrefix = "parley:presence:"
	}
	if c.BatchSize == 0 {
		c.BatchSize = 1000
	}
	return c
}

// Validate reports the first invalid setting.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.Heartbeat < 100*time.Millisecond:
		return fmt.Errorf("presence heartbeat %v: at least 100ms", c.Heartbeat)
	case c.TTL < 2*c.Heartbeat:
		return fmt.Errorf("presence TTL %v: at least twice the heartbeat (%v), or a live session could expire between two heartbeats", c.TTL, c.Heartbeat)
	case c.Grace < 0 || c.Grace > c.TTL:
		return fmt.Errorf("presence grace %v: between 0 and the TTL (%v)", c.Grace, c.TTL)
	case c.BatchSize < 1:
		return fmt.Errorf("presence batch size %d: at least 1", c.BatchSize)
	}
	return nil
}

// Presence tracks the sessions of one edge in Redis and publishes transitions on NATS.
//
// Keys (all under KeyPrefix): "s:<user>" is a sorted set of the user's sessions scored by
// their expiry (Unix ms); "online" is a sorted set of online users scored by when the sweeper
// should look at them next (their latest session expiry, or the end of the grace period);
// "seen:<user>" is the last-seen time (Unix ms). The scripts below keep them consistent.
type Presence struct {
	cfg     Config
	rdb     *redis.Client
	nc      *nats.Conn
	breaker *breaker.Breaker
	logger  *slog.Logger
	metrics *metrics
	now     func() time.Time

	mu       sync.Mutex
	sessions map[string]chat.UserID // this edge's live sessions
	ops      chan op
}

type op struct {
	connect bool
	user    chat.UserID
	session string
}

// ErrUnavailable is returned while Redis is failing (the breaker is open or a call failed).
var ErrUnavailable = errors.New("presence unavailable")

// New returns a Presence. Call Run to heartbeat and sweep.
func New(cfg Config, rdb *redis.Client, nc *nats.Conn, breaker *breaker.Breaker, reg prometheus.Registerer, logger *slog.Logger) (*Presence, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &Presence{cfg: cfg.withDefaults(), rdb: rdb, nc: nc, breaker: breaker, logger: logger, metrics: m,
		now: time.Now, sessions: map[string]chat.UserID{}, ops: make(chan op, 1<<16)}, nil
}

// Connected records a new session of user. It never blocks: the Redis work is queued (and
// if the queue is full, the next heartbeat registers the session without an online event).
func (p *Presence) Connected(user chat.UserID, session string) {
	p.mu.Lock()
	p.sessions[session] = user
	p.mu.Unlock()
	select {
	case p.ops <- op{connect: true, user: user, session: session}:
	default:
		p.metrics.dropped.Inc()
	}
}

// Disconnected records the end of a session. It never blocks.
func (p *Presence) Disconnected(user chat.UserID, session string) {
	p.mu.Lock()
	delete(p.sessions, session)
	p.mu.Unlock()
	select {
	case p.ops <- op{user: user, session: session}:
	default:
		p.metrics.dropped.Inc()
	}
}

func (p *Presence) key(parts ...string) string {
	k := p.cfg.KeyPrefix
	for _, s := range parts {
		k += s
	}
	return k
}

// connectScript adds a session and reports 1 when the user was offline (not in "online").
var connectScript = redis.NewScript(`
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local was = redis.call('ZSCORE', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[2], 'GT', ARGV[2], ARGV[3])
if was then return 0 end
redis.call('DEL', KEYS[3])
return 1
`)

// disconnectScript removes a session; when none is left, the user's sweep time becomes the
// end of the grace period and their last seen is now.
var disconnectScript = redis.NewScript(`
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZCARD', KEYS[1]) == 0 and redis.call('ZSCORE', KEYS[2], ARGV[3]) then
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
  redis.call('SET', KEYS[3], ARGV[2])
end
return 0
`)

// sweepScript takes offline every user whose sweep time has passed and who has no live
// session, and returns them with their last-seen times (user, ms, user, ms, ...); a user with
// live sessions gets their latest expiry as the next sweep time. Atomic, so when several edges
// sweep at once each transition is reported once. It touches keys it derives from ARGV[2], so
// it needs a single (non-cluster) Redis.
//
// Last seen: a user whose sessions expired (their edge died) was last seen at the heartbeat
// that renewed their latest session, which is their sweep time minus the TTL (ARGV[4]), not
// now, a whole TTL later. A user whose last device disconnected has a last seen from the
// disconnect, later than that (the grace period is at most the TTL), which is kept. The later
// of the two wins, so a last seen left by an earlier disconnect (the user came back within the
// grace period) gives way to the heartbeat.
var sweepScript = redis.NewScript(`
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[3])
local gone = {}
for i = 1, #due, 2 do
  local u = due[i]
  local sk = ARGV[2] .. 's:' .. u
  redis.call('ZREMRANGEBYSCORE', sk, '-inf', ARGV[1])
  local top = redis.call('ZRANGE', sk, -1, -1, 'WITHSCORES')
  if #top == 0 then
    redis.call('ZREM', KEYS[1], u)
    local seenKey = ARGV[2] .. 'seen:' .. u
    local beat = tonumber(due[i + 1]) - tonumber(ARGV[4])
    local seen = tonumber(redis.call('GET', seenKey))
    if not seen or seen < beat then
      seen = beat
      redis.call('SET', seenKey, string.format('%.0f', beat))
    end
    table.insert(gone, u)
    table.insert(gone, string.format('%.0f', seen))
  else
    redis.call('ZADD', KEYS[1], top[2], u)
  end
end
return gone
`)

func (p *Presence) do(fn func() error) error {
	err := p.breaker.Do(fn)
	if err != nil {
		p.metrics.errors.Inc()
	}
	return err
}

func ms(t time.Time) int64 { return t.UnixMilli() }

// Run heartbeats this edge's sessions, applies queued connects and disconnects, and sweeps
// expired users, until ctx ends.
func (p *Presence) Run(ctx context.Context) error {
	hb := time.NewTicker(p.cfg.Heartbeat)
	defer hb.Stop()
	sweep := time.NewTicker(min(time.Second, p.cfg.Grace/2+10*time.Millisecond))
	defer sweep.Stop()
	gauge := time.NewTicker(10 * time.Second)
	defer gauge.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case o := <-p.ops:
			batch := []op{o}
			for len(batch) < p.cfg.BatchSize { // whatever else is queued goes in the same round trip
				select {
				case o := <-p.ops:
					batch = append(batch, o)
					continue
				default:
				}
				break
			}
			p.apply(ctx, batch)
		case <-hb.C:
			p.heartbeat(ctx)
		case <-sweep.C:
			p.sweep(ctx)
		case <-gauge.C:
			var n int64
			if p.do(func() (err error) { n, err = p.rdb.ZCard(ctx, p.key("online")).Result(); return }) == nil {
				p.metrics.online.Set(float64(n))
			}
		}
	}
}

// apply runs queued connects and disconnects, in order, in one pipelined round trip. The
// scripts are called by their SHA (EVALSHA); if Redis lost them (a restart), the batch is
// sent again with the scripts' text.
func (p *Presence) apply(ctx context.Context, batch []op) {
	now := p.now()
	run := func(useSHA bool) ([]redis.Cmder, error) {
		var cmds []redis.Cmder
		err := p.do(func() error {
			var err error
			cmds, err = p.rdb.Pipelined(ctx, func(pl redis.Pipeliner) error {
				for _, o := range batch {
					u := string(o.user)
					keys := []string{p.key("s:", u), p.key("online"), p.key("seen:", u)}
					script, args := disconnectScript, []any{o.session, ms(now), u, ms(now.Add(p.cfg.Grace))}
					if o.connect {
						script, args = connectScript, []any{o.session, ms(now.Add(p.cfg.TTL)), u, p.cfg.TTL.Milliseconds()}
					}
					if useSHA {
						script.EvalSha(ctx, pl, keys, args...)
					} else {
						script.Eval(ctx, pl, keys, args...)
					}
				}
				return nil
			})
			return err
		})
		return cmds, err
	}
	cmds, err := run(true)
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		cmds, err = run(false)
	}
	if err != nil {
		p.logger.Warn("presence connects/disconnects", "ops", len(batch), "err", err)
		return
	}
	for i, o := range batch {
		if !o.connect {
			continue
		}
		if was, err := cmds[i].(*redis.Cmd).Int64(); err == nil && was == 1 {
			p.publish(protocol.PresenceState{User: string(o.user), State: protocol.PresenceOnline})
		}
	}
}

// heartbeat renews every local session in pipelines of BatchSize sessions: one round trip
// per batch. It also rebuilds the state of a Redis that restarted empty.
func (p *Presence) heartbeat(ctx context.Context) {
	p.mu.Lock()
	type s struct {
		session string
		user    chat.UserID
	}
	all := make([]s, 0, len(p.sessions))
	for id, u := range p.sessions {
		all = append(all, s{id, u})
	}
	p.mu.Unlock()
	expiry := ms(p.now().Add(p.cfg.TTL))
	for start := 0; start < len(all); start += p.cfg.BatchSize {
		batch := all[start:min(start+p.cfg.BatchSize, len(all))]
		t0 := time.Now()
		err := p.do(func() error {
			_, err := p.rdb.Pipelined(ctx, func(pl redis.Pipeliner) error {
				for _, x := range batch {
					sk := p.key("s:", string(x.user))
					pl.ZAdd(ctx, sk, redis.Z{Score: float64(expiry), Member: x.session})
					pl.PExpire(ctx, sk, p.cfg.TTL)
					pl.ZAddGT(ctx, p.key("online"), redis.Z{Score: float64(expiry), Member: string(x.user)})
				}
				return nil
			})
			return err
		})
		p.metrics.batch.Observe(float64(len(batch)))
		p.metrics.heartbeat.Observe(time.Since(t0).Seconds())
		if err != nil {
			p.logger.Warn("presence heartbeat", "sessions", len(batch), "err", err)
			return
		}
	}
}

func (p *Presence) sweep(ctx context.Context) {
	const limit = 1000
	for round := 0; round < 50; round++ { // many at once after an edge died: keep going
		now := p.now()
		var gone []string
		err := p.do(func() (err error) {
			gone, err = sweepScript.Run(ctx, p.rdb, []string{p.key("online")}, ms(now), p.cfg.KeyPrefix, limit, p.cfg.TTL.Milliseconds()).StringSlice()
			return err
		})
		if err != nil {
			return
		}
		for i := 0; i+1 < len(gone); i += 2 {
			seen, err := strconv.ParseInt(gone[i+1], 10, 64)
			if err != nil {
				seen = ms(now)
			}
			p.publish(protocol.PresenceState{User: gone[i], State: protocol.PresenceOffline, LastSeen: seen})
		}
		if len(gone)/2 < limit {
			return
		}
	}
}

// publish sends a transition to the edges watching the user.
func (p *Presence) publish(st protocol.PresenceState) {
	p.metrics.transitions.WithLabelValues(st.State).Inc()
	data, err := json.Marshal(st)
	if err != nil {
		return
	}
	if err := p.nc.Publish(routing.PresenceSubject(chat.UserID(st.User)), data); err != nil {
		p.metrics.publishErrors.Inc()
		return
	}
	p.metrics.published.Inc()
}

// States reads the presence of users in one round trip. A user is online while they are in
// the online set, which is what transitions are published from: a snapshot and the events
// that follow it agree. While Redis fails, every state is "unknown".
func (p *Presence) States(ctx context.Context, users []chat.UserID) []protocol.PresenceState {
	out := make([]protocol.PresenceState, len(users))
	scores := make([]*redis.FloatCmd, len(users))
	seen := make([]*redis.StringCmd, len(users))
	err := p.do(func() error {
		_, err := p.rdb.Pipelined(ctx, func(pl redis.Pipeliner) error {
			for i, u := range users {
				scores[i] = pl.ZScore(ctx, p.key("online"), string(u))
				seen[i] = pl.Get(ctx, p.key("seen:", string(u)))
			}
			return nil
		})
		if errors.Is(err, redis.Nil) {
			err = nil // a missing member or key is an answer
		}
		return err
	})
	for i, u := range users {
		out[i] = protocol.PresenceState{User: string(u), State: protocol.PresenceUnknown}
		if err != nil {
			continue
		}
		if scores[i].Err() == nil {
			out[i].State = protocol.PresenceOnline
			continue
		}
		out[i].State = protocol.PresenceOffline
		if v, err := seen[i].Int64(); err == nil {
			out[i].LastSeen = v
		}
	}
	return out
}

// IsRedisFailure reports whether err counts as a failure of Redis (for the breaker): a
// missing key is an answer, a cancelled request the caller's doing.
func IsRedisFailure(err error) bool {
	return err != nil && !errors.Is(err, redis.Nil) && !errors.Is(err, context.Canceled) && !errors.Is(err, breaker.ErrUnavailable)
}
