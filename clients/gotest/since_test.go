package gotest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/clients/go/parley"
	"github.com/parleyhq/parley/internal/teststack"
)

// A device whose persisted since-token the server refuses (signed with a cursor key that is
// no longer configured) syncs again from an empty since: its cursors keep the sync
// incremental, so it catches up with every message it missed once and in order, and keeps
// the new token the server gives it.
func TestRefusedSinceTokenResyncs(t *testing.T) {
	key := func(id string) string { return "PARLEY_CURSOR_KEYS=" + id + "=" + strings.Repeat(id, 32) }
	s := startServerWith(t, key("k1"))
	p := newPair(t, s)
	bob, store, cb, kb, ca, ka, conv := p.bob, p.store, p.cb, p.kb, p.ca, p.ka, p.conv
	if _, err := ca.Send(context.Background(), conv.ID, "m0"); err != nil {
		t.Fatal(err)
	}
	if !teststack.Eventually(t, 20*time.Second, func() bool { n, _ := kb.count(); return n == 1 }) {
		t.Fatal("bob did not get the first message")
	}
	cb.Close()
	<-kb.done
	const n = 30
	for i := 1; i <= n; i++ {
		if _, err := ca.Send(context.Background(), conv.ID, fmt.Sprintf("m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if !teststack.Eventually(t, 60*time.Second, func() bool { _, acc := ka.count(); return acc == n+1 }) {
		t.Fatalf("alice: %v accepted", fmt.Sprint(ka.count()))
	}
	ca.Close()
	<-ka.done
	old, err := store.Load()
	if err != nil || old.Since == "" || old.Cursors[conv.ID] != 1 {
		t.Fatalf("bob's state before the rotation: %+v, %v; want a since-token and cursor 1", old, err)
	}

	// The key bob's token was signed with is retired: parleyd starts again with another.
	s.kill()
	s.env = append(s.env, key("k2"))
	s.start()
	cb2 := dial(t, s, bob, parley.WithStore(store))
	kb2 := collect(cb2)
	if !teststack.Eventually(t, 60*time.Second, func() bool { got, _ := kb2.count(); return got >= n }) {
		t.Fatalf("bob after the key rotation: %v of %d messages", fmt.Sprint(kb2.count()), n)
	}
	time.Sleep(500 * time.Millisecond) // a duplicate would arrive by now
	cb2.Close()
	<-kb2.done
	kb2.mu.Lock()
	defer kb2.mu.Unlock()
	if len(kb2.messages) != n {
		t.Fatalf("bob got %d messages; want the %d he missed", len(kb2.messages), n)
	}
	for i, e := range kb2.messages {
		if e.Message.Seq != int64(i+2) || e.Message.Body != fmt.Sprintf("m%d", i+1) {
			t.Fatalf("message %d: seq %d %q; want seq %d m%d (once, in order)", i, e.Message.Seq, e.Message.Body, i+2, i+1)
		}
	}
	st, err := store.Load()
	if err != nil || st.Since == "" || st.Since == old.Since || st.Cursors[conv.ID] != n+1 {
		t.Errorf("bob's state after catching up: since %q (before %q), cursor %d, %v; want a new token and cursor %d",
			st.Since, old.Since, st.Cursors[conv.ID], err, n+1)
	}
}
