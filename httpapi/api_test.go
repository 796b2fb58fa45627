package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/yaml"

	"github.com/parleyhq/parley/delivery"
	"github.com/parleyhq/parley/delivery/ingest"
	"github.com/parleyhq/parley/docs"
	"github.com/parleyhq/parley/history"
	"github.com/parleyhq/parley/httpapi"
	"github.com/parleyhq/parley/inbox"
	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/cursor"
	"github.com/parleyhq/parley/internal/teststack"
	"github.com/parleyhq/parley/protocol"
	"github.com/parleyhq/parley/protocol/rest"
)

var secret = []byte("history-api-secret-0123456789abcdef")

type env struct {
	t      *testing.T
	url    string
	auth   *auth.Authority
	store  *history.Store
	prefix string
	reg    *prometheus.Registry
	nc     *nats.Conn
	worker *delivery.Worker
}

// newEnv serves the API as parleyd does (httpapi.Public), granting CORS to origins.
func newEnv(t *testing.T, origins ...string) *env {
	t.Helper()
	a, err := auth.New(auth.Config{HS256Secret: secret}, nil)
	if err != nil {
		t.Fatal(err)
	}
	store, err := history.New(teststack.Cassandra(t), history.Config{})
	if err != nil {
		t.Fatal(err)
	}
	n := teststack.NATS(t)
	id := teststack.ID(t)
	icfg := ingest.Config{Stream: "T_" + id, SubjectPrefix: "test." + id + ".", Partitions: 2}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := delivery.EnsureStreams(ctx, n.JetStream, delivery.Config{Ingest: icfg}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, s := range delivery.StreamNames(delivery.Config{Ingest: icfg}) {
			_ = n.JetStream.DeleteStream(context.Background(), s)
		}
	})
	in, err := ingest.New(n.JetStream, icfg)
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	keys, err := cursor.NewKeys(cursor.Key{ID: "test", Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	inb := inbox.New(teststack.Cassandra(t), store, inbox.Config{Cursors: keys})
	w, err := delivery.NewWorker(delivery.Config{Ingest: icfg}, n.JetStream, n.Conn, store, inb, prometheus.NewRegistry(), logger)
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = w.Run(wctx); close(done) }()
	t.Cleanup(func() { stop(); <-done })

	mux := http.NewServeMux()
	reg := prometheus.NewRegistry()
	api, err := httpapi.New(httpapi.Config{MaxBodyBytes: 1024, Cursors: keys}, store, inb, a, in, reg, logger)
	if err != nil {
		t.Fatal(err)
	}
	api.EnableReceipts(n.Conn)
	api.Register(mux)
	hs := httptest.NewServer(httpapi.Public(mux, httpapi.CORS{AllowedOrigins: origins}))
	t.Cleanup(hs.Close)
	return &env{t: t, url: hs.URL, auth: a, store: store, prefix: id, reg: reg, nc: n.Conn, worker: w}
}

func (e *env) user(name string) chat.UserID { return chat.UserID(e.prefix + "_" + name) }

func (e *env) token(u chat.UserID) string {
	tok, err := e.auth.Mint(u, "", time.Hour)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

// do sends a request as user (no token when user is "") and decodes the JSON answer into out.
func (e *env) do(method, path string, user chat.UserID, body any, hdr map[string]string, out any) *http.Response {
	e.t.Helper()
	var rd io.Reader
	if r, ok := body.(raw); ok {
		rd = strings.NewReader(string(r))
	} else if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, e.url+path, rd)
	if user != "" {
		req.Header.Set("Authorization", "Bearer "+e.token(user))
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			e.t.Fatalf("%s %s: body %q: %v", method, path, data, err)
		}
	}
	return resp
}

// raw is a request body sent as it is (do marshals any other body).
type raw string

type errBody struct {
	Code      protocol.Code `json:"code"`
	Message   string        `json:"message"`
	Retryable bool          `json:"retryable"`
}

