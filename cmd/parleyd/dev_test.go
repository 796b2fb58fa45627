package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/teststack"
	"github.com/parleyhq/parley/protocol"
)

// demoSecret is in a file next to the demo directory: no request to /demo/ may return it.
const demoSecret = "not-for-the-browser-3f9c"

// demoDir writes a built demo (index.html, a script, a style sheet, a subdirectory without an
// index, a dot file, symlinks that lead out) into a fresh directory whose parent holds
// secret.txt, and returns the demo directory.
func demoDir(t *testing.T) string {
	t.Helper()
	parent := t.TempDir()
	dir := filepath.Join(parent, "dist")
	for name, body := range map[string]string{
		"index.html":          `<!doctype html><html><head><title>Parley demo</title></head><body><div id="app">demo</div></body></html>`,
		"assets/app.js":       `document.getElementById("app").textContent = "rendered by script";`,
		"assets/app.css":      `body { margin: 0 }`,
		"assets/data.json":    `{"ok":true}`,
		".env":                "SECRET=" + demoSecret,
		"../secret.txt":       demoSecret,
		"empty/placeholder.x": "x",
	} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{"up": "..", "secret-link.txt": "../secret.txt", "abs-link.txt": filepath.Join(parent, "secret.txt")} {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// devVars is the environment of a test parleyd of the shared stack with its own streams.
func devVars(id string, more map[string]string) map[string]string {
	vars := map[string]string{
		"PARLEY_AUTH_HS256_SECRET": testSecret, "PARLEY_EDGE_DRAIN_WINDOW": "200ms",
		"PARLEY_DELIVERY_STREAM": "T_" + id, "PARLEY_DELIVERY_SUBJECT_PREFIX": "test." + id + ".",
		"PARLEY_CASSANDRA_KEYSPACE": teststack.Keyspace, "PARLEY_CASSANDRA_CONSISTENCY": "ONE",
	}
	for k, v := range more {
		vars[k] = v
	}
	return vars
}

// startParleydWithLogs is startParleyd that keeps the process's logs.
func startParleydWithLogs(t *testing.T, vars map[string]string) (public string, logs *lockedBuffer) {
	t.Helper()
	admin, public := teststack.FreeAddr(t), teststack.FreeAddr(t)
	all := map[string]string{"PARLEY_ADMIN_ADDR": admin, "PARLEY_LISTEN_ADDR": public}
	for k, v := range vars {
		all[k] = v
	}
	logs = &lockedBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"run"}, stackEnv(all), io.Discard, logs) }()
	t.Cleanup(func() {
		cancel()
		<-done
		teststack.DeleteStreams(t, vars["PARLEY_DELIVERY_STREAM"])
	})
	if !teststack.Eventually(t, 60*time.Second, func() bool { return teststack.Ready(admin) }) {
		t.Fatalf("parleyd never ready; logs:\n%s", logs.String())
	}
	return public, logs
}

// rawRequest sends target as it is written (no client cleans or escapes it) and returns the
// status, the headers and the body.
func rawRequest(t *testing.T, addr, method, target string, hdr map[string]string, body string) (int, http.Header, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", method, target, addr)
	for k, v := range hdr {
		fmt.Fprintf(&b, "%s: %s\r\n", k, v)
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(body), body)
	if _, err := io.WriteString(c, b.String()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(data)
}

// handshake opens the WebSocket as a browser does (Origin, the token in the subprotocol
// header) and returns the status; on 101 it reads hello and closes.
func handshake(t *testing.T, public, origin, token string) int {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol, protocol.TokenSubprotocolPrefix + token}}
	ws, resp, err := d.Dial("ws://"+public+protocol.Path, http.Header{"Origin": {origin}})
	if resp == nil {
		t.Fatalf("handshake from %s: %v", origin, err)
	}
	if ws != nil {
		defer ws.Close()
		var hello protocol.Frame
		if err := ws.ReadJSON(&hello); err != nil || hello.Type != protocol.TypeHello {
			t.Errorf("handshake from %s: hello %+v %v", origin, hello, err)
		}
	}
	return resp.StatusCode
}

// devToken posts body to /dev/token with the headers and returns the status and the answer.
func devToken(t *testing.T, public string, hdr map[string]string, body string) (int, http.Header, map[string]any) {
	t.Helper()
	status, h, data := rawRequest(t, public, "POST", "/dev/token", hdr, body)
	var out map[string]any
	if err := json.Unmarshal([]byte(data), &out); err != nil {
		t.Errorf("POST /dev/token %s: %d, not JSON: %q", body, status, data)
	}
	return status, h, out
}

var jsonBody = map[string]string{"Content-Type": "application/json"}

