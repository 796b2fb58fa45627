package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/parleyhq/parley/httpapi"
	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/teststack"
	"github.com/parleyhq/parley/protocol"
)

const testAdminToken = "admin-token-0123456789abcdef-0123456789"

// adminCall makes one admin API request with the bearer token (none when empty).
func adminCall(t *testing.T, admin, token, method, body string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+admin+"/admin/v1/revocations", strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
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

// deleteBucket removes a test's KV bucket.
func deleteBucket(t *testing.T, bucket string) {
	nc, err := nats.Connect(os.Getenv("PARLEY_NATS_URL"))
	if err != nil {
		t.Logf("delete bucket %s: %v", bucket, err)
		return
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = js.DeleteKeyValue(ctx, bucket)
}

// revocationEnv is the environment of parleyd processes that share one test's streams and
// revocation bucket (deleted when the test ends), with an admin token: the test id and vars.
func revocationEnv(t *testing.T) (string, map[string]string) {
	id := teststack.ID(t)
	bucket := "T_" + id + "_REV"
	vars := map[string]string{
		"PARLEY_AUTH_HS256_SECRET": testSecret, "PARLEY_LOG_LEVEL": "warn", "PARLEY_EDGE_DRAIN_WINDOW": "200ms",
		"PARLEY_CASSANDRA_KEYSPACE": teststack.Keyspace, "PARLEY_CASSANDRA_CONSISTENCY": "ONE",
		"PARLEY_DELIVERY_STREAM": "T_" + id, "PARLEY_DELIVERY_SUBJECT_PREFIX": "test." + id + ".",
		"PARLEY_REVOCATION_BUCKET": bucket, "PARLEY_ADMIN_TOKEN": testAdminToken,
	}
	t.Cleanup(func() { deleteBucket(t, bucket); teststack.DeleteStreams(t, "T_"+id) })
	return id, vars
}

// A revocation through the admin API of one edge process closes the matching connections on
// every edge process within 5 s (close 4003 after a token_revoked error) and makes both refuse
// the token at the handshake (401 token_revoked), while the same user's other device keeps
// working; the admin API refuses requests without the admin token or with a wrong one.
func TestRevocationAcrossEdges(t *testing.T) {
	id, vars := revocationEnv(t)
	p1 := startProcess(t, vars, "run", "--roles=edge,api")
	p2 := startProcess(t, vars, "run", "--roles=edge")

	a, _ := auth.New(auth.Config{HS256Secret: []byte(testSecret)}, nil)
	alice := chat.UserID(id + "_alice")
	phone, _ := a.Mint(alice, "phone", time.Hour)
	tablet, _ := a.Mint(alice, "tablet", time.Hour)
	dial := func(addr, tok string) (*websocket.Conn, *http.Response, error) {
		d := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}, HandshakeTimeout: 5 * time.Second}
		ws, resp, err := d.Dial("ws://"+addr+protocol.Path, http.Header{"Authorization": {"Bearer " + tok}})
		if ws != nil {
			t.Cleanup(func() { ws.Close() })
			var hello protocol.Frame
			if err := ws.ReadJSON(&hello); err != nil || hello.Type != protocol.TypeHello {
				t.Fatalf("hello: %+v %v", hello, err)
			}
		}
		return ws, resp, err
	}
	mustDial := func(addr, tok string) *websocket.Conn {
		ws, resp, err := dial(addr, tok)
		if err != nil {
			t.Fatalf("dial %s: %v (%v)", addr, err, resp)
		}
		return ws
	}
	phone1, phone2, tablet2 := mustDial(p1.public, phone), mustDial(p2.public, phone), mustDial(p2.public, tablet)

	body := `{"user":"` + string(alice) + `","device":"phone"}`
	for _, c := range []struct{ name, token string }{{"no credential", ""}, {"wrong credential", strings.Repeat("x", 40)}} {
		for _, method := range []string{"POST", "GET"} {
			if status, data := adminCall(t, p1.admin, c.token, method, body); status != http.StatusUnauthorized || !bytes.Contains(data, []byte(`"unauthorized"`)) {
				t.Errorf("%s %s: %d %s; want 401 unauthorized", c.name, method, status, data)
			}
		}
	}
	if status, data := adminCall(t, p1.admin, testAdminToken, "POST", `{"device":"phone"}`); status != http.StatusBadRequest {
		t.Errorf("a revocation naming no user: %d %s; want 400", status, data)
	}
	// Bodies are strict JSON, as on the REST API: no duplicate or case-variant keys.
	for _, bad := range []string{`{"user":"` + string(alice) + `","user":"` + string(alice) + `x"}`, `{"USER":"` + string(alice) + `"}`} {
		if status, data := adminCall(t, p1.admin, testAdminToken, "POST", bad); status != http.StatusBadRequest {
			t.Errorf("revocation body %s: %d %s; want 400", bad, status, data)
		}
	}
	req, _ := http.NewRequest("POST", "http://"+p1.admin+"/admin/v1/revocations", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testAdminToken)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("a revocation without Content-Type: %v %v; want 415", resp, err)
	} else {
		resp.Body.Close()
	}
	// Nothing was revoked by the refused requests.
	if f := pingPong(t, phone1); f.Type != protocol.TypePong {
		t.Fatalf("phone on edge 1 after refused requests: %+v", f)
	}

	status, data := adminCall(t, p1.admin, testAdminToken, "POST", body)
	revoked := time.Now()
	if status != http.StatusCreated {
		t.Fatalf("revoke: %d %s; want 201", status, data)
	}
	var rev auth.Revocation
	if err := json.Unmarshal(data, &rev); err != nil || rev.User != alice || rev.Device != "phone" || rev.At.IsZero() {
		t.Errorf("revoke answered %s (%v)", data, err)
	}
	for name, ws := range map[string]*websocket.Conn{"edge 1": phone1, "edge 2": phone2} {
		code, sawError := closeCode(ws, revoked.Add(5*time.Second))
		if code != protocol.CloseTokenRevoked || !sawError {
			t.Errorf("phone on %s: close %d, token_revoked error %v; want close 4003 after the error within 5 s", name, code, sawError)
		}
	}
	if d := time.Since(revoked); d > 5*time.Second {
		t.Errorf("closes took %v", d)
	}
	for name, addr := range map[string]string{"edge 1": p1.public, "edge 2": p2.public} {
		_, resp, err := dial(addr, phone)
		if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("revoked token on %s: %v, %v; want 401", name, err, resp)
			continue
		}
		var e struct{ Code protocol.Code }
		_ = json.NewDecoder(resp.Body).Decode(&e)
		if e.Code != protocol.CodeTokenRevoked {
			t.Errorf("revoked token on %s: code %q; want token_revoked", name, e.Code)
		}
	}
	// The other device is untouched, on the edge that saw the close and on a new connection.
	if f := pingPong(t, tablet2); f.Type != protocol.TypePong {
		t.Errorf("tablet after the phone's revocation: %+v; want pong", f)
	}
	mustDial(p1.public, tablet)
	// The list shows it.
	if status, data := adminCall(t, p2.admin, testAdminToken, "GET", ""); status != http.StatusOK || !bytes.Contains(data, []byte(`"device":"phone"`)) {
		t.Errorf("GET revocations: %d %s", status, data)
	}
	// Signing in again on the phone (a token issued after the revocation) works.
	time.Sleep(time.Until(revoked.Truncate(time.Second).Add(time.Second)))
	fresh, _ := a.Mint(alice, "phone", time.Hour)
	mustDial(p2.public, fresh)
}

