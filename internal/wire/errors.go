package wire

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/parleyhq/parley/internal/breaker"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/protocol"
)

// Failure is how an error is answered: its protocol code (retryable or not, see
// protocol.Code.Retryable), the HTTP status of the same code, a message safe to show the
// client, and for a retryable failure how long to wait.
type Failure struct {
	Code       protocol.Code
	Status     int
	Message    string
	RetryAfter time.Duration
}

// Error is the failure as a protocol error (for an error frame).
func (f Failure) Error() *protocol.Error { return &protocol.Error{Code: f.Code, Message: f.Message} }

// Retry-After hints of the unavailable answers.
const (
	storageRetryAfter = 5 * time.Second
	timeoutRetryAfter = 2 * time.Second
)

// Map is the one table from errors to answers, shared by the WebSocket edge and the REST API.
// An error it does not know is taken for a store or queue being unreachable or overloaded
// (retryable; the cause is for the logs, not the client).
func Map(err error) Failure {
	var pe *protocol.Error
	switch {
	case errors.As(err, &pe):
		return Failure{Code: pe.Code, Status: Status(pe.Code), Message: pe.Message}
	case errors.Is(err, chat.ErrNotFound):
		return failure(protocol.CodeNotFound, "no such conversation")
	case errors.Is(err, chat.ErrInvalid), errors.Is(err, chat.ErrTooManyMembers), errors.Is(err, chat.ErrInvalidID),
		errors.Is(err, chat.ErrInvalidConversation), errors.Is(err, chat.ErrInvalidClientMsgID):
		return failure(protocol.CodeBadRequest, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		f := failure(protocol.CodeUnavailable, "timed out; retry later")
		f.RetryAfter = timeoutRetryAfter
		return f
	case errors.Is(err, breaker.ErrUnavailable):
		f := failure(protocol.CodeUnavailable, "storage unavailable; retry later")
		f.RetryAfter = storageRetryAfter
		return f
	}
	f := failure(protocol.CodeUnavailable, "storage unavailable; retry later")
	f.RetryAfter = storageRetryAfter
	return f
}

// ProtocolError is Map(err) as a protocol error.
func ProtocolError(err error) *protocol.Error { return Map(err).Error() }

func failure(code protocol.Code, msg string) Failure {
	return Failure{Code: code, Status: Status(code), Message: msg}
}

// Status is the HTTP status of a protocol code.
func Status(code protocol.Code) int {
	switch code {
	case protocol.CodeBadRequest, protocol.CodeUnknownType, protocol.CodeUnsupported, protocol.CodeTooManySubscriptions:
		return http.StatusBadRequest
	case protocol.CodeUnauthorized, protocol.CodeTokenExpired, protocol.CodeTokenRevoked:
		return http.StatusUnauthorized
	case protocol.CodeForbidden:
		return http.StatusForbidden
	case protocol.CodeNotFound:
		return http.StatusNotFound
	case protocol.CodeConflict:
		return http.StatusConflict
	case protocol.CodeBodyTooLarge:
		return http.StatusRequestEntityTooLarge
	case protocol.CodeRateLimited:
		return http.StatusTooManyRequests
	case protocol.CodeUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}
