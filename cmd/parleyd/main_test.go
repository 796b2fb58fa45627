package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/backend"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/cli"
	"github.com/parleyhq/parley/internal/teststack"
	"github.com/parleyhq/parley/protocol"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		runChild() // a parleyd process started by a test (kill_test.go)
	}
	goleak.VerifyTestMain(m, leakOptions...)
}

func env(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

const testSecret = "0123456789abcdef0123456789abcdef"

// devSecret is the environment of the --dev rows: an HS256 secret, so that what they check
// is the rest.
var devSecret = map[string]string{"PARLEY_AUTH_HS256_SECRET": testSecret}

// A wrong value stops the process before it does anything, with one line that names the
// setting and what it accepts, and exit status 2.
func TestBadConfigIsAUsageError(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want []string
	}{
		{"unknown role", []string{"run", "--roles=edge,chef"}, nil, []string{"roles", `"chef"`, "edge, delivery, api"}},
		{"negative timeout", []string{"run", "--cassandra-timeout=-1s"}, nil, []string{"cassandra-timeout", "out of range [1ms, 1m0s]"}},
		{"not a duration", []string{"run", "--shutdown-timeout=soon"}, nil, []string{"shutdown-timeout", "not a duration"}},
		{"env var", []string{"run"}, map[string]string{"PARLEY_REDIS_DB": "99"}, []string{"PARLEY_REDIS_DB", "redis-db", "[0, 15]"}},
		{"bad address", []string{"run", "--admin-addr=localhost"}, nil, []string{"admin-addr", "host:port"}},
		{"sentinels without master name", []string{"run", "--redis-sentinels=127.0.0.1:26379"}, nil, []string{"--redis-sentinels", "--redis-master-name"}},
		{"redis addr and sentinels", []string{"run", "--redis-sentinels=127.0.0.1:26379", "--redis-master-name=parley"},
			map[string]string{"PARLEY_REDIS_ADDR": "127.0.0.1:6379"}, []string{"--redis-addr", "--redis-sentinels", "set one"}},
		{"bad sentinel", []string{"run", "--redis-sentinels=127.0.0.1:26379,sentinel-b"}, nil, []string{"redis-sentinels", `"sentinel-b"`, "host:port"}},
		{"duplicate sentinel", []string{"run", "--redis-sentinels=h:26379,h:26379", "--redis-master-name=parley"}, nil, []string{"listed twice"}},
		{"master name without sentinels", []string{"run", "--redis-master-name=parley"}, nil, []string{"--redis-master-name", "need --redis-sentinels"}},
		{"master name with a space", []string{"run", "--redis-master-name=my master"}, nil, []string{"redis-master-name", "no spaces"}},
		{"bad replication", []string{"migrate", "--cassandra-replication=SimpleStrategy:0"}, nil, []string{"cassandra-replication", "SimpleStrategy:N"}},
		{"bad keyspace", []string{"migrate", "--cassandra-keyspace=a-b"}, nil, []string{"cassandra-keyspace"}},
		{"bad consistency", []string{"run", "--cassandra-consistency=SOME"}, nil, []string{"cassandra-consistency", "LOCAL_QUORUM"}},
		{"stray argument", []string{"run", "extra"}, nil, []string{`unexpected argument "extra"`}},
		{"unknown flag", []string{"run", "--nope"}, nil, []string{"nope"}},
		{"unknown command", []string{"serve"}, nil, []string{`unknown command "serve"`}},
		{"dlq without subcommand", []string{"dlq"}, nil, []string{"dlq list or dlq replay ID"}},
		{"dlq replay without id", []string{"dlq", "replay"}, nil, []string{"needs the ID"}},
		{"dlq replay bad id", []string{"dlq", "replay", "x1"}, nil, []string{`"x1" is not an ID`}},
		{"token without user", []string{"token", "--auth-hs256-secret=" + testSecret}, nil, []string{"--user is required"}},
		{"token without secret", []string{"token", "--user=a"}, nil, []string{"auth-hs256-secret"}},
		{"token short secret", []string{"token", "--user=a", "--auth-hs256-secret=short"}, nil, []string{"at least 32"}},
		{"token bad user", []string{"token", "--user=a b", "--auth-hs256-secret=" + testSecret}, nil, []string{"user", "space"}},
		{"edge without a key", []string{"run", "--roles=edge"}, nil, []string{"--auth-hs256-secret", "--auth-jwks-file"}},
		{"missing jwks file", []string{"run", "--auth-jwks-file=/nonexistent/jwks.json"}, nil, []string{"--auth-jwks-file", "no such file"}},
		{"short cursor key", []string{"run"}, map[string]string{"PARLEY_CURSOR_KEYS": "k1=short"}, []string{"PARLEY_CURSOR_KEYS", "cursor-keys", "at least 32"}},
		{"cursor key without id", []string{"run", "--cursor-keys=" + testSecret}, nil, []string{"cursor-keys", "id=secret"}},
		{"bad origin", []string{"run", "--allowed-origins=example.com"}, nil, []string{"allowed-origins", "scheme://host"}},
		{"partial wildcard origin", []string{"run", "--allowed-origins=https://*.example.com"}, nil, []string{"allowed-origins", "scheme://host"}},
		{"queue too short", []string{"run", "--edge-queue-len=1"}, nil, []string{"edge-queue-len", "[4, 100000]"}},
		{"jwks url not https", []string{"run", "--auth-jwks-url=http://idp.example.com/jwks"}, nil, []string{"auth-jwks-url", "https://"}},
		{"short admin token", []string{"run"}, map[string]string{"PARLEY_ADMIN_TOKEN": "short"}, []string{"PARLEY_ADMIN_TOKEN", "at least 32"}},
		// Development mode only on loopback, only with HS256 tokens, never with production settings.
		{"dev on all interfaces", []string{"run", "--dev", "--listen-addr=0.0.0.0:8080"}, devSecret, []string{"--dev", "--listen-addr", "PARLEY_LISTEN_ADDR", "loopback"}},
		{"dev on every address", []string{"run", "--dev", "--listen-addr=:8080"}, devSecret, []string{"--dev", "--listen-addr", "loopback"}},
		{"dev on a public address", []string{"run", "--dev", "--listen-addr=192.0.2.10:8080"}, devSecret, []string{"--dev", "--listen-addr", "loopback"}},
		{"dev on a host name", []string{"run", "--listen-addr=parley.example.com:8080"}, map[string]string{"PARLEY_DEV": "true", "PARLEY_AUTH_HS256_SECRET": testSecret},
			[]string{"--dev", "PARLEY_DEV", "--listen-addr", "loopback"}},
		{"dev on IPv6 everywhere", []string{"run", "--dev", "--listen-addr=[::]:8080"}, devSecret, []string{"--dev", "--listen-addr", "loopback"}},
		{"dev on port 0", []string{"run", "--dev", "--listen-addr=127.0.0.1:0"}, devSecret, []string{"--dev", "--listen-addr", "fixed port"}},
		{"dev without HS256", []string{"run", "--dev"}, nil, []string{"--dev", "--auth-hs256-secret", "PARLEY_AUTH_HS256_SECRET"}},
		{"dev with a JWKS URL", []string{"run", "--dev", "--auth-jwks-url=https://idp.example.com/jwks"}, devSecret, []string{"--dev", "--auth-jwks-url", "HS256"}},
		{"dev with a JWKS file", []string{"run", "--dev", "--auth-jwks-file=/etc/parley/jwks.json"}, devSecret, []string{"--dev", "--auth-jwks-file", "HS256"}},
		{"dev behind a proxy", []string{"run", "--dev", "--edge-trusted-proxies=127.0.0.1"}, devSecret, []string{"--dev", "--edge-trusted-proxies"}},
		{"dev without a public listener", []string{"run", "--dev", "--roles=delivery"}, devSecret, []string{"--dev", "--roles", "edge or api"}},
		{"demo without dev", []string{"run", "--dev-demo-dir=../../docs"}, devSecret, []string{"--dev-demo-dir", "--dev"}},
		{"demo dir missing", []string{"run", "--dev", "--dev-demo-dir=/nonexistent/dist"}, devSecret, []string{"--dev-demo-dir", "/nonexistent/dist", "no such file"}},
		{"demo dir without index.html", []string{"run", "--dev", "--dev-demo-dir=../../docs"}, devSecret, []string{"--dev-demo-dir", "index.html"}},
		{"demo dir a file", []string{"run", "--dev", "--dev-demo-dir=main.go"}, devSecret, []string{"--dev-demo-dir", "not a directory"}},
		{"dev token ttl too long", []string{"run", "--dev", "--dev-token-ttl=720h"}, devSecret, []string{"dev-token-ttl", "out of range"}},
		{"admin without subcommand", []string{"admin"}, nil, []string{"admin revoke or admin revocations"}},
		{"admin revoke naming nothing", []string{"admin", "revoke"}, nil, []string{"admin revoke", "--user"}},
		{"admin revoke device without user", []string{"admin", "revoke", "--device=phone"}, nil, []string{"admin revoke", "--user"}},
		{"admin revoke user and jti", []string{"admin", "revoke", "--user=a", "--jti=j"}, nil, []string{"admin revoke", "jti"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := run(ctx, tt.args, env(tt.env), io.Discard, io.Discard)
			var ue cli.UsageError
			if !errors.As(err, &ue) {
				t.Fatalf("run(%q) = %v; want a usage error", tt.args, err)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("error is not one line: %q", msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not mention %q", msg, w)
				}
			}
		})
	}
}

