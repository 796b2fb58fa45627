package httpapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/time/rate"

	"github.com/parleyhq/parley/delivery/ingest"
	"github.com/parleyhq/parley/history"
	"github.com/parleyhq/parley/inbox"
	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/cursor"
	"github.com/parleyhq/parley/internal/routing"
	"github.com/parleyhq/parley/protocol"
)

// Verifier checks a bearer token (internal/auth.Authority).
type Verifier interface {
	Verify(token string) (auth.Identity, error)
}

// Publisher makes a posted message durable (delivery/ingest.Ingest).
type Publisher interface {
	Publish(ctx context.Context, s ingest.Entry) error
}

var (
	_ Verifier  = (*auth.Authority)(nil)
	_ Publisher = (*ingest.Ingest)(nil)
)

// Config configures the API. Zero values take the defaults.
type Config struct {
	// MaxBodyBytes bounds a message body (as the edge's max_body_bytes). Default 16 KiB.
	MaxBodyBytes int
	// RequestTimeout bounds each request's work. Default 10s.
	RequestTimeout time.Duration
	// RequestsPerSecond and Burst limit each user's requests (token bucket); above them the
	// API answers 429 with Retry-After. Defaults 20 and 40.
	RequestsPerSecond int
	Burst             int
	// Cursors signs and checks the page cursors the API returns (internal/cursor). Required.
	Cursors *cursor.Keys
}

// API serves the history routes.
type API struct {
	cfg      Config
	store    *history.Store
	inbox    *inbox.Inbox
	verifier Verifier
	pub      Publisher
	logger   *slog.Logger
	now      func() time.Time
	limits   *userLimits
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	live     routing.MsgPublisher // nil: no live receipts
	presence PresenceReader       // nil: GET /v1/presence answers 503
	policy   WatchPolicy
	revoked  Revocations // nil: no revocations
}

// EnableReceipts makes a read that moves the caller's position push a read receipt to the
// other members' devices and the caller's own, as the WebSocket read frame does. Call before
// serving.
func (a *API) EnableReceipts(p routing.MsgPublisher) { a.live = p }

// New returns the API. Its metrics (requests by route and status, latency by route) are
// registered on reg.
func New(cfg Config, store *history.Store, in *inbox.Inbox, verifier Verifier, pub Publisher, reg prometheus.Registerer, logger *slog.Logger) (*API, error) {
	if cfg.Cursors == nil {
		return nil, errors.New("history api: Config.Cursors is required (it signs page cursors)")
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = 16 << 10
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 10 * time.Second
	}
	if cfg.RequestsPerSecond == 0 {
		cfg.RequestsPerSecond = 20
	}
	if cfg.Burst == 0 {
		cfg.Burst = 40
	}
	a := &API{cfg: cfg, store: store, inbox: in, verifier: verifier, pub: pub, logger: logger, now: time.Now,
		limits: newUserLimits(rate.Limit(cfg.RequestsPerSecond), cfg.Burst),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_api_requests_total",
			Help: "History API requests by route and HTTP status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "parley_api_request_duration_seconds",
			Help:    "History API request latency by route.",
			Buckets: []float64{.001, .0025, .005, .01, .02, .03, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route"}),
	}
	for _, c := range []prometheus.Collector{a.requests, a.duration} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("history api metrics: %w", err)
		}
	}
	return a, nil
}

// Register adds the routes to mux.
func (a *API) Register(mux *http.ServeMux) {
	a.register(instrumented{mux, a})
}

// instrumented wraps each route in the request counter and latency histogram, labelled
// with the route pattern (never the raw path: ids would make the label set unbounded).
type instrumented struct {
	mux *http.ServeMux
	a   *API
}

func (m instrumented) Handle(pattern string, h http.Handler) {
	labels := prometheus.Labels{"route": pattern}
	m.mux.Handle(pattern, promhttp.InstrumentHandlerDuration(m.a.duration.MustCurryWith(labels),
		promhttp.InstrumentHandlerCounter(m.a.requests.MustCurryWith(labels), h)))
}

// route is one route of the API: its method, its pattern and its handler.
type route struct {
	Method, Pattern string
	h               http.Handler
}

// routes is the one list of the API's routes.
func (a *API) routes() []route {
	return []route{
		{http.MethodGet, "/v1/conversations", a.authed(a.listConversations)},
		{http.MethodPost, "/v1/conversations", a.authed(a.createConversation)},
		{http.MethodGet, "/v1/conversations/{id}", a.authed(a.member(a.getConversation))},
		// Former members may still read what they saw while they were members.
		{http.MethodGet, "/v1/conversations/{id}/messages", a.authed(a.formerMember(a.listMessages))},
		{http.MethodPost, "/v1/conversations/{id}/messages", a.authed(a.member(a.postMessage))},
		{http.MethodPost, "/v1/conversations/{id}/read", a.authed(a.member(a.markRead))},
		{http.MethodPatch, "/v1/conversations/{id}/messages/{seq}", a.authed(a.member(a.editMessage))},
		{http.MethodDelete, "/v1/conversations/{id}/messages/{seq}", a.authed(a.member(a.deleteMessage))},
		{http.MethodPut, "/v1/conversations/{id}/messages/{seq}/reactions/{emoji}", a.authed(a.member(a.react(true)))},
		{http.MethodDelete, "/v1/conversations/{id}/messages/{seq}/reactions/{emoji}", a.authed(a.member(a.react(false)))},
		{http.MethodPost, "/v1/conversations/{id}/members", a.authed(a.member(a.addMember))},
		{http.MethodDelete, "/v1/conversations/{id}/members/{user}", a.authed(a.member(a.removeMember))},
		{http.MethodPost, "/v1/conversations/{id}/leave", a.authed(a.member(a.leave))},
		{http.MethodGet, "/v1/presence", a.authed(a.getPresence)},
	}
}

