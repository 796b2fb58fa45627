package historyhttp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/time/rate"

	"github.com/parleyhq/parley/delivery/ingest"
	"github.com/parleyhq/parley/history"
	"github.com/parleyhq/parley/inbox"
	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/backend"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/routing"
	"github.com/parleyhq/parley/protocol"
	"github.com/parleyhq/parley/protocol/rest"
)

// Verifier checks a bearer token (internal/auth.Authority).
type Verifier interface {
	Verify(token string) (auth.Identity, error)
}

// Publisher makes a posted message durable (delivery/ingest.Ingest).
type Publisher interface {
	Publish(ctx context.Context, s ingest.Send) error
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
}

// PresenceReader reads users' presence (presence.Presence).
type PresenceReader interface {
	States(ctx context.Context, users []chat.UserID) []protocol.PresenceState
}

// WatchPolicy decides whose presence a user may see (the edge's policy).
type WatchPolicy interface {
	Refused(ctx context.Context, watcher chat.UserID, targets []chat.UserID) ([]chat.UserID, error)
}

// EnablePresence serves GET /v1/presence from r under policy. Call before serving.
func (a *API) EnablePresence(r PresenceReader, policy WatchPolicy) { a.presence, a.policy = r, policy }

// EnableReceipts makes a read that moves the caller's position push a read receipt to the
// other members' devices and the caller's own, as the WebSocket read frame does. Call before
// serving.
func (a *API) EnableReceipts(p routing.MsgPublisher) { a.live = p }

