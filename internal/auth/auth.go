package auth

import (
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/parleyhq/parley/internal/chat"
)

// MinSecretLen is the shortest HS256 secret accepted, in bytes (RFC 7518 section 3.2 asks for
// a key at least as long as the hash output).
const MinSecretLen = 32

// Sentinel errors, matched with errors.Is by the edge and the REST handlers.
var (
	// ErrInvalidToken means the token is malformed, badly signed, or its claims are wrong.
	ErrInvalidToken = errors.New("invalid token")
	// ErrExpiredToken means the token was valid but its "exp" has passed.
	ErrExpiredToken = errors.New("token expired")
)

// Claims are the claims Parley reads from a token.
type Claims struct {
	// Device is the device id, optional: a client may also name its device in "hello".
	Device string `json:"device,omitempty"`
	jwt.RegisteredClaims
}

// Identity is who a verified token speaks for.
type Identity struct {
	User      chat.UserID
	Device    chat.DeviceID // empty when the token names no device
	ExpiresAt time.Time     // the token's exp
	// ValidUntil is ExpiresAt plus the leeway: Verify accepts the token until then, so a
	// connection it opened is closed for expiry then, not earlier.
	ValidUntil time.Time
	// TokenID is the token's jti; empty when it has none.
	TokenID string
	// IssuedAt is the token's iat; zero when it has none.
	IssuedAt time.Time
}

// Config configures token minting and verification.
type Config struct {
	// HS256Secret is the shared secret for HS256 tokens: empty, or at least MinSecretLen bytes.
	HS256Secret []byte
	// PublicKeys verify RS256 and EdDSA tokens (LoadJWKS). At least one of HS256Secret,
	// PublicKeys and RemoteKeys is required; only the methods with a key are accepted.
	PublicKeys *KeySet
	// RemoteKeys verify RS256 and EdDSA tokens whose kid is not in PublicKeys, from a key set
	// kept from an HTTPS URL (NewRemoteJWKS).
	RemoteKeys *RemoteJWKS
	// Issuer, when set, is written into minted tokens and required in verified ones.
	Issuer string
	// Audience, when set, is written into minted tokens and required in verified ones.
	Audience string
	// Leeway tolerates clock skew when checking "exp", "nbf" and "iat". Default 30s.
	Leeway time.Duration
}

// DefaultLeeway is the clock skew tolerated when Config.Leeway is zero.
const DefaultLeeway = 30 * time.Second

// Validate reports the first invalid setting.
func (c Config) Validate() error {
	if len(c.HS256Secret) == 0 && c.PublicKeys.Len() == 0 && c.RemoteKeys == nil {
		return errors.New("no token key: set an HS256 secret, a JWKS file or a JWKS URL")
	}
	if len(c.HS256Secret) > 0 && len(c.HS256Secret) < MinSecretLen {
		return fmt.Errorf("HS256 secret is %d bytes, at least %d required", len(c.HS256Secret), MinSecretLen)
	}
	if c.Leeway < 0 || c.Leeway > 5*time.Minute {
		return fmt.Errorf("leeway %v out of range [0, 5m]", c.Leeway)
	}
	return nil
}

func (c Config) leeway() time.Duration {
	if c.Leeway == 0 {
		return DefaultLeeway
	}
	return c.Leeway
}

// Authority mints and verifies tokens with one Config.
type Authority struct {
	cfg     Config
	now     func() time.Time
	methods []string
}

// New returns an Authority, or an error if cfg is invalid. now is the clock (time.Now if nil).
func New(cfg Config, now func() time.Time) (*Authority, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	a := &Authority{cfg: cfg, now: now}
	if len(cfg.HS256Secret) > 0 {
		a.methods = append(a.methods, jwt.SigningMethodHS256.Alg())
	}
	if len(cfg.PublicKeys.rsaKeys()) > 0 || cfg.RemoteKeys != nil {
		a.methods = append(a.methods, jwt.SigningMethodRS256.Alg())
	}
	if len(cfg.PublicKeys.edKeys()) > 0 || cfg.RemoteKeys != nil {
		a.methods = append(a.methods, jwt.SigningMethodEdDSA.Alg())
	}
	return a, nil
}

