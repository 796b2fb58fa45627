package auth

import (
	"testing"
	"time"
)

// BenchmarkVerifyHS256 is the token check every WebSocket handshake pays.
func BenchmarkVerifyHS256(b *testing.B) {
	a, err := New(Config{HS256Secret: []byte("bench-secret-0123456789abcdef0123456789")}, nil)
	if err != nil {
		b.Fatal(err)
	}
	tok, err := a.Mint("alice", "phone", time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}
