package httpapi

import (
	"net/http"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/rs/cors"

	"github.com/parleyhq/parley/internal/origin"
	"github.com/parleyhq/parley/protocol"
)

// CORS is the REST API's cross-origin policy for browsers.
type CORS struct {
	// AllowedOrigins are the browser origins granted access (internal/origin: an origin, or
	// "*" for any): the same list the edge admits at its WebSocket handshake. Empty: none.
	AllowedOrigins []string
	// MaxAge is how long a browser may keep a preflight's answer. Default DefaultCORSMaxAge.
	MaxAge time.Duration
}

// DefaultCORSMaxAge is how long browsers cache a preflight by default (Chromium caps it at
// two hours anyway).
const DefaultCORSMaxAge = 10 * time.Minute

// CORSHeaders are the request headers a cross-origin request may carry, and CORSExposed the
// response headers its script may read.
var (
	CORSHeaders = []string{"Authorization", "Content-Type", "Idempotency-Key"}
	CORSExposed = []string{"Location", "Retry-After", "WWW-Authenticate"}
)

// Public returns the public listener's handler around mux (which carries the API's routes,
// and the edge's and the OpenAPI document's when the process has them):
//
//   - CORS (github.com/rs/cors): a preflight (OPTIONS with Access-Control-Request-Method)
//     from an allowed origin is answered 204 with the methods the API serves, CORSHeaders
//     and a max-age; a request from an allowed origin gets Access-Control-Allow-Origin
//     (the origin itself) and CORSExposed; any other origin gets no CORS header at all. Every
//     answer says Vary: Origin.
//   - the API's JSON Error body for what no route takes: 404 not_found for an unknown path,
//     405 bad_request with Allow for a known path and another method, and 400 bad_request for
//     a path that is not in canonical form (an empty, "." or ".." segment), where net/http
//     would answer plain text or redirect, and a client following the redirect could post
//     to another route than it named.
func Public(mux *http.ServeMux, c CORS) http.Handler {
	if c.MaxAge <= 0 {
		c.MaxAge = DefaultCORSMaxAge
	}
	allowed := slices.Clone(c.AllowedOrigins)
	return cors.New(cors.Options{
		// A function rather than AllowedOrigins: the edge's matching, and an empty list
		// allows nothing (rs/cors takes an empty AllowedOrigins for "*").
		AllowOriginFunc: func(o string) bool { return origin.Allowed(allowed, o) },
		AllowedMethods:  apiMethods(),
		AllowedHeaders:  CORSHeaders,
		ExposedHeaders:  CORSExposed,
		MaxAge:          int(c.MaxAge / time.Second),
	}).Handler(routeErrors{mux})
}

// apiMethods are the methods of the API's routes.
func apiMethods() []string {
	ms := []string{http.MethodHead}
	for _, r := range Routes() {
		ms = append(ms, r.Method)
	}
	slices.Sort(ms)
	return slices.Compact(ms)
}

// routeErrors serves mux, answering with the JSON Error body whatever mux has no route for.
type routeErrors struct{ mux *http.ServeMux }

func (m routeErrors) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if p := r.URL.EscapedPath(); r.Method != http.MethodConnect && !canonical(p) {
		writeAPIError(w, errorf(http.StatusBadRequest, protocol.CodeBadRequest,
			"the path is not in canonical form (an empty, . or .. segment); no route has one"))
		return
	}
	h, pattern := m.mux.Handler(r)
	if pattern != "" {
		m.mux.ServeHTTP(w, r)
		return
	}
	// mux's own answer (404, or 405 with Allow), recorded to be said in JSON.
	rec := &recorder{header: http.Header{}}
	h.ServeHTTP(rec, r)
	if rec.status == http.StatusMethodNotAllowed {
		allow := rec.header.Get("Allow")
		w.Header().Set("Allow", allow)
		writeAPIError(w, errorf(http.StatusMethodNotAllowed, protocol.CodeBadRequest,
			"method %s is not allowed here (allowed: %s)", clip(r.Method), allow))
		return
	}
	writeAPIError(w, errorf(http.StatusNotFound, protocol.CodeNotFound, "no such route (docs/openapi.yaml lists them)"))
}

// canonical reports whether an escaped path is what ServeMux would not redirect: rooted,
// without empty, "." or ".." segments (a trailing slash is kept).
func canonical(p string) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c == p
}

// clip bounds a request value echoed in a message.
func clip(s string) string {
	if len(s) > 32 {
		return s[:32] + "..."
	}
	return s
}

// recorder keeps the header and status a handler writes and discards its body.
type recorder struct {
	header http.Header
	status int
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
}
func (r *recorder) Write(b []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	return len(b), nil
}