// Every route refuses an unauthenticated caller with 401 and a non-member with 404, the same
// 404 as for a conversation that does not exist.
func TestEveryRouteRefusesStrangers(t *testing.T) {
	e := newEnv(t)
	alice, bob, mallory := e.user("alice"), e.user("bob"), e.user("mallory")
	var conv rest.Conversation
	if resp := e.do("POST", "/v1/conversations", alice, map[string]any{"kind": "direct", "with": bob}, nil, &conv); resp.StatusCode != 201 {
		t.Fatalf("create: %d", resp.StatusCode)
	}
	missing := chat.NewConversationID().String()
	for _, rt := range httpapi.Routes() {
		pattern := strings.NewReplacer("{seq}", "1", "{emoji}", "%F0%9F%91%8D", "{user}", string(bob)).Replace(rt.Pattern)
		path := strings.ReplaceAll(pattern, "{id}", conv.ID)
		var body any
		hdr := map[string]string{}
		if rt.Method == "POST" || rt.Method == "PATCH" {
			body = map[string]any{"kind": "direct", "with": "x", "body": "hi", "seq": 1}
			hdr["Idempotency-Key"] = chat.NewConversationID().String()
		}
		var eb errBody
		resp := e.do(rt.Method, path, "", body, hdr, &eb)
		if resp.StatusCode != 401 || eb.Code != protocol.CodeUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s %s without a token: %d %q; want 401 unauthorized", rt.Method, rt.Pattern, resp.StatusCode, eb.Code)
		}
		if !strings.Contains(rt.Pattern, "{id}") {
			continue
		}
		for who, p := range map[string]string{"non-member": path, "missing conversation": strings.ReplaceAll(pattern, "{id}", missing)} {
			eb = errBody{}
			resp = e.do(rt.Method, p, mallory, body, hdr, &eb)
			if resp.StatusCode != 404 || eb.Code != protocol.CodeNotFound {
				t.Errorf("%s %s as %s: %d %q; want 404 not_found", rt.Method, rt.Pattern, who, resp.StatusCode, eb.Code)
			}
		}
		// A malformed id is a bad request (docs/openapi.yaml), before membership is looked at.
		eb = errBody{}
		resp = e.do(rt.Method, strings.ReplaceAll(pattern, "{id}", "nope"), mallory, body, hdr, &eb)
		if resp.StatusCode != 400 || eb.Code != protocol.CodeBadRequest {
			t.Errorf("%s %s with a malformed id: %d %q; want 400 bad_request", rt.Method, rt.Pattern, resp.StatusCode, eb.Code)
		}
	}
}