// New returns the API. Its metrics (requests by route and status, latency by route) are
// registered on reg.
func New(cfg Config, store *history.Store, in *inbox.Inbox, verifier Verifier, pub Publisher, reg prometheus.Registerer, logger *slog.Logger) (*API, error) {
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

// Routes are the API's routes, for the table-driven authorization test and the OpenAPI file.
var Routes = []struct{ Method, Pattern string }{
	{http.MethodGet, "/v1/conversations"},
	{http.MethodPost, "/v1/conversations"},
	{http.MethodGet, "/v1/conversations/{id}"},
	{http.MethodGet, "/v1/conversations/{id}/messages"},
	{http.MethodPost, "/v1/conversations/{id}/messages"},
	{http.MethodPost, "/v1/conversations/{id}/read"},
	{http.MethodPatch, "/v1/conversations/{id}/messages/{seq}"},
	{http.MethodDelete, "/v1/conversations/{id}/messages/{seq}"},
	{http.MethodPut, "/v1/conversations/{id}/messages/{seq}/reactions/{emoji}"},
	{http.MethodDelete, "/v1/conversations/{id}/messages/{seq}/reactions/{emoji}"},
	{http.MethodPost, "/v1/conversations/{id}/members"},
	{http.MethodDelete, "/v1/conversations/{id}/members/{user}"},
	{http.MethodPost, "/v1/conversations/{id}/leave"},
	{http.MethodGet, "/v1/presence"},
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

func (a *API) register(mux interface{ Handle(string, http.Handler) }) {
	mux.Handle("GET /v1/conversations", a.authed(a.listConversations))
	mux.Handle("POST /v1/conversations", a.authed(a.createConversation))
	mux.Handle("GET /v1/conversations/{id}", a.authed(a.member(a.getConversation)))
	// Former members may still read what they saw while they were members.
	mux.Handle("GET /v1/conversations/{id}/messages", a.authed(a.formerMember(a.listMessages)))
	mux.Handle("POST /v1/conversations/{id}/messages", a.authed(a.member(a.postMessage)))
	mux.Handle("POST /v1/conversations/{id}/read", a.authed(a.member(a.markRead)))
	mux.Handle("PATCH /v1/conversations/{id}/messages/{seq}", a.authed(a.member(a.editMessage)))
	mux.Handle("DELETE /v1/conversations/{id}/messages/{seq}", a.authed(a.member(a.deleteMessage)))
	mux.Handle("PUT /v1/conversations/{id}/messages/{seq}/reactions/{emoji}", a.authed(a.member(a.react(true))))
	mux.Handle("DELETE /v1/conversations/{id}/messages/{seq}/reactions/{emoji}", a.authed(a.member(a.react(false))))
	mux.Handle("POST /v1/conversations/{id}/members", a.authed(a.member(a.addMember)))
	mux.Handle("DELETE /v1/conversations/{id}/members/{user}", a.authed(a.member(a.removeMember)))
	mux.Handle("POST /v1/conversations/{id}/leave", a.authed(a.member(a.leave)))
	mux.Handle("GET /v1/presence", a.authed(a.getPresence))
}

// MaxPresenceUsers bounds one presence query.
const MaxPresenceUsers = 100

// PresenceJSON answers GET /v1/presence.
type PresenceJSON struct {
	Presence []protocol.PresenceState `json:"presence"`
}

func (a *API) getPresence(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	if a.presence == nil {
		return &apiError{status: http.StatusServiceUnavailable, code: protocol.CodeUnavailable, msg: "presence is not served here", retryAfter: 5}
	}
	names := r.URL.Query()["user"]
	if len(names) == 0 || len(names) > MaxPresenceUsers {
		return errorf(http.StatusBadRequest, protocol.CodeBadRequest, "give 1 to %d user parameters", MaxPresenceUsers)
	}
	users := make([]chat.UserID, 0, len(names))
	for _, n := range names {
		u, err := chat.ParseUserID(n)
		if err != nil {
			return errorf(http.StatusBadRequest, protocol.CodeBadRequest, "user: %v", err)
		}
		users = append(users, u)
	}
	refused, err := a.policy.Refused(r.Context(), id.User, users)
	if err != nil {
		return err
	}
	if len(refused) > 0 {
		return errorf(http.StatusForbidden, protocol.CodeForbidden, "you may not see the presence of %s (you share no conversation)", refused[0])
	}
	writeJSON(w, http.StatusOK, PresenceJSON{Presence: a.presence.States(r.Context(), users)})
	return nil
}

// apiError is an error with its HTTP status and stable code.
type apiError struct {
	status     int
	code       protocol.Code
	msg        string
	retryAfter int
}

func (e *apiError) Error() string { return e.msg }

func errorf(status int, code protocol.Code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

// toAPIError is the one table from errors to statuses and codes.
func toAPIError(err error) *apiError {
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, history.ErrNotFound):
		return errorf(http.StatusNotFound, protocol.CodeNotFound, "no such conversation")
	case errors.Is(err, history.ErrInvalid), errors.Is(err, inbox.ErrInvalid):
		return errorf(http.StatusBadRequest, protocol.CodeBadRequest, "%v", err)
	case errors.Is(err, history.ErrTooManyMembers):
		return errorf(http.StatusBadRequest, protocol.CodeBadRequest, "%v", err)
	case errors.Is(err, chat.ErrInvalidID), errors.Is(err, chat.ErrInvalidConversation):
		return errorf(http.StatusBadRequest, protocol.CodeBadRequest, "%v", err)
	case errors.Is(err, backend.ErrUnavailable):
		return &apiError{status: http.StatusServiceUnavailable, code: protocol.CodeUnavailable, msg: "storage unavailable; retry later", retryAfter: 5}
	case errors.Is(err, context.DeadlineExceeded):
		return &apiError{status: http.StatusServiceUnavailable, code: protocol.CodeUnavailable, msg: "timed out; retry later", retryAfter: 2}
	}
	// Anything else comes from Cassandra or NATS being unreachable or overloaded.
	return &apiError{status: http.StatusServiceUnavailable, code: protocol.CodeUnavailable, msg: "storage unavailable; retry later", retryAfter: 5}
}

func (a *API) writeError(w http.ResponseWriter, r *http.Request, err error) {
	ae := toAPIError(err)
	if ae.status >= 500 {
		a.logger.Warn("api error", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	if ae.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(ae.retryAfter))
	}
	writeJSON(w, ae.status, map[string]any{"code": ae.code, "message": ae.msg, "retryable": ae.code.Retryable()})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

type handler func(w http.ResponseWriter, r *http.Request, id auth.Identity) error

type ctxKey int

const (
	convKey ctxKey = iota
	memberKey
)

// authed checks the bearer token, bounds the request, and maps the handler's error.
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
			return errorf(http.StatusNotFound, protocol.CodeNotFound, "no such conversation")
		}
		m, err := a.store.Member(r.Context(), conv, id.User)
		if err != nil {
			return err // ErrNotFound for a non-member
		}
		if !m.Active() && !former {
			return history.ErrNotFound
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
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return errorf(http.StatusUnsupportedMediaType, protocol.CodeBadRequest, "send Content-Type: application/json")
		}
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return errorf(http.StatusBadRequest, protocol.CodeBadRequest, "reading the body: %v", err)
	}
	if int64(len(body)) > limit {
		return errorf(http.StatusRequestEntityTooLarge, protocol.CodeBodyTooLarge, "body over %d bytes", limit)
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errorf(http.StatusBadRequest, protocol.CodeBadRequest, "malformed JSON body: %v", err)
	}
	return nil
}

type createRequest struct {
	Kind    string   `json:"kind"`
	With    string   `json:"with,omitempty"`
	Title   string   `json:"title,omitempty"`
	Members []string `json:"members,omitempty"`
}

