package httpapi_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/parleyhq/parley/protocol"
)

// request sends method path with hdr and returns the response and its body.
func request(t *testing.T, method, url string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	// A redirect is an answer too: the client must not follow one to another route.
	client := http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

// Requests that no route takes get the API's JSON Error body, never net/http's plain text or
// a redirect: an unknown path 404, a known path with another method 405 with Allow, and a
// path that is not in canonical form (an empty or dot segment) 400.
func TestRouteErrorsAreJSON(t *testing.T) {
	e := newEnv(t)
	tok := "Bearer " + e.token(e.user("alice"))
	cases := []struct {
		method, path string
		status       int
		code         protocol.Code
		allow        string
	}{
		{"GET", "/v1/nope", 404, protocol.CodeNotFound, ""},
		{"GET", "/", 404, protocol.CodeNotFound, ""},
		{"GET", "/v1/conversations/7d1f3a52-5b0e-4c1a-9a57-2f1e0c6b9d10/nope", 404, protocol.CodeNotFound, ""},
		{"PUT", "/v1/conversations", 405, protocol.CodeBadRequest, "GET, HEAD, POST"},
		{"DELETE", "/v1/presence", 405, protocol.CodeBadRequest, "GET, HEAD"},
		{"OPTIONS", "/v1/conversations", 405, protocol.CodeBadRequest, "GET, HEAD, POST"},
		{"GET", "/v1//conversations", 400, protocol.CodeBadRequest, ""},
		{"POST", "/v1//conversations", 400, protocol.CodeBadRequest, ""},
		{"GET", "//v1/conversations", 400, protocol.CodeBadRequest, ""},
		{"GET", "/v1/./conversations", 400, protocol.CodeBadRequest, ""},
		{"GET", "/v1/conversations/x/../../presence", 400, protocol.CodeBadRequest, ""},
	}
	for _, c := range cases {
		resp, body := request(t, c.method, e.url+c.path, map[string]string{"Authorization": tok})
		var eb errBody
		if err := json.Unmarshal(body, &eb); err != nil || resp.StatusCode != c.status || eb.Code != c.code || eb.Message == "" ||
			!strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			t.Errorf("%s %s: %d %q %q; want %d with a JSON Error of code %s", c.method, c.path, resp.StatusCode,
				resp.Header.Get("Content-Type"), body, c.status, c.code)
			continue
		}
		if got := resp.Header.Get("Allow"); got != c.allow {
			t.Errorf("%s %s: Allow %q; want %q", c.method, c.path, got, c.allow)
		}
	}
}

// CORS over real HTTP: preflights and requests from an allowed origin get the grant, from
// any other origin nothing, and "*" is granted only when configured; an empty list grants
// no one.
func TestCORS(t *testing.T) {
	const app, evil = "https://app.example.com", "https://evil.example.com"
	e := newEnv(t, app, "http://localhost:5173")
	tok := "Bearer " + e.token(e.user("alice"))
	preflight := func(url, origin, method, headers string) *http.Response {
		t.Helper()
		hdr := map[string]string{"Origin": origin, "Access-Control-Request-Method": method}
		if headers != "" {
			hdr["Access-Control-Request-Headers"] = headers
		}
		resp, _ := request(t, "OPTIONS", url, hdr)
		return resp
	}
	granted := func(resp *http.Response) bool {
		return resp.Header.Get("Access-Control-Allow-Origin") != ""
	}
	vary := func(resp *http.Response) bool {
		return strings.Contains(strings.Join(resp.Header.Values("Vary"), ","), "Origin")
	}

	// Preflights from the allowed origin, for every method the API uses.
	for _, c := range []struct{ path, method, headers string }{
		{"/v1/conversations", "POST", "authorization,content-type"},
		{"/v1/conversations", "GET", "authorization"},
		{"/v1/conversations/7d1f3a52-5b0e-4c1a-9a57-2f1e0c6b9d10/messages", "POST", "authorization,content-type,idempotency-key"},
		{"/v1/conversations/7d1f3a52-5b0e-4c1a-9a57-2f1e0c6b9d10/messages/1", "PATCH", "authorization,content-type"},
		{"/v1/conversations/7d1f3a52-5b0e-4c1a-9a57-2f1e0c6b9d10/messages/1/reactions/x", "PUT", "authorization"},
		{"/v1/conversations/7d1f3a52-5b0e-4c1a-9a57-2f1e0c6b9d10/messages/1", "DELETE", "authorization"},
	} {
		resp := preflight(e.url+c.path, app, c.method, c.headers)
		if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != app ||
			!strings.Contains(resp.Header.Get("Access-Control-Allow-Methods"), c.method) ||
			resp.Header.Get("Access-Control-Allow-Headers") != c.headers ||
			resp.Header.Get("Access-Control-Max-Age") != "600" || !vary(resp) {
			t.Errorf("preflight %s %s from %s: %d %v; want 204 granting it with max-age 600 and Vary: Origin", c.method, c.path, app, resp.StatusCode, resp.Header)
		}
	}
	// Refused preflights: another origin, a method or a header the API does not use, no Origin.
	for _, c := range []struct{ origin, method, headers string }{
		{evil, "POST", "authorization,content-type"},
		{"null", "GET", ""},
		{"https://app.example.com.evil.example", "GET", ""},
		{app, "CONNECT", ""},
		{app, "POST", "authorization,x-secret"},
		{"", "POST", ""},
	} {
		resp := preflight(e.url+"/v1/conversations", c.origin, c.method, c.headers)
		if granted(resp) || resp.Header.Get("Access-Control-Allow-Methods") != "" || resp.Header.Get("Access-Control-Allow-Headers") != "" {
			t.Errorf("preflight %s from %q with headers %q: granted %v", c.method, c.origin, c.headers, resp.Header)
		}
	}
	// Actual requests: the allowed origin may read the answer (errors included) and
	// Retry-After; another origin gets no grant, and no one gets "*".
	for _, c := range []struct {
		origin string
		auth   string
		status int
		grant  bool
	}{
		{app, tok, 200, true},
		{app, "", 401, true},
		{"HTTP://LOCALHOST:5173", tok, 200, true},
		{evil, tok, 200, false},
		{"", tok, 200, false},
	} {
		hdr := map[string]string{"Authorization": c.auth}
		if c.origin != "" {
			hdr["Origin"] = c.origin
		}
		resp, _ := request(t, "GET", e.url+"/v1/conversations", hdr)
		got := resp.Header.Get("Access-Control-Allow-Origin")
		if resp.StatusCode != c.status || (got != "") != c.grant || got == "*" || !vary(resp) ||
			(c.grant && (got != c.origin || !strings.Contains(resp.Header.Get("Access-Control-Expose-Headers"), "Retry-After"))) {
			t.Errorf("GET from %q: %d, Allow-Origin %q, Expose %q, Vary %q; want %d, granted %v",
				c.origin, resp.StatusCode, got, resp.Header.Get("Access-Control-Expose-Headers"), resp.Header.Values("Vary"), c.status, c.grant)
		}
	}

	// "*" only when configured; with no origins configured, no one.
	anyone := newEnv(t, "*")
	if resp := preflight(anyone.url+"/v1/conversations", evil, "POST", "authorization"); !granted(resp) {
		t.Errorf(`with "*": preflight from %s not granted: %v`, evil, resp.Header)
	}
	none := newEnv(t)
	if resp := preflight(none.url+"/v1/conversations", app, "POST", "authorization"); granted(resp) {
		t.Errorf("with no allowed origins: preflight from %s granted: %v", app, resp.Header)
	}
}
