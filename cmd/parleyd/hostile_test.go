package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	gotoken "go/token"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/teststack"
	"github.com/parleyhq/parley/protocol"
)

// The catalogue of hostile input, against one real parleyd (all roles, the real stack): each
// row is one case and names the answer it must get, and docs/protocol.md (WebSocket),
// docs/openapi.yaml (REST) and docs/operations.md (the admin API) name every one of those
// answers (TestCatalogueIsDocumented, below, checks). Add a row for a new case; the
// placeholders and token kinds below are shared by all tables.
//
// Placeholders in frames, paths and bodies: {conv} is a conversation of alice and bob with
// two messages, {conv2} one of alice and carol, {missing} a conversation that does not exist,
// {bob} bob's user id, {uuid} a fresh UUID; {since-bob} is a since-token issued to bob and
// {since-tampered} alice's with one character of its MAC changed; {inbox-cursor} is alice's
// next-page cursor of her inbox, {inbox-cursor-bob} bob's and {inbox-cursor-tampered} alice's,
// changed; {page-cursor} is alice's next-page cursor of {conv}'s messages, {page-cursor-bob}
// bob's, {page-cursor-tampered} alice's, changed (in the MAC too).
// Token kinds: "alice", "mallory" (a member of neither conversation), "hasty" (a user of the
// handshake burst only), "revoked" (a token of a user revoked through the admin API after it
// was issued), "anonymous" (no token), "expired", "wrong-key" (signed with another secret),
// "alg-none" (unsigned), "garbage", "oversize", "admin" (the admin API's token, not a JWT).

// hostileHandshakeBurst is the handshakes one user may make at once (set on the parleyd).
const hostileHandshakeBurst = 20

// hostileHandshakes are refused WebSocket handshakes: HTTP status and error code; a 429 or
// 503 also needs Retry-After in whole seconds. With times, the row dials times-1 handshakes
// (each closed at once) that must succeed before the one that must be refused; msg is a
// part of the message it needs.
var hostileHandshakes = []struct {
	name, token, origin string
	status              int
	code                protocol.Code
	times               int
	msg                 string
}{
	{"anonymous", "anonymous", "", 401, protocol.CodeUnauthorized, 0, ""},
	{"expired token", "expired", "", 401, protocol.CodeTokenExpired, 0, ""},
	{"wrong-key token", "wrong-key", "", 401, protocol.CodeUnauthorized, 0, ""},
	{"alg none", "alg-none", "", 401, protocol.CodeUnauthorized, 0, ""},
	{"malformed token", "garbage", "", 401, protocol.CodeUnauthorized, 0, ""},
	{"oversize token", "oversize", "", 401, protocol.CodeUnauthorized, 0, ""},
	{"disallowed origin", "alice", "https://evil.example.com", 403, protocol.CodeForbidden, 0, ""},
	{"revoked token", "revoked", "", 401, protocol.CodeTokenRevoked, 0, ""},
	{"admin token", "admin", "", 401, protocol.CodeUnauthorized, 0, ""},
	{"handshake burst of one user", "hasty", "", 429, protocol.CodeRateLimited, hostileHandshakeBurst + 1, "handshakes"},
}

