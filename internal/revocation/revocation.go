// Package revocation stores token revocations (auth.Revocation: a logout, a lost or stolen
// device) durably in a NATS KV bucket and broadcasts them: every edge and api process watches
// the bucket, keeps a copy of every revocation in memory, checks each handshake, auth.refresh
// and REST request against the copy (no round trip), and the edge closes the matching live
// connections when a revocation arrives.
//
// The bucket keeps each revocation for Config.TTL (the bucket's max age), which must be at
// least the longest token lifetime: once a revocation is gone, the tokens it named are
// accepted again until they expire.
//
// While NATS is unreachable the copy may miss revocations made meanwhile elsewhere (none can
// be made through this NATS connection: the store is NATS). The edge then answers from the
// copy (fail open on the copy, not on nothing), counts those checks in
// parley_revocation_stale_checks_total, and catches up when the watch resumes, closing what
// the revocations it missed name. A process never serves handshakes before the first full
// load of the copy (Loaded).
package revocation

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/chat"
)

// Config configures the store. Zero values take the defaults.
type Config struct {
	// Bucket is the NATS KV bucket. Default "PARLEY_REVOCATIONS".
	Bucket string
	// TTL is how long a revocation is kept: at least the longest lifetime of the tokens the
	// issuer mints. Default 30 days.
	TTL time.Duration
	// Replicas of the bucket: 1 for one NATS server, 3 for a cluster. Default 1.
	Replicas int
}

// Defaults for Config.
const (
	DefaultBucket = "PARLEY_REVOCATIONS"
	DefaultTTL    = 30 * 24 * time.Hour
)

// Validate reports the first invalid setting.
func (c Config) Validate() error {
	if c.TTL < 0 {
		return fmt.Errorf("revocation ttl %v is negative", c.TTL)
	}
	if c.Replicas < 0 || c.Replicas > 5 {
		return fmt.Errorf("revocation replicas %d out of range [1, 5]", c.Replicas)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.Bucket == "" {
		c.Bucket = DefaultBucket
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	return c
}

// Store is the revocation bucket and this process's copy of it.
type Store struct {
	cfg    Config
	kv     jetstream.KeyValue
	nc     *nats.Conn
	now    func() time.Time
	logger *slog.Logger

	checks prometheus.Counter // handshakes and refreshes checked
	stale  prometheus.Counter // of which against a copy that may be stale
	closed prometheus.Counter // revocations applied from the watch

	mu       sync.RWMutex
	known    map[string]auth.Revocation // by key
	loaded   chan struct{}              // closed when Run has read the whole bucket once
	loadOnce sync.Once
}

// Open creates or updates the bucket and returns the store. reg receives its metrics.
func Open(ctx context.Context, js jetstream.JetStream, nc *nats.Conn, cfg Config, reg prometheus.Registerer, logger *slog.Logger) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: cfg.Bucket, TTL: cfg.TTL, History: 1,
		Description: "Parley token revocations", Storage: jetstream.FileStorage, Replicas: cfg.Replicas})
	if err != nil {
		return nil, fmt.Errorf("revocation bucket %s: %w", cfg.Bucket, err)
	}
	s := &Store{cfg: cfg, kv: kv, nc: nc, now: time.Now, logger: logger,
		known: map[string]auth.Revocation{}, loaded: make(chan struct{})}
	s.checks = prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_revocation_checks_total",
		Help: "Tokens checked against the revocations (handshakes, auth.refresh and REST requests)."})
	s.stale = prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_revocation_stale_checks_total",
		Help: "Token checks answered from a copy of the revocations that may be stale (NATS unreachable): admitted unless the copy names them."})
	s.closed = prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_revocation_updates_total",
		Help: "Revocations received from the bucket's watch."})
	stored := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "parley_revocations_known",
		Help: "Revocations in this process's copy."}, func() float64 {
		s.mu.RLock()
		defer s.mu.RUnlock()
		return float64(len(s.known))
	})
	current := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "parley_revocations_current",
		Help: "1 while the copy of the revocations is loaded and NATS is connected, else 0."}, func() float64 {
		if s.current() {
			return 1
		}
		return 0
	})
	for _, c := range []prometheus.Collector{s.checks, s.stale, s.closed, stored, current} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("revocation metrics: %w", err)
		}
	}
	return s, nil
}

// key is where r lives in the bucket: one key per user, per user and device, per token id,
// so revoking again replaces (and moves forward) the earlier revocation. Ids are encoded
// because they may hold characters KV keys may not.
func key(r auth.Revocation) string {
	enc := base64.RawURLEncoding.EncodeToString
	switch {
	case r.TokenID != "":
		return "jti." + enc([]byte(r.TokenID))
	case r.Device != "":
		return "device." + enc([]byte(r.User)) + "." + enc([]byte(r.Device))
	}
	return "user." + enc([]byte(r.User))
}