func TestConversationsAndMessages(t *testing.T) {
	e := newEnv(t)
	alice, bob, carol := e.user("alice"), e.user("bob"), e.user("carol")

	var direct, again rest.Conversation
	e.do("POST", "/v1/conversations", alice, map[string]any{"kind": "direct", "with": bob}, nil, &direct)
	if resp := e.do("POST", "/v1/conversations", bob, map[string]any{"kind": "direct", "with": alice}, nil, &again); resp.StatusCode != 200 || again.ID != direct.ID {
		t.Errorf("direct conversation created twice: %d %s vs %s", resp.StatusCode, again.ID, direct.ID)
	}
	if len(direct.Members) != 2 || direct.Kind != "direct" {
		t.Errorf("direct conversation %+v", direct)
	}
	var group rest.Conversation
	if resp := e.do("POST", "/v1/conversations", alice, map[string]any{"kind": "group", "title": "trip", "members": []string{string(bob), string(carol)}}, nil, &group); resp.StatusCode != 201 {
		t.Fatalf("create group: %d", resp.StatusCode)
	}
	var got rest.Conversation
	if resp := e.do("GET", "/v1/conversations/"+group.ID, carol, nil, nil, &got); resp.StatusCode != 200 || got.Title != "trip" || len(got.Members) != 3 {
		t.Errorf("GET group as carol: %d %+v", resp.StatusCode, got)
	}

	// Posting: 202 accepted, idempotent by Idempotency-Key, then sequenced and readable.
	keys := []string{chat.NewConversationID().String(), chat.NewConversationID().String(), chat.NewConversationID().String()}
	for i, k := range append(keys, keys[0]) { // the first one twice
		var acc rest.Accepted
		resp := e.do("POST", "/v1/conversations/"+group.ID+"/messages", bob, map[string]any{"body": "m" + k[:4]},
			map[string]string{"Idempotency-Key": k}, &acc)
		if resp.StatusCode != 202 || acc.ClientMsgID != k {
			t.Fatalf("post %d: %d %+v", i, resp.StatusCode, acc)
		}
	}
	var page httpapi.MessagesJSON
	ok := teststack.Eventually(t, 30*time.Second, func() bool {
		page = httpapi.MessagesJSON{}
		e.do("GET", "/v1/conversations/"+group.ID+"/messages?after=0", alice, nil, nil, &page)
		return len(page.Messages) >= 3
	})
	time.Sleep(300 * time.Millisecond) // a wrongly sequenced duplicate would land by now
	e.do("GET", "/v1/conversations/"+group.ID+"/messages?after=0", alice, nil, nil, &page)
	if !ok || len(page.Messages) != 3 {
		t.Fatalf("messages after posting 3 (one twice): %+v", page.Messages)
	}
	for i, m := range page.Messages {
		if m.Seq != int64(i+1) || m.ClientMsgID != keys[i] || m.Sender != string(bob) {
			t.Errorf("message %d = %+v", i, m)
		}
	}
	e.do("GET", "/v1/conversations/"+group.ID+"/messages?limit=2", alice, nil, nil, &page)
	if len(page.Messages) != 2 || page.Messages[0].Seq != 3 || page.Messages[1].Seq != 2 {
		t.Errorf("latest page of 2: %+v", page.Messages)
	}
	e.do("GET", "/v1/conversations/"+group.ID+"/messages?before=2", alice, nil, nil, &page)
	if len(page.Messages) != 1 || page.Messages[0].Seq != 1 {
		t.Errorf("before=2: %+v", page.Messages)
	}

	// The inbox: the group (active) first, then the direct conversation; unread counts; read.
	var in rest.Inbox
	e.do("GET", "/v1/conversations", alice, nil, nil, &in)
	if len(in.Conversations) != 2 || in.Conversations[0].ID != group.ID || in.Conversations[0].Unread != 3 ||
		in.Conversations[1].ID != direct.ID || in.Conversations[0].LastSender != string(bob) {
		t.Fatalf("inbox = %+v", in)
	}
	var rd httpapi.ReadJSON
	if resp := e.do("POST", "/v1/conversations/"+group.ID+"/read", alice, map[string]any{"seq": 2}, nil, &rd); resp.StatusCode != 200 || rd.ReadSeq != 2 {
		t.Errorf("read: %d %+v", resp.StatusCode, rd)
	}
	in = rest.Inbox{}
	e.do("GET", "/v1/conversations?limit=1", alice, nil, nil, &in)
	if len(in.Conversations) != 1 || in.Conversations[0].Unread != 1 || in.Next == "" {
		t.Errorf("inbox page 1 after read: %+v", in)
	}
	next := in.Next
	in = rest.Inbox{}
	e.do("GET", "/v1/conversations?limit=1&cursor="+url.QueryEscape(next), alice, nil, nil, &in)
	if len(in.Conversations) != 1 || in.Conversations[0].ID != direct.ID || in.Next != "" {
		t.Errorf("inbox page 2: %+v", in)
	}

	// Every request is counted by route pattern and status, and timed by route.
	want := map[string]float64{"GET /v1/conversations 200": 3, "POST /v1/conversations/{id}/messages 202": 4,
		"POST /v1/conversations 201": 2, "POST /v1/conversations 200": 1}
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts, timed := map[string]float64{}, 0
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			switch mf.GetName() {
			case "parley_api_requests_total":
				counts[l["route"]+" "+l["code"]] = m.GetCounter().GetValue()
			case "parley_api_request_duration_seconds":
				timed += int(m.GetHistogram().GetSampleCount())
			}
		}
	}
	for k, v := range want {
		if counts[k] != v {
			t.Errorf("parley_api_requests_total %s = %v; want %v (all: %v)", k, counts[k], v, counts)
		}
	}
	if timed == 0 {
		t.Error("no request was timed")
	}
}