// hostileFrames are frames sent on a live connection as user: the error frame's code (the
// connection stays usable), or the close code when close is set (with code, an error frame
// with that code must come before the close). as is the WebSocket message type (0: text;
// pings and pongs are control frames with the payload "x"), repeat how many times the frame
// is sent (0: once). A row without a frame sends nothing: its user's connection was opened
// before the test, and is to be closed by the server.
var hostileFrames = []struct {
	name, user, frame string
	code              protocol.Code
	close             int
	as, repeat        int
}{
	{"malformed JSON", "alice", `{"type":"ping","id":"h1"`, protocol.CodeBadRequest, 0, 0, 0},
	{"not an object", "alice", `["ping"]`, protocol.CodeBadRequest, 0, 0, 0},
	{"duplicate key", "alice", `{"type":"send","id":"h2","type":"ping"}`, protocol.CodeBadRequest, 0, 0, 0},
	{"duplicate nested key", "alice", `{"type":"sync","id":"h3","cursors":[{"conversation":"{conv}","seq":1,"seq":9}]}`, protocol.CodeBadRequest, 0, 0, 0},
	{"case-variant key", "alice", `{"type":"send","id":"h4","TYPE":"ping"}`, protocol.CodeBadRequest, 0, 0, 0},
	{"case-variant nested key", "alice", `{"type":"sync","id":"h5","cursors":[{"conversation":"{conv}","SEQ":9}]}`, protocol.CodeBadRequest, 0, 0, 0},
	{"wrong type", "alice", `{"type":"ack","id":"h6","conversation":"{conv}","seq":"1"}`, protocol.CodeBadRequest, 0, 0, 0},
	{"oversize id", "alice", `{"type":"ping","id":"` + strings.Repeat("i", protocol.MaxIDBytes+1) + `"}`, protocol.CodeBadRequest, 0, 0, 0},
	{"unknown frame type", "alice", `{"type":"shout","id":"h7"}`, protocol.CodeUnknownType, 0, 0, 0},
	{"server frame type", "alice", `{"type":"message","id":"h8"}`, protocol.CodeUnknownType, 0, 0, 0},
	{"missing type", "alice", `{"id":"h9"}`, protocol.CodeBadRequest, 0, 0, 0},
	{"missing body", "alice", `{"type":"send","id":"h10","conversation":"{conv}","client_msg_id":"{uuid}"}`, protocol.CodeBadRequest, 0, 0, 0},
	{"bad UUID", "alice", `{"type":"send","id":"h11","conversation":"not-a-uuid","client_msg_id":"{uuid}","body":"x"}`, protocol.CodeBadRequest, 0, 0, 0},
	{"bad since-token", "alice", `{"type":"sync","id":"h12","since":"forged"}`, protocol.CodeBadRequest, 0, 0, 0},
	{"oversize body", "alice", `{"type":"send","id":"h13","conversation":"{conv}","client_msg_id":"{uuid}","body":"` + strings.Repeat("b", 16<<10+1) + `"}`, protocol.CodeBodyTooLarge, 0, 0, 0},
	{"non-member send", "mallory", `{"type":"send","id":"h14","conversation":"{conv}","client_msg_id":"{uuid}","body":"x"}`, protocol.CodeNotFound, 0, 0, 0},
	{"send to nonexistent", "mallory", `{"type":"send","id":"h15","conversation":"{missing}","client_msg_id":"{uuid}","body":"x"}`, protocol.CodeNotFound, 0, 0, 0},
	{"non-member read", "mallory", `{"type":"read","id":"h16","conversation":"{conv}","seq":1}`, protocol.CodeNotFound, 0, 0, 0},
	{"oversize frame", "alice", `{"type":"ping","id":"` + strings.Repeat("z", 64<<10) + `"}`, "", protocol.CloseMessageTooBig, 0, 0},
	{"invalid UTF-8", "alice", "{\"type\":\"ping\",\"id\":\"\xff\"}", "", protocol.CloseInvalidPayload, 0, 0},
	{"binary frame", "alice", `{"type":"ping"}`, "", protocol.CloseUnsupportedData, websocket.BinaryMessage, 0},
	{"tampered since-token", "alice", `{"type":"sync","id":"h17","since":"{since-tampered}"}`, protocol.CodeBadRequest, 0, 0, 0},
	{"another user's since-token", "alice", `{"type":"sync","id":"h18","since":"{since-bob}"}`, protocol.CodeBadRequest, 0, 0, 0},
	{"frame flood", "alice", `{"type":"ping"}`, protocol.CodeRateLimited, protocol.CloseRateLimited, 0, 500},
	{"ping flood", "alice", "x", "", protocol.CloseRateLimited, websocket.PingMessage, 500},
	{"pong flood", "alice", "x", "", protocol.CloseRateLimited, websocket.PongMessage, 500},
	{"revoked while connected", "revoked", "", protocol.CodeTokenRevoked, protocol.CloseTokenRevoked, 0, 0},
}

