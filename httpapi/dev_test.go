package httpapi_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/httpapi"
	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/protocol"
)

// devHandler is the public listener's handler with only the development routes, minting with
// a real HS256 authority.
func devHandler(t *testing.T, cfg httpapi.DevConfig) (http.Handler, *auth.Authority) {
	t.Helper()
	a, err := auth.New(auth.Config{HS256Secret: []byte("0123456789abcdef0123456789abcdef")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Tokens = a
	dev, err := httpapi.NewDev(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	dev.Register(mux)
	return httpapi.Public(mux, httpapi.CORS{AllowedOrigins: []string{"*"}}), a
}

// The token endpoint answers only this machine: a TCP peer that is a loopback address, a Host
// that names loopback, and no Origin or a loopback one (even with --allowed-origins=*). A
// test cannot open a connection to a loopback listener from another address, so the
// requests here carry made-up peers.
func TestDevTokenOnlyForLoopback(t *testing.T) {
	h, a := devHandler(t, httpapi.DevConfig{})
	for _, c := range []struct {
		name, remote, host, origin string
		ok                         bool
	}{
		{"IPv4 loopback", "127.0.0.1:40000", "127.0.0.1:8080", "", true},
		{"another loopback address", "127.0.0.2:40000", "127.0.0.1:8080", "", true},
		{"IPv6 loopback", "[::1]:40000", "[::1]:8080", "", true},
		{"IPv4-mapped loopback", "[::ffff:127.0.0.1]:40000", "localhost:8080", "", true},
		{"localhost without a port", "127.0.0.1:40000", "localhost", "", true},
		{"localhost in capitals", "127.0.0.1:40000", "LOCALHOST:8080", "", true},
		{"same-origin page", "127.0.0.1:40000", "127.0.0.1:8080", "http://127.0.0.1:8080", true},
		{"page of a dev server", "127.0.0.1:40000", "localhost:8080", "http://localhost:5173", true},
		{"page on IPv6 loopback", "[::1]:40000", "[::1]:8080", "http://[::1]:3000", true},

		{"private network peer", "10.1.2.3:40000", "127.0.0.1:8080", "", false},
		{"public peer", "192.0.2.7:40000", "127.0.0.1:8080", "", false},
		{"IPv6 peer", "[2001:db8::7]:40000", "[::1]:8080", "", false},
		{"IPv4-mapped public peer", "[::ffff:192.0.2.7]:40000", "127.0.0.1:8080", "", false},
		{"unspecified peer", "0.0.0.0:40000", "127.0.0.1:8080", "", false},
		{"peer without a port", "127.0.0.1", "127.0.0.1:8080", "", false},
		{"no peer", "", "127.0.0.1:8080", "", false},
		{"another host (DNS rebinding)", "127.0.0.1:40000", "evil.example.com:8080", "", false},
		{"a host that starts like loopback", "127.0.0.1:40000", "127.0.0.1.evil.example.com:8080", "", false},
		{"a host under localhost", "127.0.0.1:40000", "localhost.evil.example.com", "", false},
		{"a zoned host", "127.0.0.1:40000", "[fe80::1%25lo]:8080", "", false},
		{"the machine's public address", "127.0.0.1:40000", "192.0.2.1:8080", "", false},
		{"another site's page", "127.0.0.1:40000", "127.0.0.1:8080", "https://evil.example.com", false},
		{"a rebinding page", "127.0.0.1:40000", "127.0.0.1:8080", "http://evil.example.com:8080", false},
		{"an opaque origin", "127.0.0.1:40000", "127.0.0.1:8080", "null", false},
		{"a file page", "127.0.0.1:40000", "127.0.0.1:8080", "file://", false},
	} {
		req := httptest.NewRequest("POST", "/dev/token", strings.NewReader(`{"user":"alice","device":"web"}`))
		req.Header.Set("Content-Type", "application/json")
		req.RemoteAddr, req.Host = c.remote, c.host
		if c.origin != "" {
			req.Header.Set("Origin", c.origin)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if c.ok {
			var out struct {
				Token     string    `json:"token"`
				ExpiresAt time.Time `json:"expires_at"`
			}
			err := json.Unmarshal(rec.Body.Bytes(), &out)
			id, verr := a.Verify(out.Token)
			if rec.Code != 200 || err != nil || verr != nil || id.User != "alice" || id.Device != "web" {
				t.Errorf("%s: %d %s (%v, %v); want 200 with alice's token", c.name, rec.Code, rec.Body, err, verr)
			}
			// DevConfig.TTL zero: the default, an hour.
			if d := time.Until(out.ExpiresAt); d < httpapi.DefaultDevTokenTTL-time.Minute || d > httpapi.DefaultDevTokenTTL {
				t.Errorf("%s: expires_at %v is %v away; want %v", c.name, out.ExpiresAt, d, httpapi.DefaultDevTokenTTL)
			}
			continue
		}
		var eb errBody
		if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || rec.Code != 403 || eb.Code != protocol.CodeForbidden ||
			!strings.Contains(eb.Message, "loopback") || strings.Contains(rec.Body.String(), `"token"`) {
			t.Errorf("%s: %d %s; want 403 forbidden naming loopback", c.name, rec.Code, rec.Body)
		}
	}
}

// Without DemoDir there is no /demo/; with one that disappears after start (a rebuild in
// progress), /demo/ answers 404 saying so, and serves again once it is back.
func TestDevDemoDirectory(t *testing.T) {
	get := func(h http.Handler, path string) (int, string) {
		req := httptest.NewRequest("GET", path, nil)
		req.RemoteAddr = "127.0.0.1:40000"
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code, rec.Body.String()
	}
	h, _ := devHandler(t, httpapi.DevConfig{})
	if status, body := get(h, "/demo/"); status != 404 || !strings.Contains(body, "no such route") {
		t.Errorf("GET /demo/ without a demo directory: %d %s; want 404 no such route", status, body)
	}

	dir := filepath.Join(t.TempDir(), "dist")
	write := func() {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte("<title>demo</title>"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write()
	h, _ = devHandler(t, httpapi.DevConfig{DemoDir: dir})
	if status, body := get(h, "/demo/"); status != 200 || body != "<title>demo</title>" {
		t.Errorf("GET /demo/: %d %q; want the index", status, body)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if status, body := get(h, "/demo/"); status != 404 || !strings.Contains(body, "make demo-build") {
		t.Errorf("GET /demo/ with the directory gone: %d %s; want 404 saying to build it", status, body)
	}
	write()
	if status, _ := get(h, "/demo/"); status != 200 {
		t.Errorf("GET /demo/ after the rebuild: %d; want 200", status)
	}
}

func TestNewDevNeedsAMinter(t *testing.T) {
	if _, err := httpapi.NewDev(httpapi.DevConfig{}, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil {
		t.Error("NewDev without Tokens: no error")
	}
}

func TestOwnOrigins(t *testing.T) {
	for _, c := range []struct {
		host string
		want []string
	}{
		{"127.0.0.1", []string{"http://127.0.0.1:8080", "http://localhost:8080"}},
		{"::1", []string{"http://[::1]:8080", "http://localhost:8080"}},
		{"localhost", []string{"http://localhost:8080", "http://127.0.0.1:8080", "http://[::1]:8080"}},
	} {
		if got := httpapi.OwnOrigins(c.host, "8080"); !slices.Equal(got, c.want) {
			t.Errorf("OwnOrigins(%q, 8080) = %q; want %q", c.host, got, c.want)
		}
	}
}