// Development mode (--dev, make run) on a real parleyd: the demo's files at /demo/ with their
// content types and nothing outside the directory, POST /dev/token minting a token that
// opens the WebSocket from the listener's own origin as a browser would, strict JSON and
// clear errors, another loopback origin in --allowed-origins working through CORS, any other
// origin still refused, and a start-up line that says what the mode exposes.
func TestDevMode(t *testing.T) {
	id := teststack.ID(t)
	dir := demoDir(t)
	const viteOrigin = "http://localhost:5173" // a demo served by a dev server on another port
	public, logs := startParleydWithLogs(t, devVars(id, map[string]string{
		"PARLEY_DEV": "true", "PARLEY_DEV_DEMO_DIR": dir, "PARLEY_DEV_TOKEN_TTL": "10m",
		"PARLEY_ALLOWED_ORIGINS": viteOrigin,
	}))
	_, port, _ := net.SplitHostPort(public)

	t.Run("demo files", func(t *testing.T) {
		for _, c := range []struct {
			target, ctype, body string
		}{
			{"/demo/", "text/html; charset=utf-8", "<title>Parley demo</title>"},
			{"/demo/index.html", "text/html; charset=utf-8", "<title>Parley demo</title>"},
			{"/demo/assets/app.js", "text/javascript; charset=utf-8", "rendered by script"},
			{"/demo/assets/app.css", "text/css; charset=utf-8", "margin: 0"},
			{"/demo/assets/data.json", "application/json", `{"ok":true}`},
		} {
			status, h, body := rawRequest(t, public, "GET", c.target, nil, "")
			if status != 200 || h.Get("Content-Type") != c.ctype || !strings.Contains(body, c.body) {
				t.Errorf("GET %s: %d %q %q; want 200 %q with %q", c.target, status, h.Get("Content-Type"), body, c.ctype, c.body)
			}
			if h.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("GET %s: X-Content-Type-Options %q; want nosniff", c.target, h.Get("X-Content-Type-Options"))
			}
		}
		if status, h, _ := rawRequest(t, public, "GET", "/demo", nil, ""); status/100 != 3 || h.Get("Location") != "/demo/" {
			t.Errorf("GET /demo: %d Location %q; want a redirect to /demo/", status, h.Get("Location"))
		}
		if status, _, body := rawRequest(t, public, "HEAD", "/demo/", nil, ""); status != 200 || body != "" {
			t.Errorf("HEAD /demo/: %d %q; want 200 without a body", status, body)
		}
		// No directory listing, no file that is not there, no method but GET and HEAD.
		for _, target := range []string{"/demo/assets/", "/demo/assets", "/demo/empty/", "/demo/missing.js"} {
			if status, _, body := rawRequest(t, public, "GET", target, nil, ""); status != 404 || !strings.Contains(body, `"code":"not_found"`) {
				t.Errorf("GET %s: %d %q; want 404 not_found", target, status, body)
			}
		}
		if status, _, body := rawRequest(t, public, "POST", "/demo/", jsonBody, "{}"); status != 405 || !strings.Contains(body, `"code":"bad_request"`) {
			t.Errorf("POST /demo/: %d %q; want 405", status, body)
		}
	})

	t.Run("nothing outside the directory", func(t *testing.T) {
		for _, target := range []string{
			"/demo/../secret.txt", "/demo/%2e%2e/secret.txt", "/demo/..%2fsecret.txt", "/demo/%2e%2e%2fsecret.txt",
			"/demo/..%5csecret.txt", "/demo/assets/..%2f..%2fsecret.txt", "/demo/up/secret.txt", "/demo/up/dist/index.html",
			"/demo/secret-link.txt", "/demo/abs-link.txt", "/demo/.env", "/demo/%2eenv", "/demo/%2fetc%2fpasswd", "/demo//etc/passwd",
			"/demo/assets/%00app.js",
		} {
			status, _, body := rawRequest(t, public, "GET", target, nil, "")
			if status < 400 || status >= 500 || strings.Contains(body, demoSecret) || strings.Contains(body, "root:") {
				t.Errorf("GET %s: %d %q; want a 4xx refusal", target, status, body)
			}
		}
	})

	a, _ := auth.New(auth.Config{HS256Secret: []byte(testSecret)}, nil)
	t.Run("token", func(t *testing.T) {
		user := id + "_alice"
		before := time.Now()
		status, h, out := devToken(t, public, jsonBody, `{"user":"`+user+`","device":"web"}`)
		tok, _ := out["token"].(string)
		exp, err := time.Parse(time.RFC3339, fmt.Sprint(out["expires_at"]))
		if status != 200 || tok == "" || err != nil || h.Get("Cache-Control") != "no-store" {
			t.Fatalf("POST /dev/token: %d %v %v (Cache-Control %q); want 200 with a token and expires_at", status, out, err, h.Get("Cache-Control"))
		}
		if ttl := exp.Sub(before); ttl < 10*time.Minute-2*time.Second || ttl > 10*time.Minute+2*time.Second {
			t.Errorf("expires_at %v is %v away; want --dev-token-ttl 10m", exp, ttl)
		}
		idn, err := a.Verify(tok)
		if err != nil || idn.User != chat.UserID(user) || idn.Device != "web" || !idn.ExpiresAt.Equal(exp) {
			t.Errorf("the token: %+v %v; want user %s, device web, exp %v", idn, err, user, exp)
		}
		// The token works: a browser on the listener's own origins opens the WebSocket with
		// it, and the REST API takes it.
		for _, o := range []string{"http://127.0.0.1:" + port, "http://localhost:" + port} {
			if got := handshake(t, public, o, tok); got != http.StatusSwitchingProtocols {
				t.Errorf("handshake from the listener's own origin %s: %d; want 101", o, got)
			}
		}
		req, _ := http.NewRequest("GET", "http://"+public+"/v1/conversations", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("GET /v1/conversations with the dev token: %d; want 200", resp.StatusCode)
		}
		// Without a device the token names none (the client names it, as with parleyd token).
		if status, _, out := devToken(t, public, jsonBody, `{"user":"`+user+`"}`); status != 200 {
			t.Errorf("POST /dev/token without a device: %d %v", status, out)
		} else if idn, err := a.Verify(fmt.Sprint(out["token"])); err != nil || idn.Device != "" {
			t.Errorf("token without a device: %+v %v", idn, err)
		}
	})

	t.Run("token errors", func(t *testing.T) {
		for _, c := range []struct {
			name   string
			hdr    map[string]string
			body   string
			status int
			code   protocol.Code
			msg    string
		}{
			{"no content type", nil, `{"user":"alice"}`, 415, protocol.CodeBadRequest, "application/json"},
			{"no user", jsonBody, `{}`, 400, protocol.CodeBadRequest, "user"},
			{"empty user", jsonBody, `{"user":""}`, 400, protocol.CodeBadRequest, "user id is empty"},
			{"bad user", jsonBody, `{"user":"a b"}`, 400, protocol.CodeBadRequest, "user"},
			{"bad device", jsonBody, `{"user":"alice","device":"a.b"}`, 400, protocol.CodeBadRequest, "device"},
			{"unknown key", jsonBody, `{"user":"alice","ttl":"1y"}`, 400, protocol.CodeBadRequest, "ttl"},
			{"duplicate key", jsonBody, `{"user":"alice","user":"root"}`, 400, protocol.CodeBadRequest, "duplicate"},
			{"case-variant key", jsonBody, `{"USER":"alice"}`, 400, protocol.CodeBadRequest, "USER"},
			{"malformed", jsonBody, `{"user":`, 400, protocol.CodeBadRequest, "malformed"},
			{"too large", jsonBody, `{"user":"` + strings.Repeat("a", 5000) + `"}`, 413, protocol.CodeBodyTooLarge, "body"},
			{"another origin", map[string]string{"Content-Type": "application/json", "Origin": "https://evil.example.com"},
				`{"user":"alice"}`, 403, protocol.CodeForbidden, "loopback"},
			{"another host (DNS rebinding)", map[string]string{"Content-Type": "application/json", "Host": "evil.example.com:" + port},
				`{"user":"alice"}`, 403, protocol.CodeForbidden, "loopback"},
		} {
			hdr := c.hdr
			target := "/dev/token"
			if h, ok := hdr["Host"]; ok { // replace the Host rawRequest writes
				hdr = map[string]string{"Content-Type": "application/json"}
				target = "http://" + h + "/dev/token" // absolute form: its host is the request's
			}
			status, _, data := rawRequest(t, public, "POST", target, hdr, c.body)
			var eb struct {
				Code      protocol.Code `json:"code"`
				Message   string        `json:"message"`
				Retryable *bool         `json:"retryable"`
			}
			_ = json.Unmarshal([]byte(data), &eb)
			if status != c.status || eb.Code != c.code || !strings.Contains(eb.Message, c.msg) || eb.Retryable == nil {
				t.Errorf("%s: %d %s; want %d %s mentioning %q", c.name, status, data, c.status, c.code, c.msg)
			}
		}
		if status, h, data := rawRequest(t, public, "GET", "/dev/token", nil, ""); status != 405 || h.Get("Allow") != "POST" {
			t.Errorf("GET /dev/token: %d Allow %q %s; want 405 Allow POST", status, h.Get("Allow"), data)
		}
	})

	t.Run("origins", func(t *testing.T) {
		tok, _ := a.Mint(chat.UserID(id+"_bob"), "web", time.Hour)
		// The listener's own origins are added; other origins still come only from
		// --allowed-origins.
		for o, want := range map[string]int{
			"http://127.0.0.1:" + port:        http.StatusSwitchingProtocols,
			"http://localhost:" + port:        http.StatusSwitchingProtocols,
			viteOrigin:                        http.StatusSwitchingProtocols,
			"http://127.0.0.1:1":              http.StatusForbidden,
			"http://localhost:1":              http.StatusForbidden,
			"https://127.0.0.1:" + port:       http.StatusForbidden,
			"https://app.example.com":         http.StatusForbidden,
			"http://evil.example.com:" + port: http.StatusForbidden,
		} {
			if got := handshake(t, public, o, tok); got != want {
				t.Errorf("handshake from %s: %d; want %d", o, got, want)
			}
		}
		// The demo on the dev server's origin gets its token through CORS: preflight, then POST.
		status, h, _ := rawRequest(t, public, "OPTIONS", "/dev/token", map[string]string{"Origin": viteOrigin,
			"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}, "")
		if status != 204 || h.Get("Access-Control-Allow-Origin") != viteOrigin {
			t.Errorf("preflight of /dev/token from %s: %d %v; want 204 granted", viteOrigin, status, h)
		}
		status, h, out := devToken(t, public, map[string]string{"Content-Type": "application/json", "Origin": viteOrigin}, `{"user":"`+id+`_carol"}`)
		if status != 200 || h.Get("Access-Control-Allow-Origin") != viteOrigin || out["token"] == nil {
			t.Errorf("POST /dev/token from %s: %d %v %v; want 200 with Access-Control-Allow-Origin", viteOrigin, status, h, out)
		}
	})

	t.Run("start-up line", func(t *testing.T) {
		var found bool
		for _, line := range strings.Split(logs.String(), "\n") {
			if strings.Contains(line, `"level":"WARN"`) && strings.Contains(line, "DEVELOPMENT MODE") &&
				strings.Contains(line, "http://"+public+"/demo/") && strings.Contains(line, "POST http://"+public+"/dev/token") &&
				strings.Contains(line, "http://localhost:"+port) {
				found = true
			}
		}
		if !found {
			t.Errorf("no WARN line says DEVELOPMENT MODE with the demo URL, the token endpoint and the origins added; logs:\n%s", logs.String())
		}
	})
}

// Without --dev there is no token endpoint, no /demo/, and the listener's own origin is a
// browser origin like any other: refused unless listed in --allowed-origins.
func TestWithoutDevMode(t *testing.T) {
	id := teststack.ID(t)
	public, logs := startParleydWithLogs(t, devVars(id, nil))
	_, port, _ := net.SplitHostPort(public)
	if status, _, out := devToken(t, public, jsonBody, `{"user":"alice"}`); status != 404 || out["code"] != "not_found" || out["token"] != nil {
		t.Errorf("POST /dev/token without --dev: %d %v; want 404 not_found", status, out)
	}
	if status, _, body := rawRequest(t, public, "GET", "/demo/", nil, ""); status != 404 || strings.Contains(body, "Parley demo") {
		t.Errorf("GET /demo/ without --dev: %d %q; want 404", status, body)
	}
	a, _ := auth.New(auth.Config{HS256Secret: []byte(testSecret)}, nil)
	tok, _ := a.Mint(chat.UserID(id+"_alice"), "web", time.Hour)
	for _, o := range []string{"http://127.0.0.1:" + port, "http://localhost:" + port} {
		if got := handshake(t, public, o, tok); got != http.StatusForbidden {
			t.Errorf("handshake from %s without --dev: %d; want 403", o, got)
		}
	}
	if strings.Contains(logs.String(), "DEVELOPMENT MODE") {
		t.Errorf("the logs speak of development mode without --dev:\n%s", logs.String())
	}
}

// The backstop behind the check of --listen-addr: the address the listener got (localhost
// resolved by the system) must be a loopback one, or parleyd stops with a usage error.
func TestDevListenerMustBeLoopback(t *testing.T) {
	for _, c := range []struct {
		addr net.Addr
		ok   bool
	}{
		{&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}, true},
		{&net.TCPAddr{IP: net.IPv6loopback, Port: 8080}, true},
		{&net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 8080}, false},
		{&net.TCPAddr{IP: net.IPv6unspecified, Port: 8080}, false},
		{&net.UnixAddr{Name: "/tmp/parley.sock", Net: "unix"}, false},
	} {
		err := loopbackListener(c.addr)
		if (err == nil) != c.ok || (err != nil && !strings.Contains(err.Error(), "--dev")) {
			t.Errorf("loopbackListener(%v) = %v; want ok %v (an error naming --dev)", c.addr, err, c.ok)
		}
	}
}