// hostileRequests are REST requests as token kind: status and Error code. ct "" sends
// application/json with a body, "-" no Content-Type at all.
var hostileRequests = []struct {
	name, token, method, path, ct, body string
	hdr                                 map[string]string
	status                              int
	code                                protocol.Code
}{
	{"malformed JSON", "alice", "POST", "/v1/conversations", "", `{"kind":`, nil, 400, protocol.CodeBadRequest},
	{"duplicate key", "alice", "POST", "/v1/conversations", "", `{"kind":"group","kind":"direct","with":"{bob}"}`, nil, 400, protocol.CodeBadRequest},
	{"case-variant key", "alice", "POST", "/v1/conversations", "", `{"KIND":"direct","with":"{bob}"}`, nil, 400, protocol.CodeBadRequest},
	{"wrong type", "alice", "POST", "/v1/conversations/{conv}/read", "", `{"seq":"1"}`, nil, 400, protocol.CodeBadRequest},
	{"unknown field", "alice", "POST", "/v1/conversations", "", `{"kind":"direct","with":"{bob}","colour":"red"}`, nil, 400, protocol.CodeBadRequest},
	{"missing field", "alice", "POST", "/v1/conversations", "", `{"with":"{bob}"}`, nil, 400, protocol.CodeBadRequest},
	{"oversize body", "alice", "POST", "/v1/conversations/{conv}/messages", "", `{"body":"` + strings.Repeat("b", 16<<10+1) + `"}`, map[string]string{"Idempotency-Key": "{uuid}"}, 413, protocol.CodeBodyTooLarge},
	{"oversize id", "alice", "GET", "/v1/conversations/" + strings.Repeat("7", 200), "", "", nil, 400, protocol.CodeBadRequest},
	{"bad UUID key", "alice", "POST", "/v1/conversations/{conv}/messages", "", `{"body":"x"}`, map[string]string{"Idempotency-Key": "not-a-uuid"}, 400, protocol.CodeBadRequest},
	{"bad path id", "alice", "GET", "/v1/conversations/nope/messages", "", "", nil, 400, protocol.CodeBadRequest},
	{"bad path seq", "alice", "DELETE", "/v1/conversations/{conv}/messages/zero", "", "", nil, 400, protocol.CodeBadRequest},
	{"wrong content type", "alice", "POST", "/v1/conversations", "text/plain", `{"kind":"direct","with":"{bob}"}`, nil, 415, protocol.CodeBadRequest},
	{"no content type", "alice", "POST", "/v1/conversations", "-", `{"kind":"direct","with":"{bob}"}`, nil, 415, protocol.CodeBadRequest},
	{"unknown route", "alice", "GET", "/v1/nope", "", "", nil, 404, protocol.CodeNotFound},
	{"wrong method", "alice", "PUT", "/v1/conversations", "", "", nil, 405, protocol.CodeBadRequest},
	{"double slash", "alice", "POST", "/v1//conversations", "", `{"kind":"direct","with":"{bob}"}`, nil, 400, protocol.CodeBadRequest},
	{"bad cursor", "alice", "GET", "/v1/conversations?cursor=forged", "", "", nil, 400, protocol.CodeBadRequest},
	{"bad page parameter", "alice", "GET", "/v1/conversations/{conv}/messages?before=x", "", "", nil, 400, protocol.CodeBadRequest},
	{"non-member", "mallory", "GET", "/v1/conversations/{conv}/messages", "", "", nil, 404, protocol.CodeNotFound},
	{"nonexistent", "mallory", "GET", "/v1/conversations/{missing}/messages", "", "", nil, 404, protocol.CodeNotFound},
	{"anonymous", "anonymous", "GET", "/v1/conversations", "", "", nil, 401, protocol.CodeUnauthorized},
	{"expired token", "expired", "GET", "/v1/conversations", "", "", nil, 401, protocol.CodeTokenExpired},
	{"wrong-key token", "wrong-key", "GET", "/v1/conversations", "", "", nil, 401, protocol.CodeUnauthorized},
	{"alg none", "alg-none", "GET", "/v1/conversations", "", "", nil, 401, protocol.CodeUnauthorized},
	{"revoked token", "revoked", "GET", "/v1/conversations", "", "", nil, 401, protocol.CodeTokenRevoked},
	{"revoked token sending", "revoked", "POST", "/v1/conversations/{conv}/messages", "", `{"body":"x"}`, map[string]string{"Idempotency-Key": "{uuid}"}, 401, protocol.CodeTokenRevoked},
	{"admin token", "admin", "GET", "/v1/conversations", "", "", nil, 401, protocol.CodeUnauthorized},
	{"another user's inbox cursor", "alice", "GET", "/v1/conversations?limit=1&cursor={inbox-cursor-bob}", "", "", nil, 400, protocol.CodeBadRequest},
	{"tampered inbox cursor", "alice", "GET", "/v1/conversations?limit=1&cursor={inbox-cursor-tampered}", "", "", nil, 400, protocol.CodeBadRequest},
	{"inbox cursor for messages", "alice", "GET", "/v1/conversations/{conv}/messages?cursor={inbox-cursor}", "", "", nil, 400, protocol.CodeBadRequest},
	{"another user's page cursor", "alice", "GET", "/v1/conversations/{conv}/messages?limit=1&cursor={page-cursor-bob}", "", "", nil, 400, protocol.CodeBadRequest},
	{"tampered page cursor", "alice", "GET", "/v1/conversations/{conv}/messages?limit=1&cursor={page-cursor-tampered}", "", "", nil, 400, protocol.CodeBadRequest},
	{"another conversation's page cursor", "alice", "GET", "/v1/conversations/{conv2}/messages?limit=1&cursor={page-cursor}", "", "", nil, 400, protocol.CodeBadRequest},
	{"charset not UTF-8", "alice", "POST", "/v1/conversations", "application/json; charset=iso-8859-1", `{"kind":"direct","with":"{bob}"}`, nil, 415, protocol.CodeBadRequest},
	{"unknown content type parameter", "alice", "POST", "/v1/conversations", "application/json; version=2", `{"kind":"direct","with":"{bob}"}`, nil, 415, protocol.CodeBadRequest},
	{"text/json", "alice", "POST", "/v1/conversations/{conv}/read", "text/json", `{"seq":1}`, nil, 415, protocol.CodeBadRequest},
	{"form content type", "alice", "POST", "/v1/conversations/{conv}/messages", "application/x-www-form-urlencoded", `{"body":"x"}`, map[string]string{"Idempotency-Key": "{uuid}"}, 415, protocol.CodeBadRequest},
	{"JSON patch content type", "alice", "PATCH", "/v1/conversations/{conv}/messages/1", "application/merge-patch+json", `{"body":"y"}`, nil, 415, protocol.CodeBadRequest},
	{"malformed content type", "alice", "POST", "/v1/conversations", "application/json; charset", `{"kind":"direct","with":"{bob}"}`, nil, 415, protocol.CodeBadRequest},
}