// Route is a route's method and pattern.
type Route struct{ Method, Pattern string }

// Routes lists the API's routes, for the table-driven authorization test and the OpenAPI
// check.
func Routes() []Route {
	rs := (&API{}).routes()
	out := make([]Route, len(rs))
	for i, r := range rs {
		out[i] = Route{r.Method, r.Pattern}
	}
	return out
}

func (a *API) register(mux interface{ Handle(string, http.Handler) }) {
	for _, r := range a.routes() {
		mux.Handle(r.Method+" "+r.Pattern, r.h)
	}
}

type handler func(w http.ResponseWriter, r *http.Request, id auth.Identity) error

type ctxKey int

const (
	convKey ctxKey = iota
	memberKey
)

// authed checks the bearer token and that it is not revoked, bounds the request, and maps the
// handler's error.
func (a *API) authed(h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" || len(token) > protocol.MaxTokenBytes {
			w.Header().Set("WWW-Authenticate", `Bearer realm="parley"`)
			a.writeError(w, r, errorf(http.StatusUnauthorized, protocol.CodeUnauthorized, "send Authorization: Bearer <JWT>"))
			return
		}
		id, err := a.verifier.Verify(strings.TrimSpace(token))
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="parley", error="invalid_token"`)
			code := protocol.CodeUnauthorized
			if errors.Is(err, auth.ErrExpiredToken) {
				code = protocol.CodeTokenExpired
			}
			a.writeError(w, r, errorf(http.StatusUnauthorized, code, "invalid or expired token"))
			return
		}
		if a.revoked != nil && a.revoked.Revoked(id, id.Device) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="parley", error="invalid_token"`)
			a.writeError(w, r, errorf(http.StatusUnauthorized, protocol.CodeTokenRevoked, "token revoked: sign in again"))
			return
		}
		if !a.limits.allow(id.User, a.now()) {
			a.writeError(w, r, &apiError{status: http.StatusTooManyRequests, code: protocol.CodeRateLimited,
				msg: fmt.Sprintf("more than %d requests per second", a.cfg.RequestsPerSecond), retryAfter: 1})
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), a.cfg.RequestTimeout)
		defer cancel()
		if err := h(w, r.WithContext(ctx), id); err != nil {
			a.writeError(w, r, err)
		}
	})
}

// member resolves {id} and lets only current members through; anyone else gets the 404 of a
// conversation that does not exist.
func (a *API) member(h handler) handler { return a.membership(h, false) }

// formerMember is member that also lets through users who left or were removed (their
// Window ends where they left).
func (a *API) formerMember(h handler) handler { return a.membership(h, true) }

func (a *API) membership(h handler, former bool) handler {
	return func(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
		conv, err := chat.ParseConversationID(r.PathValue("id"))
		if err != nil {
			// Said before membership is looked at, so it tells a stranger nothing.
			return errorf(http.StatusBadRequest, protocol.CodeBadRequest, "the conversation id in the path is not a UUID")
		}
		m, err := a.store.Member(r.Context(), conv, id.User)
		if err != nil {
			return err // ErrNotFound for a non-member
		}
		if !m.Active() && !former {
			return chat.ErrNotFound
		}
		ctx := context.WithValue(context.WithValue(r.Context(), convKey, conv), memberKey, m)
		return h(w, r.WithContext(ctx), id)
	}
}

func convOf(r *http.Request) chat.ConversationID {
	return r.Context().Value(convKey).(chat.ConversationID)
}

// memberOf is the caller's membership, set by member and formerMember.
func memberOf(r *http.Request) history.Member {
	return r.Context().Value(memberKey).(history.Member)
}

// decodeJSON reads a JSON body of at most limit bytes into v.
func decodeJSON(r *http.Request, limit int64, v any) error {
	if !protocol.JSONContentType(r.Header.Get("Content-Type")) {
		return errorf(http.StatusUnsupportedMediaType, protocol.CodeBadRequest,
			"send Content-Type: application/json (a charset parameter, if any, must be utf-8)")
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return errorf(http.StatusBadRequest, protocol.CodeBadRequest, "reading the body: %v", err)
	}
	if int64(len(body)) > limit {
		return errorf(http.StatusRequestEntityTooLarge, protocol.CodeBodyTooLarge, "body over %d bytes", limit)
	}
	// Strictly, as frames: no duplicate keys, exact-case keys, no unknown keys.
	if err := protocol.UnmarshalStrict(body, v); err != nil {
		var pe *protocol.Error
		if errors.As(err, &pe) {
			err = errors.New(pe.Message)
		}
		return errorf(http.StatusBadRequest, protocol.CodeBadRequest, "malformed JSON body: %v", err)
	}
	return nil
}