func (a *API) createConversation(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	var req createRequest
	if err := decodeJSON(r, 64<<10, &req); err != nil {
		return err
	}
	var (
		conv    chat.ConversationID
		created = true
		err     error
	)
	switch req.Kind {
	case string(chat.KindDirect):
		other, perr := chat.ParseUserID(req.With)
		if perr != nil {
			return errorf(http.StatusBadRequest, protocol.CodeBadRequest, "with: %v", perr)
		}
		conv, created, err = a.store.CreateDirect(r.Context(), id.User, other, a.now())
	case string(chat.KindGroup):
		if len(req.Title) > 256 {
			return errorf(http.StatusBadRequest, protocol.CodeBadRequest, "title over 256 bytes")
		}
		members := make([]chat.UserID, 0, len(req.Members))
		for _, m := range req.Members {
			u, perr := chat.ParseUserID(m)
			if perr != nil {
				return errorf(http.StatusBadRequest, protocol.CodeBadRequest, "members: %v", perr)
			}
			members = append(members, u)
		}
		conv, err = a.store.CreateGroup(r.Context(), id.User, req.Title, members, a.now())
	default:
		return errorf(http.StatusBadRequest, protocol.CodeBadRequest, `kind must be "direct" or "group"`)
	}
	if err != nil {
		return err
	}
	out, err := a.conversationJSON(r.Context(), conv)
	if err != nil {
		return err
	}
	status := http.StatusCreated
	if !created {
		status = http.StatusOK
	}
	w.Header().Set("Location", "/v1/conversations/"+conv.String())
	writeJSON(w, status, out)
	return nil
}

func (a *API) conversationJSON(ctx context.Context, conv chat.ConversationID) (rest.Conversation, error) {
	c, err := a.store.Conversation(ctx, conv)
	if err != nil {
		return rest.Conversation{}, err
	}
	last, err := a.store.LastSeq(ctx, conv)
	if err != nil {
		return rest.Conversation{}, err
	}
	ms, err := a.store.Members(ctx, conv)
	if err != nil {
		return rest.Conversation{}, err
	}
	out := rest.Conversation{ID: conv.String(), Kind: string(c.Kind), Title: c.Title, CreatedBy: string(c.CreatedBy),
		CreatedAt: c.CreatedAt.UnixMilli(), LastSeq: last, Members: []rest.Member{}}
	for _, m := range ms {
		if m.Active() {
			out.Members = append(out.Members, rest.Member{User: string(m.User), Role: string(m.Role)})
		}
	}
	return out, nil
}