// hostileAdmin are requests to the admin API (/admin/v1/revocations on the admin port, or
// on the public port with public): status and Error code (docs/operations.md, "Admin
// listener"). authz is the Authorization header ("" none), where {admin} is the admin token
// and {alice-jwt} a valid token of alice.
var hostileAdmin = []struct {
	name, authz, method, body string
	public                    bool
	status                    int
	code                      protocol.Code
}{
	{"no credential", "", "POST", `{"user":"{bob}"}`, false, 401, protocol.CodeUnauthorized},
	{"no credential listing", "", "GET", "", false, 401, protocol.CodeUnauthorized},
	{"wrong admin token", "Bearer wrong-admin-token-0123456789abcdef-01", "POST", `{"user":"{bob}"}`, false, 401, protocol.CodeUnauthorized},
	{"empty bearer", "Bearer ", "POST", `{"user":"{bob}"}`, false, 401, protocol.CodeUnauthorized},
	{"admin token with another scheme", "Basic {admin}", "POST", `{"user":"{bob}"}`, false, 401, protocol.CodeUnauthorized},
	{"a user's token", "Bearer {alice-jwt}", "POST", `{"user":"{bob}"}`, false, 401, protocol.CodeUnauthorized},
	{"a user's token listing", "Bearer {alice-jwt}", "GET", "", false, 401, protocol.CodeUnauthorized},
	{"admin API on the public port", "Bearer {admin}", "POST", `{"user":"{bob}"}`, true, 404, protocol.CodeNotFound},
	{"revocation naming nothing", "Bearer {admin}", "POST", `{}`, false, 400, protocol.CodeBadRequest},
	{"revocation naming too much", "Bearer {admin}", "POST", `{"user":"{bob}","jti":"{uuid}"}`, false, 400, protocol.CodeBadRequest},
	{"revocation with an unknown field", "Bearer {admin}", "POST", `{"user":"{bob}","colour":"red"}`, false, 400, protocol.CodeBadRequest},
	{"revocation of an invalid user id", "Bearer {admin}", "POST", `{"user":"a b"}`, false, 400, protocol.CodeBadRequest},
	{"malformed revocation", "Bearer {admin}", "POST", `{"user":`, false, 400, protocol.CodeBadRequest},
}