// Revoke stores r, with At set to now when zero, and returns what was stored. Every watching
// process applies it.
func (s *Store) Revoke(ctx context.Context, r auth.Revocation) (auth.Revocation, error) {
	if r.At.IsZero() {
		r.At = s.now()
	}
	r.At = r.At.UTC().Truncate(time.Millisecond)
	if err := r.Validate(); err != nil {
		return auth.Revocation{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	data, err := json.Marshal(r)
	if err != nil {
		return auth.Revocation{}, err
	}
	if _, err := s.kv.Put(ctx, key(r), data); err != nil {
		return auth.Revocation{}, fmt.Errorf("store revocation in %s: %w", s.cfg.Bucket, err)
	}
	return r, nil
}

// ErrInvalid wraps a revocation that names nothing, or too much.
var ErrInvalid = errors.New("invalid revocation")

// List reads every stored revocation from the bucket (not the copy), oldest first.
func (s *Store) List(ctx context.Context) ([]auth.Revocation, error) {
	w, err := s.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("list revocations in %s: %w", s.cfg.Bucket, err)
	}
	defer func() { _ = w.Stop() }()
	var out []auth.Revocation
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("list revocations in %s: %w", s.cfg.Bucket, ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("list revocations in %s: the watch ended", s.cfg.Bucket)
			}
			if e == nil {
				slices.SortFunc(out, func(a, b auth.Revocation) int { return a.At.Compare(b.At) })
				return out, nil
			}
			if r, ok := s.decode(e); ok && s.live(r) {
				out = append(out, r)
			}
		}
	}
}

func (s *Store) decode(e jetstream.KeyValueEntry) (auth.Revocation, bool) {
	var r auth.Revocation
	if err := json.Unmarshal(e.Value(), &r); err != nil || r.Validate() != nil {
		s.logger.Warn("revocation bucket: skipping an unreadable entry", "key", e.Key(), "err", err)
		return auth.Revocation{}, false
	}
	return r, true
}

// live: r has not outlived the TTL (the bucket drops it then, without telling watchers).
func (s *Store) live(r auth.Revocation) bool { return s.now().Sub(r.At) < s.cfg.TTL }

// Run watches the bucket until ctx ends: it loads the copy (then Loaded returns), and calls
// apply for every revocation it reads, the initial ones included, after adding it to the copy
// (so a handshake that checks the copy after apply has looked for connections cannot miss it).
func (s *Store) Run(ctx context.Context, apply func(auth.Revocation)) error {
	w, err := s.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch revocations in %s: %w", s.cfg.Bucket, err)
	}
	defer func() { _ = w.Stop() }()
	prune := time.NewTicker(time.Minute)
	defer prune.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-prune.C:
			s.prune()
		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("watch revocations in %s: the watch ended", s.cfg.Bucket)
			}
			if e == nil {
				s.loadOnce.Do(func() { close(s.loaded) })
				continue
			}
			if e.Operation() != jetstream.KeyValuePut {
				s.mu.Lock()
				delete(s.known, e.Key())
				s.mu.Unlock()
				continue
			}
			r, ok := s.decode(e)
			if !ok || !s.live(r) {
				continue
			}
			s.mu.Lock()
			s.known[e.Key()] = r
			s.mu.Unlock()
			s.closed.Inc()
			if apply != nil {
				apply(r)
			}
		}
	}
}

func (s *Store) prune() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, r := range s.known {
		if !s.live(r) {
			delete(s.known, k)
		}
	}
}

// Loaded waits until Run has read the whole bucket once, or ctx ends.
func (s *Store) Loaded(ctx context.Context) error {
	select {
	case <-s.loaded:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("revocations in %s not loaded: %w", s.cfg.Bucket, ctx.Err())
	}
}

func (s *Store) current() bool {
	select {
	case <-s.loaded:
		return s.nc.IsConnected()
	default:
		return false
	}
}

// Revoked reports whether a stored revocation names the token id speaks for, on device. It
// answers from the copy; when the copy may be stale (NATS unreachable) it counts the check
// in parley_revocation_stale_checks_total and still answers from the copy.
func (s *Store) Revoked(id auth.Identity, device chat.DeviceID) bool {
	s.checks.Inc()
	if !s.current() {
		s.stale.Inc()
	}
	candidates := []auth.Revocation{{User: id.User}, {User: id.User, Device: device}}
	if id.TokenID != "" {
		candidates = append(candidates, auth.Revocation{TokenID: id.TokenID})
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, c := range candidates {
		if r, ok := s.known[key(c)]; ok && s.live(r) && r.Matches(id, device) {
			return true
		}
	}
	return false
}
