package gotest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/parleyhq/parley/clients/go/parley"
	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/teststack"
	"github.com/parleyhq/parley/protocol"
)

// The SDK is tested against a real parleyd (built from the root module, started as a process
// on the stack `make test` brings up), as an app would use it.

const secret = "sdk-test-secret-0123456789abcdef0123"

// adminToken is the servers' admin API credential (revocations).
const adminToken = "sdk-test-admin-token-0123456789abcdef"

var parleydBin string

func TestMain(m *testing.M) {
	code := teststack.RunWithParleyd(m, &parleydBin)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goroutines left after the tests: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// server is a parleyd process; restart keeps its addresses and stream.
type server struct {
	t      *testing.T
	public string
	admin  string
	env    []string
	cmd    *exec.Cmd
	out    bytes.Buffer
}

func startServer(t *testing.T) *server { return startServerWith(t) }

// startServerWith starts parleyd with extra environment variables ("PARLEY_X=v").
func startServerWith(t *testing.T, extra ...string) *server {
	id := teststack.ID(t)
	s := &server{t: t, public: teststack.FreeAddr(t), admin: teststack.FreeAddr(t)}
	s.env = append(os.Environ(), "PARLEY_AUTH_HS256_SECRET="+secret, "PARLEY_LOG_LEVEL=warn",
		"PARLEY_LISTEN_ADDR="+s.public, "PARLEY_ADMIN_ADDR="+s.admin, "PARLEY_EDGE_DRAIN_WINDOW=100ms", "PARLEY_EDGE_DRAIN_DELAY=0", "PARLEY_EDGE_REBALANCE=false",
		"PARLEY_CASSANDRA_KEYSPACE="+teststack.Keyspace, "PARLEY_CASSANDRA_CONSISTENCY=ONE",
		"PARLEY_DELIVERY_STREAM=T_"+id, "PARLEY_DELIVERY_SUBJECT_PREFIX=test."+id+".",
		"PARLEY_REVOCATION_BUCKET=T_"+id+"_REV", "PARLEY_ADMIN_TOKEN="+adminToken)
	s.env = append(s.env, extra...)
	teststack.Cassandra(t) // the test keyspace is migrated
	n := teststack.NATS(t) // closed after the cleanup below (cleanups run last first)
	t.Cleanup(func() {
		s.kill()
		teststack.DeleteStreams(t, "T_"+id)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = n.JetStream.DeleteKeyValue(ctx, "T_"+id+"_REV")
	})
	s.start()
	return s
}

func (s *server) start() {
	s.t.Helper()
	s.cmd = exec.Command(parleydBin, "run")
	s.cmd.Env = s.env
	s.cmd.Stdout, s.cmd.Stderr = &s.out, &s.out
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	if !teststack.Eventually(s.t, 60*time.Second, func() bool { return teststack.Ready(s.admin) }) {
		s.t.Fatalf("parleyd never ready:\n%s", s.out.String())
	}
}

// kill ends the process with SIGKILL: its sockets are cut, nothing is said to the clients.
func (s *server) kill() {
	if s.cmd != nil && s.cmd.ProcessState == nil {
		_ = s.cmd.Process.Signal(syscall.SIGKILL)
		_ = s.cmd.Wait()
	}
}

func (s *server) url() string { return "ws://" + s.public + "/v1/ws" }

var minter, _ = auth.New(auth.Config{HS256Secret: []byte(secret)}, nil)

func tokenFor(user chat.UserID) parley.TokenSource {
	return func(context.Context) (string, error) { return minter.Mint(user, "", time.Hour) }
}

func dial(t *testing.T, s *server, user chat.UserID, opts ...parley.Option) *parley.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := parley.Dial(ctx, s.url(), append([]parley.Option{parley.WithToken(tokenFor(user)), parley.WithDevice("d1"),
		parley.WithBackoff(50*time.Millisecond, time.Second)}, opts...)...)
	if err != nil {
		t.Fatalf("dial as %s: %v", user, err)
	}
	return c
}

// collector reads a client's events in the background.
type collector struct {
	mu       sync.Mutex
	messages []parley.Event
	accepted map[string]int
	failed   []parley.Event
	states   []parley.ConnState
	stateErr []error // the Err of state events that carry one
	done     chan struct{}
}

func collect(c *parley.Client) *collector {
	k := &collector{accepted: map[string]int{}, done: make(chan struct{})}
	go func() {
		defer close(k.done)
		for e := range c.Events() {
			k.mu.Lock()
			switch e.Kind {
			case parley.EventMessage:
				k.messages = append(k.messages, e)
			case parley.EventAccepted:
				k.accepted[e.ClientMsgID]++
			case parley.EventSendFailed:
				k.failed = append(k.failed, e)
			case parley.EventState:
				k.states = append(k.states, e.State)
				if e.Err != nil {
					k.stateErr = append(k.stateErr, e.Err)
				}
			}
			k.mu.Unlock()
		}
	}()
	return k
}

