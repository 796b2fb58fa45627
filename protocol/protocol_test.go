package protocol

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestGoldenFrames decodes every golden frame, re-encodes it and checks that nothing was lost
// or added; client frames must also pass Decode's validation. The TypeScript SDK runs the same
// files.
func TestGoldenFrames(t *testing.T) {
	files, err := filepath.Glob("testdata/*.json")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[Type]bool{}
	for _, file := range files {
		name := filepath.Base(file)
		if name == "invalid.json" {
			continue
		}
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var f Frame
			if strings.HasPrefix(name, "client.") {
				if f, err = Decode(data); err != nil {
					t.Fatalf("Decode: %v", err)
				}
				if !IsClientType(f.Type) {
					t.Errorf("client golden frame of type %q, not a client type", f.Type)
				}
			} else if err := json.Unmarshal(data, &f); err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			seen[f.Type] = true
			out, err := Encode(f)
			if err != nil {
				t.Fatal(err)
			}
			var want, got map[string]any
			if err := json.Unmarshal(data, &want); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("round trip changed the frame:\n got %s\nwant %s", out, strings.TrimSpace(string(data)))
			}
		})
	}
	for _, typ := range append(ClientTypes, TypeHello, TypeAccepted, TypeMessage, TypeReceipt,
		TypeSyncResult, TypePresence, TypePresenceResync, TypePong, TypeOK, TypeError, TypeReconnect) {
		if !seen[typ] {
			t.Errorf("no golden frame of type %q in testdata/", typ)
		}
	}
}

// TestInvalidFrames checks the error code of every frame in testdata/invalid.json.
func TestInvalidFrames(t *testing.T) {
	data, err := os.ReadFile("testdata/invalid.json")
	if err != nil {
		t.Fatal(err)
	}
	var cases []struct {
		Name  string `json:"name"`
		Frame string `json:"frame"`
		Code  Code   `json:"code"`
	}
	if err := json.Unmarshal(data, &cases); err != nil {
		t.Fatal(err)
	}
	if len(cases) < 10 {
		t.Fatalf("only %d invalid cases", len(cases))
	}
	for _, c := range cases {
		_, err := Decode([]byte(c.Frame))
		var pe *Error
		if !errors.As(err, &pe) || pe.Code != c.Code {
			t.Errorf("%s: Decode(%s) = %v; want code %s", c.Name, c.Frame, err, c.Code)
		}
	}
}

func TestDecodeKeepsIDForErrors(t *testing.T) {
	f, err := Decode([]byte(`{"type":"ack","id":"r9","conversation":"x","seq":"NaN"}`))
	if err == nil || f.ID != "r9" {
		t.Errorf("Decode = %+v, %v; want an error and id r9 kept", f, err)
	}
	f, err = Decode([]byte(`{"type":"ping","id":"` + strings.Repeat("x", 65) + `"}`))
	if err == nil || f.ID != "" {
		t.Errorf("oversized id kept: %q, %v", f.ID, err)
	}
}

func TestDecodeRejectsInvalidUTF8(t *testing.T) {
	_, err := Decode([]byte("{\"type\":\"ping\",\"id\":\"\xff\"}"))
	var pe *Error
	if !errors.As(err, &pe) || pe.Code != CodeBadRequest {
		t.Errorf("Decode(invalid UTF-8) = %v; want bad_request", err)
	}
}

func TestRetryable(t *testing.T) {
	want := map[Code]bool{CodeRateLimited: true, CodeUnavailable: true, CodeInternal: true}
	for _, c := range Codes {
		if c.Retryable() != want[c] {
			t.Errorf("%s.Retryable() = %v; want %v", c, c.Retryable(), want[c])
		}
	}
	f := ErrorFrame("r1", Errorf(CodeUnavailable, "redis down"))
	if !f.Retryable || f.Type != TypeError || f.ID != "r1" {
		t.Errorf("ErrorFrame = %+v", f)
	}
}

func TestValidUUID(t *testing.T) {
	for s, want := range map[string]bool{
		"7d1f3a52-5b0e-4c1a-9a57-2f1e0c6b9d10": true,
		"7D1F3A52-5B0E-4C1A-9A57-2F1E0C6B9D10": true,
		"7d1f3a525b0e4c1a9a572f1e0c6b9d10":     false,
		"7d1f3a52-5b0e-4c1a-9a57-2f1e0c6b9d1g": false,
		"7d1f3a52-5b0e-4c1a-9a57_2f1e0c6b9d10": false,
		"":                                     false,
	} {
		if ValidUUID(s) != want {
			t.Errorf("ValidUUID(%q) = %v; want %v", s, !want, want)
		}
	}
}

func TestClipKeepsUTF8(t *testing.T) {
	s := strings.Repeat("é", 30) // 60 bytes
	if got := clip(s); !strings.HasSuffix(got, "...") || strings.ContainsRune(got, '\uFFFD') || len(got) > 43 {
		t.Errorf("clip = %q", got)
	}
}

