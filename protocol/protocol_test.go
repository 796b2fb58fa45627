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