// pingPong sends a ping and returns the reply.
func pingPong(t *testing.T, ws *websocket.Conn) protocol.Frame {
	t.Helper()
	if err := ws.WriteJSON(protocol.Frame{Type: protocol.TypePing, ID: "pp"}); err != nil {
		t.Fatal(err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		var f protocol.Frame
		if err := ws.ReadJSON(&f); err != nil {
			t.Fatalf("waiting for pong: %v", err)
		}
		if f.ID == "pp" {
			return f
		}
	}
}

// closeCode reads ws until it closes or deadline passes; it returns the close code (0 if
// none) and whether a token_revoked error came first.
func closeCode(ws *websocket.Conn, deadline time.Time) (int, bool) {
	_ = ws.SetReadDeadline(deadline)
	saw := false
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Code, saw
			}
			return 0, saw
		}
		saw = saw || bytes.Contains(data, []byte(`"token_revoked"`))
	}
}

// Without an admin token the admin API is refused with a clear error, while the probes stay
// open; a token shorter than 32 bytes stops the process at start.
func TestAdminAPIWithoutCredential(t *testing.T) {
	id := teststack.ID(t)
	bucket := "T_" + id + "_REV"
	vars := map[string]string{
		"PARLEY_ROLES": "delivery", "PARLEY_LOG_LEVEL": "warn", "PARLEY_REVOCATION_BUCKET": bucket,
		"PARLEY_DELIVERY_STREAM": "T_" + id, "PARLEY_DELIVERY_SUBJECT_PREFIX": "test." + id + ".",
		"PARLEY_CASSANDRA_KEYSPACE": teststack.Keyspace, "PARLEY_CASSANDRA_CONSISTENCY": "ONE",
	}
	t.Cleanup(func() { deleteBucket(t, bucket) })
	admin, _ := startParleyd(t, vars, nil)
	for _, method := range []string{"POST", "GET"} {
		status, data := adminCall(t, admin, testAdminToken, method, `{"user":"u"}`)
		if status != http.StatusForbidden || !bytes.Contains(data, []byte("--admin-token-file")) {
			t.Errorf("%s without a configured credential: %d %s; want 403 naming the setting", method, status, data)
		}
	}
	if !teststack.Ready(admin) {
		t.Error("/readyz not ready")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := run(ctx, []string{"run", "--admin-token=short"}, env(nil), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "at least 32") {
		t.Errorf("short admin token: %v", err)
	}
}

// parleyd admin revoke stores a revocation in the bucket the edges watch, and admin
// revocations lists it.
func TestAdminRevokeCommand(t *testing.T) {
	id := teststack.ID(t)
	bucket := "T_" + id + "_REV"
	t.Cleanup(func() { deleteBucket(t, bucket) })
	vars := env(map[string]string{"PARLEY_NATS_URL": os.Getenv("PARLEY_NATS_URL"), "PARLEY_REVOCATION_BUCKET": bucket})
	var out bytes.Buffer
	if err := run(context.Background(), []string{"admin", "revocations"}, vars, &out, io.Discard); err != nil || strings.TrimSpace(out.String()) != "no revocations" {
		t.Fatalf("admin revocations on an empty bucket: %q, %v", out.String(), err)
	}
	for _, args := range [][]string{{"--user=" + id + "_bob"}, {"--user=" + id + "_bob", "--device=phone"}, {"--jti=j-" + id}} {
		out.Reset()
		if err := run(context.Background(), append([]string{"admin", "revoke"}, args...), vars, &out, io.Discard); err != nil {
			t.Fatalf("admin revoke %v: %v", args, err)
		}
	}
	out.Reset()
	if err := run(context.Background(), []string{"admin", "revocations"}, vars, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"user " + id + "_bob (tokens", "user " + id + "_bob device phone", "jti j-" + id} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("admin revocations:\n%s\nlacks %q", out.String(), want)
		}
	}
}

