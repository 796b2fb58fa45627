package main

import (
	"context"
	"io"
	"maps"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/teststack"
	"github.com/parleyhq/parley/protocol"
)

// stackEnv is the environment of a parleyd run in this process: vars, plus the local stack's
// addresses from this process's environment (make test exports them from deploy/local/env.sh)
// unless vars sets them. Without them parleyd would use its defaults, the default ports, and
// a stack started on other ports would not be the one the test talks to. Unless vars says
// otherwise, the edge's drain delay is 0 (no load balancer waits for it in a test) and the
// edge does not rebalance: the edges of tests running at once on the shared NATS would
// count each other and move each other's clients.
func stackEnv(vars map[string]string) func(string) string {
	all := maps.Clone(vars)
	for k, v := range map[string]string{"PARLEY_EDGE_DRAIN_DELAY": "0", "PARLEY_EDGE_REBALANCE": "false"} {
		if _, ok := all[k]; !ok {
			all[k] = v
		}
	}
	for _, k := range []string{"PARLEY_REDIS_ADDR", "PARLEY_NATS_URL", "PARLEY_CASSANDRA_HOSTS"} {
		if v := os.Getenv(k); v != "" && all[k] == "" {
			all[k] = v
		}
	}
	return env(all)
}

// startParleyd runs parleyd (all roles) in this process with vars plus fresh admin and public
// addresses, waits for /readyz to answer 200, and when the test ends stops it, runs after (if
// not nil) and deletes the ingest stream named in vars.
func startParleyd(t *testing.T, vars map[string]string, after func()) (admin, public string) {
	t.Helper()
	admin, public = teststack.FreeAddr(t), teststack.FreeAddr(t)
	all := map[string]string{"PARLEY_ADMIN_ADDR": admin, "PARLEY_LISTEN_ADDR": public}
	for k, v := range vars {
		all[k] = v
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"run"}, stackEnv(all), io.Discard, io.Discard) }()
	t.Cleanup(func() {
		cancel()
		<-done
		if after != nil {
			after()
		}
		if stream := vars["PARLEY_DELIVERY_STREAM"]; stream != "" {
			teststack.DeleteStreams(t, stream)
		}
	})
	if !teststack.Eventually(t, 60*time.Second, func() bool { return teststack.Ready(admin) }) {
		t.Fatal("parleyd never ready")
	}
	return admin, public
}

// restCall makes one REST request as user and returns the status and body.
func restCall(t *testing.T, a *auth.Authority, public string, user chat.UserID, method, path, body string) (int, []byte) {
	t.Helper()
	tok, _ := a.Mint(user, "", time.Hour)
	req, _ := http.NewRequest(method, "http://"+public+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

// dialEdge connects user's device to the edge at addr, reads hello, and closes the socket
// when the test ends.
func dialEdge(t *testing.T, a *auth.Authority, addr string, user chat.UserID, device string) *websocket.Conn {
	t.Helper()
	tok, _ := a.Mint(user, chat.DeviceID(device), time.Hour)
	d := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}}
	ws, _, err := d.Dial("ws://"+addr+protocol.Path, http.Header{"Authorization": {"Bearer " + tok}})
	if err != nil {
		t.Fatalf("dial %s as %s: %v", addr, user, err)
	}
	t.Cleanup(func() { ws.Close() })
	var hello protocol.Frame
	if err := ws.ReadJSON(&hello); err != nil || hello.Type != protocol.TypeHello {
		t.Fatalf("hello: %+v %v", hello, err)
	}
	return ws
}
