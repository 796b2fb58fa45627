package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"reflect"
	"strings"
	"unicode/utf8"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
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
//
// The JSON is read strictly (docs/protocol.md, "Strict JSON"): a duplicate key in any
// object, nested ones included, is refused, and keys match field names exactly, so a key
// that differs from a field's name only in case ("TYPE") is refused too, where encoding/json
// would have let it set the field. Other unknown keys are ignored (forward compatibility).
func Decode(data []byte) (Frame, error) {
	var f Frame
	if !utf8.Valid(data) {
		return f, Errorf(CodeBadRequest, "frame is not valid UTF-8")
	}
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return f, Errorf(CodeBadRequest, "frame is not a JSON object")
	}
	if err := jsonv2.Unmarshal(data, &f, frameOptions); err != nil {
		// Keep the id if the envelope alone is readable, so the error can name the request.
		return Frame{ID: requestID(data)}, Errorf(CodeBadRequest, "malformed frame: %s", jsonError(err))
	}
	return f, f.Validate()
}

// UnmarshalStrict decodes data, one JSON value, into v by the rules of every JSON input to
// Parley (the REST API's bodies): no duplicate keys in any object, keys matched to field
// names exactly (case included), no unknown keys. The error is an *Error with code
// bad_request whose message says what is wrong and where.
func UnmarshalStrict(data []byte, v any) error {
	if err := jsonv2.Unmarshal(data, v, bodyOptions); err != nil {
		return &Error{Code: CodeBadRequest, Message: jsonError(err)}
	}
	return nil
}

// The decoders' options. github.com/go-json-experiment/json is encoding/json/v2 as a module
// (the standard library's needs GOEXPERIMENT=jsonv2 before Go 1.27, and the module then
// aliases it): its defaults are already strict about duplicate keys (in every object, also
// inside ignored values), case and invalid UTF-8. Frames ignore unknown members, but each
// struct a frame can hold gets an unmarshaler that refuses a case variant of one of its
// fields (TestStrictCoversEveryStruct keeps the list complete).
var (
	frameOptions = jsonv2.WithUnmarshalers(jsonv2.JoinUnmarshalers(
		refuseCaseVariants[Frame](), refuseCaseVariants[Cursor](), refuseCaseVariants[Message](),
		refuseCaseVariants[Reaction](), refuseCaseVariants[Conversation](),
		refuseCaseVariants[PresenceState](), refuseCaseVariants[Limits]()))
	bodyOptions = jsonv2.RejectUnknownMembers(true)
)

// withUnknown decodes a T and collects the members T has no field for.
type withUnknown[T any] struct {
	V       *T                        `json:",embed"`
	Unknown map[string]jsontext.Value `json:",embed"`
}

// refuseCaseVariants decodes a T ignoring unknown members, except one whose name differs
// from a field's only in case.
func refuseCaseVariants[T any]() *jsonv2.Unmarshalers {
	return jsonv2.UnmarshalFromFunc(func(dec *jsontext.Decoder, v *T) error {
		in := withUnknown[T]{V: v}
		if err := jsonv2.UnmarshalDecode(dec, &in); err != nil {
			return err
		}
		for name := range in.Unknown {
			if field := caseVariantOf(reflect.TypeFor[T](), name); field != "" {
				return &caseVariantError{name: name, field: field}
			}
		}
		return nil
	})
}

// caseVariantError is a key that differs from a field's name only in case.
type caseVariantError struct{ name, field string }

func (e *caseVariantError) Error() string {
	return fmt.Sprintf("key %q: keys are case-sensitive (the field is %q)", e.name, e.field)
}

// caseVariantOf returns the JSON name of t's field that name matches in another case, or "".
func caseVariantOf(t reflect.Type, name string) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return ""
	}
	for i := 0; i < t.NumField(); i++ {
		field, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if field != "" && field != "-" && field != name && strings.EqualFold(field, name) {
			return field
		}
	}
	return ""
}

// requestID reads the top-level "id" of a frame that failed to decode: the id if the frame
// is a well-formed JSON object (duplicate keys aside) with exactly one "id", a string of at
// most MaxIDBytes; else "".
func requestID(data []byte) string {
	dec := jsontext.NewDecoder(bytes.NewReader(data), jsontext.AllowDuplicateNames(true))
	if tok, err := dec.ReadToken(); err != nil || tok.Kind() != '{' {
		return ""
	}
	id, ids := "", 0
	for dec.PeekKind() == '"' {
		name, err := dec.ReadToken()
		if err != nil {
			return ""
		}
		if name.String() == "id" {
			ids++
			if dec.PeekKind() == '"' {
				tok, err := dec.ReadToken()
				if err != nil {
					return ""
				}
				id = tok.String()
				continue
			}
		}
		if dec.SkipValue() != nil {
			return ""
		}
	}
	if tok, err := dec.ReadToken(); err != nil || tok.Kind() != '}' || ids != 1 || len(id) > MaxIDBytes {
		return ""
	}
	return id
}

// jsonError says what is wrong with a JSON input, in terms a client developer can act on.
func jsonError(err error) string {
	var cv *caseVariantError
	var syn *jsontext.SyntacticError
	var sem *jsonv2.SemanticError
	switch {
	case errors.As(err, &cv):
		if errors.As(err, &sem) && sem.JSONPointer != "" {
			return cv.Error() + " in " + string(sem.JSONPointer)
		}
		return cv.Error()
	case errors.As(err, &syn) && errors.Is(syn.Err, jsontext.ErrDuplicateName):
		return fmt.Sprintf("duplicate key %q%s", syn.JSONPointer.LastToken(), in(syn.JSONPointer.Parent()))
	case errors.As(err, &syn):
		return fmt.Sprintf("invalid JSON at byte %d: %v", syn.ByteOffset, syn.Err)
	case errors.As(err, &sem) && errors.Is(sem.Err, jsonv2.ErrUnknownName):
		name := sem.JSONPointer.LastToken()
		msg := fmt.Sprintf("unknown key %q%s", name, in(sem.JSONPointer.Parent()))
		if field := caseVariantOf(sem.GoType, name); field != "" {
			msg += fmt.Sprintf(": keys are case-sensitive (the field is %q)", field)
		}
		return msg
	case errors.As(err, &sem) && sem.GoType != nil:
		return fmt.Sprintf("field %s has the wrong type (want %s)", sem.JSONPointer, jsonKind(sem.GoType))
	}
	return err.Error()
}

// in names where in the document a key is ("" at the top).
func in(p jsontext.Pointer) string {
	if p == "" {
		return ""
	}
	return " in " + string(p)
}

// jsonKind names the JSON a Go type takes.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map, reflect.Pointer:
		return "an object"
	}
	return t.String()
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

// JSONContentType reports whether a request's Content-Type names a JSON body the server takes:
// application/json, with no parameter but charset=utf-8 (in any case). Every HTTP surface
// (the REST API, the admin API) answers anything else with 415.
func JSONContentType(ct string) bool {
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		return false
	}
	for k, v := range params {
		if k != "charset" || !strings.EqualFold(v, "utf-8") {
			return false
		}
	}
	return true
}
