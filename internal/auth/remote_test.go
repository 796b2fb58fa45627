package auth

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// jwksServer serves a key set over HTTPS that the test rotates, counting fetches.
type jwksServer struct {
	ts      *httptest.Server
	fetches atomic.Int64
	mu      sync.Mutex
	keys    map[string]ed25519.PrivateKey // the keys served now, by kid
}

func newJWKSServer(t *testing.T) *jwksServer {
	s := &jwksServer{keys: map[string]ed25519.PrivateKey{}}
	s.ts = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s.fetches.Add(1)
		s.mu.Lock()
		defer s.mu.Unlock()
		var set struct {
			Keys []map[string]string `json:"keys"`
		}
		for kid, k := range s.keys {
			set.Keys = append(set.Keys, map[string]string{"kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": kid,
				"x": base64.RawURLEncoding.EncodeToString(k.Public().(ed25519.PublicKey))})
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(set)
	}))
	t.Cleanup(s.ts.Close)
	return s
}

// rotate serves only a new key, named kid, and returns it.
func (s *jwksServer) rotate(t *testing.T, kid string) ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = map[string]ed25519.PrivateKey{kid: k}
	return k
}

func signEd(t *testing.T, k ed25519.PrivateKey, kid string) string {
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.RegisteredClaims{Subject: "alice", ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))})
	tok.Header["kid"] = kid
	s, err := tok.SignedString(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A key set from an HTTPS URL: a token signed with a key rotated in is accepted without a
// restart (the unknown kid triggers a fetch), the key rotated out is refused after the next
// refresh, and a flood of unknown kids causes at most one fetch per UnknownKIDInterval.
func TestRemoteJWKSRotation(t *testing.T) {
	srv := newJWKSServer(t)
	k1 := srv.rotate(t, "k1")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const refresh = 300 * time.Millisecond
	remote, err := NewRemoteJWKS(ctx, RemoteJWKSConfig{URL: srv.ts.URL, Client: srv.ts.Client(),
		RefreshInterval: time.Hour, UnknownKIDInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{RemoteKeys: remote}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Verify(signEd(t, k1, "k1")); err != nil {
		t.Fatalf("token of the served key: %v", err)
	}
	if n := srv.fetches.Load(); n != 1 {
		t.Errorf("%d fetches at start; want 1", n)
	}

	// Rotation: k2 replaces k1. The first token with kid k2 makes the one allowed fetch.
	k2 := srv.rotate(t, "k2")
	if id, err := a.Verify(signEd(t, k2, "k2")); err != nil || id.User != "alice" {
		t.Fatalf("token of the key rotated in: %+v, %v; want accepted without a restart", id, err)
	}
	if _, err := a.Verify(signEd(t, k1, "k1")); err == nil {
		t.Error("token of the key rotated out is still accepted after the refresh")
	}
	// Unknown kids: no more fetches within the interval, and each is refused.
	before := srv.fetches.Load()
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	for i := range 20 {
		if _, err := a.Verify(signEd(t, stranger, "unknown-"+string(rune('a'+i)))); err == nil {
			t.Fatal("a token of an unknown key was accepted")
		}
	}
	if n := srv.fetches.Load() - before; n != 0 {
		t.Errorf("20 unknown kids caused %d fetches within the rate limit; want 0", n)
	}

	// The periodic refresh picks up a rotation by itself.
	remote2, err := NewRemoteJWKS(ctx, RemoteJWKSConfig{URL: srv.ts.URL, Client: srv.ts.Client(),
		RefreshInterval: refresh, UnknownKIDInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	a2, _ := New(Config{RemoteKeys: remote2}, nil)
	if _, err := a2.Verify(signEd(t, stranger, "spend-the-burst")); err == nil { // no unknown-kid fetch is left now
		t.Fatal("a token of an unknown key was accepted")
	}
	k3 := srv.rotate(t, "k3")
	deadline := time.Now().Add(10 * refresh)
	for {
		_, err3 := a2.Verify(signEd(t, k3, "k3"))
		_, err2 := a2.Verify(signEd(t, k2, "k2"))
		if err3 == nil && err2 != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: k3 %v, k2 %v; want k3 accepted and k2 refused by the periodic refresh", 10*refresh, err3, err2)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
}

func TestRemoteJWKSNeedsHTTPSAndAnAnswer(t *testing.T) {
	if _, err := NewRemoteJWKS(context.Background(), RemoteJWKSConfig{URL: "http://example.com/jwks"}); err == nil {
		t.Error("an http URL was accepted")
	}
	srv := newJWKSServer(t)
	// Without the test server's certificate trusted, the first fetch fails: an error at start.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := NewRemoteJWKS(ctx, RemoteJWKSConfig{URL: srv.ts.URL, Timeout: 2 * time.Second}); err == nil {
		t.Error("an untrusted certificate was accepted")
	}
	// With its certificate in a CA file, it is trusted.
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.ts.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	k := srv.rotate(t, "k1")
	remote, err := NewRemoteJWKS(ctx, RemoteJWKSConfig{URL: srv.ts.URL, CAFile: ca, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatalf("with the CA file: %v", err)
	}
	a, _ := New(Config{RemoteKeys: remote}, nil)
	if _, err := a.Verify(signEd(t, k, "k1")); err != nil {
		t.Errorf("token verified through the CA-file client: %v", err)
	}
}

// The key set is fetched over HTTPS only, redirects included: an https URL redirecting to a
// plain http one is refused (with the injected client and the CA-file one alike), while a
// redirect to another https URL is followed.
func TestRemoteJWKSRefusesRedirectToHTTP(t *testing.T) {
	srv := newJWKSServer(t) // serves the set at every path
	k := srv.rotate(t, "k1")
	plain := httptest.NewServer(srv.ts.Config.Handler)
	t.Cleanup(plain.Close)
	redirect := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		to := srv.ts.URL + "/jwks"
		if r.URL.Path == "/to-http" {
			to = plain.URL + "/jwks"
		}
		http.Redirect(w, r, to, http.StatusFound)
	}))
	t.Cleanup(redirect.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	var certs []byte
	for _, s := range []*httptest.Server{srv.ts, redirect} {
		certs = append(certs, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw})...)
	}
	if err := os.WriteFile(ca, certs, 0o600); err != nil {
		t.Fatal(err)
	}
	// One client trusting both test servers (each has its own certificate).
	injected := redirect.Client()
	injected.Transport.(*http.Transport).TLSClientConfig.RootCAs.AppendCertsFromPEM(certs)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, tc := range []struct {
		name string
		cfg  RemoteJWKSConfig
	}{
		{"injected client", RemoteJWKSConfig{Client: injected}},
		{"CA file", RemoteJWKSConfig{CAFile: ca}},
	} {
		cfg := tc.cfg
		cfg.Timeout = 2 * time.Second
		cfg.URL = redirect.URL + "/to-http"
		before := srv.fetches.Load()
		if _, err := NewRemoteJWKS(ctx, cfg); err == nil {
			t.Errorf("%s: a redirect from https to http was followed (%d fetches over http)", tc.name, srv.fetches.Load()-before)
		}
		cfg.URL = redirect.URL + "/to-https"
		remote, err := NewRemoteJWKS(ctx, cfg)
		if err != nil {
			t.Errorf("%s: a redirect to https: %v", tc.name, err)
			continue
		}
		a, _ := New(Config{RemoteKeys: remote}, nil)
		if _, err := a.Verify(signEd(t, k, "k1")); err != nil {
			t.Errorf("%s: token verified after an https redirect: %v", tc.name, err)
		}
	}
	cancel()
}