func TestBadRequests(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.user("alice"), e.user("bob")
	var conv rest.Conversation
	e.do("POST", "/v1/conversations", alice, map[string]any{"kind": "direct", "with": bob}, nil, &conv)
	msgs := "/v1/conversations/" + conv.ID + "/messages"
	key := map[string]string{"Idempotency-Key": chat.NewConversationID().String()}
	cases := []struct {
		name   string
		method string
		path   string
		body   any
		hdr    map[string]string
		status int
		code   protocol.Code
	}{
		{"unknown kind", "POST", "/v1/conversations", map[string]any{"kind": "party"}, nil, 400, protocol.CodeBadRequest},
		{"unknown field", "POST", "/v1/conversations", map[string]any{"kind": "direct", "with": bob, "colour": "red"}, nil, 400, protocol.CodeBadRequest},
		{"direct with oneself", "POST", "/v1/conversations", map[string]any{"kind": "direct", "with": alice}, nil, 400, protocol.CodeBadRequest},
		{"bad member id", "POST", "/v1/conversations", map[string]any{"kind": "group", "members": []string{"a b"}}, nil, 400, protocol.CodeBadRequest},
		{"no idempotency key", "POST", msgs, map[string]any{"body": "x"}, nil, 400, protocol.CodeBadRequest},
		{"empty body", "POST", msgs, map[string]any{"body": ""}, key, 400, protocol.CodeBadRequest},
		{"body too large", "POST", msgs, map[string]any{"body": strings.Repeat("x", 2000)}, key, 413, protocol.CodeBodyTooLarge},
		{"wrong content type", "POST", msgs, map[string]any{"body": "x"}, map[string]string{"Idempotency-Key": key["Idempotency-Key"], "Content-Type": "text/plain"}, 415, protocol.CodeBadRequest},
		{"no content type", "POST", msgs, map[string]any{"body": "x"}, map[string]string{"Idempotency-Key": key["Idempotency-Key"], "Content-Type": ""}, 415, protocol.CodeBadRequest},
		{"no content type (create)", "POST", "/v1/conversations", map[string]any{"kind": "direct", "with": bob}, map[string]string{"Content-Type": ""}, 415, protocol.CodeBadRequest},
		{"another charset", "POST", msgs, map[string]any{"body": "x"}, map[string]string{"Idempotency-Key": key["Idempotency-Key"], "Content-Type": "application/json; charset=iso-8859-1"}, 415, protocol.CodeBadRequest},
		{"bad limit", "GET", msgs + "?limit=-1", nil, nil, 400, protocol.CodeBadRequest},
		// Strict JSON: duplicate keys and keys in another case than the field's are refused
		// (they used to be read as the last one, matched case-insensitively).
		{"duplicate key", "POST", "/v1/conversations", raw(`{"kind":"group","kind":"direct","with":"` + string(bob) + `"}`), nil, 400, protocol.CodeBadRequest},
		{"case-variant key", "POST", "/v1/conversations", raw(`{"KIND":"direct","with":"` + string(bob) + `"}`), nil, 400, protocol.CodeBadRequest},
		{"case-variant key overriding", "POST", "/v1/conversations", raw(`{"kind":"group","Kind":"direct","with":"` + string(bob) + `"}`), nil, 400, protocol.CodeBadRequest},
		{"duplicate body", "POST", msgs, raw(`{"body":"a","body":"b"}`), key, 400, protocol.CodeBadRequest},
		{"before and after", "GET", msgs + "?before=5&after=1", nil, nil, 400, protocol.CodeBadRequest},
	}
	for _, c := range cases {
		var eb errBody
		resp := e.do(c.method, c.path, alice, c.body, c.hdr, &eb)
		if resp.StatusCode != c.status || eb.Code != c.code || eb.Message == "" {
			t.Errorf("%s: %d %+v; want %d %s", c.name, resp.StatusCode, eb, c.status, c.code)
		}
	}
}