func TestHostileInputs(t *testing.T) {
	id := teststack.ID(t)
	bucket := "T_" + id + "_REV"
	t.Cleanup(func() { deleteBucket(t, bucket) })
	admin, public := startParleyd(t, map[string]string{
		"PARLEY_AUTH_HS256_SECRET": testSecret, "PARLEY_EDGE_DRAIN_WINDOW": "200ms", "PARLEY_LOG_LEVEL": "error",
		"PARLEY_ALLOWED_ORIGINS": "https://app.example.com",
		"PARLEY_DELIVERY_STREAM": "T_" + id, "PARLEY_DELIVERY_SUBJECT_PREFIX": "test." + id + ".",
		"PARLEY_CASSANDRA_KEYSPACE": teststack.Keyspace, "PARLEY_CASSANDRA_CONSISTENCY": "ONE",
		"PARLEY_ADMIN_TOKEN": testAdminToken, "PARLEY_REVOCATION_BUCKET": bucket,
		"PARLEY_EDGE_HANDSHAKE_RATE_PER_USER": "1", "PARLEY_EDGE_HANDSHAKE_BURST_PER_USER": strconv.Itoa(hostileHandshakeBurst),
		"PARLEY_EDGE_FRAMES_PER_SECOND": "20", "PARLEY_EDGE_FRAME_BURST": "40", "PARLEY_EDGE_RATE_STRIKES": "50",
	}, nil)
	a, _ := auth.New(auth.Config{HS256Secret: []byte(testSecret)}, nil)
	alice, bob, mallory := chat.UserID(id+"_alice"), chat.UserID(id+"_bob"), chat.UserID(id+"_mallory")
	carol, hasty, revoked := chat.UserID(id+"_carol"), chat.UserID(id+"_hasty"), chat.UserID(id+"_revoked")

	// The revoked user's token, and a connection opened with it, before the revocation.
	revokedTok, _ := a.Mint(revoked, "phone", time.Hour)
	revokedWS := dialEdge(t, a, public, revoked, "phone")
	if status, data := adminCall(t, admin, testAdminToken, "POST", `{"user":"`+string(revoked)+`"}`); status != 201 {
		t.Errorf("revoke %s: %d %s", revoked, status, data)
	}

	// The conversations, two messages, and the cursors and since-tokens of alice and bob.
	ac, bc := newClient(t, a, public, alice), newClient(t, a, public, bob)
	conv, conv2 := ac.createDirect(bob), ac.createDirect(carol)
	bc.createDirect(carol)
	ac.post(conv, "one")
	ac.post(conv, "two")
	next := func(c *client, path string) string {
		var page struct{ Next string }
		if !teststack.Eventually(t, 15*time.Second, func() bool {
			status, _ := c.rest("GET", path, "", &page)
			return status == 200 && page.Next != ""
		}) {
			t.Errorf("GET %s as %s: no next cursor", path, c.user) // the rows run, with an empty one
		}
		return page.Next
	}
	pageCursor := next(ac, "/v1/conversations/"+conv+"/messages?limit=1")
	pageCursorBob := next(bc, "/v1/conversations/"+conv+"/messages?limit=1")
	inboxCursor, inboxCursorBob := next(ac, "/v1/conversations?limit=1"), next(bc, "/v1/conversations?limit=1")
	since := func(c *client) string {
		f := c.sync("")
		for f.Type == protocol.TypeSyncResult && f.More {
			f = c.sync(f.Since) // cursors: none needed, the history is small
		}
		if f.Type != protocol.TypeSyncResult || f.Since == "" {
			t.Fatalf("sync as %s: %+v", c.user, f)
		}
		return f.Since
	}
	sinceAlice, sinceBob := since(ac), since(bc)

	fill := strings.NewReplacer("{conv}", conv, "{conv2}", conv2, "{missing}", chat.NewConversationID().String(), "{bob}", string(bob),
		"{since-bob}", sinceBob, "{since-tampered}", tamperMAC(sinceAlice),
		"{inbox-cursor}", url.QueryEscape(inboxCursor), "{inbox-cursor-bob}", url.QueryEscape(inboxCursorBob), "{inbox-cursor-tampered}", url.QueryEscape(tamperMAC(inboxCursor)),
		"{page-cursor}", url.QueryEscape(pageCursor), "{page-cursor-bob}", url.QueryEscape(pageCursorBob),
		"{page-cursor-tampered}", url.QueryEscape(tamperMAC(pageCursor)),
		"{admin}", testAdminToken)
	expand := func(s string) string {
		return strings.ReplaceAll(fill.Replace(s), "{uuid}", chat.NewClientMsgID().String())
	}
	token := func(kind string) string {
		sign := func(m jwt.SigningMethod, key any, exp time.Duration) string {
			s, err := jwt.NewWithClaims(m, jwt.MapClaims{"sub": string(alice), "device": "phone", "exp": time.Now().Add(exp).Unix()}).SignedString(key)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		switch kind {
		case "anonymous":
			return ""
		case "expired":
			return sign(jwt.SigningMethodHS256, []byte(testSecret), -time.Minute)
		case "wrong-key":
			return sign(jwt.SigningMethodHS256, []byte("another-secret-0123456789abcdef!"), time.Hour)
		case "alg-none":
			return sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, time.Hour)
		case "garbage":
			return "not-a-jwt"
		case "oversize":
			return strings.Repeat("a", protocol.MaxTokenBytes+1)
		case "revoked":
			return revokedTok
		case "admin":
			return testAdminToken
		}
		u := map[string]chat.UserID{"alice": alice, "mallory": mallory, "hasty": hasty}[kind]
		if u == "" {
			t.Fatalf("unknown token kind %q", kind)
		}
		tok, _ := a.Mint(u, "phone", time.Hour)
		return tok
	}
	dial := func(kind, origin string) (*websocket.Conn, *http.Response, error) {
		hdr := http.Header{}
		if tok := token(kind); tok != "" {
			hdr.Set("Authorization", "Bearer "+tok)
		}
		if origin != "" {
			hdr.Set("Origin", origin)
		}
		d := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}, HandshakeTimeout: 5 * time.Second}
		ws, resp, err := d.Dial("ws://"+public+protocol.Path, hdr)
		if ws != nil {
			t.Cleanup(func() { ws.Close() })
			var hello protocol.Frame
			if err := ws.ReadJSON(&hello); err != nil || hello.Type != protocol.TypeHello {
				t.Fatalf("hello: %+v %v", hello, err)
			}
		}
		return ws, resp, err
	}

	// The revocation has reached this process's copy (the revocations it knows, on /metrics)
	// before any row counts on it.
	if !teststack.Eventually(t, 10*time.Second, func() bool {
		return bytes.Contains(scrape(t, admin), []byte("\nparley_revocations_known 1\n"))
	}) {
		t.Errorf("the revocation of %s never reached the copy", revoked)
	}

	t.Run("handshakes", func(t *testing.T) {
		for _, c := range hostileHandshakes {
			for i := 1; i < c.times; i++ {
				ws, resp, err := dial(c.token, c.origin)
				if err != nil {
					t.Errorf("%s: handshake %d of %d refused: %v %v", c.name, i, c.times, resp, err)
					break
				}
				ws.Close()
			}
			ws, resp, err := dial(c.token, c.origin)
			if err == nil {
				ws.Close()
				t.Errorf("%s: handshake succeeded; want %d %s", c.name, c.status, c.code)
				continue
			}
			var eb struct{ Code, Message string }
			if resp != nil {
				_ = json.NewDecoder(resp.Body).Decode(&eb)
			}
			if resp == nil || resp.StatusCode != c.status || protocol.Code(eb.Code) != c.code || !strings.Contains(eb.Message, c.msg) {
				t.Errorf("%s: %v %+v; want %d %s (%q)", c.name, resp, eb, c.status, c.code, c.msg)
				continue
			}
			if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); (c.status == 429 || c.status == 503) && (err != nil || ra < 1) {
				t.Errorf("%s: Retry-After %q; want whole seconds", c.name, resp.Header.Get("Retry-After"))
			}
		}
	})

	t.Run("frames", func(t *testing.T) {
		conns := map[string]*websocket.Conn{}
		notFound := map[string]string{} // message of each not_found, by case: the same for all
		for _, c := range hostileFrames {
			ws := conns[c.user]
			switch {
			case c.frame == "":
				ws = map[string]*websocket.Conn{"revoked": revokedWS}[c.user]
				if ws == nil {
					t.Fatalf("%s: no connection of %s opened before the test", c.name, c.user)
				}
			case ws == nil || c.close != 0:
				var err error
				if ws, _, err = dial(c.user, ""); err != nil {
					t.Fatalf("%s: dial as %s: %v", c.name, c.user, err)
				}
				if c.close == 0 {
					conns[c.user] = ws
				}
			}
			typ := websocket.TextMessage
			if c.as != 0 {
				typ = c.as
			}
			done := make(chan struct{})
			stopped := make(chan struct{})
			go func() { // the writer: a flood stops when the connection is closed
				defer close(stopped)
				for i := 0; i < max(c.repeat, 1) && c.frame != ""; i++ {
					var err error
					if typ == websocket.PingMessage || typ == websocket.PongMessage {
						err = ws.WriteControl(typ, []byte(c.frame), time.Now().Add(time.Second))
					} else {
						err = ws.WriteMessage(typ, []byte(expand(c.frame)))
					}
					if err != nil {
						return
					}
					select {
					case <-done:
						return
					default:
					}
				}
			}()
			_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
			if c.close != 0 {
				code, codes := websocket.CloseAbnormalClosure, map[protocol.Code]bool{}
				for {
					_, data, err := ws.ReadMessage()
					if err != nil {
						if ce, ok := err.(*websocket.CloseError); ok {
							code = ce.Code
						}
						break
					}
					var f protocol.Frame
					if json.Unmarshal(data, &f) == nil && f.Type == protocol.TypeError {
						codes[f.Code] = true
					}
				}
				close(done)
				<-stopped
				if code != c.close || (c.code != "" && !codes[c.code]) {
					t.Errorf("%s: close %d after errors %v; want %d after %q", c.name, code, codes, c.close, c.code)
				}
				continue
			}
			<-stopped
			// The answer: an error, or any frame answering one of these rows' ids (h1, h2, ...).
			var f protocol.Frame
			for f.Type != protocol.TypeError && !strings.HasPrefix(f.ID, "h") {
				f = protocol.Frame{}
				if err := ws.ReadJSON(&f); err != nil {
					t.Errorf("%s: no answer: %v", c.name, err)
					delete(conns, c.user) // the next row dials again
					break
				}
			}
			if f.Type != protocol.TypeError || f.Code != c.code || f.Message == "" {
				t.Errorf("%s: %+v; want error %s", c.name, f, c.code)
			}
			if f.Code == protocol.CodeNotFound {
				notFound[c.name] = f.Message
			}
		}
		if notFound["non-member send"] != notFound["send to nonexistent"] {
			t.Errorf("a non-member learns something: %q vs %q for a conversation that does not exist", notFound["non-member send"], notFound["send to nonexistent"])
		}
		// After all that, the connections still work.
		for user, ws := range conns {
			if err := ws.WriteJSON(protocol.Frame{Type: protocol.TypePing, ID: "alive"}); err != nil {
				t.Fatal(err)
			}
			var f protocol.Frame
			for f.Type != protocol.TypePong {
				if err := ws.ReadJSON(&f); err != nil {
					t.Fatalf("%s's connection after the hostile frames: %v", user, err)
				}
			}
		}
	})

	client := http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	// do sends one request and checks its answer: status, and an Error body with code.
	do := func(t *testing.T, name string, req *http.Request, status int, code protocol.Code) string {
		t.Helper()
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var eb struct {
			Code    protocol.Code
			Message string
		}
		if err := json.Unmarshal(data, &eb); err != nil || resp.StatusCode != status || eb.Code != code || eb.Message == "" {
			t.Errorf("%s: %s %s: %d %s; want %d %s", name, req.Method, req.URL.Path, resp.StatusCode, data, status, code)
		}
		return string(data)
	}

	t.Run("requests", func(t *testing.T) {
		bodies := map[string]string{}
		for _, c := range hostileRequests {
			var body io.Reader
			if c.body != "" {
				body = strings.NewReader(expand(c.body))
			}
			req, _ := http.NewRequest(c.method, "http://"+public+expand(c.path), body)
			if tok := token(c.token); tok != "" {
				req.Header.Set("Authorization", "Bearer "+tok)
			}
			switch {
			case c.ct == "-":
			case c.ct != "":
				req.Header.Set("Content-Type", c.ct)
			case c.body != "":
				req.Header.Set("Content-Type", "application/json")
			}
			for k, v := range c.hdr {
				req.Header.Set(k, expand(v))
			}
			bodies[c.name] = do(t, c.name, req, c.status, c.code)
		}
		if bodies["non-member"] != bodies["nonexistent"] {
			t.Errorf("a non-member learns something: %s vs %s for a conversation that does not exist", bodies["non-member"], bodies["nonexistent"])
		}
	})

	t.Run("admin", func(t *testing.T) {
		aliceJWT := token("alice")
		for _, c := range hostileAdmin {
			host := admin
			if c.public {
				host = public
			}
			var body io.Reader
			if c.body != "" {
				body = strings.NewReader(expand(c.body))
			}
			req, _ := http.NewRequest(c.method, "http://"+host+"/admin/v1/revocations", body)
			if c.authz != "" {
				req.Header.Set("Authorization", strings.ReplaceAll(expand(c.authz), "{alice-jwt}", aliceJWT))
			}
			if c.body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			do(t, c.name, req, c.status, c.code)
		}
		// None of them stored anything: the one revocation is the test's own.
		_, data := adminCall(t, admin, testAdminToken, "GET", "")
		var list struct{ Revocations []struct{ User chat.UserID } }
		if err := json.Unmarshal(data, &list); err != nil || len(list.Revocations) != 1 || list.Revocations[0].User != revoked {
			t.Errorf("revocations after the hostile admin requests: %s; want only %s's", data, revoked)
		}
	})
}