func TestHelpListsEverySettingWithItsVariable(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"run", "--help"}, env(nil), &out, io.Discard); err != nil {
		t.Fatalf("run --help: %v", err)
	}
	for _, want := range []string{"--roles  PARLEY_ROLES (default all)", "--redis-addr  PARLEY_REDIS_ADDR",
		"--cassandra-replication  PARLEY_CASSANDRA_REPLICATION (default SimpleStrategy:1)", "--shutdown-timeout"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("run --help does not contain %q", want)
		}
	}
}

// The Sentinel settings reach the Redis configuration, from flags or from the environment,
// and without them Redis is the single server at the default address.
func TestRedisSentinelSettings(t *testing.T) {
	var cfg runConfig
	err := cli.Parse(newFlagSetForTest(&cfg), []string{"--redis-master-name=cache"}, env(map[string]string{
		"PARLEY_REDIS_SENTINELS": "10.0.0.1:26379, 10.0.0.2:26379", "PARLEY_REDIS_SENTINEL_PASSWORD": "pw",
		"PARLEY_AUTH_HS256_SECRET": testSecret}), io.Discard, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.validate(); err != nil {
		t.Fatalf("validate: %v", err)
	}
	r := cfg.redis
	if !slices.Equal(r.Sentinels, []string{"10.0.0.1:26379", "10.0.0.2:26379"}) || r.MasterName != "cache" || r.SentinelPassword != "pw" || r.Addr != "" {
		t.Errorf("redis config %+v; want the two sentinels, master cache, the sentinel password, no address", r)
	}
	if got, want := r.Describe(), `master "cache" of sentinels 10.0.0.1:26379,10.0.0.2:26379`; got != want {
		t.Errorf("Describe() = %q; want %q", got, want)
	}
	var plain runConfig
	if err := cli.Parse(newFlagSetForTest(&plain), nil, env(nil), io.Discard, ""); err != nil {
		t.Fatal(err)
	}
	if got := plain.redis.Describe(); got != backend.DefaultRedisAddr {
		t.Errorf("without sentinels Redis is %q; want %s", got, backend.DefaultRedisAddr)
	}
}

func TestFlagWinsOverEnvironment(t *testing.T) {
	var cfg runConfig
	fs := newFlagSetForTest(&cfg)
	err := cli.Parse(fs, []string{"--redis-db=3"}, env(map[string]string{"PARLEY_REDIS_DB": "5", "PARLEY_NATS_URL": "nats://10.0.0.1:4222"}), io.Discard, "")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.redis.DB != 3 || cfg.nats.URL != "nats://10.0.0.1:4222" {
		t.Errorf("redis db %d, nats url %q; want 3 (flag) and the env URL", cfg.redis.DB, cfg.nats.URL)
	}
}

func TestDLQListOnTheStack(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"dlq", "list"}, env(map[string]string{
		"PARLEY_DELIVERY_STREAM": "T_" + teststack.ID(t), "PARLEY_NATS_URL": os.Getenv("PARLEY_NATS_URL")}), &out, io.Discard)
	if err != nil || strings.TrimSpace(out.String()) != "no dead letters" {
		t.Errorf("dlq list on a fresh stream: %q, %v", out.String(), err)
	}
}

