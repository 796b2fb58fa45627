package httpapi

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/protocol"
)

// TokenMinter mints the development mode's tokens and reads back their expiry
// (internal/auth.Authority with an HS256 secret).
type TokenMinter interface {
	Mint(user chat.UserID, device chat.DeviceID, ttl time.Duration) (string, error)
	Verifier
}

var _ TokenMinter = (*auth.Authority)(nil)

// DevConfig configures the development mode's routes (parleyd --dev; docs/operations.md,
// "Development mode").
type DevConfig struct {
	// Tokens mints the tokens of POST /dev/token. Required.
	Tokens TokenMinter
	// TTL is how long a minted token is valid. Default DefaultDevTokenTTL.
	TTL time.Duration
	// DemoDir is the directory served at /demo/ (the browser demo's index.html and bundle);
	// empty: no /demo/. It is opened on every request, so a rebuild that replaces it is seen.
	DemoDir string
}

// DefaultDevTokenTTL is the lifetime of a development token when DevConfig.TTL is zero.
const DefaultDevTokenTTL = time.Hour

// Dev serves the development mode's routes on the public listener: POST /dev/token, which
// mints a token for any user to a client on this machine, and the demo's static files at
// /demo/. parleyd mounts them only with --dev, which it allows only on a loopback listener
// with HS256 tokens; the token endpoint checks loopback on every request as well.
type Dev struct {
	cfg    DevConfig
	logger *slog.Logger
}

// NewDev returns the development routes.
func NewDev(cfg DevConfig, logger *slog.Logger) (*Dev, error) {
	if cfg.Tokens == nil {
		return nil, errors.New("dev routes: DevConfig.Tokens is required")
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultDevTokenTTL
	}
	if cfg.TTL < 0 {
		return nil, fmt.Errorf("dev routes: token ttl %v must be positive", cfg.TTL)
	}
	return &Dev{cfg: cfg, logger: logger}, nil
}

// DevTokenPath is the development token endpoint.
const DevTokenPath = "/dev/token"

// DemoPath is where the demo directory is served.
const DemoPath = "/demo/"

// DevRoutes lists the development routes that docs/openapi.yaml documents (as
// development-only); /demo/ serves files and is not an API operation.
func DevRoutes() []Route {
	return []Route{{http.MethodPost, DevTokenPath}}
}

// Register adds the routes to mux: /dev/token always, /demo/ when DemoDir is set.
func (d *Dev) Register(mux *http.ServeMux) {
	mux.HandleFunc(http.MethodPost+" "+DevTokenPath, d.token)
	if d.cfg.DemoDir != "" {
		mux.HandleFunc(http.MethodGet+" "+DemoPath, d.demo)
	}
}

// devTokenRequest and devTokenResponse are the bodies of POST /dev/token.
type devTokenRequest struct {
	User   string `json:"user"`
	Device string `json:"device,omitempty"`
}

type devTokenResponse struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// maxDevTokenBody bounds a POST /dev/token body: two ids.
const maxDevTokenBody = 4 << 10

func (d *Dev) token(w http.ResponseWriter, r *http.Request) {
	if err := loopbackOnly(r); err != nil {
		d.logger.Warn("development token refused", "remote", r.RemoteAddr, "host", clip(r.Host), "origin", clip(r.Header.Get("Origin")), "err", err)
		writeAPIError(w, err)
		return
	}
	var req devTokenRequest
	if err := decodeJSON(r, maxDevTokenBody, &req); err != nil {
		writeAPIError(w, toAPIError(err))
		return
	}
	user, err := chat.ParseUserID(req.User)
	if err != nil {
		writeAPIError(w, errorf(http.StatusBadRequest, protocol.CodeBadRequest, "user: %v", err))
		return
	}
	var device chat.DeviceID
	if req.Device != "" {
		if device, err = chat.ParseDeviceID(req.Device); err != nil {
			writeAPIError(w, errorf(http.StatusBadRequest, protocol.CodeBadRequest, "device: %v", err))
			return
		}
	}
	tok, err := d.cfg.Tokens.Mint(user, device, d.cfg.TTL)
	var id auth.Identity
	if err == nil {
		id, err = d.cfg.Tokens.Verify(tok) // its exp, exactly as the edge will read it
	}
	if err != nil {
		d.logger.Error("development token not minted", "err", err)
		writeAPIError(w, errorf(http.StatusInternalServerError, protocol.CodeInternal, "the token could not be minted"))
		return
	}
	d.logger.Info("development token minted", "user", user, "device", device, "remote", r.RemoteAddr, "expires_at", id.ExpiresAt)
	writeJSON(w, http.StatusOK, devTokenResponse{Token: tok, ExpiresAt: id.ExpiresAt.UTC()})
}

