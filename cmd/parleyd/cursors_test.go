package main

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/teststack"
	"github.com/parleyhq/parley/protocol"
	"github.com/parleyhq/parley/protocol/rest"
)

// apiErr is the JSON Error body of the REST API.
type apiErr struct {
	Code    protocol.Code `json:"code"`
	Message string        `json:"message"`
}

// Cursor keys of the rotation tests: k1 was current, k2 takes over.
var (
	cursorK1 = "k1=" + strings.Repeat("1", 32)
	cursorK2 = "k2=" + strings.Repeat("2", 32)
)

// stackVars are the settings of a parleyd on the test's own streams.
func stackVars(t *testing.T, more map[string]string) map[string]string {
	id := teststack.ID(t)
	vars := map[string]string{
		"PARLEY_AUTH_HS256_SECRET":       testSecret,
		"PARLEY_EDGE_DRAIN_WINDOW":       "100ms",
		"PARLEY_DELIVERY_STREAM":         "T_" + id,
		"PARLEY_DELIVERY_SUBJECT_PREFIX": "test." + id + ".",
		"PARLEY_CASSANDRA_KEYSPACE":      teststack.Keyspace,
		"PARLEY_CASSANDRA_CONSISTENCY":   "ONE",
		"PARLEY_LOG_LEVEL":               "warn",
	}
	for k, v := range more {
		vars[k] = v
	}
	return vars
}

// client is one user of a parleyd under test: REST calls and, once connected, a device.
type client struct {
	t      *testing.T
	a      *auth.Authority
	public string
	user   chat.UserID
	ws     *websocket.Conn
	n      int
}

func newClient(t *testing.T, a *auth.Authority, public string, user chat.UserID) *client {
	return &client{t: t, a: a, public: public, user: user}
}

// rest makes a REST call and decodes a 2xx answer into out; it returns the status and, for
// any other, the error body.
func (c *client) rest(method, path, body string, out any) (int, apiErr) {
	c.t.Helper()
	status, data := restCall(c.t, c.a, c.public, c.user, method, path, body)
	var e apiErr
	if status/100 == 2 && out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			c.t.Fatalf("%s %s: %q: %v", method, path, data, err)
		}
	} else {
		_ = json.Unmarshal(data, &e)
	}
	return status, e
}

func (c *client) mustREST(method, path, body string, want int, out any) {
	c.t.Helper()
	if status, e := c.rest(method, path, body, out); status != want {
		c.t.Fatalf("%s %s as %s: %d %+v; want %d", method, path, c.user, status, e, want)
	}
}