func TestTokenCommand(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"token", "--user=alice", "--device=phone", "--ttl=1h"},
		env(map[string]string{"PARLEY_AUTH_HS256_SECRET": testSecret}), &out, io.Discard)
	if err != nil {
		t.Fatalf("token: %v", err)
	}
	a, err := auth.New(auth.Config{HS256Secret: []byte(testSecret)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := a.Verify(strings.TrimSpace(out.String()))
	if err != nil {
		t.Fatalf("minted token does not verify: %v", err)
	}
	if id.User != "alice" || id.Device != "phone" || time.Until(id.ExpiresAt) > time.Hour {
		t.Errorf("identity = %+v; want alice/phone expiring within 1h", id)
	}
}

// TestRunAgainstStack starts the whole process (all roles) against the local stack, waits for
// /readyz to say ready with every dependency, then stops it as a signal would and checks it
// returns cleanly and leaves no goroutine behind (TestMain).
func TestRunAgainstStack(t *testing.T) {
	addr := teststack.FreeAddr(t)
	public := teststack.FreeAddr(t)
	vars := map[string]string{
		"PARLEY_ADMIN_ADDR":              addr,
		"PARLEY_LISTEN_ADDR":             public,
		"PARLEY_AUTH_HS256_SECRET":       testSecret,
		"PARLEY_EDGE_DRAIN_WINDOW":       "200ms",
		"PARLEY_DELIVERY_STREAM":         "T_" + teststack.ID(t),
		"PARLEY_DELIVERY_SUBJECT_PREFIX": "test." + teststack.ID(t) + ".",
		"PARLEY_CASSANDRA_KEYSPACE":      teststack.Keyspace,
		"PARLEY_CASSANDRA_CONSISTENCY":   "ONE",
		"PARLEY_LOG_LEVEL":               "warn",
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"run", "--roles=all"}, stackEnv(vars), io.Discard, &logs) }()

	var body map[string]any
	ready := teststack.Eventually(t, 60*time.Second, func() bool {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body = nil
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode == http.StatusOK
	})
	if !ready {
		cancel()
		<-done
		t.Fatalf("/readyz never 200; last body %v; logs:\n%s", body, logs.String())
	}
	checks, _ := body["checks"].(map[string]any)
	for _, dep := range []string{"redis", "nats", "cassandra"} {
		if _, ok := checks[dep]; !ok {
			t.Errorf("/readyz checks %v lack %s", checks, dep)
		}
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{"parley_nats_connected 1", "parley_redis_pool_connections", "parley_cassandra_query_duration_seconds", "process_resident_memory_bytes"} {
		if !bytes.Contains(metrics, []byte(m)) {
			t.Errorf("/metrics lacks %s", m)
		}
	}

	t.Cleanup(func() {
		teststack.DeleteStreams(t, vars["PARLEY_DELIVERY_STREAM"])
	})
	// Clients reach the edge through the public listener and get hello.
	a, _ := auth.New(auth.Config{HS256Secret: []byte(testSecret)}, nil)
	dialer := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}}
	prefix := teststack.ID(t)
	alice, bob, carol := chat.UserID(prefix+"_alice"), chat.UserID(prefix+"_bob"), chat.UserID(prefix+"_carol")
	connect := func(u chat.UserID) *websocket.Conn {
		tok, _ := a.Mint(u, "phone", time.Hour)
		ws, _, err := dialer.Dial("ws://"+public+protocol.Path, http.Header{"Authorization": {"Bearer " + tok}})
		if err != nil {
			t.Fatalf("dial the edge: %v", err)
		}
		t.Cleanup(func() { ws.Close() })
		var hello protocol.Frame
		if err := ws.ReadJSON(&hello); err != nil || hello.Type != protocol.TypeHello || hello.User != string(u) {
			t.Fatalf("first frame %+v, %v; want hello for %s", hello, err, u)
		}
		return ws
	}
	ws, wsBob, wsCarol := connect(alice), connect(bob), connect(carol)

	// A message goes end to end: alice sends, gets accepted, and both members' devices get it
	// with seq 1; carol, not a member, gets not_found.
	// The conversation is created through the REST API (api role), whose OpenAPI file is served.
	aliceTok, _ := a.Mint(alice, "", time.Hour)
	req, _ := http.NewRequest("POST", "http://"+public+"/v1/conversations", strings.NewReader(`{"kind":"direct","with":"`+string(bob)+`"}`))
	req.Header.Set("Authorization", "Bearer "+aliceTok)
	req.Header.Set("Content-Type", "application/json")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var created struct{ ID string }
	_ = json.NewDecoder(resp.Body).Decode(&created)
	resp.Body.Close()
	conv, err := chat.ParseConversationID(created.ID)
	if resp.StatusCode != http.StatusCreated || err != nil {
		t.Fatalf("POST /v1/conversations: %d %q", resp.StatusCode, created.ID)
	}
	resp, err = http.Get("http://" + public + "/v1/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var spec map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&spec); err != nil || spec["openapi"] != "3.1.0" {
		t.Errorf("/v1/openapi.json: %v, openapi %v", err, spec["openapi"])
	}
	resp.Body.Close()
	cmid := chat.NewConversationID().String()
	send := protocol.Frame{Type: protocol.TypeSend, ID: "s1", Conversation: conv.String(), ClientMsgID: cmid, Body: "hi bob"}
	if err := ws.WriteJSON(send); err != nil {
		t.Fatal(err)
	}
	next := func(c *websocket.Conn) protocol.Frame {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		var f protocol.Frame
		if err := c.ReadJSON(&f); err != nil {
			t.Fatalf("read: %v", err)
		}
		return f
	}
	if f := next(ws); f.Type != protocol.TypeAccepted || f.ID != "s1" || f.ClientMsgID != cmid {
		t.Fatalf("reply to send: %+v; want accepted", f)
	}
	for name, c := range map[string]*websocket.Conn{"alice": ws, "bob": wsBob} {
		if f := next(c); f.Type != protocol.TypeMessage || f.Seq != 1 || f.Body != "hi bob" || f.Sender != string(alice) {
			t.Errorf("%s received %+v; want the message at seq 1", name, f)
		}
	}
	// Bob's device acknowledges it: alice gets the delivered receipt.
	if err := wsBob.WriteJSON(protocol.Frame{Type: protocol.TypeAck, ID: "a1", Conversation: conv.String(), Seq: 1}); err != nil {
		t.Fatal(err)
	}
	if f := next(wsBob); f.Type != protocol.TypeOK || f.ID != "a1" || f.Seq != 1 {
		t.Errorf("reply to ack: %+v; want ok with seq 1", f)
	}
	if f := next(ws); f.Type != protocol.TypeReceipt || f.Kind != "delivered" || f.User != string(bob) || f.Seq != 1 {
		t.Errorf("alice got %+v; want bob's delivered receipt at seq 1", f)
	}
	// Bob reads it: his device gets ok, alice gets the read receipt.
	if err := wsBob.WriteJSON(protocol.Frame{Type: protocol.TypeRead, ID: "r1", Conversation: conv.String(), Seq: 1}); err != nil {
		t.Fatal(err)
	}
	if f := next(wsBob); f.Type != protocol.TypeOK || f.ID != "r1" {
		t.Errorf("reply to read: %+v; want ok", f)
	}
	if f := next(ws); f.Type != protocol.TypeReceipt || f.Kind != "read" || f.User != string(bob) || f.Seq != 1 {
		t.Errorf("alice got %+v; want bob's read receipt at seq 1", f)
	}
	// Bob's second device, never connected before, syncs: the conversation (read, 0 unread)
	// and the message.
	tok2, _ := a.Mint(bob, "tablet", time.Hour)
	wsTab, _, err := dialer.Dial("ws://"+public+protocol.Path, http.Header{"Authorization": {"Bearer " + tok2}})
	if err != nil {
		t.Fatal(err)
	}
	defer wsTab.Close()
	next(wsTab) // hello
	if err := wsTab.WriteJSON(protocol.Frame{Type: protocol.TypeSync, ID: "y1"}); err != nil {
		t.Fatal(err)
	}
	// Bob's read on the phone is synced to his other devices through NATS and may reach the
	// tablet, which has just connected, before the sync result does: skip such receipts.
	sr := next(wsTab)
	for sr.Type == protocol.TypeReceipt && sr.User == string(bob) {
		sr = next(wsTab)
	}
	if sr.Type != protocol.TypeSyncResult || sr.ID != "y1" || sr.More || sr.Since == "" ||
		len(sr.Messages) != 1 || sr.Messages[0].Body != "hi bob" || len(sr.Conversations) != 1 ||
		sr.Conversations[0].ReadSeq != 1 || sr.Conversations[0].Unread != 0 {
		t.Errorf("sync from a new device: %+v", sr)
	}

	send.ID, send.ClientMsgID = "s2", chat.NewConversationID().String()
	if err := wsCarol.WriteJSON(send); err != nil {
		t.Fatal(err)
	}
	if f := next(wsCarol); f.Type != protocol.TypeError || f.Code != protocol.CodeNotFound || f.ID != "s2" {
		t.Errorf("non-member's send: %+v; want not_found", f)
	}

	// Membership changes reach the edge at once: carol, in a group with alice, sends (so the
	// edge caches her membership); alice removes her over REST; carol's device gets the removal
	// live, and her next send is refused although the cached answer has not expired.
	rest := func(method, path, body string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+public+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+aliceTok)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	status, group := rest("POST", "/v1/conversations", `{"kind":"group","title":"g","members":["`+string(carol)+`"]}`)
	if status != http.StatusCreated {
		t.Fatalf("create group: %d %v", status, group)
	}
	gid, _ := group["id"].(string)
	until := func(c *websocket.Conn, ok func(protocol.Frame) bool) protocol.Frame {
		t.Helper()
		for {
			if f := next(c); ok(f) {
				return f
			}
		}
	}
	send = protocol.Frame{Type: protocol.TypeSend, ID: "g1", Conversation: gid, ClientMsgID: chat.NewConversationID().String(), Body: "hello group"}
	if err := wsCarol.WriteJSON(send); err != nil {
		t.Fatal(err)
	}
	if f := until(wsCarol, func(f protocol.Frame) bool { return f.ID == "g1" }); f.Type != protocol.TypeAccepted {
		t.Fatalf("carol's send to the group: %+v; want accepted", f)
	}
	if status, _ := rest("DELETE", "/v1/conversations/"+gid+"/members/"+string(carol), ""); status != http.StatusAccepted {
		t.Fatalf("remove carol: %d", status)
	}
	if f := until(wsCarol, func(f protocol.Frame) bool { return f.Type == protocol.TypeMessage && f.Kind == "member_removed" }); f.User != string(carol) || f.Seq != 2 {
		t.Errorf("carol's removal frame: %+v; want member_removed of carol at seq 2", f)
	}
	send.ID, send.ClientMsgID = "g2", chat.NewConversationID().String()
	if err := wsCarol.WriteJSON(send); err != nil {
		t.Fatal(err)
	}
	if f := until(wsCarol, func(f protocol.Frame) bool { return f.ID == "g2" }); f.Type != protocol.TypeError || f.Code != protocol.CodeNotFound {
		t.Errorf("a removed member's send: %+v; want not_found", f)
	}

	// A signal (cancel) drains: the client is told to reconnect, then closed with 1001.
	cancel()
	var hint protocol.Frame
	for hint.Type == "" || hint.Type == protocol.TypeMessage { // alice's group traffic may come first
		hint = protocol.Frame{}
		if err := ws.ReadJSON(&hint); err != nil {
			t.Errorf("reading after shutdown began: %v; want reconnect", err)
			break
		}
	}
	if hint.Type != protocol.TypeReconnect {
		t.Errorf("frame after shutdown began: %+v; want reconnect", hint)
	}
	if _, _, err := ws.ReadMessage(); !websocket.IsCloseError(err, protocol.CloseGoingAway) {
		t.Errorf("connection ended with %v; want close 1001", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run returned %v after cancel", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return within 30s of cancel")
	}
}
