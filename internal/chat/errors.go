package chat

import "errors"

// Sentinel errors of the stores (history, inbox), returned wrapped. internal/wire maps each,
// once, to a protocol code and an HTTP status.
var (
	// ErrNotFound: no such conversation, or the user is not a member (answered the same way,
	// so a non-member learns nothing).
	ErrNotFound = errors.New("not found")
	// ErrInvalid: the request is malformed (an empty member list, a bad limit, a since-token
	// this server did not issue).
	ErrInvalid = errors.New("invalid request")
	// ErrTooManyMembers: a group would exceed its configured size.
	ErrTooManyMembers = errors.New("too many members")
)
