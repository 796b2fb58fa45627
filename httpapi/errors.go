package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/parleyhq/parley/internal/wire"
	"github.com/parleyhq/parley/protocol"
)

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

// toAPIError answers err: an *apiError a handler chose as it is, anything else by the one
// table of internal/wire (the same the WebSocket edge uses).
func toAPIError(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	f := wire.Map(err)
	return &apiError{status: f.Status, code: f.Code, msg: f.Message, retryAfter: int(f.RetryAfter / time.Second)}
}

func (a *API) writeError(w http.ResponseWriter, r *http.Request, err error) {
	ae := toAPIError(err)
	if ae.status >= 500 {
		a.logger.Warn("api error", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeAPIError(w, ae)
}

// writeAPIError writes the JSON Error body of docs/openapi.yaml.
func writeAPIError(w http.ResponseWriter, ae *apiError) {
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