// FuzzDecode: Decode never panics, and what it accepts re-encodes to a frame it accepts again.
func FuzzDecode(f *testing.F) {
	files, _ := filepath.Glob("testdata/client.*.json")
	for _, file := range files {
		data, _ := os.ReadFile(file)
		f.Add(data)
	}
	f.Add([]byte(`{"type":"send"}`))
	f.Add([]byte(`{"type":"sync","cursors":[{"conversation":"x","seq":-1}]}`))
	f.Add([]byte(`[]`))
	f.Add([]byte("\xff"))
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := Decode(data)
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("Decode error %v is not a *protocol.Error", err)
			}
			if len(fr.ID) > MaxIDBytes {
				t.Fatalf("error frame keeps an id of %d bytes", len(fr.ID))
			}
			return
		}
		out, err := Encode(fr)
		if err != nil {
			t.Fatalf("Encode: %v", err)
		}
		if _, err := Decode(out); err != nil {
			t.Fatalf("re-decoding %s: %v", out, err)
		}
	})
}

// Every struct a client frame can hold refuses a key that is a case variant of one of its
// fields, however deep: a JSON document is built down to each struct type reachable from
// Frame, with the upper-cased name of that struct's first field.
func TestStrictCoversEveryStruct(t *testing.T) {
	var walk func(rt reflect.Type, wrap func(string) string, seen map[reflect.Type]bool)
	walk = func(rt reflect.Type, wrap func(string) string, seen map[reflect.Type]bool) {
		for rt.Kind() == reflect.Pointer || rt.Kind() == reflect.Slice {
			if rt.Kind() == reflect.Slice {
				inner := wrap
				wrap = func(s string) string { return inner("[" + s + "]") }
			}
			rt = rt.Elem()
		}
		if rt.Kind() != reflect.Struct || seen[rt] {
			return
		}
		seen[rt] = true
		first, _, _ := strings.Cut(rt.Field(0).Tag.Get("json"), ",")
		doc := wrap(`{"` + strings.ToUpper(first) + `":null}`)
		if _, err := Decode([]byte(doc)); !isCode(err, CodeBadRequest) || !strings.Contains(err.Error(), "case-sensitive") {
			t.Errorf("%s: Decode(%s) = %v; want bad_request naming the case", rt.Name(), doc, err)
		}
		for i := 0; i < rt.NumField(); i++ {
			name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
			if name == "" || name == "-" {
				continue
			}
			outer := wrap
			walk(rt.Field(i).Type, func(s string) string {
				return outer(`{"type":"ping","` + name + `":` + s + `}`)
			}, seen)
		}
	}
	walk(reflect.TypeFor[Frame](), func(s string) string { return s }, map[reflect.Type]bool{})
}

func isCode(err error, c Code) bool {
	var pe *Error
	return errors.As(err, &pe) && pe.Code == c
}

// The errors of strict decoding say what is wrong and where.
func TestStrictErrorMessages(t *testing.T) {
	conv := "7d1f3a52-5b0e-4c1a-9a57-2f1e0c6b9d10"
	for frame, want := range map[string]string{
		`{"type":"send","id":"r1","type":"ping"}`:                                     `duplicate key "type"`,
		`{"type":"sync","cursors":[{"conversation":"` + conv + `","seq":1,"seq":2}]}`: `duplicate key "seq" in /cursors/0`,
		`{"type":"send","TYPE":"ping"}`:                                               `key "TYPE": keys are case-sensitive (the field is "type")`,
		`{"type":"sync","cursors":[{"conversation":"` + conv + `","SEQ":1}]}`:         `key "SEQ": keys are case-sensitive (the field is "seq") in /cursors/0`,
		`{"type":"ack","conversation":"` + conv + `","seq":"42"}`:                     `field /seq has the wrong type (want an integer)`,
		`{"type":"ping","id":"r1"`:                                                    `invalid JSON at byte`,
	} {
		_, err := Decode([]byte(frame))
		if !isCode(err, CodeBadRequest) || !strings.Contains(err.Error(), want) {
			t.Errorf("Decode(%s) = %v; want bad_request saying %q", frame, err, want)
		}
	}
	var body struct {
		Kind string `json:"kind"`
	}
	for in, want := range map[string]string{
		`{"kind":"group","kind":"direct"}`: `duplicate key "kind"`,
		`{"KIND":"direct"}`:                `unknown key "KIND": keys are case-sensitive (the field is "kind")`,
		`{"kind":"direct","colour":1}`:     `unknown key "colour"`,
		`{"kind":7}`:                       `field /kind has the wrong type (want a string)`,
	} {
		err := UnmarshalStrict([]byte(in), &body)
		if !isCode(err, CodeBadRequest) || !strings.Contains(err.Error(), want) {
			t.Errorf("UnmarshalStrict(%s) = %v; want bad_request saying %q", in, err, want)
		}
	}
}

// The id of a frame that fails to decode is kept when the frame is otherwise a JSON object
// with one string id, so the error can name the request.
func TestRequestIDOfBadFrames(t *testing.T) {
	for frame, want := range map[string]string{
		`{"type":"send","id":"r1","type":"ping"}`:  "r1",
		`{"type":"ack","id":"r2","seq":"x"}`:       "r2",
		`{"id":"r3","TYPE":"ping"}`:                "r3",
		`{"id":"a","id":"b","type":"ping"}`:        "",
		`{"type":"ping","id":"r4"`:                 "",
		`{"type":"ping","id":7,"x":{"a":1,"a":1}}`: "",
	} {
		f, err := Decode([]byte(frame))
		if err == nil || f.ID != want {
			t.Errorf("Decode(%s) = id %q, %v; want an error and id %q", frame, f.ID, err, want)
		}
	}
}
