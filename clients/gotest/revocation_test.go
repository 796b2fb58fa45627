package gotest

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleyhq/parley/clients/go/parley"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/teststack"
)

// revoke posts a revocation to the server's admin API.
func revoke(t *testing.T, s *server, body string) {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+s.admin+"/admin/v1/revocations", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("revoke %s: %d %s", body, resp.StatusCode, data)
	}
}

// tokens is a token source handing out the given tokens in turn (the last one again when
// they run out), counting the calls.
type tokens struct {
	mu    sync.Mutex
	list  []string
	calls int
}

func (ts *tokens) source(context.Context) (string, error) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	tok := ts.list[min(ts.calls, len(ts.list)-1)]
	ts.calls++
	return tok, nil
}

func (ts *tokens) count() int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.calls
}

// stopped waits until the client reports a state error; it fails the test unless that error
// is ErrTokenRevoked, and then checks the client stays down (no new connection attempt) and
// answers requests and sends with ErrTokenRevoked.
func stopped(t *testing.T, c *parley.Client, k *collector) {
	t.Helper()
	var errs []error
	teststack.Eventually(t, 10*time.Second, func() bool {
		k.mu.Lock()
		defer k.mu.Unlock()
		errs = append([]error(nil), k.stateErr...)
		return len(errs) > 0
	})
	if len(errs) != 1 || !errors.Is(errs[0], parley.ErrTokenRevoked) {
		k.mu.Lock()
		t.Fatalf("state errors %v (states %v); want one ErrTokenRevoked", errs, k.states)
	}
	k.mu.Lock()
	n := len(k.states)
	k.mu.Unlock()
	time.Sleep(1500 * time.Millisecond) // longer than the backoff: a reconnecting client would have tried
	k.mu.Lock()
	after := append([]parley.ConnState(nil), k.states[n:]...)
	k.mu.Unlock()
	if len(after) != 0 {
		t.Errorf("states after ErrTokenRevoked: %v; want none (no reconnecting)", after)
	}
	if _, err := c.Subscribe(context.Background(), "x"); !errors.Is(err, parley.ErrTokenRevoked) {
		t.Errorf("Subscribe after the revocation: %v; want ErrTokenRevoked", err)
	}
	if _, err := c.Send(context.Background(), "c", "hi"); !errors.Is(err, parley.ErrTokenRevoked) {
		t.Errorf("Send after the revocation: %v; want ErrTokenRevoked", err)
	}
}

// dialWith connects user's phone with the token source ts.
func dialWith(t *testing.T, s *server, ts parley.TokenSource) (*parley.Client, *collector) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := parley.Dial(ctx, s.url(), parley.WithToken(ts), parley.WithBackoff(50*time.Millisecond, 200*time.Millisecond))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	k := collect(c)
	t.Cleanup(func() { c.Close(); <-k.done })
	if !teststack.Eventually(t, 10*time.Second, func() bool { return k.connected() > 0 }) {
		t.Fatal("the first sync never finished")
	}
	return c, k
}

// connected counts the Connected states so far.
func (k *collector) connected() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	n := 0
	for _, st := range k.states {
		if st == parley.Connected {
			n++
		}
	}
	return n
}

// A revoked token closes the connection with 4003; the client asks its token source for a
// new one and:
//   - with a source that has no other token (StaticToken), stops reconnecting and reports
//     ErrTokenRevoked (state event, requests, Send) instead of looping;
//   - with a source whose new token is revoked too (refused at the handshake with 401
//     token_revoked), asks once, then stops the same way;
//   - with a source that signs in again (a token issued after the revocation), reconnects and
//     goes on;
//   - refused at the handshake (revoked while disconnected) without a 4003 first, asks the
//     source again and stops when it has nothing better.
//
// Dial with a revoked token, and the REST API with one, fail with ErrTokenRevoked.
func TestTokenRevoked(t *testing.T) {
	s := startServer(t)
	id := teststack.ID(t)
	user := func(name string) chat.UserID { return chat.UserID(id + "_" + name) }
	mint := func(u chat.UserID, device string) string {
		tok, err := minter.Mint(u, chat.DeviceID(device), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}

	t.Run("static token", func(t *testing.T) {
		ann := user("ann")
		c, k := dialWith(t, s, parley.StaticToken(mint(ann, "phone")))
		revoke(t, s, `{"user":"`+string(ann)+`","device":"phone"}`)
		stopped(t, c, k)
		// The REST API refuses the token too, and says so the same way.
		if _, err := c.REST().Inbox(context.Background(), "", 10); !errors.Is(err, parley.ErrTokenRevoked) {
			t.Errorf("REST with the revoked token: %v; want ErrTokenRevoked", err)
		}
	})

	t.Run("new token revoked too", func(t *testing.T) {
		ben := user("ben")
		ts := &tokens{list: []string{mint(ben, "phone"), mint(ben, "phone")}}
		c, k := dialWith(t, s, ts.source)
		revoke(t, s, `{"user":"`+string(ben)+`","device":"phone"}`)
		stopped(t, c, k)
		if n := ts.count(); n != 2 {
			t.Errorf("token source called %d times; want 2 (Dial, then once after the 4003)", n)
		}
	})

	t.Run("signs in again", func(t *testing.T) {
		cat := user("cat")
		fresh := func(context.Context) (string, error) { return minter.Mint(cat, "phone", time.Hour) }
		c, k := dialWith(t, s, fresh)
		revoke(t, s, `{"user":"`+string(cat)+`"}`) // every token of cat issued until now
		if !teststack.Eventually(t, 10*time.Second, func() bool { return k.connected() >= 2 }) {
			k.mu.Lock()
			t.Fatalf("no reconnect with a new token: states %v, errors %v", k.states, k.stateErr)
		}
		if _, err := c.Subscribe(context.Background(), string(cat)); err != nil {
			t.Errorf("request after signing in again: %v", err)
		}
		k.mu.Lock()
		defer k.mu.Unlock()
		if len(k.stateErr) != 0 {
			t.Errorf("state errors %v; want none", k.stateErr)
		}
	})

	t.Run("refused at the handshake", func(t *testing.T) {
		dan := user("dan")
		tok := mint(dan, "phone")
		c, k := dialWith(t, s, parley.StaticToken(tok))
		// Revoked while the server is down (through NATS, with parleyd admin): the client,
		// reconnecting meanwhile, learns it from the handshake, not from a 4003.
		s.kill()
		cmd := exec.Command(parleydBin, "admin", "revoke", "--user="+string(dan))
		cmd.Env = s.env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("parleyd admin revoke: %v\n%s", err, out)
		}
		s.start()
		stopped(t, c, k)
		k.mu.Lock()
		if n := slices.Index(k.states, parley.Disconnected); n < 0 || slices.Contains(k.states[n:], parley.Connected) {
			t.Errorf("states %v; want no connection after the restart", k.states)
		}
		k.mu.Unlock()
		// Dial with the revoked token fails at once.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := parley.Dial(ctx, s.url(), parley.WithToken(parley.StaticToken(tok))); !errors.Is(err, parley.ErrTokenRevoked) {
			t.Errorf("Dial with a revoked token: %v; want ErrTokenRevoked", err)
		}
	})
}