// The REST API refuses a revoked token on every authenticated route with 401 token_revoked,
// on an api-only process (which runs no edge) and on an edge,api process alike, by the same
// rules as the handshake: a revocation of the phone leaves the tablet's token, and a token
// without a device claim, working; a revocation by jti refuses that one token.
func TestRevocationOnREST(t *testing.T) {
	id, vars := revocationEnv(t)
	apiOnly := startProcess(t, vars, "run", "--roles=api")
	both := startProcess(t, vars, "run", "--roles=edge,api")

	a, _ := auth.New(auth.Config{HS256Secret: []byte(testSecret)}, nil)
	alice := chat.UserID(id + "_alice")
	phone, _ := a.Mint(alice, "phone", time.Hour)
	tablet, _ := a.Mint(alice, "tablet", time.Hour)
	noDevice, _ := a.Mint(alice, "", time.Hour)
	other, _ := a.Mint(alice, "laptop", time.Hour)
	get := func(addr, tok, path string) (int, restError) {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e restError
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return resp.StatusCode, e
	}
	procs := map[string]string{"api only": apiOnly.public, "edge,api": both.public}
	for name, addr := range procs {
		for _, tok := range []string{phone, tablet, noDevice, other} {
			if status, e := get(addr, tok, "/v1/conversations"); status != http.StatusOK {
				t.Fatalf("%s before any revocation: %d %+v; want 200", name, status, e)
			}
		}
	}

	revokedAt := time.Now()
	if status, data := adminCall(t, apiOnly.admin, testAdminToken, "POST", `{"user":"`+string(alice)+`","device":"phone"}`); status != http.StatusCreated {
		t.Fatalf("revoke the phone: %d %s", status, data)
	}
	rev, _ := a.Verify(other)
	if status, data := adminCall(t, both.admin, testAdminToken, "POST", `{"jti":"`+rev.TokenID+`"}`); status != http.StatusCreated {
		t.Fatalf("revoke the laptop's token by jti: %d %s", status, data)
	}
	// Every authenticated route refuses the revoked tokens (the revocation reaches each
	// process's copy through the bucket's watch: within 5 s).
	for name, addr := range procs {
		for _, tok := range []string{phone, other} {
			var (
				status int
				e      restError
			)
			teststack.Eventually(t, 5*time.Second, func() bool {
				status, e = get(addr, tok, "/v1/conversations")
				return status == http.StatusUnauthorized
			})
			if status != http.StatusUnauthorized || e.Code != protocol.CodeTokenRevoked || e.Retryable || e.Message == "" {
				t.Errorf("%s: revoked token on GET /v1/conversations: %d %+v; want 401 token_revoked", name, status, e)
			}
		}
		for _, r := range httpapi.Routes() {
			path := strings.NewReplacer("{id}", "c1", "{seq}", "1", "{emoji}", "x", "{user}", "u").Replace(r.Pattern)
			req, _ := http.NewRequest(r.Method, "http://"+addr+path, strings.NewReader("{}"))
			req.Header.Set("Authorization", "Bearer "+phone)
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var e restError
			_ = json.NewDecoder(resp.Body).Decode(&e)
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized || e.Code != protocol.CodeTokenRevoked {
				t.Errorf("%s: revoked token on %s %s: %d %+v; want 401 token_revoked", name, r.Method, r.Pattern, resp.StatusCode, e)
			}
		}
		// The other device, and a token naming no device (REST knows no other device for
		// it), still work.
		for tname, tok := range map[string]string{"tablet": tablet, "no device claim": noDevice} {
			if status, e := get(addr, tok, "/v1/conversations"); status != http.StatusOK {
				t.Errorf("%s: %s after the phone's revocation: %d %+v; want 200", name, tname, status, e)
			}
		}
	}
	// Signing in again on the phone (a token issued after the revocation) works.
	time.Sleep(time.Until(revokedAt.Truncate(time.Second).Add(time.Second)))
	fresh, _ := a.Mint(alice, "phone", time.Hour)
	for name, addr := range procs {
		if status, e := get(addr, fresh, "/v1/conversations"); status != http.StatusOK {
			t.Errorf("%s: a phone token issued after the revocation: %d %+v; want 200", name, status, e)
		}
	}
}

// restError is the REST API's error body.
type restError struct {
	Code      protocol.Code `json:"code"`
	Message   string        `json:"message"`
	Retryable bool          `json:"retryable"`
}
