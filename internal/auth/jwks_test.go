package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

type testKeys struct {
	rsa  *rsa.PrivateKey
	ed   ed25519.PrivateKey
	jwks []byte
}

func newTestKeys(t *testing.T) testKeys {
	t.Helper()
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, ek, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	set := map[string]any{"keys": []map[string]string{
		{"kty": "RSA", "kid": "r1", "use": "sig", "alg": "RS256", "n": b64(rk.N.Bytes()), "e": b64(big.NewInt(int64(rk.E)).Bytes())},
		{"kty": "OKP", "kid": "e1", "crv": "Ed25519", "x": b64(ek.Public().(ed25519.PublicKey))},
		{"kty": "EC", "kid": "ignored", "crv": "P-256", "x": "AA", "y": "AA"},
	}}
	data, _ := json.Marshal(set)
	return testKeys{rsa: rk, ed: ek, jwks: data}
}

func claimsFor(now time.Time) jwt.RegisteredClaims {
	return jwt.RegisteredClaims{Subject: "alice", ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour))}
}

func TestVerifyWithJWKS(t *testing.T) {
	keys := newTestKeys(t)
	ks, err := ParseJWKS(keys.jwks)
	if err != nil {
		t.Fatalf("ParseJWKS: %v", err)
	}
	if ks.Len() != 2 {
		t.Fatalf("KeySet has %d keys; want 2 (the EC key skipped)", ks.Len())
	}
	now := time.Unix(1_800_000_000, 0)
	a, err := New(Config{PublicKeys: ks}, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	sign := func(m jwt.SigningMethod, kid string, key any) string {
		tok := jwt.NewWithClaims(m, claimsFor(now))
		if kid != "" {
			tok.Header["kid"] = kid
		}
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for name, tok := range map[string]string{
		"RS256": sign(jwt.SigningMethodRS256, "r1", keys.rsa),
		"EdDSA": sign(jwt.SigningMethodEdDSA, "e1", keys.ed),
	} {
		if id, err := a.Verify(tok); err != nil || id.User != "alice" {
			t.Errorf("%s: Verify = %+v, %v; want alice", name, id, err)
		}
	}

	// Key confusion: an HS256 token whose HMAC secret is the RSA public key's bytes.
	pub, _ := x509.MarshalPKIXPublicKey(&keys.rsa.PublicKey)
	confused := sign(jwt.SigningMethodHS256, "r1", pub)
	otherRSA, _ := rsa.GenerateKey(rand.Reader, 2048)
	bad := map[string]string{
		"HS256 signed with the public key": confused,
		"RS256 unknown kid":                sign(jwt.SigningMethodRS256, "nope", keys.rsa),
		"RS256 wrong key":                  sign(jwt.SigningMethodRS256, "r1", otherRSA),
		"RS384 not allowed":                sign(jwt.SigningMethodRS384, "r1", keys.rsa),
	}
	for name, tok := range bad {
		if _, err := a.Verify(tok); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("%s: err = %v; want ErrInvalidToken", name, err)
		}
	}
	// With an HS256 secret configured too, the confused token still fails (wrong secret).
	both, _ := New(Config{PublicKeys: ks, HS256Secret: secret}, func() time.Time { return now })
	if _, err := both.Verify(confused); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("confused token with both key kinds: err = %v; want ErrInvalidToken", err)
	}
	if _, err := a.Mint("bob", "", time.Hour); err == nil {
		t.Error("Mint without an HS256 secret succeeded")
	}
}

func TestParseJWKSRejects(t *testing.T) {
	for name, doc := range map[string]string{
		"not json":      `nope`,
		"no keys":       `{"keys":[]}`,
		"only enc keys": `{"keys":[{"kty":"OKP","crv":"Ed25519","use":"enc","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`,
		"short ed25519": `{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AAAA"}]}`,
		"small rsa":     `{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}`,
	} {
		if _, err := ParseJWKS([]byte(doc)); err == nil {
			t.Errorf("%s: ParseJWKS accepted it", name)
		}
	}
}

func TestConfigNeedsAKey(t *testing.T) {
	if err := (Config{}).Validate(); err == nil {
		t.Error("config without any key accepted")
	}
}