func (k *collector) count() (messages, accepted int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.messages), len(k.accepted)
}

// inOrder checks the messages of conv are seqs 1..n, each once.
func (k *collector) inOrder(t *testing.T, conv string, n int) {
	t.Helper()
	k.mu.Lock()
	defer k.mu.Unlock()
	var seqs []int64
	for _, e := range k.messages {
		if e.Message.Conversation == conv {
			seqs = append(seqs, e.Message.Seq)
		}
	}
	if len(seqs) != n {
		t.Fatalf("got %d messages of %s; want %d (%v)", len(seqs), conv, n, seqs)
	}
	for i, s := range seqs {
		if s != int64(i+1) {
			t.Fatalf("messages of %s: %v; want 1..%d, once and in order", conv, seqs, n)
		}
	}
}

// pair is alice and bob on server s, each with a client and its collector (bob's keeping
// its state in store), and their direct conversation.
type pair struct {
	alice, bob chat.UserID
	store      *parley.MemoryStore
	ca, cb     *parley.Client
	ka, kb     *collector
	conv       parley.Conversation
}

func newPair(t *testing.T, s *server) pair {
	t.Helper()
	p := pair{store: parley.NewMemoryStore()}
	p.alice, p.bob = users(t)
	p.cb = dial(t, s, p.bob, parley.WithStore(p.store))
	p.kb = collect(p.cb)
	p.ca = dial(t, s, p.alice)
	p.ka = collect(p.ca)
	conv, err := p.ca.REST().CreateDirect(context.Background(), string(p.bob))
	if err != nil {
		t.Fatal(err)
	}
	p.conv = conv
	return p
}

func users(t *testing.T) (chat.UserID, chat.UserID) {
	id := teststack.ID(t)
	return chat.UserID(id + "_alice"), chat.UserID(id + "_bob")
}

// Two users chat: every message is accepted once and reaches both, in order.
func TestTwoUsersChat(t *testing.T) {
	s := startServer(t)
	alice, bob := users(t)
	ca, cb := dial(t, s, alice), dial(t, s, bob)
	ka, kb := collect(ca), collect(cb)
	conv, err := ca.REST().CreateDirect(context.Background(), string(bob))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if _, err := ca.Send(context.Background(), conv.ID, fmt.Sprintf("hi %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if !teststack.Eventually(t, 20*time.Second, func() bool {
		na, acc := ka.count()
		nb, _ := kb.count()
		return na >= 5 && nb >= 5 && acc == 5
	}) {
		t.Fatalf("alice %v, bob %v", fmt.Sprint(ka.count()), fmt.Sprint(kb.count()))
	}
	ca.Close()
	cb.Close()
	<-ka.done
	<-kb.done
	ka.inOrder(t, conv.ID, 5)
	kb.inOrder(t, conv.ID, 5)
	if kb.messages[0].Message.Body != "hi 0" {
		t.Errorf("first message %+v", kb.messages[0].Message)
	}
}

