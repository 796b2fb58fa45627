package protocol

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// Field limits checked by Decode. Server-configurable limits (frame and body size, rates,
// subscriptions) are announced in hello and checked by the server, not here.
const (
	MaxIDBytes      = 64   // a request id
	MaxUserIDBytes  = 128  // a user id
	MaxUsersPerCall = 100  // users in one presence.subscribe or unsubscribe (the watch policy reads one inbox per user)
	MaxCursors      = 1000 // cursors in one sync
	MaxSyncLimit    = 1000 // messages in one sync.result page
	MaxTokenBytes   = 8192 // a JWT in auth.refresh
)

// Decode parses a client frame and checks that its fields fit its type. The error is an
// *Error whose code says what was wrong (bad_request, unknown_type); the returned frame keeps
// whatever id could be read so the error can answer it.
func Decode(data []byte) (Frame, error) {
	var f Frame
	if !utf8.Valid(data) {
		return f, Errorf(CodeBadRequest, "frame is not valid UTF-8")
	}
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return f, Errorf(CodeBadRequest, "frame is not a JSON object")
	}
	if err := json.Unmarshal(data, &f); err != nil {
		// Keep the id if the envelope alone is readable, so the error can name the request.
		var env struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(data, &env) == nil && len(env.ID) <= MaxIDBytes {
			f = Frame{ID: env.ID}
		} else {
			f = Frame{}
		}
		return f, Errorf(CodeBadRequest, "malformed frame: %s", jsonError(err))
	}
	return f, f.Validate()
}

// jsonError shortens encoding/json's messages to what a client developer needs.
func jsonError(err error) string {
	switch e := err.(type) {
	case *json.UnmarshalTypeError:
		return "field " + e.Field + " has the wrong type (want " + e.Type.String() + ")"
	case *json.SyntaxError:
		return "invalid JSON: " + e.Error()
	}
	return err.Error()
}

// Encode returns the JSON encoding of f.
func Encode(f Frame) ([]byte, error) {
	return json.Marshal(f)
}

// Validate checks that a client frame's fields fit its type.
func (f *Frame) Validate() error {
	if len(f.ID) > MaxIDBytes {
		id := f.ID
		f.ID = ""
		return Errorf(CodeBadRequest, "id is %d bytes, at most %d allowed", len(id), MaxIDBytes)
	}
	switch f.Type {
	case "":
		return Errorf(CodeBadRequest, "missing type")
	case TypeSend:
		if err := needUUID("conversation", f.Conversation); err != nil {
			return err
		}
		if err := needUUID("client_msg_id", f.ClientMsgID); err != nil {
			return err
		}
		if f.Body == "" {
			return Errorf(CodeBadRequest, "body is empty")
		}
	case TypeAck, TypeRead:
		if err := needUUID("conversation", f.Conversation); err != nil {
			return err
		}
		if f.Seq < 1 {
			return Errorf(CodeBadRequest, "seq must be at least 1")
		}
	case TypeSync:
		if len(f.Cursors) > MaxCursors {
			return Errorf(CodeBadRequest, "%d cursors, at most %d allowed", len(f.Cursors), MaxCursors)
		}
		for _, c := range f.Cursors {
			if err := needUUID("cursors[].conversation", c.Conversation); err != nil {
				return err
			}
			if c.Seq < 0 {
				return Errorf(CodeBadRequest, "cursor seq must not be negative")
			}
		}
		if f.Limit < 0 || f.Limit > MaxSyncLimit {
			return Errorf(CodeBadRequest, "limit %d out of range [0, %d]", f.Limit, MaxSyncLimit)
		}
	case TypePresenceSubscribe, TypePresenceUnsubscribe:
		if len(f.Users) == 0 {
			return Errorf(CodeBadRequest, "users is empty")
		}
		if len(f.Users) > MaxUsersPerCall {
			return Errorf(CodeBadRequest, "%d users, at most %d per frame", len(f.Users), MaxUsersPerCall)
		}
		for _, u := range f.Users {
			if u == "" || len(u) > MaxUserIDBytes {
				return Errorf(CodeBadRequest, "user id must be 1 to %d bytes", MaxUserIDBytes)
			}
		}
	case TypeTyping:
		if err := needUUID("conversation", f.Conversation); err != nil {
			return err
		}
	case TypePing:
	case TypeAuthRefresh:
		if f.Token == "" {
			return Errorf(CodeBadRequest, "token is empty")
		}
		if len(f.Token) > MaxTokenBytes {
			return Errorf(CodeBadRequest, "token is longer than %d bytes", MaxTokenBytes)
		}
	default:
		return Errorf(CodeUnknownType, "unknown frame type %q (a client may send %s)", clip(string(f.Type)), clientTypeList())
	}
	return nil
}

func needUUID(field, v string) error {
	if v == "" {
		return Errorf(CodeBadRequest, "%s is missing", field)
	}
	if !ValidUUID(v) {
		return Errorf(CodeBadRequest, "%s is not a UUID", field)
	}
	return nil
}

// ValidUUID reports whether s is a UUID in its canonical textual form
// (8-4-4-4-12 hexadecimal digits, either case).
func ValidUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < 36; i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// clip shortens s to at most 40 bytes on a rune boundary, for error messages.
func clip(s string) string {
	if len(s) <= 40 {
		return s
	}
	n := 40
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}

func clientTypeList() string {
	var b []byte
	for i, t := range ClientTypes {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = append(b, t...)
	}
	return string(b)
}