func (a *API) getConversation(w http.ResponseWriter, r *http.Request, _ auth.Identity) error {
	out, err := a.conversationJSON(r.Context(), convOf(r))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// MessagesJSON is a page of messages.
type MessagesJSON struct {
	Messages []protocol.Message `json:"messages"`
}

func (a *API) listMessages(w http.ResponseWriter, r *http.Request, _ auth.Identity) error {
	q := r.URL.Query()
	num := func(name string) (int64, bool, error) {
		v := q.Get(name)
		if v == "" {
			return 0, false, nil
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return 0, false, errorf(http.StatusBadRequest, protocol.CodeBadRequest, "%s must be a non-negative integer", name)
		}
		return n, true, nil
	}
	before, hasBefore, err := num("before")
	if err != nil {
		return err
	}
	after, hasAfter, err := num("after")
	if err != nil {
		return err
	}
	limit, _, err := num("limit")
	if err != nil {
		return err
	}
	if hasBefore && hasAfter {
		return errorf(http.StatusBadRequest, protocol.CodeBadRequest, "give before or after, not both")
	}
	limit = min(limit, 200) // clamped; 0 means the default of 50
	var page []chat.Message
	win := memberOf(r).Window()
	if hasAfter {
		page, err = a.store.After(r.Context(), convOf(r), win, after, int(limit))
	} else {
		if hasBefore && before == 0 {
			before = 1 // nothing is before seq 1
		}
		page, err = a.store.Before(r.Context(), convOf(r), win, before, int(limit))
	}
	if err != nil {
		return err
	}
	out := MessagesJSON{Messages: make([]protocol.Message, 0, len(page))}
	for _, m := range page {
		out.Messages = append(out.Messages, history.WireMessage(m))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

type postRequest struct {
	Body string `json:"body"`
}

func (a *API) postMessage(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	key := r.Header.Get("Idempotency-Key")
	cmid, err := chat.ParseConversationID(key) // a UUID, the message's client_msg_id
	if err != nil {
		return errorf(http.StatusBadRequest, protocol.CodeBadRequest, "Idempotency-Key must be a UUID (it becomes the client_msg_id)")
	}
	var req postRequest
	if err := decodeJSON(r, int64(a.cfg.MaxBodyBytes)+1024, &req); err != nil {
		return err
	}
	if req.Body == "" {
		return errorf(http.StatusBadRequest, protocol.CodeBadRequest, "body is empty")
	}
	if len(req.Body) > a.cfg.MaxBodyBytes {
		return errorf(http.StatusRequestEntityTooLarge, protocol.CodeBodyTooLarge, "body over %d bytes", a.cfg.MaxBodyBytes)
	}
	now := a.now()
	device := id.Device
	if device == "" {
		device = "rest"
	}
	if err := a.pub.Publish(r.Context(), ingest.Send{Conversation: convOf(r), Sender: id.User, SenderDevice: device,
		ClientMsgID: cmid, Body: req.Body, Kind: chat.MessageText, AcceptedAt: now}); err != nil {
		return &apiError{status: http.StatusServiceUnavailable, code: protocol.CodeUnavailable,
			msg: "message not accepted; retry with the same Idempotency-Key", retryAfter: 1}
	}
	writeJSON(w, http.StatusAccepted, rest.Accepted{Conversation: convOf(r).String(), ClientMsgID: cmid.String(),
		Kind: string(chat.MessageText), AcceptedAt: now.UnixMilli()})
	return nil
}

func (a *API) listConversations(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	limit := 50
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return errorf(http.StatusBadRequest, protocol.CodeBadRequest, "limit must be a non-negative integer")
		}
		if n > 0 {
			limit = min(n, 200)
		}
	}
	offset := 0
	if v := r.URL.Query().Get("cursor"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return errorf(http.StatusBadRequest, protocol.CodeBadRequest, "cursor is not one this API returned")
		}
		offset = n
	}
	entries, err := a.inbox.List(r.Context(), id.User)
	if err != nil {
		return err
	}
	out := rest.Inbox{Conversations: []rest.InboxEntry{}}
	for i := offset; i < len(entries) && len(out.Conversations) < limit; i++ {
		e := entries[i]
		out.Conversations = append(out.Conversations, rest.InboxEntry{ID: e.Conversation.String(), Kind: string(e.Kind),
			Title: e.Title, LastSeq: e.LastSeq, ReadSeq: e.ReadSeq, Unread: e.Unread(), LastAt: e.LastAt.UnixMilli(),
			LastSender: string(e.LastSender), LastPreview: e.Preview})
	}
	if offset+limit < len(entries) {
		out.Next = strconv.Itoa(offset + limit)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

type readRequest struct {
	Seq int64 `json:"seq"`
}

// ReadJSON answers a read: the read position after it.
type ReadJSON struct {
	ReadSeq int64 `json:"read_seq"`
}

func (a *API) markRead(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	var req readRequest
	if err := decodeJSON(r, 1024, &req); err != nil {
		return err
	}
	if req.Seq < 1 {
		return errorf(http.StatusBadRequest, protocol.CodeBadRequest, "seq must be at least 1")
	}
	read, moved, err := a.inbox.MarkRead(r.Context(), id.User, convOf(r), req.Seq)
	if err != nil {
		return err
	}
	if moved && a.live != nil {
		a.pushReadReceipt(r.Context(), convOf(r), id.User, read)
	}
	writeJSON(w, http.StatusOK, ReadJSON{ReadSeq: read})
	return nil
}

// pushReadReceipt tells the members' devices, the reader's own included, that reader has read
// up to seq. Best effort: sync carries read positions too.
func (a *API) pushReadReceipt(ctx context.Context, conv chat.ConversationID, reader chat.UserID, seq int64) {
	members, err := a.store.Members(ctx, conv)
	if err != nil {
		return
	}
	var to []chat.UserID
	for _, m := range members {
		if m.Active() {
			to = append(to, m.User)
		}
	}
	data, err := protocol.Encode(protocol.Frame{Type: protocol.TypeReceipt, Conversation: conv.String(), Seq: seq,
		User: string(reader), Kind: "read", TS: a.now().UnixMilli()})
	if err != nil {
		return
	}
	routing.Publish(a.live, to, string(protocol.TypeReceipt), data)
}

// userLimits holds one token bucket per user (golang.org/x/time/rate). Buckets idle for a
// minute are dropped, so the map holds only recently active users.
type userLimits struct {
	limit rate.Limit
	burst int

	mu    sync.Mutex
	users map[chat.UserID]*userLimit
	swept time.Time
}

type userLimit struct {
	l    *rate.Limiter
	seen time.Time
}

func newUserLimits(limit rate.Limit, burst int) *userLimits {
	return &userLimits{limit: limit, burst: burst, users: map[chat.UserID]*userLimit{}}
}

func (u *userLimits) allow(user chat.UserID, now time.Time) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if now.Sub(u.swept) > time.Minute {
		for k, v := range u.users {
			if now.Sub(v.seen) > time.Minute {
				delete(u.users, k)
			}
		}
		u.swept = now
	}
	ul := u.users[user]
	if ul == nil {
		ul = &userLimit{l: rate.NewLimiter(u.limit, u.burst)}
		u.users[user] = ul
	}
	ul.seen = now
	return ul.l.AllowN(now, 1)
}