// The OpenAPI file documents exactly the routes the API serves, and is valid YAML; the
// operations marked x-development-only are exactly the development mode's routes.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	var spec struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := yaml.Unmarshal(docs.OpenAPIYAML, &spec); err != nil {
		t.Fatalf("docs/openapi.yaml: %v", err)
	}
	if spec.OpenAPI != "3.1.0" {
		t.Errorf("openapi version %q; want 3.1.0", spec.OpenAPI)
	}
	documented := map[bool]int{}
	for path, ops := range spec.Paths {
		for method, data := range ops {
			if method == "parameters" {
				continue
			}
			var op struct {
				Dev bool `json:"x-development-only"`
			}
			if err := json.Unmarshal(data, &op); err != nil {
				t.Fatalf("openapi %s %s: %v", method, path, err)
			}
			documented[op.Dev]++
			routes, what := httpapi.Routes(), "the API does not serve"
			if op.Dev {
				routes, what = httpapi.DevRoutes(), "is no development route"
			}
			found := false
			for _, rt := range routes {
				if rt.Pattern == path && strings.EqualFold(rt.Method, method) {
					found = true
				}
			}
			if !found {
				t.Errorf("openapi documents %s %s, which %s", strings.ToUpper(method), path, what)
			}
		}
	}
	if documented[false] != len(httpapi.Routes()) {
		t.Errorf("openapi documents %d operations; the API serves %d", documented[false], len(httpapi.Routes()))
	}
	if documented[true] != len(httpapi.DevRoutes()) {
		t.Errorf("openapi documents %d development-only operations; development mode serves %d", documented[true], len(httpapi.DevRoutes()))
	}
	checkOpenAPIErrors(t)
}

// Every operation documents the errors the API can answer it with, each with the Error body:
// default (404 for an unknown route, 405 with Allow, 400 for a path not in canonical form,
// whatever else), 401, 429 and 503 everywhere, 400 where the path has an id or the operation
// takes parameters or a body, 415 where it takes a body. The development token endpoint
// takes no token, has no rate limit and no store behind it: it documents 403 (not loopback)
// instead of 401, 429 and 503.
func checkOpenAPIErrors(t *testing.T) {
	var spec struct {
		Paths      map[string]map[string]json.RawMessage `json:"paths"`
		Components struct {
			Responses map[string]struct {
				Content map[string]struct {
					Schema map[string]string `json:"schema"`
				} `json:"content"`
			} `json:"responses"`
		} `json:"components"`
	}
	if err := yaml.Unmarshal(docs.OpenAPIYAML, &spec); err != nil {
		t.Fatalf("docs/openapi.yaml: %v", err)
	}
	errorShaped := map[string]bool{}
	for name, r := range spec.Components.Responses {
		if r.Content["application/json"].Schema["$ref"] == "#/components/schemas/Error" {
			errorShaped["#/components/responses/"+name] = true
		}
	}
	for path, ops := range spec.Paths {
		for method, data := range ops {
			if method == "parameters" {
				continue
			}
			var op struct {
				Dev         bool                      `json:"x-development-only"`
				Parameters  []any                     `json:"parameters"`
				RequestBody any                       `json:"requestBody"`
				Responses   map[string]map[string]any `json:"responses"`
			}
			if err := json.Unmarshal(data, &op); err != nil {
				t.Fatalf("openapi %s %s: %v", method, path, err)
			}
			want := []string{"default", "401", "429", "503"}
			if op.Dev {
				want = []string{"default", "403"}
			}
			if strings.Contains(path, "{") || len(op.Parameters) > 0 || op.RequestBody != nil {
				want = append(want, "400")
			}
			if op.RequestBody != nil {
				want = append(want, "413", "415")
			}
			for _, status := range want {
				if _, ok := op.Responses[status]; !ok {
					t.Errorf("openapi: %s %s does not document %s", strings.ToUpper(method), path, status)
				}
			}
			for status, r := range op.Responses {
				if (status == "default" || status >= "400") && !errorShaped[fmt.Sprint(r["$ref"])] {
					t.Errorf("openapi: %s %s answers %s without the Error body (%v)", strings.ToUpper(method), path, status, r)
				}
			}
		}
	}
}

