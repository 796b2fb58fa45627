package chat

import (
	"errors"
	"strings"
	"testing"
)

func TestParseUserID(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"alice", true},
		{"user-42_x", true},
		{"ünïcode", true},
		{"a@b", true},
		{strings.Repeat("a", MaxIDLen), true},
		{"", false},
		{strings.Repeat("a", MaxIDLen+1), false},
		{"has space", false},
		{"tab\there", false},
		{"dot.ted", false},
		{"star*", false},
		{"gt>", false},
		{"nul\x00", false},
		{"\xff\xfe", false},
	}
	for _, tt := range tests {
		got, err := ParseUserID(tt.in)
		if tt.want {
			if err != nil || string(got) != tt.in {
				t.Errorf("ParseUserID(%q) = %q, %v; want %q, nil", tt.in, got, err, tt.in)
			}
			continue
		}
		if !errors.Is(err, ErrInvalidID) {
			t.Errorf("ParseUserID(%q) error = %v; want ErrInvalidID", tt.in, err)
		}
	}
}

func TestParseDeviceIDNamesWhat(t *testing.T) {
	_, err := ParseDeviceID("")
	if err == nil || !strings.Contains(err.Error(), "device id") {
		t.Fatalf("ParseDeviceID(\"\") error = %v; want it to name the device id", err)
	}
}
