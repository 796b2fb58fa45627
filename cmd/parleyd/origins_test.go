package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/teststack"
	"github.com/parleyhq/parley/protocol"
)

// lockedBuffer collects a process's logs, written from many goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// --allowed-origins is one setting for both doors a browser uses: a real parleyd admits the
// listed origin at the WebSocket handshake and grants it CORS on the REST API (preflight and
// request), refuses another origin at both, and says at start which origins it allows.
func TestAllowedOriginsForWebSocketAndCORS(t *testing.T) {
	const app, evil = "https://app.example.com", "https://evil.example.com"
	admin, public := teststack.FreeAddr(t), teststack.FreeAddr(t)
	id := teststack.ID(t)
	vars := map[string]string{
		"PARLEY_ADMIN_ADDR": admin, "PARLEY_LISTEN_ADDR": public, "PARLEY_AUTH_HS256_SECRET": testSecret,
		"PARLEY_ALLOWED_ORIGINS": app, "PARLEY_EDGE_DRAIN_WINDOW": "200ms",
		"PARLEY_DELIVERY_STREAM": "T_" + id, "PARLEY_DELIVERY_SUBJECT_PREFIX": "test." + id + ".",
		"PARLEY_CASSANDRA_KEYSPACE": teststack.Keyspace, "PARLEY_CASSANDRA_CONSISTENCY": "ONE",
	}
	var logs lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"run"}, stackEnv(vars), io.Discard, &logs) }()
	t.Cleanup(func() {
		cancel()
		<-done
		teststack.DeleteStreams(t, vars["PARLEY_DELIVERY_STREAM"])
	})
	if !teststack.Eventually(t, 60*time.Second, func() bool { return teststack.Ready(admin) }) {
		t.Fatalf("parleyd never ready; logs:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), `"allowed_origins":"`+app+`"`) {
		t.Errorf("the start-up log does not say which origins are allowed:\n%s", logs.String())
	}

	a, _ := auth.New(auth.Config{HS256Secret: []byte(testSecret)}, nil)
	tok, _ := a.Mint(chat.UserID(id+"_alice"), "phone", time.Hour)
	for _, c := range []struct {
		origin string
		ws     int // handshake status
		cors   bool
	}{{app, http.StatusSwitchingProtocols, true}, {evil, http.StatusForbidden, false}} {
		d := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}}
		ws, resp, _ := d.Dial("ws://"+public+protocol.Path, http.Header{"Authorization": {"Bearer " + tok}, "Origin": {c.origin}})
		if ws != nil {
			ws.Close()
		}
		if resp == nil || resp.StatusCode != c.ws {
			t.Errorf("WebSocket handshake from %s: %v; want %d", c.origin, resp, c.ws)
		}

		req, _ := http.NewRequest("OPTIONS", "http://"+public+"/v1/conversations", nil)
		req.Header.Set("Origin", c.origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "authorization,content-type")
		pre, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		pre.Body.Close()
		if got := pre.Header.Get("Access-Control-Allow-Origin"); (got == c.origin) != c.cors || (!c.cors && got != "") ||
			(c.cors && pre.Header.Get("Access-Control-Allow-Headers") != "authorization,content-type") {
			t.Errorf("preflight from %s: %d %v; want granted %v", c.origin, pre.StatusCode, pre.Header, c.cors)
		}

		req, _ = http.NewRequest("GET", "http://"+public+"/v1/conversations", nil)
		req.Header.Set("Origin", c.origin)
		req.Header.Set("Authorization", "Bearer "+tok)
		get, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		get.Body.Close()
		if got := get.Header.Get("Access-Control-Allow-Origin"); get.StatusCode != 200 || (got == c.origin) != c.cors || (!c.cors && got != "") {
			t.Errorf("GET from %s: %d, Allow-Origin %q; want 200, granted %v", c.origin, get.StatusCode, got, c.cors)
		}
	}
	// Unknown routes on the public listener answer with the JSON Error body.
	resp, err := http.Get("http://" + public + "/v1/nope")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 404 || !strings.Contains(string(body), `"code":"not_found"`) {
		t.Errorf("GET /v1/nope: %d %s; want 404 with a JSON Error", resp.StatusCode, body)
	}
}
