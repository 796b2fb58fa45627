// Package admin serves Parley's operator endpoints on their own port: /healthz (the process is
// alive), /readyz (every dependency answers), /metrics (Prometheus) and /debug/pprof, open to
// whoever reaches the port, and the admin API (/admin/v1/..., routes mounted with HandleAPI by
// the parts that own them), which needs the admin credential: a bearer token compared in
// constant time. Without a configured credential the admin API is refused.
// It is kept off the public listener so that probes, scrapes and profiles are never exposed
// to clients and never compete with them for connection limits.
package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/parleyhq/parley/protocol"
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
	// Token is the admin credential: requests to the admin API must carry
	// "Authorization: Bearer <Token>". Empty: the admin API is disabled (403). At least
	// MinTokenLen bytes.
	Token []byte
}

// MinTokenLen is the shortest admin credential accepted, in bytes.
const MinTokenLen = 32

// Validate reports the first invalid setting.
func (c Config) Validate() error {
	if len(c.Token) > 0 && len(c.Token) < MinTokenLen {
		return fmt.Errorf("admin token is %d bytes, at least %d required", len(c.Token), MinTokenLen)
	}
	return nil
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
	mux      *http.ServeMux
	token    [sha256.Size]byte // SHA-256 of Config.Token, so the comparison's time is independent of its length

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
	if len(cfg.Token) > 0 {
		s.token = sha256.Sum256(cfg.Token)
	}
	mux := http.NewServeMux()
	s.mux = mux
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

// APIPrefix is the path prefix of the admin API.
const APIPrefix = "/admin/v1/"

// HandleAPI mounts an admin API route (pattern as http.ServeMux's, its path under APIPrefix)
// behind the admin credential. It may be called while the server runs.
func (s *Server) HandleAPI(pattern string, h http.Handler) {
	if _, path, _ := strings.Cut(pattern, " "); !strings.HasPrefix(path, APIPrefix) {
		panic("admin: API route " + pattern + " outside " + APIPrefix)
	}
	s.mux.Handle(pattern, s.authorize(h))
}

// authorize lets through requests that carry the admin credential: 403 forbidden when none is
// configured, 401 unauthorized when the request has none or another.
func (s *Server) authorize(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(s.cfg.Token) == 0 {
			writeError(w, http.StatusForbidden, protocol.CodeForbidden,
				"the admin API is disabled: start parleyd with an admin token (--admin-token-file or PARLEY_ADMIN_TOKEN)")
			return
		}
		scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="parley-admin"`)
			writeError(w, http.StatusUnauthorized, protocol.CodeUnauthorized, "send Authorization: Bearer <admin token>")
			return
		}
		got := sha256.Sum256([]byte(strings.TrimSpace(token)))
		if subtle.ConstantTimeCompare(got[:], s.token[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="parley-admin", error="invalid_token"`)
			s.logger.Warn("admin API: wrong credential", "remote", r.RemoteAddr, "path", r.URL.Path)
			writeError(w, http.StatusUnauthorized, protocol.CodeUnauthorized, "wrong admin token")
			return
		}
		h.ServeHTTP(w, r)
	})
}

func writeError(w http.ResponseWriter, status int, code protocol.Code, msg string) {
	writeJSON(w, status, map[string]any{"code": code, "message": msg, "retryable": code.Retryable()})
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