// Mint returns a signed HS256 token for user (and device, if not empty) valid for ttl. It
// needs the HS256 secret: tokens signed with private keys are minted by the application.
func (a *Authority) Mint(user chat.UserID, device chat.DeviceID, ttl time.Duration) (string, error) {
	if len(a.cfg.HS256Secret) == 0 {
		return "", errors.New("minting needs an HS256 secret")
	}
	if _, err := chat.ParseUserID(string(user)); err != nil {
		return "", err
	}
	if device != "" {
		if _, err := chat.ParseDeviceID(string(device)); err != nil {
			return "", err
		}
	}
	if ttl <= 0 {
		return "", fmt.Errorf("token ttl %v must be positive", ttl)
	}
	now := a.now()
	claims := Claims{
		Device: string(device),
		RegisteredClaims: jwt.RegisteredClaims{
			ID:        rand.Text(), // so that one token can be revoked by its jti
			Subject:   string(user),
			Issuer:    a.cfg.Issuer,
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
	}
	if a.cfg.Audience != "" {
		claims.Audience = jwt.ClaimStrings{a.cfg.Audience}
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(a.cfg.HS256Secret)
}

// Verify checks a token's signature and claims and returns the identity it carries. Errors
// wrap ErrExpiredToken or ErrInvalidToken; they never contain the token itself.
func (a *Authority) Verify(token string) (Identity, error) {
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(a.methods),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(a.cfg.leeway()),
		jwt.WithTimeFunc(a.now),
	}
	if a.cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(a.cfg.Issuer))
	}
	if a.cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(a.cfg.Audience))
	}
	var claims wireClaims
	// The key is chosen by the token's alg among the configured ones, and its Go type matches
	// the method (golang-jwt checks it), so an HS256 token can never be checked against a
	// public key used as an HMAC secret.
	_, err := jwt.ParseWithClaims(token, &claims, func(t *jwt.Token) (any, error) {
		alg := t.Method.Alg()
		if alg == jwt.SigningMethodHS256.Alg() {
			return a.cfg.HS256Secret, nil
		}
		kid, _ := t.Header["kid"].(string)
		if k, ok := a.cfg.PublicKeys.key(alg, kid); ok {
			return k, nil
		}
		if a.cfg.RemoteKeys != nil {
			// golang-jwt still checks that the key's type is the alg's.
			return a.cfg.RemoteKeys.keyfunc(t)
		}
		return nil, fmt.Errorf("no key for alg %s kid %q", alg, kid)
	}, opts...)
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return Identity{}, fmt.Errorf("%w", ErrExpiredToken)
	case err != nil:
		return Identity{}, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	user, err := chat.ParseUserID(claims.Subject)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: subject: %v", ErrInvalidToken, err)
	}
	id := Identity{User: user, ExpiresAt: claims.ExpiresAt.t, ValidUntil: claims.ExpiresAt.t.Add(a.cfg.leeway()),
		TokenID: claims.ID, IssuedAt: claims.IssuedAt.t}
	if claims.Device != "" {
		if id.Device, err = chat.ParseDeviceID(claims.Device); err != nil {
			return Identity{}, fmt.Errorf("%w: device: %v", ErrInvalidToken, err)
		}
	}
	return id, nil
}

// wireClaims is what Verify decodes: the claims of Claims, with the dates as seconds decoded
// by strconv. (jwt.NumericDate runs a JSON decoder of its own for each date: a tenth of a
// WebSocket handshake's CPU went to decoding tokens.) It gives golang-jwt's validator the
// same answers RegisteredClaims would.
type wireClaims struct {
	Device    string           `json:"device"`
	ID        string           `json:"jti"`
	Subject   string           `json:"sub"`
	Issuer    string           `json:"iss"`
	Audience  jwt.ClaimStrings `json:"aud"`
	ExpiresAt seconds          `json:"exp"`
	NotBefore seconds          `json:"nbf"`
	IssuedAt  seconds          `json:"iat"`
}

func (c *wireClaims) GetExpirationTime() (*jwt.NumericDate, error) { return c.ExpiresAt.date(), nil }
func (c *wireClaims) GetNotBefore() (*jwt.NumericDate, error)      { return c.NotBefore.date(), nil }
func (c *wireClaims) GetIssuedAt() (*jwt.NumericDate, error)       { return c.IssuedAt.date(), nil }
func (c *wireClaims) GetIssuer() (string, error)                   { return c.Issuer, nil }
func (c *wireClaims) GetSubject() (string, error)                  { return c.Subject, nil }
func (c *wireClaims) GetAudience() (jwt.ClaimStrings, error)       { return c.Audience, nil }

// seconds is a JWT NumericDate: seconds since the epoch, a JSON number (a fraction allowed).
type seconds struct {
	t   time.Time
	set bool
}

func (s *seconds) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil || math.IsInf(f, 0) {
		return fmt.Errorf("a date claim must be a number of seconds, not %.20s", b)
	}
	sec, frac := math.Modf(f)
	s.t, s.set = time.Unix(int64(sec), int64(frac*1e9)).Truncate(jwt.TimePrecision), true
	return nil
}

func (s seconds) date() *jwt.NumericDate {
	if !s.set {
		return nil
	}
	return jwt.NewNumericDate(s.t)
}
