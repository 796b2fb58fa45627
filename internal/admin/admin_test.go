package admin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

func newTestServer(t *testing.T) (*Server, *httptest.Server) {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector())
	s := New(Config{}, reg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ts := httptest.NewServer(s.srv.Handler)
	t.Cleanup(ts.Close)
	return s, ts
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func readiness(t *testing.T, url string) (int, Readiness) {
	t.Helper()
	code, body := get(t, url+"/readyz")
	var r Readiness
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("readyz body %q: %v", body, err)
	}
	return code, r
}

func TestReadyz(t *testing.T) {
	s, ts := newTestServer(t)

	if code, r := readiness(t, ts.URL); code != http.StatusServiceUnavailable || r.Status != "starting" {
		t.Errorf("before checks: %d %q; want 503 starting", code, r.Status)
	}

	var cassandraErr error
	s.AddCheck(
		Check{Name: "redis", Func: func(context.Context) error { return nil }},
		Check{Name: "cassandra", Func: func(context.Context) error { return cassandraErr }},
	)
	if code, r := readiness(t, ts.URL); code != http.StatusOK || r.Status != "ready" || !r.Checks["cassandra"].OK {
		t.Errorf("all up: %d %+v; want 200 ready", code, r)
	}

	cassandraErr = errors.New("connection refused")
	code, r := readiness(t, ts.URL)
	if code != http.StatusServiceUnavailable || r.Status != "not ready" {
		t.Errorf("cassandra down: %d %q; want 503 not ready", code, r.Status)
	}
	if c := r.Checks["cassandra"]; c.OK || c.Error != "connection refused" {
		t.Errorf("cassandra entry = %+v; want not ok with its error", c)
	}
	if !r.Checks["redis"].OK {
		t.Errorf("redis entry = %+v; want ok", r.Checks["redis"])
	}

	cassandraErr = nil
	s.SetDraining()
	if code, r := readiness(t, ts.URL); code != http.StatusServiceUnavailable || r.Status != "draining" {
		t.Errorf("draining: %d %q; want 503 draining", code, r.Status)
	}
}

func TestReadyzCheckTimeout(t *testing.T) {
	s, ts := newTestServer(t)
	s.cfg.CheckTimeout = 50_000_000 // 50ms
	s.AddCheck(Check{Name: "slow", Func: func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	}})
	code, r := readiness(t, ts.URL)
	if code != http.StatusServiceUnavailable || !strings.Contains(r.Checks["slow"].Error, "deadline") {
		t.Errorf("slow check: %d %+v; want 503 with a deadline error", code, r)
	}
}

func TestHealthzMetricsPprof(t *testing.T) {
	_, ts := newTestServer(t)
	if code, body := get(t, ts.URL+"/healthz"); code != 200 || !strings.Contains(body, `"ok"`) {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if code, body := get(t, ts.URL+"/metrics"); code != 200 || !strings.Contains(body, "go_goroutines") {
		t.Errorf("/metrics = %d, has go_goroutines: %v", code, strings.Contains(body, "go_goroutines"))
	}
	if code, _ := get(t, ts.URL+"/debug/pprof/"); code != 200 {
		t.Errorf("/debug/pprof/ = %d", code)
	}
}

// The admin API needs the configured bearer token: 403 naming the setting when none is
// configured, 401 without or with another token, the route's answer with it; the probes and
// /metrics need none.
func TestAdminAPICredential(t *testing.T) {
	const token = "0123456789abcdef0123456789abcdef-admin"
	for _, tt := range []struct {
		name       string
		configured string
		header     string
		want       int
		wantBody   string
	}{
		{"not configured", "", "Bearer " + token, http.StatusForbidden, "--admin-token-file"},
		{"no credential", token, "", http.StatusUnauthorized, `"unauthorized"`},
		{"not bearer", token, "Basic " + token, http.StatusUnauthorized, `"unauthorized"`},
		{"wrong token", token, "Bearer " + token + "x", http.StatusUnauthorized, "wrong admin token"},
		{"prefix of the token", token, "Bearer " + token[:32], http.StatusUnauthorized, "wrong admin token"},
		{"right token", token, "Bearer " + token, http.StatusTeapot, "served"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := New(Config{Token: []byte(tt.configured)}, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
			s.HandleAPI("GET /admin/v1/thing", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(http.StatusTeapot)
				_, _ = io.WriteString(w, "served")
			}))
			ts := httptest.NewServer(s.srv.Handler)
			defer ts.Close()
			req, _ := http.NewRequest("GET", ts.URL+"/admin/v1/thing", nil)
			if tt.header != "" {
				req.Header.Set("Authorization", tt.header)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want || !strings.Contains(string(body), tt.wantBody) {
				t.Errorf("status %d body %s; want %d with %q", resp.StatusCode, body, tt.want, tt.wantBody)
			}
			if status, _ := get(t, ts.URL+"/healthz"); status != http.StatusOK {
				t.Errorf("/healthz %d; want 200 without a credential", status)
			}
		})
	}
	if err := (Config{Token: []byte("short")}).Validate(); err == nil {
		t.Error("a 5-byte admin token is valid")
	}
}
