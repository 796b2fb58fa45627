// Package breaker is Parley's circuit breaker around one dependency (Cassandra, Redis): a thin
// layer over sony/gobreaker with Parley's settings, its metrics and ErrUnavailable, the error
// every caller maps to a retryable answer. It imports no driver, so a package that only needs
// the breaker links none.
package breaker

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
)

// ErrUnavailable is returned (wrapped) by Breaker.Do while the breaker is open: the
// dependency failed too often recently, so the call fails fast instead of waiting for a
// timeout. Callers answer with a retryable error (HTTP 503 with Retry-After, "unavailable").
var ErrUnavailable = errors.New("dependency unavailable")

// Config configures a circuit breaker. Zero values take the defaults.
type Config struct {
	// Window is the rolling window over which failures are counted. Default 10s.
	Window time.Duration
	// MinRequests is how many calls the window needs before the breaker may open. Default 10.
	MinRequests int
	// FailureRatio opens the breaker when this share of the window's calls failed. Default 0.5.
	FailureRatio float64
	// OpenFor is how long the breaker stays open before letting a trial call through. Default 5s.
	OpenFor time.Duration
}

func (c Config) withDefaults() Config {
	if c.Window == 0 {
		c.Window = 10 * time.Second
	}
	if c.MinRequests == 0 {
		c.MinRequests = 10
	}
	if c.FailureRatio == 0 {
		c.FailureRatio = 0.5
	}
	if c.OpenFor == 0 {
		c.OpenFor = 5 * time.Second
	}
	return c
}

// Validate reports the first invalid setting.
func (c Config) Validate() error {
	c = c.withDefaults()
	if c.Window < time.Second || c.OpenFor < 100*time.Millisecond || c.FailureRatio <= 0 || c.FailureRatio > 1 || c.MinRequests < 1 {
		return fmt.Errorf("breaker: window at least 1s, open-for at least 100ms, failure ratio in (0, 1], min requests at least 1")
	}
	return nil
}

// Breaker is a circuit breaker around one dependency (sony/gobreaker, a maintained
// implementation of the state machine, rather than a hand-written one). Its state is exported
// as parley_breaker_state{name} (0 closed, 1 half-open, 2 open).
type Breaker struct {
	name     string
	cfg      Config
	cb       *gobreaker.CircuitBreaker[struct{}]
	rejected prometheus.Counter
}

// New returns a breaker. isFailure says which errors count against the dependency
// (a timeout does; "not found" is an answer, not a failure).
func New(name string, cfg Config, isFailure func(error) bool, reg prometheus.Registerer) (*Breaker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	state := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "parley_breaker_state", Help: "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
		ConstLabels: prometheus.Labels{"name": name},
	})
	rejected := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "parley_breaker_rejected_total", Help: "Calls failed fast because the breaker was open.",
		ConstLabels: prometheus.Labels{"name": name},
	})
	for _, c := range []prometheus.Collector{state, rejected} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	b := &Breaker{name: name, cfg: cfg, rejected: rejected}
	b.cb = gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        name,
		MaxRequests: 1,
		Interval:    cfg.Window,
		Timeout:     cfg.OpenFor,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			return c.Requests >= uint32(cfg.MinRequests) && float64(c.TotalFailures) >= cfg.FailureRatio*float64(c.Requests)
		},
		IsSuccessful:  func(err error) bool { return err == nil || !isFailure(err) },
		OnStateChange: func(_ string, _, to gobreaker.State) { state.Set(float64(to)) },
	})
	return b, nil
}

// RetryAfter is how long a caller refused by an open breaker should wait.
func (b *Breaker) RetryAfter() time.Duration { return b.cfg.OpenFor }

// Do runs fn unless the breaker is open.
func (b *Breaker) Do(fn func() error) error {
	if b == nil {
		return fn()
	}
	_, err := b.cb.Execute(func() (struct{}, error) { return struct{}{}, fn() })
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		b.rejected.Inc()
		return fmt.Errorf("%w: %s (circuit open)", ErrUnavailable, b.name)
	}
	return err
}
