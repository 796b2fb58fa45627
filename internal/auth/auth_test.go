package auth

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/parleyhq/parley/internal/chat"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

func newAuthority(t *testing.T, cfg Config, now time.Time) *Authority {
	t.Helper()
	if cfg.HS256Secret == nil {
		cfg.HS256Secret = secret
	}
	a, err := New(cfg, func() time.Time { return now })
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a
}

func TestMintVerifyRoundTrip(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	a := newAuthority(t, Config{Issuer: "parley", Audience: "app"}, now)
	tok, err := a.Mint("alice", "phone", time.Hour)
	if err != nil {
		t.Fatalf("Mint: %v", err)
	}
	id, err := a.Verify(tok)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if id.User != "alice" || id.Device != "phone" || !id.ExpiresAt.Equal(now.Add(time.Hour)) {
		t.Fatalf("Verify = %+v; want alice/phone expiring at %v", id, now.Add(time.Hour))
	}
}

func TestVerifyRejects(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	a := newAuthority(t, Config{Issuer: "parley"}, now)
	good, err := a.Mint("alice", "", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	sign := func(method jwt.SigningMethod, key any, c jwt.Claims) string {
		s, err := jwt.NewWithClaims(method, c).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	noExp := sign(jwt.SigningMethodHS256, secret, jwt.RegisteredClaims{Subject: "alice", Issuer: "parley"})
	otherIss := sign(jwt.SigningMethodHS256, secret, jwt.RegisteredClaims{Subject: "alice", Issuer: "evil",
		ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour))})
	none := sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.RegisteredClaims{Subject: "alice",
		Issuer: "parley", ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour))})
	hs384 := sign(jwt.SigningMethodHS384, secret, jwt.RegisteredClaims{Subject: "alice", Issuer: "parley",
		ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour))})
	badSubject := sign(jwt.SigningMethodHS256, secret, jwt.RegisteredClaims{Subject: "a b", Issuer: "parley",
		ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour))})

	// Dates are JSON numbers of seconds: a string is refused, a fraction is allowed.
	stringExp := sign(jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "alice", "iss": "parley", "exp": "1800003600"})
	notYet := sign(jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "alice", "iss": "parley", "exp": 1_800_003_600,
		"nbf": 1_800_000_000 + 3600})
	fraction := sign(jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "alice", "iss": "parley", "exp": 1_800_003_600.75})
	if id, err := a.Verify(fraction); err != nil || !id.ExpiresAt.Equal(time.Unix(1_800_003_600, 0)) {
		t.Errorf("fractional exp: %+v, %v; want expiry at 1800003600", id, err)
	}
	if _, err := a.Verify(notYet); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("token before its nbf: err = %v; want ErrInvalidToken", err)
	}

	later := newAuthority(t, Config{Issuer: "parley"}, now.Add(time.Minute+DefaultLeeway+time.Second))
	if _, err := later.Verify(good); !errors.Is(err, ErrExpiredToken) {
		t.Errorf("expired token: err = %v; want ErrExpiredToken", err)
	}
	withinLeeway := newAuthority(t, Config{Issuer: "parley"}, now.Add(time.Minute+DefaultLeeway-time.Second))
	if _, err := withinLeeway.Verify(good); err != nil {
		t.Errorf("token within leeway: err = %v; want nil", err)
	}
	wrongKey := newAuthority(t, Config{Issuer: "parley", HS256Secret: []byte(strings.Repeat("k", 32))}, now)
	if _, err := wrongKey.Verify(good); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("wrong key: err = %v; want ErrInvalidToken", err)
	}
	for name, tok := range map[string]string{
		"no exp": noExp, "other issuer": otherIss, "alg none": none, "HS384": hs384,
		"bad subject": badSubject, "garbage": "not.a.token", "empty": "", "exp as a string": stringExp,
	} {
		_, err := a.Verify(tok)
		if !errors.Is(err, ErrInvalidToken) {
			t.Errorf("%s: err = %v; want ErrInvalidToken", name, err)
		}
		if tok != "" && err != nil && strings.Contains(err.Error(), tok) {
			t.Errorf("%s: error message contains the token", name)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{HS256Secret: []byte("short")}).Validate(); err == nil {
		t.Error("short secret accepted")
	}
	if err := (Config{HS256Secret: secret, Leeway: -time.Second}).Validate(); err == nil {
		t.Error("negative leeway accepted")
	}
	if err := (Config{HS256Secret: secret}).Validate(); err != nil {
		t.Errorf("valid config rejected: %v", err)
	}
}

func TestMintRejectsBadInput(t *testing.T) {
	a := newAuthority(t, Config{}, time.Now())
	if _, err := a.Mint("", "", time.Hour); err == nil {
		t.Error("empty user accepted")
	}
	if _, err := a.Mint("bob", "bad device", time.Hour); err == nil {
		t.Error("bad device accepted")
	}
	if _, err := a.Mint("bob", "", 0); err == nil {
		t.Error("zero ttl accepted")
	}
}

// A revocation by user or device takes the tokens issued at or before it (whole seconds),
// and those without iat; one by jti takes that token only.
func TestRevocationMatches(t *testing.T) {
	at := time.Unix(1_800_000_000, 500_000_000)
	id := func(user, jti string, iat time.Time) Identity {
		return Identity{User: chat.UserID(user), TokenID: jti, IssuedAt: iat}
	}
	tests := []struct {
		name   string
		rev    Revocation
		id     Identity
		device chat.DeviceID
		want   bool
	}{
		{"user, issued before", Revocation{User: "a", At: at}, id("a", "", at.Add(-time.Hour)), "d", true},
		{"user, same second", Revocation{User: "a", At: at}, id("a", "", time.Unix(1_800_000_000, 0)), "d", true},
		{"user, next second", Revocation{User: "a", At: at}, id("a", "", time.Unix(1_800_000_001, 0)), "d", false},
		{"user, no iat", Revocation{User: "a", At: at}, id("a", "", time.Time{}), "d", true},
		{"other user", Revocation{User: "a", At: at}, id("b", "", at.Add(-time.Hour)), "d", false},
		{"device", Revocation{User: "a", Device: "d", At: at}, id("a", "", at.Add(-time.Hour)), "d", true},
		{"other device", Revocation{User: "a", Device: "d", At: at}, id("a", "", at.Add(-time.Hour)), "e", false},
		{"jti", Revocation{TokenID: "j", At: at}, id("b", "j", at.Add(time.Hour)), "e", true},
		{"other jti", Revocation{TokenID: "j", At: at}, id("b", "k", at.Add(-time.Hour)), "e", false},
	}
	for _, tt := range tests {
		if got := tt.rev.Matches(tt.id, tt.device); got != tt.want {
			t.Errorf("%s: Matches = %v; want %v", tt.name, got, tt.want)
		}
	}
	for _, bad := range []Revocation{{At: at}, {Device: "d", At: at}, {User: "a", TokenID: "j", At: at}, {User: "a"}, {User: "a b", At: at}} {
		if bad.Validate() == nil {
			t.Errorf("%+v is valid", bad)
		}
	}
}
