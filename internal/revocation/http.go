package revocation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/protocol"
)

// maxRequestBytes bounds the body of POST /admin/v1/revocations.
const maxRequestBytes = 4 << 10

// requestTimeout bounds the bucket operations of one admin request.
const requestTimeout = 10 * time.Second

// revokeRequest is the body of POST /admin/v1/revocations: a user, a user and a device, or a
// jti. The time of the revocation is the server's.
type revokeRequest struct {
	User    string `json:"user"`
	Device  string `json:"device"`
	TokenID string `json:"jti"`
}

// ServeRevoke serves POST /admin/v1/revocations: 201 with the stored revocation, 400
// bad_request for a body that names nothing or too much, 503 unavailable when the bucket
// does not answer. The admin server checks the credential first.
func (s *Store) ServeRevoke(w http.ResponseWriter, r *http.Request) {
	if !protocol.JSONContentType(r.Header.Get("Content-Type")) {
		writeError(w, http.StatusUnsupportedMediaType, protocol.CodeBadRequest, "Content-Type must be application/json")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBytes))
	if err != nil {
		writeError(w, http.StatusBadRequest, protocol.CodeBadRequest, fmt.Sprintf("body: over %d bytes, or unreadable", maxRequestBytes))
		return
	}
	var req revokeRequest
	// Strict like every other body: no unknown, duplicate or case-variant keys.
	if err := protocol.UnmarshalStrict(body, &req); err != nil {
		writeError(w, http.StatusBadRequest, protocol.CodeBadRequest, "body: want a JSON object with user, user and device, or jti: "+err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	rev, err := s.Revoke(ctx, auth.Revocation{User: chat.UserID(req.User), Device: chat.DeviceID(req.Device), TokenID: req.TokenID})
	switch {
	case errors.Is(err, ErrInvalid):
		writeError(w, http.StatusBadRequest, protocol.CodeBadRequest, err.Error())
		return
	case err != nil:
		s.logger.Warn("revoke", "err", err)
		writeError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "the revocation store did not answer; retry")
		return
	}
	s.logger.Info("token revocation stored", "user", rev.User, "device", rev.Device, "jti", rev.TokenID != "",
		"remote", r.RemoteAddr)
	writeJSON(w, http.StatusCreated, rev)
}

// ServeList serves GET /admin/v1/revocations: 200 {"revocations": [...]}, oldest first.
func (s *Store) ServeList(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	revs, err := s.List(ctx)
	if err != nil {
		s.logger.Warn("list revocations", "err", err)
		writeError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "the revocation store did not answer; retry")
		return
	}
	if revs == nil {
		revs = []auth.Revocation{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"revocations": revs})
}

func writeError(w http.ResponseWriter, status int, code protocol.Code, msg string) {
	if code.Retryable() {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, status, map[string]any{"code": code, "message": msg, "retryable": code.Retryable()})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