// Over the per-user request rate the API answers 429 with Retry-After; other users are not
// affected.
func TestRateLimit(t *testing.T) {
	e := newEnv(t)
	greedy, calm := e.user("greedy"), e.user("calm")
	limited := 0
	for i := 0; i < 60; i++ {
		var eb errBody
		resp := e.do("GET", "/v1/conversations", greedy, nil, nil, &eb)
		if resp.StatusCode == http.StatusTooManyRequests {
			limited++
			if eb.Code != protocol.CodeRateLimited || !eb.Retryable || resp.Header.Get("Retry-After") == "" {
				t.Fatalf("429 body %+v, Retry-After %q", eb, resp.Header.Get("Retry-After"))
			}
		}
	}
	if limited == 0 {
		t.Error("60 requests at once (burst 40) were never limited")
	}
	var in rest.Inbox
	if resp := e.do("GET", "/v1/conversations", calm, nil, nil, &in); resp.StatusCode != http.StatusOK {
		t.Errorf("another user: %d; want 200", resp.StatusCode)
	}
}

// Inbox pages continue after the last entry returned, not at an offset: a conversation that
// becomes active between two pages moves to the top, and the next page neither repeats an
// entry of the first nor skips one that did not move.
func TestInboxPagesAreKeyset(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.user("alice"), e.user("bob")
	post := func(conv string) {
		t.Helper()
		k := chat.NewConversationID().String()
		if resp := e.do("POST", "/v1/conversations/"+conv+"/messages", bob, map[string]any{"body": "hi"},
			map[string]string{"Idempotency-Key": k}, nil); resp.StatusCode != 202 {
			t.Fatalf("post: %d", resp.StatusCode)
		}
	}
	inbox := func(query string) rest.Inbox {
		t.Helper()
		var in rest.Inbox
		if resp := e.do("GET", "/v1/conversations"+query, alice, nil, nil, &in); resp.StatusCode != 200 {
			t.Fatalf("GET /v1/conversations%s: %d", query, resp.StatusCode)
		}
		return in
	}
	// first returns the id of the inbox's most recently active conversation.
	first := func() string {
		if in := inbox("?limit=1"); len(in.Conversations) == 1 {
			return in.Conversations[0].ID
		}
		return ""
	}
	// Four groups, each made the most recent in turn: the inbox order is c4 c3 c2 c1.
	convs := make([]string, 4)
	for i := range convs {
		var c rest.Conversation
		if resp := e.do("POST", "/v1/conversations", alice, map[string]any{"kind": "group", "title": fmt.Sprint("g", i), "members": []string{string(bob)}}, nil, &c); resp.StatusCode != 201 {
			t.Fatalf("create group: %d", resp.StatusCode)
		}
		convs[i] = c.ID
		post(c.ID)
		if !teststack.Eventually(t, 30*time.Second, func() bool { return first() == c.ID }) {
			t.Fatalf("conversation %d never became the most recent", i)
		}
	}
	page1 := inbox("?limit=2")
	if len(page1.Conversations) != 2 || page1.Conversations[0].ID != convs[3] || page1.Conversations[1].ID != convs[2] || page1.Next == "" {
		t.Fatalf("page 1 = %+v; want c4, c3 and a next cursor", page1)
	}
	// c1, on no page yet, becomes the most recent: the order is now c1 c4 c3 c2.
	post(convs[0])
	if !teststack.Eventually(t, 30*time.Second, func() bool { return first() == convs[0] }) {
		t.Fatal("c1 never became the most recent")
	}
	page2 := inbox("?limit=2&cursor=" + url.QueryEscape(page1.Next))
	var ids []string
	for _, c := range page2.Conversations {
		ids = append(ids, c.ID)
	}
	if len(ids) != 1 || ids[0] != convs[1] || page2.Next != "" {
		t.Errorf("page 2 = %v (next %q); want only c2 (c%d, c%d were on page 1; c1 moved above the cursor)", ids, page2.Next, 4, 3)
	}
}