// Bob is offline while 200 messages arrive; when he reconnects (same store) he gets all 200,
// once and in order.
func TestOfflineCatchUp(t *testing.T) {
	s := startServer(t)
	p := newPair(t, s)
	bob, store, cb, kb, ca, ka, conv := p.bob, p.store, p.cb, p.kb, p.ca, p.ka, p.conv
	ca.Send(context.Background(), conv.ID, "before")
	if !teststack.Eventually(t, 20*time.Second, func() bool { n, _ := kb.count(); return n == 1 }) {
		t.Fatal("bob did not get the first message")
	}
	cb.Close()
	<-kb.done
	for i := 0; i < 200; i++ {
		if _, err := ca.Send(context.Background(), conv.ID, fmt.Sprintf("m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if !teststack.Eventually(t, 60*time.Second, func() bool { _, acc := ka.count(); return acc == 201 }) {
		t.Fatalf("alice: %v accepted", fmt.Sprint(ka.count()))
	}
	cb2 := dial(t, s, bob, parley.WithStore(store))
	kb2 := collect(cb2)
	if !teststack.Eventually(t, 60*time.Second, func() bool { n, _ := kb2.count(); return n >= 200 }) {
		t.Fatalf("bob after reconnecting: %v", fmt.Sprint(kb2.count()))
	}
	time.Sleep(500 * time.Millisecond) // a duplicate would arrive by now
	cb2.Close()
	ca.Close()
	<-kb2.done
	<-ka.done
	kb2.mu.Lock()
	n := len(kb2.messages)
	first := kb2.messages[0].Message.Seq
	kb2.mu.Unlock()
	if n != 200 || first != 2 {
		t.Fatalf("bob got %d messages starting at seq %d; want the 200 he missed, from seq 2", n, first)
	}
	for i, e := range kb2.messages {
		if e.Message.Seq != int64(i+2) || e.Message.Body != fmt.Sprintf("m%d", i) {
			t.Fatalf("message %d: %+v", i, e.Message)
		}
	}
}

// Sync pages bounded in bytes (16 KiB here, so three 4 KiB messages a page): bob, offline
// while 60 such messages arrive, pages through them all on reconnecting, once and in order.
func TestOfflineCatchUpInBytePages(t *testing.T) {
	s := startServerWith(t, "PARLEY_EDGE_SYNC_PAGE_BYTES=16384")
	p := newPair(t, s)
	bob, store, cb, kb, ca, ka, conv := p.bob, p.store, p.cb, p.kb, p.ca, p.ka, p.conv
	if !teststack.Eventually(t, 20*time.Second, func() bool {
		kb.mu.Lock()
		defer kb.mu.Unlock()
		return len(kb.states) > 0 && kb.states[len(kb.states)-1] == parley.Connected
	}) {
		t.Fatal("bob never connected")
	}
	cb.Close()
	<-kb.done
	const n = 60
	body := strings.Repeat("x", 4<<10)
	for i := 0; i < n; i++ {
		if _, err := ca.Send(context.Background(), conv.ID, fmt.Sprintf("%03d%s", i, body)); err != nil {
			t.Fatal(err)
		}
	}
	if !teststack.Eventually(t, 60*time.Second, func() bool { _, acc := ka.count(); return acc == n }) {
		t.Fatalf("alice: %v accepted", fmt.Sprint(ka.count()))
	}
	cb2 := dial(t, s, bob, parley.WithStore(store))
	kb2 := collect(cb2)
	if !teststack.Eventually(t, 60*time.Second, func() bool { got, _ := kb2.count(); return got >= n }) {
		t.Fatalf("bob after reconnecting: %v of %d", fmt.Sprint(kb2.count()), n)
	}
	time.Sleep(500 * time.Millisecond) // a duplicate would arrive by now
	cb2.Close()
	ca.Close()
	<-kb2.done
	<-ka.done
	kb2.inOrder(t, conv.ID, n)
	for i, e := range kb2.messages {
		if !strings.HasPrefix(e.Message.Body, fmt.Sprintf("%03d", i)) || len(e.Message.Body) != 3+len(body) {
			t.Fatalf("message %d: seq %d, %d bytes", i, e.Message.Seq, len(e.Message.Body))
		}
	}
}

// The server is killed in the middle of a burst of sends (its sockets are cut) and started
// again: the client reconnects and resends, and every message is accepted exactly once.
func TestServerCutMidBurst(t *testing.T) {
	s := startServer(t)
	alice, bob := users(t)
	ca := dial(t, s, alice)
	ka := collect(ca)
	conv, err := ca.REST().CreateDirect(context.Background(), string(bob))
	if err != nil {
		t.Fatal(err)
	}
	const total = 100
	sent := map[string]bool{}
	for i := 0; i < total; i++ {
		id, err := ca.Send(context.Background(), conv.ID, fmt.Sprintf("b%d", i))
		if err != nil {
			t.Fatal(err)
		}
		sent[id] = true
		if i == total/2 {
			s.kill()
			s.start()
		}
	}
	if !teststack.Eventually(t, 90*time.Second, func() bool { _, acc := ka.count(); return acc == total }) {
		t.Fatalf("accepted %v of %d; server:\n%s", fmt.Sprint(ka.count()), total, s.out.String())
	}
	// The history holds each message once.
	var all []string
	if !teststack.Eventually(t, 60*time.Second, func() bool {
		msgs, err := ca.REST().MessagesAfter(context.Background(), conv.ID, 0, 200)
		all = all[:0]
		for _, m := range msgs {
			all = append(all, m.ClientMsgID)
		}
		return err == nil && len(msgs) >= total
	}) {
		t.Fatalf("history has %d messages; want %d", len(all), total)
	}
	seen := map[string]bool{}
	for _, id := range all {
		if seen[id] || !sent[id] {
			t.Fatalf("history has %s twice or never sent", id)
		}
		seen[id] = true
	}
	if len(all) != total {
		t.Fatalf("history has %d messages; want %d", len(all), total)
	}
	ca.Close()
	<-ka.done
	ka.mu.Lock()
	defer ka.mu.Unlock()
	for id, n := range ka.accepted {
		if n != 1 {
			t.Errorf("%s accepted %d times", id, n)
		}
	}
	if len(ka.failed) > 0 {
		t.Errorf("sends failed: %+v", ka.failed)
	}
}

// Messages sent while the server is down stay in a FileStore's outbox; a new process (a new
// client on the same file) sends them once the server is back.
func TestRestartResendsFileOutbox(t *testing.T) {
	s := startServer(t)
	alice, bob := users(t)
	path := filepath.Join(t.TempDir(), "state.json")
	ca := dial(t, s, alice, parley.WithStore(parley.NewFileStore(path)))
	ka := collect(ca)
	conv, err := ca.REST().CreateDirect(context.Background(), string(bob))
	if err != nil {
		t.Fatal(err)
	}
	s.kill()
	for i := 0; i < 20; i++ {
		if _, err := ca.Send(context.Background(), conv.ID, fmt.Sprintf("o%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	ca.Close() // the "process" ends with 20 unsent messages
	<-ka.done
	if _, acc := ka.count(); acc != 0 {
		t.Fatalf("%d accepted with the server down", acc)
	}
	s.start()
	cb := dial(t, s, alice, parley.WithStore(parley.NewFileStore(path)))
	kb := collect(cb)
	if !teststack.Eventually(t, 60*time.Second, func() bool { _, acc := kb.count(); return acc == 20 }) {
		t.Fatalf("after the restart: %v accepted of 20", fmt.Sprint(kb.count()))
	}
	var msgs []protocol.Message
	teststack.Eventually(t, 30*time.Second, func() bool { // accepted first, sequenced a moment later
		msgs, err = cb.REST().MessagesAfter(context.Background(), conv.ID, 0, 100)
		return err == nil && len(msgs) >= 20
	})
	if err != nil || len(msgs) != 20 {
		t.Fatalf("history: %d messages, %v; want 20", len(msgs), err)
	}
	for i, m := range msgs {
		if m.Body != fmt.Sprintf("o%d", i) {
			t.Fatalf("message %d: %q; want the outbox in send order", i, m.Body)
		}
	}
	cb.Close()
	<-kb.done
	st, err := parley.NewFileStore(path).Load()
	if err != nil || len(st.Outbox) != 0 {
		t.Errorf("outbox after everything was accepted: %v %v", st.Outbox, err)
	}
}

// A token about to expire is replaced over the live connection: the connection outlives the
// first token.
func TestTokenRefresh(t *testing.T) {
	s := startServer(t)
	alice, _ := users(t)
	var mu sync.Mutex
	minted := 0
	short := func(context.Context) (string, error) {
		mu.Lock()
		minted++
		mu.Unlock()
		return minter.Mint(alice, "", 4*time.Second)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := parley.Dial(ctx, s.url(), parley.WithToken(short), parley.WithDevice("d1"))
	if err != nil {
		t.Fatal(err)
	}
	k := collect(c)
	time.Sleep(6 * time.Second) // past the first token's expiry
	if _, err := c.Subscribe(context.Background(), string(alice)); err != nil {
		t.Errorf("request after the first token expired: %v", err)
	}
	c.Close()
	<-k.done
	mu.Lock()
	defer mu.Unlock()
	if minted < 2 {
		t.Errorf("token source called %d times; want a refresh", minted)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, st := range k.states {
		if st == parley.Disconnected {
			t.Errorf("the connection dropped (states %v); the refresh should have kept it", k.states)
		}
	}
}

// REST.Presence answers a member's state in the order asked, and refuses a stranger (403
// under the default policy) with the server's error code.
func TestRESTPresence(t *testing.T) {
	s := startServer(t)
	p := newPair(t, s)
	defer p.ca.Close()
	defer p.cb.Close()
	var got []protocol.PresenceState
	if !teststack.Eventually(t, 10*time.Second, func() bool {
		var err error
		got, err = p.ca.REST().Presence(context.Background(), string(p.bob), string(p.alice))
		return err == nil && len(got) == 2 && got[0].State == protocol.PresenceOnline && got[1].State == protocol.PresenceOnline
	}) {
		t.Fatalf("presence of bob and alice = %+v; want both online, bob first", got)
	}
	if got[0].User != string(p.bob) || got[1].User != string(p.alice) {
		t.Fatalf("presence users = %s, %s; want %s, %s", got[0].User, got[1].User, p.bob, p.alice)
	}
	_, err := p.ca.REST().Presence(context.Background(), teststack.ID(t)+"_stranger")
	var apiErr *parley.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusForbidden {
		t.Fatalf("presence of a stranger: err %v; want a 403 APIError", err)
	}
}
