package protocol

import "fmt"

// Code is a stable, machine-readable error code carried by error frames (and by the REST API's
// error bodies). Clients switch on it; the message is for people.
type Code string

// Error codes. docs/protocol.md has the table; Retryable says which may be retried as is.
const (
	// CodeBadRequest: the frame is not a JSON object, or a field is missing or invalid.
	CodeBadRequest Code = "bad_request"
	// CodeUnknownType: the frame's type is not one a client may send.
	CodeUnknownType Code = "unknown_type"
	// CodeUnsupported: a valid frame type that this server does not handle (the part that
	// handles it is not deployed or not built yet).
	CodeUnsupported Code = "unsupported"
	// CodeUnauthorized: the token is missing, malformed, badly signed or has wrong claims.
	CodeUnauthorized Code = "unauthorized"
	// CodeTokenExpired: the token's exp has passed; get a new token.
	CodeTokenExpired Code = "token_expired"
	// CodeTokenRevoked: the token was revoked (a logout, a lost device); sign in again for a
	// new token.
	CodeTokenRevoked Code = "token_revoked"
	// CodeForbidden: authenticated, but not allowed (e.g. a device id that differs from the token's).
	CodeForbidden Code = "forbidden"
	// CodeNotFound: no such conversation, or the user is not a member (the same answer).
	CodeNotFound Code = "not_found"
	// CodeConflict: the request conflicts with the current state.
	CodeConflict Code = "conflict"
	// CodeBodyTooLarge: a message body exceeds max_body_bytes.
	CodeBodyTooLarge Code = "body_too_large"
	// CodeRateLimited: too many frames; wait retry_after_ms.
	CodeRateLimited Code = "rate_limited"
	// CodeTooManySubscriptions: presence.subscribe would exceed max_subscriptions.
	CodeTooManySubscriptions Code = "too_many_subscriptions"
	// CodeUnavailable: a dependency is down; the same request may succeed later.
	CodeUnavailable Code = "unavailable"
	// CodeInternal: an unexpected server error; the request may be retried.
	CodeInternal Code = "internal"
)

// Retryable reports whether a request that failed with c may be retried unchanged.
func (c Code) Retryable() bool {
	switch c {
	case CodeRateLimited, CodeUnavailable, CodeInternal:
		return true
	}
	return false
}

// Codes lists every error code, in the order of docs/protocol.md.
var Codes = []Code{CodeBadRequest, CodeUnknownType, CodeUnsupported, CodeUnauthorized,
	CodeTokenExpired, CodeTokenRevoked, CodeForbidden, CodeNotFound, CodeConflict, CodeBodyTooLarge,
	CodeRateLimited, CodeTooManySubscriptions, CodeUnavailable, CodeInternal}

// Error is a protocol error: what the server sends as an error frame.
type Error struct {
	Code    Code
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

// Errorf returns an *Error with a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorFrame builds the error frame answering the request with id (may be empty).
func ErrorFrame(id string, e *Error) Frame {
	return Frame{Type: TypeError, ID: id, Code: e.Code, Message: e.Message, Retryable: e.Code.Retryable()}
}

// WebSocket close codes used by Parley. 1000-1011 are RFC 6455's; 4000-4999 are Parley's.
const (
	CloseNormal          = 1000 // the client or server is done
	CloseGoingAway       = 1001 // the server is draining; a reconnect frame came first
	CloseProtocolError   = 1002 // a frame that breaks RFC 6455 (reserved bits, unmasked, bad opcode...)
	CloseUnsupportedData = 1003 // a binary frame: Parley v1 is JSON text only
	CloseInvalidPayload  = 1007 // a text frame that is not valid UTF-8
	ClosePolicyViolation = 1008 // the server refuses the connection's behaviour
	CloseMessageTooBig   = 1009 // a frame larger than max_frame_bytes
	CloseInternalError   = 1011 // an unexpected server error
	CloseTokenExpired    = 4001 // the token expired and was not refreshed in time
	CloseTokenRevoked    = 4003 // the token was revoked; sign in again for a new one
	CloseRateLimited     = 4008 // the client kept sending after rate_limited errors
	CloseSlowConsumer    = 4009 // the client did not read fast enough; reconnect and sync
	CloseReplaced        = 4010 // reserved: the same device connected again elsewhere
)
