package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// RemoteJWKSConfig configures a JSON Web Key Set fetched over HTTPS (an identity provider's
// jwks_uri). Zero values take the defaults.
type RemoteJWKSConfig struct {
	// URL of the set; https only, and redirects are followed only to https URLs.
	URL string
	// RefreshInterval is how often the set is fetched again, so rotated keys are picked up
	// and removed ones dropped. Default 1h.
	RefreshInterval time.Duration
	// UnknownKIDInterval is the least time between two fetches caused by a token whose kid is
	// not in the set (a key rotated in since the last fetch); other tokens with an unknown kid
	// are refused without a fetch meanwhile. Default 1m.
	UnknownKIDInterval time.Duration
	// Timeout bounds one fetch, and how long a token with an unknown kid may wait for the
	// next allowed fetch. Default 10s.
	Timeout time.Duration
	// CAFile, when set, is a PEM file of the certificate authorities trusted for the URL
	// instead of the system's.
	CAFile string
	// Client, when set, makes the requests (tests); CAFile is then ignored. A copy of it is
	// used, with the https-only redirect check in front of its own CheckRedirect.
	Client *http.Client
	// Logger receives failed refreshes. Default slog.Default().
	Logger *slog.Logger
}

// Defaults for RemoteJWKSConfig.
const (
	DefaultJWKSRefreshInterval    = time.Hour
	DefaultJWKSUnknownKIDInterval = time.Minute
	DefaultJWKSTimeout            = 10 * time.Second
)

// RemoteJWKS is a key set kept from an HTTPS URL: cached, refreshed every RefreshInterval,
// and on an unknown kid at most every UnknownKIDInterval. It uses
// github.com/MicahParks/keyfunc/v3 (on github.com/MicahParks/jwkset), the JWKS companion
// that golang-jwt's documentation points to, rather than a hand-written fetcher: caching,
// rotation, rate-limited refreshes and JWK parsing are all there and maintained.
type RemoteJWKS struct {
	kf keyfunc.Keyfunc
}

// NewRemoteJWKS fetches the set once (an error if that fails: a wrong URL or certificate is
// reported at start) and refreshes it in the background until ctx ends.
func NewRemoteJWKS(ctx context.Context, cfg RemoteJWKSConfig) (*RemoteJWKS, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("jwks url %q: want an https:// URL", cfg.URL)
	}
	if cfg.RefreshInterval == 0 {
		cfg.RefreshInterval = DefaultJWKSRefreshInterval
	}
	if cfg.UnknownKIDInterval == 0 {
		cfg.UnknownKIDInterval = DefaultJWKSUnknownKIDInterval
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultJWKSTimeout
	}
	if cfg.RefreshInterval < 0 || cfg.UnknownKIDInterval < 0 || cfg.Timeout < 0 {
		return nil, errors.New("jwks: negative interval or timeout")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	var client *http.Client
	if cfg.Client != nil {
		c := *cfg.Client // a copy: the caller's client keeps its own redirect policy
		client = &c
	} else {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.CAFile != "" {
			pem, err := os.ReadFile(cfg.CAFile)
			if err != nil {
				return nil, fmt.Errorf("jwks ca file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("jwks ca file %s: no PEM certificate in it", cfg.CAFile)
			}
			tc.RootCAs = pool
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = tc
		client = &http.Client{Transport: tr, Timeout: cfg.Timeout}
	}
	client.CheckRedirect = httpsRedirectsOnly(client.CheckRedirect)
	firstFails := false
	kf, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{cfg.URL}, keyfunc.Override{
		Client:                    client,
		HTTPTimeout:               cfg.Timeout,
		NoErrorReturnFirstHTTPReq: &firstFails,
		RateLimitWaitMax:          cfg.Timeout,
		RefreshInterval:           cfg.RefreshInterval,
		RefreshUnknownKID:         rate.NewLimiter(rate.Every(cfg.UnknownKIDInterval), 1),
		RefreshErrorHandlerFunc: func(u string) func(context.Context, error) {
			return func(_ context.Context, err error) {
				cfg.Logger.Warn("jwks refresh failed; keeping the keys fetched before", "url", u, "err", err)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", cfg.URL, err)
	}
	return &RemoteJWKS{kf: kf}, nil
}

// maxJWKSRedirects is net/http's default limit, kept when the policy is replaced.
const maxJWKSRedirects = 10

// httpsRedirectsOnly refuses a redirect to anything but https (an https URL must not hand the
// key set to a plain-text fetch), then applies next, or net/http's default limit without one.
func httpsRedirectsOnly(next func(*http.Request, []*http.Request) error) func(*http.Request, []*http.Request) error {
	return func(req *http.Request, via []*http.Request) error {
		if req.URL.Scheme != "https" {
			return fmt.Errorf("jwks: refusing a redirect to %s: https only", req.URL.Redacted())
		}
		if next != nil {
			return next(req, via)
		}
		if len(via) >= maxJWKSRedirects {
			return fmt.Errorf("jwks: stopped after %d redirects", maxJWKSRedirects)
		}
		return nil
	}
}

// keyfunc returns the key for a token; nil r has none.
func (r *RemoteJWKS) keyfunc(t *jwt.Token) (any, error) {
	if r == nil {
		return nil, errors.New("no remote key set")
	}
	return r.kf.Keyfunc(t)
}
