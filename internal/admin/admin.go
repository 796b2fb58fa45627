// Package admin serves Parley's operator endpoints on their own port: /healthz (the process is
// alive), /readyz (every dependency answers), /metrics (Prometheus) and /debug/pprof.
// It is kept off the public listener so that probes, scrapes and profiles are never exposed
// to clients and never compete with them for connection limits.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check is one readiness check: Name identifies the dependency in /readyz, Func reports
// whether it answers. Func must respect its context's deadline.
type Check struct {
	Name string
	Func func(ctx context.Context) error
}

// Config configures the admin server.
type Config struct {
	// Addr to listen on. Default "127.0.0.1:8081".
	Addr string
	// CheckTimeout bounds each readiness check. Default 2s.
	CheckTimeout time.Duration
}

// Defaults for Config.
const (
	DefaultAddr         = "127.0.0.1:8081"
	DefaultCheckTimeout = 2 * time.Second
)

// Server is the admin HTTP server.
type Server struct {
	cfg      Config
	logger   *slog.Logger
	gatherer prometheus.Gatherer
	srv      *http.Server

	mu       sync.Mutex
	checks   []Check
	draining bool
}

// New returns a Server exposing the metrics of gatherer. Readiness checks are added with
// AddCheck once the dependencies are open; until then /readyz answers 503 "starting".
func New(cfg Config, gatherer prometheus.Gatherer, logger *slog.Logger) *Server {
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.CheckTimeout == 0 {
		cfg.CheckTimeout = DefaultCheckTimeout
	}
	s := &Server{cfg: cfg, logger: logger, gatherer: gatherer}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelError),
	}))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	s.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	return s
}

// AddCheck adds readiness checks.
func (s *Server) AddCheck(c ...Check) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks = append(s.checks, c...)
}

// SetDraining makes /readyz answer 503 "draining", so load balancers stop sending new
// clients while the process shuts down.
func (s *Server) SetDraining() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.draining = true
}

// Listen binds the configured address. Separate from Serve so that a port in use is reported
// at start-up, before anything else runs.
func (s *Server) Listen() (net.Listener, error) {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("admin listener: %w", err)
	}
	return ln, nil
}

// Serve serves on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.logger.Info("admin server listening", "addr", ln.Addr().String())
	if err := s.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Shutdown stops the server, waiting for in-flight requests until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	return s.srv.Shutdown(ctx)
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// CheckResult is one dependency's entry in the /readyz body.
type CheckResult struct {
	OK        bool    `json:"ok"`
	Error     string  `json:"error,omitempty"`
	LatencyMS float64 `json:"latency_ms"`
}

// Readiness is the /readyz body.
type Readiness struct {
	// Status is "ready", "not ready", "starting" or "draining".
	Status string                 `json:"status"`
	Checks map[string]CheckResult `json:"checks"`
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	checks, draining := s.checks, s.draining
	s.mu.Unlock()

	body := Readiness{Status: "ready", Checks: make(map[string]CheckResult, len(checks))}
	results := make([]CheckResult, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(r.Context(), s.cfg.CheckTimeout)
			defer cancel()
			start := time.Now()
			err := c.Func(ctx)
			results[i] = CheckResult{OK: err == nil, LatencyMS: float64(time.Since(start).Microseconds()) / 1000}
			if err != nil {
				results[i].Error = err.Error()
			}
		}()
	}
	wg.Wait()
	for i, c := range checks {
		body.Checks[c.Name] = results[i]
		if !results[i].OK {
			body.Status = "not ready"
		}
	}
	switch {
	case draining:
		body.Status = "draining"
	case len(checks) == 0:
		body.Status = "starting"
	}
	if body.Status != "ready" {
		w.Header().Set("Retry-After", "5")
		writeJSON(w, http.StatusServiceUnavailable, body)
		return
	}
	writeJSON(w, http.StatusOK, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