// loopbackOnly refuses a request unless it comes from this machine: its TCP peer is a
// loopback address (no proxy can be in front: parleyd refuses --dev with trusted proxies), it
// is addressed to a loopback host (a page of another name that resolves to 127.0.0.1, DNS
// rebinding, is refused), and a page that sends it, if any, is on a loopback origin (even
// with --allowed-origins=*, a page of another site gets no token).
func loopbackOnly(r *http.Request) *apiError {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil || !peer.Addr().Unmap().IsLoopback() {
		return errorf(http.StatusForbidden, protocol.CodeForbidden,
			"the development token endpoint answers clients on this machine only (loopback), not %s", clip(r.RemoteAddr))
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if !LoopbackHost(host) {
		return errorf(http.StatusForbidden, protocol.CodeForbidden,
			"the development token endpoint answers requests to a loopback host only (127.0.0.1, [::1] or localhost), not %q", clip(r.Host))
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || !LoopbackHost(u.Hostname()) {
			return errorf(http.StatusForbidden, protocol.CodeForbidden,
				"the development token endpoint answers pages on a loopback origin only (http://127.0.0.1:PORT, http://localhost:PORT), not %q", clip(o))
		}
	}
	return nil
}

// LoopbackHost reports whether a host name or address (IPv6 with or without brackets, no
// zone) names this machine's loopback interface: localhost, 127.0.0.0/8 or ::1.
func LoopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"))
	return err == nil && a.Zone() == "" && a.Unmap().IsLoopback()
}

// OwnOrigins are the origins of the pages a loopback listener on host:port serves (the demo
// at /demo/): the address as written and localhost, and for localhost the addresses it
// names. Development mode allows them to open the WebSocket and grants them CORS.
func OwnOrigins(host, port string) []string {
	hosts := []string{host, "localhost"}
	if strings.EqualFold(host, "localhost") {
		hosts = []string{"localhost", "127.0.0.1", "::1"}
	}
	var out []string
	for _, h := range hosts {
		o := "http://" + net.JoinHostPort(h, port)
		if !slices.Contains(out, o) {
			out = append(out, o)
		}
	}
	return out
}

// demo serves a file of the demo directory: index.html for a path ending in /, the content
// type by extension, and nothing else. Directories are not listed, dot files and what a
// symlink leads to outside the directory are not served (os.Root), and a path with a ".."
// or empty segment is refused.
func (d *Dev) demo(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, DemoPath)
	if name == "" || strings.HasSuffix(name, "/") {
		name += "index.html"
	}
	if !fs.ValidPath(name) || strings.ContainsAny(name, "\x00\\") {
		writeAPIError(w, errorf(http.StatusBadRequest, protocol.CodeBadRequest,
			"the path is not in canonical form (an empty, . or .. segment, a NUL or a backslash)"))
		return
	}
	notFound := errorf(http.StatusNotFound, protocol.CodeNotFound, "no such file in the demo")
	for _, seg := range strings.Split(name, "/") {
		if strings.HasPrefix(seg, ".") {
			writeAPIError(w, notFound)
			return
		}
	}
	root, err := os.OpenRoot(d.cfg.DemoDir)
	if err != nil {
		d.logger.Warn("demo directory", "dir", d.cfg.DemoDir, "err", err)
		writeAPIError(w, errorf(http.StatusNotFound, protocol.CodeNotFound, "the demo directory is gone (build it again: make demo-build)"))
		return
	}
	defer root.Close()
	f, err := root.Open(name)
	if err != nil {
		writeAPIError(w, notFound)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		writeAPIError(w, notFound) // a directory: never listed
		return
	}
	h := w.Header()
	if ct := mime.TypeByExtension(path.Ext(name)); ct != "" {
		h.Set("Content-Type", ct)
	}
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-cache") // revalidated (Last-Modified), so a rebuild shows at once
	http.ServeContent(w, r, name, fi.ModTime(), f)
}