// tamperMAC changes the first character of a signed token's last part (its MAC), every bit
// of which counts. (A change to the last character of a part may only touch bits that
// base64 decoding ignores.)
func tamperMAC(tok string) string {
	i := strings.LastIndexByte(tok, '.') + 1
	if i == 0 || i == len(tok) {
		return tok + "x"
	}
	c := byte('A')
	if tok[i] == 'A' {
		c = 'B'
	}
	return tok[:i] + string(c) + tok[i+1:]
}

// scrape returns the admin listener's /metrics.
func scrape(t *testing.T, admin string) []byte {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return data
}

// The docs name every answer the catalogue expects, and every error code and close code of
// package protocol, so that neither can drift from the other: a handshake row's status and
// code are a row of docs/protocol.md's handshake table, a frame row's code and close code
// rows of its error and close tables (a flood's close is in its limits too), a request row's
// status and code a row of docs/openapi.yaml's table, and an admin row's a "status `code`"
// of docs/operations.md's admin API (or openapi.yaml's for the public port).
func TestCatalogueIsDocumented(t *testing.T) {
	read := func(name string) string {
		data, err := os.ReadFile(filepath.Join("..", "..", "docs", name))
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	proto, openapi, ops := read("protocol.md"), read("openapi.yaml"), read("operations.md")
	section := func(doc, start, end string) string {
		i := strings.Index(doc, start)
		if i < 0 {
			t.Fatalf("no section %q", start)
		}
		rest := doc[i+len(start):]
		if j := strings.Index(rest, end); j >= 0 {
			rest = rest[:j]
		}
		return rest
	}
	// rows returns "first cell|code" for every table row of doc whose first cell matches
	// first, once for each backquoted code in its second cell (or its first, when first
	// is itself a code).
	rows := func(doc, first string) map[string]bool {
		out := map[string]bool{}
		re := regexp.MustCompile("(?m)^\\s*\\| (" + first + ") \\|([^|]*)\\|")
		code := regexp.MustCompile("`([a-z_]+)`")
		for _, m := range re.FindAllStringSubmatch(doc, -1) {
			out[m[1]] = true
			for _, c := range code.FindAllStringSubmatch(m[2], -1) {
				out[m[1]+"|"+c[1]] = true
			}
		}
		return out
	}
	handshakes := rows(section(proto, "## 1. Connecting", "## 2."), "[0-9]{3}")
	closes := rows(section(proto, "## 4.", "## 5."), "[0-9]{4}")
	errorCodes := rows(section(proto, "## 5. Errors", "## 6."), "`[a-z_]+`")
	limits := strings.Join(strings.Fields(section(proto, "## 6. Limits", "\n## ")), " ")
	rest := rows(section(openapi, "description: |", "servers:"), "[0-9]{3}")
	adminAPI := strings.Join(strings.Fields(section(ops, "The **admin API**", "How it works")), " ")
	pair := func(status int, code protocol.Code) string { return strconv.Itoa(status) + "|" + string(code) }

	for _, c := range hostileHandshakes {
		if !handshakes[pair(c.status, c.code)] {
			t.Errorf("handshake %q: docs/protocol.md's handshake table has no row %d `%s`", c.name, c.status, c.code)
		}
		if c.times > 0 && !strings.Contains(limits, fmt.Sprintf("handshake %d with `Retry-After`", c.status)) {
			t.Errorf("handshake %q: docs/protocol.md's limits do not say handshake %d with `Retry-After`", c.name, c.status)
		}
	}
	for _, c := range hostileFrames {
		if c.code != "" && !errorCodes["`"+string(c.code)+"`"] {
			t.Errorf("frame %q: docs/protocol.md's error table has no `%s`", c.name, c.code)
		}
		if c.close != 0 && !closes[strconv.Itoa(c.close)] {
			t.Errorf("frame %q: docs/protocol.md's close table has no %d", c.name, c.close)
		}
		if c.repeat > 0 && !strings.Contains(limits, fmt.Sprintf("close %d", c.close)) {
			t.Errorf("frame %q: docs/protocol.md's limits do not name close %d", c.name, c.close)
		}
	}
	for _, c := range hostileRequests {
		if !rest[pair(c.status, c.code)] {
			t.Errorf("request %q: docs/openapi.yaml's table has no row %d `%s`", c.name, c.status, c.code)
		}
	}
	for _, c := range hostileAdmin {
		if c.public && !rest[pair(c.status, c.code)] {
			t.Errorf("admin %q: docs/openapi.yaml's table has no row %d `%s`", c.name, c.status, c.code)
		}
		if !c.public && !strings.Contains(adminAPI, fmt.Sprintf("%d `%s`", c.status, c.code)) {
			t.Errorf("admin %q: docs/operations.md's admin API does not name %d `%s`", c.name, c.status, c.code)
		}
	}

	// Every error code of package protocol is in the error table, and the table has no other;
	// the REST Error schema's codes are among them.
	known := map[string]bool{}
	for _, c := range protocol.Codes {
		known[string(c)] = true
		if !errorCodes["`"+string(c)+"`"] {
			t.Errorf("docs/protocol.md's error table has no `%s` (protocol.Codes)", c)
		}
	}
	for k := range errorCodes {
		if !known[strings.Trim(k, "`")] {
			t.Errorf("docs/protocol.md's error table names %s, not in protocol.Codes", k)
		}
	}
	enum := regexp.MustCompile(`enum: \[(bad_request[^\]]*)\]`).FindStringSubmatch(openapi)
	if enum == nil {
		t.Fatal("docs/openapi.yaml: no enum of error codes")
	}
	for _, c := range strings.Split(enum[1], ",") {
		if !known[strings.TrimSpace(c)] {
			t.Errorf("docs/openapi.yaml's Error codes name %q, not in protocol.Codes", strings.TrimSpace(c))
		}
	}

	// Every close code constant of package protocol is in the close table, and the table has
	// no other.
	constants := map[string]string{}
	fset := gotoken.NewFileSet()
	files, err := filepath.Glob(filepath.Join("..", "..", "protocol", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if v, ok := n.(*ast.ValueSpec); ok && len(v.Names) == 1 && len(v.Values) == 1 && strings.HasPrefix(v.Names[0].Name, "Close") {
				if lit, ok := v.Values[0].(*ast.BasicLit); ok && lit.Kind == gotoken.INT {
					constants[lit.Value] = v.Names[0].Name
				}
			}
			return true
		})
	}
	if len(constants) < 10 {
		t.Fatalf("close code constants found in protocol/: %v", constants)
	}
	for code, name := range constants {
		if !closes[code] {
			t.Errorf("docs/protocol.md's close table has no %s (protocol.%s)", code, name)
		}
	}
	for k := range closes {
		if !strings.Contains(k, "|") && constants[k] == "" {
			t.Errorf("docs/protocol.md's close table names %s, not a constant of package protocol", k)
		}
	}
}
