package main

import (
	"encoding/json"
	"io"
	"net/http"
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
// row is one case and names the answer it must get, and docs/protocol.md (WebSocket) and
// docs/openapi.yaml (REST) name every one of those answers. Add a row for a new case; the
// placeholders and token kinds below are shared by all tables.
//
// Placeholders in frames, paths and bodies: {conv} is a conversation of alice and bob,
// {missing} a conversation that does not exist, {bob} bob's user id, {uuid} a fresh UUID.
// Token kinds: "alice", "mallory" (a member of nothing), "anonymous" (no token), "expired",
// "wrong-key" (signed with another secret), "alg-none" (unsigned), "garbage", "oversize".

// hostileHandshakes are refused WebSocket handshakes: HTTP status and error code.
var hostileHandshakes = []struct {
	name, token, origin string
	status              int
	code                protocol.Code
}{
	{"anonymous", "anonymous", "", 401, protocol.CodeUnauthorized},
	{"expired token", "expired", "", 401, protocol.CodeTokenExpired},
	{"wrong-key token", "wrong-key", "", 401, protocol.CodeUnauthorized},
	{"alg none", "alg-none", "", 401, protocol.CodeUnauthorized},
	{"malformed token", "garbage", "", 401, protocol.CodeUnauthorized},
	{"oversize token", "oversize", "", 401, protocol.CodeUnauthorized},
	{"disallowed origin", "alice", "https://evil.example.com", 403, protocol.CodeForbidden},
}

// hostileFrames are frames sent on a live connection as user: the error frame's code (the
// connection stays usable), or the close code when close is set.
var hostileFrames = []struct {
	name, user, frame string
	code              protocol.Code
	close             int
	binary            bool
}{
	{"malformed JSON", "alice", `{"type":"ping","id":"h1"`, protocol.CodeBadRequest, 0, false},
	{"not an object", "alice", `["ping"]`, protocol.CodeBadRequest, 0, false},
	{"duplicate key", "alice", `{"type":"send","id":"h2","type":"ping"}`, protocol.CodeBadRequest, 0, false},
	{"duplicate nested key", "alice", `{"type":"sync","id":"h3","cursors":[{"conversation":"{conv}","seq":1,"seq":9}]}`, protocol.CodeBadRequest, 0, false},
	{"case-variant key", "alice", `{"type":"send","id":"h4","TYPE":"ping"}`, protocol.CodeBadRequest, 0, false},
	{"case-variant nested key", "alice", `{"type":"sync","id":"h5","cursors":[{"conversation":"{conv}","SEQ":9}]}`, protocol.CodeBadRequest, 0, false},
	{"wrong type", "alice", `{"type":"ack","id":"h6","conversation":"{conv}","seq":"1"}`, protocol.CodeBadRequest, 0, false},
	{"oversize id", "alice", `{"type":"ping","id":"` + strings.Repeat("i", protocol.MaxIDBytes+1) + `"}`, protocol.CodeBadRequest, 0, false},
	{"unknown frame type", "alice", `{"type":"shout","id":"h7"}`, protocol.CodeUnknownType, 0, false},
	{"server frame type", "alice", `{"type":"message","id":"h8"}`, protocol.CodeUnknownType, 0, false},
	{"missing type", "alice", `{"id":"h9"}`, protocol.CodeBadRequest, 0, false},
	{"missing body", "alice", `{"type":"send","id":"h10","conversation":"{conv}","client_msg_id":"{uuid}"}`, protocol.CodeBadRequest, 0, false},
	{"bad UUID", "alice", `{"type":"send","id":"h11","conversation":"not-a-uuid","client_msg_id":"{uuid}","body":"x"}`, protocol.CodeBadRequest, 0, false},
	{"bad since-token", "alice", `{"type":"sync","id":"h12","since":"forged"}`, protocol.CodeBadRequest, 0, false},
	{"oversize body", "alice", `{"type":"send","id":"h13","conversation":"{conv}","client_msg_id":"{uuid}","body":"` + strings.Repeat("b", 16<<10+1) + `"}`, protocol.CodeBodyTooLarge, 0, false},
	{"non-member send", "mallory", `{"type":"send","id":"h14","conversation":"{conv}","client_msg_id":"{uuid}","body":"x"}`, protocol.CodeNotFound, 0, false},
	{"send to nonexistent", "mallory", `{"type":"send","id":"h15","conversation":"{missing}","client_msg_id":"{uuid}","body":"x"}`, protocol.CodeNotFound, 0, false},
	{"non-member read", "mallory", `{"type":"read","id":"h16","conversation":"{conv}","seq":1}`, protocol.CodeNotFound, 0, false},
	{"oversize frame", "alice", `{"type":"ping","id":"` + strings.Repeat("z", 64<<10) + `"}`, "", protocol.CloseMessageTooBig, false},
	{"invalid UTF-8", "alice", "{\"type\":\"ping\",\"id\":\"\xff\"}", "", protocol.CloseInvalidPayload, false},
	{"binary frame", "alice", `{"type":"ping"}`, "", protocol.CloseUnsupportedData, true},
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
}

func TestHostileInputs(t *testing.T) {
	id := teststack.ID(t)
	_, public := startParleyd(t, map[string]string{
		"PARLEY_AUTH_HS256_SECRET": testSecret, "PARLEY_EDGE_DRAIN_WINDOW": "200ms", "PARLEY_LOG_LEVEL": "error",
		"PARLEY_ALLOWED_ORIGINS": "https://app.example.com",
		"PARLEY_DELIVERY_STREAM": "T_" + id, "PARLEY_DELIVERY_SUBJECT_PREFIX": "test." + id + ".",
		"PARLEY_CASSANDRA_KEYSPACE": teststack.Keyspace, "PARLEY_CASSANDRA_CONSISTENCY": "ONE",
	}, nil)
	a, _ := auth.New(auth.Config{HS256Secret: []byte(testSecret)}, nil)
	alice, bob, mallory := chat.UserID(id+"_alice"), chat.UserID(id+"_bob"), chat.UserID(id+"_mallory")
	status, data := restCall(t, a, public, alice, "POST", "/v1/conversations", `{"kind":"direct","with":"`+string(bob)+`"}`)
	var conv struct{ ID string }
	if err := json.Unmarshal(data, &conv); err != nil || status != 201 {
		t.Fatalf("create: %d %s", status, data)
	}
	fill := strings.NewReplacer("{conv}", conv.ID, "{missing}", chat.NewConversationID().String(), "{bob}", string(bob))
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
		}
		u := map[string]chat.UserID{"alice": alice, "mallory": mallory}[kind]
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

	t.Run("handshakes", func(t *testing.T) {
		for _, c := range hostileHandshakes {
			ws, resp, err := dial(c.token, c.origin)
			if err == nil {
				ws.Close()
				t.Errorf("%s: handshake succeeded; want %d %s", c.name, c.status, c.code)
				continue
			}
			var eb struct{ Code protocol.Code }
			if resp != nil {
				_ = json.NewDecoder(resp.Body).Decode(&eb)
			}
			if resp == nil || resp.StatusCode != c.status || eb.Code != c.code {
				t.Errorf("%s: %v %q; want %d %s", c.name, resp, eb.Code, c.status, c.code)
			}
		}
	})

	t.Run("frames", func(t *testing.T) {
		conns := map[string]*websocket.Conn{}
		notFound := map[string]string{} // message of each not_found, by case: the same for all
		for _, c := range hostileFrames {
			ws := conns[c.user]
			if ws == nil || c.close != 0 {
				var err error
				if ws, _, err = dial(c.user, ""); err != nil {
					t.Fatalf("%s: dial as %s: %v", c.name, c.user, err)
				}
				if c.close == 0 {
					conns[c.user] = ws
				}
			}
			typ := websocket.TextMessage
			if c.binary {
				typ = websocket.BinaryMessage
			}
			if err := ws.WriteMessage(typ, []byte(expand(c.frame))); err != nil {
				t.Fatalf("%s: write: %v", c.name, err)
			}
			_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
			if c.close != 0 {
				code := websocket.CloseAbnormalClosure
				for {
					if _, _, err := ws.ReadMessage(); err != nil {
						if ce, ok := err.(*websocket.CloseError); ok {
							code = ce.Code
						}
						break
					}
				}
				if code != c.close {
					t.Errorf("%s: close %d; want %d", c.name, code, c.close)
				}
				continue
			}
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
			client := http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
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
			if err := json.Unmarshal(data, &eb); err != nil || resp.StatusCode != c.status || eb.Code != c.code || eb.Message == "" {
				t.Errorf("%s: %s %s: %d %s; want %d %s", c.name, c.method, c.path, resp.StatusCode, data, c.status, c.code)
			}
			bodies[c.name] = string(data)
		}
		if bodies["non-member"] != bodies["nonexistent"] {
			t.Errorf("a non-member learns something: %s vs %s for a conversation that does not exist", bodies["non-member"], bodies["nonexistent"])
		}
	})
}