func (c *client) post(conv, body string) {
	c.t.Helper()
	tok, _ := c.a.Mint(c.user, "", time.Hour)
	req, _ := http.NewRequest("POST", "http://"+c.public+"/v1/conversations/"+conv+"/messages", strings.NewReader(`{"body":"`+body+`"}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", chat.NewClientMsgID().String())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		c.t.Fatalf("post as %s: %d", c.user, resp.StatusCode)
	}
}

func (c *client) createGroup(members ...chat.UserID) string {
	c.t.Helper()
	var out struct{ ID string }
	b, _ := json.Marshal(members)
	c.mustREST("POST", "/v1/conversations", `{"kind":"group","title":"g","members":`+string(b)+`}`, http.StatusCreated, &out)
	return out.ID
}

func (c *client) createDirect(with chat.UserID) string {
	c.t.Helper()
	var out struct{ ID string }
	c.mustREST("POST", "/v1/conversations", `{"kind":"direct","with":"`+string(with)+`"}`, http.StatusCreated, &out)
	return out.ID
}

// inbox is the caller's whole inbox (one page of at most 200).
func (c *client) inbox() map[string]rest.InboxEntry {
	c.t.Helper()
	var in rest.Inbox
	c.mustREST("GET", "/v1/conversations?limit=200", "", http.StatusOK, &in)
	out := map[string]rest.InboxEntry{}
	for _, e := range in.Conversations {
		out[e.ID] = e
	}
	return out
}

// sync sends a sync frame from the client's device and returns the answer (sync.result or
// error), skipping live frames.
func (c *client) sync(since string, cursors ...protocol.Cursor) protocol.Frame {
	c.t.Helper()
	if c.ws == nil {
		c.ws = dialEdge(c.t, c.a, c.public, c.user, "phone")
	}
	c.n++
	id := "y" + string(rune('a'+c.n%26)) + time.Now().Format("150405.000000")
	if err := c.ws.WriteJSON(protocol.Frame{Type: protocol.TypeSync, ID: id, Since: since, Cursors: cursors}); err != nil {
		c.t.Fatal(err)
	}
	for {
		_ = c.ws.SetReadDeadline(time.Now().Add(20 * time.Second))
		var f protocol.Frame
		if err := c.ws.ReadJSON(&f); err != nil {
			c.t.Fatalf("read the answer to sync: %v", err)
		}
		if f.ID == id {
			return f
		}
	}
}

func syncConv(f protocol.Frame, conv string) (protocol.Conversation, bool) {
	i := slices.IndexFunc(f.Conversations, func(c protocol.Conversation) bool { return c.Conversation == conv })
	if i < 0 {
		return protocol.Conversation{}, false
	}
	return f.Conversations[i], true
}

// tamper changes one character in the middle of a token.
func tamper(tok string) string {
	b := []byte(tok)
	i := len(b) / 2
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

// Since-tokens and page cursors are signed and bound: another user's, another
// conversation's or a tampered one is refused with 400 bad_request (REST) or bad_request
// (sync); a valid one pages; after a key rotation, one signed with the previous key still
// works where the old key is listed, and is refused where it is not.
func TestCursorsAreSignedAndBound(t *testing.T) {
	vars := stackVars(t, map[string]string{"PARLEY_CURSOR_KEYS": cursorK1})
	_, public := startParleyd(t, vars, nil)
	a, _ := auth.New(auth.Config{HS256Secret: []byte(testSecret)}, nil)
	p := teststack.ID(t)
	alice := newClient(t, a, public, chat.UserID(p+"_alice"))
	bob := newClient(t, a, public, chat.UserID(p+"_bob"))
	carol := chat.UserID(p + "_carol")
	g1 := alice.createGroup(bob.user)
	g2 := alice.createGroup(bob.user, carol)
	alice.createDirect(carol)
	for i := 0; i < 3; i++ {
		alice.post(g1, "m")
	}
	if !teststack.Eventually(t, 30*time.Second, func() bool { return alice.inbox()[g1].LastSeq == 3 }) {
		t.Fatal("the messages were never projected")
	}

	// The inbox list: a page cursor pages, and is alice's only.
	var page1, page2 rest.Inbox
	alice.mustREST("GET", "/v1/conversations?limit=2", "", 200, &page1)
	if len(page1.Conversations) != 2 || page1.Next == "" {
		t.Fatalf("first page of 3: %+v; want 2 and a next cursor", page1)
	}
	alice.mustREST("GET", "/v1/conversations?limit=2&cursor="+url.QueryEscape(page1.Next), "", 200, &page2)
	if len(page2.Conversations) != 1 || page2.Next != "" || page2.Conversations[0].ID == page1.Conversations[0].ID {
		t.Errorf("second page: %+v; want the third conversation and no cursor", page2)
	}
	var bobPage rest.Inbox
	bob.mustREST("GET", "/v1/conversations?limit=1", "", 200, &bobPage)
	refused := func(who *client, path, what string) {
		t.Helper()
		status, e := who.rest("GET", path, "", nil)
		if status != http.StatusBadRequest || e.Code != protocol.CodeBadRequest || e.Message == "" {
			t.Errorf("%s: %d %+v; want 400 bad_request", what, status, e)
		}
	}
	refused(alice, "/v1/conversations?cursor="+url.QueryEscape(bobPage.Next), "alice with bob's inbox cursor")
	refused(alice, "/v1/conversations?cursor="+url.QueryEscape(tamper(page1.Next)), "a tampered inbox cursor")
	refused(alice, "/v1/conversations?cursor=2", "a bare offset")

	// Messages: a page has a next cursor, bound to the user and the conversation.
	var m1, m2 struct {
		Messages []protocol.Message `json:"messages"`
		Next     string             `json:"next"`
	}
	alice.mustREST("GET", "/v1/conversations/"+g1+"/messages?limit=2", "", 200, &m1)
	if len(m1.Messages) != 2 || m1.Messages[0].Seq != 3 || m1.Next == "" {
		t.Fatalf("latest 2 of 3 messages: %+v; want seqs 3, 2 and a next cursor", m1)
	}
	alice.mustREST("GET", "/v1/conversations/"+g1+"/messages?limit=2&cursor="+url.QueryEscape(m1.Next), "", 200, &m2)
	if len(m2.Messages) != 1 || m2.Messages[0].Seq != 1 || m2.Next != "" {
		t.Errorf("page after the cursor: %+v; want seq 1 and no cursor", m2)
	}
	var bm struct{ Next string }
	bob.mustREST("GET", "/v1/conversations/"+g1+"/messages?limit=1", "", 200, &bm)
	refused(alice, "/v1/conversations/"+g1+"/messages?cursor="+url.QueryEscape(bm.Next), "alice with bob's messages cursor")
	refused(alice, "/v1/conversations/"+g2+"/messages?cursor="+url.QueryEscape(m1.Next), "a cursor of another conversation")
	refused(alice, "/v1/conversations/"+g1+"/messages?cursor="+url.QueryEscape(tamper(m1.Next)), "a tampered messages cursor")
	refused(alice, "/v1/conversations/"+g1+"/messages?cursor="+url.QueryEscape(page1.Next), "an inbox cursor for messages")

	// Sync: the since-token is alice's only, and tampering shows.
	first := alice.sync("")
	if first.Type != protocol.TypeSyncResult || first.Since == "" || first.More {
		t.Fatalf("first sync: %+v", first)
	}
	if f := alice.sync(first.Since); f.Type != protocol.TypeSyncResult {
		t.Errorf("sync with alice's own since: %+v", f)
	}
	if f := bob.sync(first.Since); f.Type != protocol.TypeError || f.Code != protocol.CodeBadRequest {
		t.Errorf("bob's sync with alice's since: %+v; want bad_request", f)
	}
	if f := alice.sync(tamper(first.Since)); f.Type != protocol.TypeError || f.Code != protocol.CodeBadRequest {
		t.Errorf("sync with a tampered since: %+v; want bad_request", f)
	}

	// Rotation: an api process with k2 current and k1 still listed takes k1's cursors; one
	// that lists k2 alone refuses them, and its own cursors are taken by the first.
	apiOnly := func(keys string) *client {
		id := keys[:2] + teststack.ID(t)
		v := stackVars(t, map[string]string{"PARLEY_CURSOR_KEYS": keys, "PARLEY_ROLES": "api",
			"PARLEY_DELIVERY_STREAM": "T_" + id, "PARLEY_DELIVERY_SUBJECT_PREFIX": "test." + id + "."})
		_, pub := startParleyd(t, v, nil)
		return newClient(t, a, pub, alice.user)
	}
	rotated, k2only := apiOnly(cursorK2+","+cursorK1), apiOnly(cursorK2)
	var after rest.Inbox
	rotated.mustREST("GET", "/v1/conversations?limit=2&cursor="+url.QueryEscape(page1.Next), "", 200, &after)
	if len(after.Conversations) != 1 {
		t.Errorf("k1's cursor on the rotated process: %+v; want the last page", after)
	}
	rotated.mustREST("GET", "/v1/conversations/"+g1+"/messages?limit=2&cursor="+url.QueryEscape(m1.Next), "", 200, &m2)
	if len(m2.Messages) != 1 || m2.Messages[0].Seq != 1 {
		t.Errorf("k1's messages cursor on the rotated process: %+v", m2)
	}
	refused(k2only, "/v1/conversations?cursor="+url.QueryEscape(page1.Next), "k1's cursor where k1 is no longer listed")
	var k2page rest.Inbox
	k2only.mustREST("GET", "/v1/conversations?limit=2", "", 200, &k2page)
	rotated.mustREST("GET", "/v1/conversations?limit=2&cursor="+url.QueryEscape(k2page.Next), "", 200, &after)
}

// Unread counts only the other members' messages after the read position: a user's own
// sends, edits, reactions, deletions and membership changes count for nobody's unread but
// the others' texts, and a user's own send moves their read position. A direct
// conversation names the other member, in the inbox and in sync.
func TestUnreadCountsOtherMembersMessages(t *testing.T) {
	_, public := startParleyd(t, stackVars(t, nil), nil)
	a, _ := auth.New(auth.Config{HS256Secret: []byte(testSecret)}, nil)
	p := teststack.ID(t)
	alice := newClient(t, a, public, chat.UserID(p+"_alice"))
	bob := newClient(t, a, public, chat.UserID(p+"_bob"))
	carol := chat.UserID(p + "_carol")
	g := alice.createGroup(bob.user)
	// Alice does everything herself: 13 entries of the log, 3 of them texts. Each waits for
	// the one before to be projected (an event needs its target stored).
	seq := int64(0)
	step := func(method, path, body string) {
		t.Helper()
		if path == "" {
			alice.post(g, body)
		} else {
			alice.mustREST(method, "/v1/conversations/"+g+path, body, 202, nil)
		}
		seq++
		if !teststack.Eventually(t, 30*time.Second, func() bool { return alice.inbox()[g].LastSeq == seq }) {
			t.Fatalf("seq %d was never projected: %+v", seq, alice.inbox()[g])
		}
	}
	step("", "", "one")
	step("", "", "two")
	step("", "", "three")
	step("PATCH", "/messages/1", `{"body":"1"}`)
	step("PATCH", "/messages/2", `{"body":"2"}`)
	step("PUT", "/messages/1/reactions/"+url.PathEscape("👍"), "")
	step("PUT", "/messages/2/reactions/"+url.PathEscape("🎉"), "")
	step("DELETE", "/messages/1/reactions/"+url.PathEscape("👍"), "")
	step("DELETE", "/messages/3", "")
	for i := 0; i < 2; i++ {
		step("POST", "/members", `{"user":"`+string(carol)+`"}`)
		step("DELETE", "/members/"+string(carol), "")
	}
	if e := alice.inbox()[g]; e.Unread != 0 {
		t.Errorf("alice's unread after doing everything herself: %d (%+v); want 0", e.Unread, e)
	}
	// Bob has alice's three texts to read (the deleted one still counts: deleting does not
	// recount what others have not read).
	if e := bob.inbox()[g]; e.Unread != 3 {
		t.Errorf("bob's unread: %d (%+v); want alice's 3 texts", e.Unread, e)
	}
	// Bob answers: his own send moves his read position, and alice has one to read.
	bob.post(g, "hi")
	if !teststack.Eventually(t, 30*time.Second, func() bool { return bob.inbox()[g].ReadSeq == 14 }) {
		t.Errorf("bob's read position after his send: %+v; want 14", bob.inbox()[g])
	}
	if e := bob.inbox()[g]; e.Unread != 0 {
		t.Errorf("bob's unread after his send: %+v; want 0", e)
	}
	if e := alice.inbox()[g]; e.Unread != 1 {
		t.Errorf("alice's unread after bob's text: %+v; want 1", e)
	}
	if f := alice.sync(""); f.Type != protocol.TypeSyncResult {
		t.Errorf("alice's sync: %+v", f)
	} else if c, ok := syncConv(f, g); !ok || c.Unread != 1 || c.Peer != "" {
		t.Errorf("the group in alice's sync: %+v, %v; want unread 1, no peer", c, ok)
	}
	// Reading moves the count to what remains after the read position.
	alice.mustREST("POST", "/v1/conversations/"+g+"/read", `{"seq":14}`, 200, nil)
	if e := alice.inbox()[g]; e.Unread != 0 {
		t.Errorf("alice's unread after reading all: %+v; want 0", e)
	}

	// A direct conversation names the other member.
	d := alice.createDirect(bob.user)
	if e := alice.inbox()[d]; e.Peer != string(bob.user) {
		t.Errorf("alice's direct conversation with bob: %+v; want peer %s", e, bob.user)
	}
	if e := bob.inbox()[d]; e.Peer != string(alice.user) {
		t.Errorf("bob's direct conversation with alice: %+v; want peer %s", e, alice.user)
	}
	if f := bob.sync(""); f.Type != protocol.TypeSyncResult {
		t.Errorf("bob's sync: %+v", f)
	} else if c, ok := syncConv(f, d); !ok || c.Peer != string(alice.user) {
		t.Errorf("the direct conversation in bob's sync: %+v, %v; want peer %s", c, ok, alice.user)
	}
}

// A removed member's device learns of the removal once: the first sync (with only a since
// token from before the removal) returns the conversation up to and including the removal,
// and the syncs after it do not return it again.
func TestSyncReturnsARemovalOnce(t *testing.T) {
	_, public := startParleyd(t, stackVars(t, nil), nil)
	a, _ := auth.New(auth.Config{HS256Secret: []byte(testSecret)}, nil)
	p := teststack.ID(t)
	alice := newClient(t, a, public, chat.UserID(p+"_alice"))
	carol := newClient(t, a, public, chat.UserID(p+"_carol"))
	g := alice.createGroup(carol.user)
	alice.post(g, "before")
	if !teststack.Eventually(t, 30*time.Second, func() bool { return carol.inbox()[g].LastSeq == 1 }) {
		t.Fatal("the message was never projected")
	}
	first := carol.sync("")
	if _, ok := syncConv(first, g); !ok || first.Since == "" {
		t.Fatalf("carol's first sync: %+v; want the group", first)
	}
	alice.mustREST("DELETE", "/v1/conversations/"+g+"/members/"+string(carol.user), "", 202, nil)
	alice.post(g, "after")
	if !teststack.Eventually(t, 30*time.Second, func() bool { return alice.inbox()[g].LastSeq == 3 }) {
		t.Fatal("the removal was never projected")
	}
	learned := carol.sync(first.Since)
	c, ok := syncConv(learned, g)
	if !ok || c.LastSeq != 2 || len(learned.Messages) != 2 || learned.Messages[1].Kind != "member_removed" {
		t.Fatalf("carol's sync after her removal: %+v; want the group up to the removal at seq 2", learned)
	}
	// The since-token stands for the sync's start less a margin for other servers' clocks, so
	// the conversation may come back while the removal is within the margin; then never.
	since := learned.Since
	gone := teststack.Eventually(t, 30*time.Second, func() bool {
		f := carol.sync(since)
		since = f.Since
		_, ok := syncConv(f, g)
		return !ok
	})
	if !gone {
		t.Fatal("sync with only a since-token keeps returning the conversation carol was removed from")
	}
	for i := 0; i < 2; i++ {
		f := carol.sync(since)
		if _, ok := syncConv(f, g); ok || len(f.Messages) != 0 {
			t.Errorf("sync %d after she learned of her removal: %+v; want nothing", i, f)
		}
		since = f.Since
	}
}
