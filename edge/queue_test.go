package edge

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/parleyhq/parley/protocol"
)

// stalledConn is a connection of te's server whose writer never runs (as while the handshake
// holds the socket): what is queued stays queued, for the overflow policy to be looked at.
func stalledConn(te *testEdge) *Conn {
	c := &Conn{s: te.s}
	c.holdWrites()
	return c
}

func frame(t *testing.T, f protocol.Frame) outFrame {
	t.Helper()
	data, err := protocol.Encode(f)
	if err != nil {
		t.Fatal(err)
	}
	return outFrame{data: data, typ: f.Type, ephemeral: protocol.Ephemeral(f.Type) && f.ID == ""}
}

// The queue is bounded in bytes, not only in frames: ten 100 KiB messages fit in the default
// 1 MiB; the eleventh evicts the queued typing frame, still does not fit, and the client is
// closed as a slow consumer with only the reconnect hint left, though far fewer than
// QueueLen frames were queued. A typing frame that does not fit is dropped.
func TestQueueIsBoundedInBytes(t *testing.T) {
	te := newTestEdge(t, Config{}, nil)
	c := stalledConn(te)
	big := strings.Repeat("m", 100<<10)
	if !c.enqueue(frame(t, protocol.Frame{Type: protocol.TypeTyping, User: "bob"})) {
		t.Fatal("typing frame refused by an empty queue")
	}
	for i := 0; i < 10; i++ {
		if !c.enqueue(frame(t, protocol.Frame{Type: protocol.TypeMessage, Seq: int64(i + 1), Body: big})) {
			t.Fatalf("message %d of 100 KiB refused with %d bytes queued", i+1, c.queued)
		}
	}
	if c.enqueue(frame(t, protocol.Frame{Type: protocol.TypeTyping, User: "carol", Conversation: strings.Repeat("c", 30<<10)})) {
		t.Error("a typing frame was queued past the byte cap")
	}
	if c.enqueue(frame(t, protocol.Frame{Type: protocol.TypeMessage, Seq: 11, Body: big})) {
		t.Error("the eleventh message of 100 KiB was queued past the 1 MiB cap")
	}
	drops := func(reason string) float64 { return testutil.ToFloat64(te.s.metrics.drops.WithLabelValues(reason)) }
	if drops("queue_full_ephemeral") != 1 || drops("evicted_ephemeral") != 1 || drops("slow_consumer") != 1 {
		t.Errorf("drops: full %v, evicted %v, slow %v; want 1 each", drops("queue_full_ephemeral"), drops("evicted_ephemeral"), drops("slow_consumer"))
	}
	if !c.closed || c.closeCode != protocol.CloseSlowConsumer || len(c.queue) != 1 || c.queue[0].typ != protocol.TypeReconnect {
		t.Fatalf("after the overflow: closed %v code %d, %d frames queued; want closed with 4009 and the reconnect hint", c.closed, c.closeCode, len(c.queue))
	}
	if c.queued != len(c.queue[0].data) {
		t.Errorf("queued bytes %d; want the hint's %d", c.queued, len(c.queue[0].data))
	}
	// A single frame larger than the cap still goes to an empty queue.
	c2 := stalledConn(te)
	if !c2.enqueue(frame(t, protocol.Frame{Type: protocol.TypeSyncResult, ID: "y", Messages: []protocol.Message{{Body: strings.Repeat("x", 2<<20)}}})) {
		t.Error("an empty queue refused one frame over the cap")
	}
}

// presenceFrame is a presence update as deliverPresence queues it.
func presenceFrame(t *testing.T, user, state string) outFrame {
	st := protocol.PresenceState{User: user, State: state}
	f := frame(t, protocol.Frame{Type: protocol.TypePresence, Presence: []protocol.PresenceState{st}})
	f.st = &st
	return f
}

// picture is what a client shows after reading everything the connection would write: the
// queue, then the held states (as the writer appends them), in order; and whether it got
// presence.resync.
func picture(t *testing.T, c *Conn) (map[string]string, bool) {
	t.Helper()
	got, resync := map[string]string{}, false
	for _, f := range appendHeld(c.queue, c.held, c.heldLost) {
		var fr protocol.Frame
		if err := json.Unmarshal(f.data, &fr); err != nil {
			t.Fatal(err)
		}
		if len(fr.Presence) > protocol.MaxUsersPerCall {
			t.Errorf("a presence frame of %d states; want at most %d", len(fr.Presence), protocol.MaxUsersPerCall)
		}
		for _, st := range fr.Presence {
			got[st.User] = st.State
		}
		resync = resync || fr.Type == protocol.TypePresenceResync
	}
	return got, resync
}

// A burst of 1,000 presence updates (an edge died and its users' sessions expired together)
// on a connection whose queue holds 256 frames: none is lost. The updates that find the queue
// full are held per user, the latest state winning, and go out after the queue; one evicted
// to make room for a message is held too, unless a later update of that user is queued.
func TestPresenceBurstIsHeldNotDropped(t *testing.T) {
	te := newTestEdge(t, Config{}, nil)
	c := stalledConn(te)
	user := func(i int) string { return fmt.Sprintf("u%04d", i) }
	// u0000 flaps: online first (queued), offline last (held).
	c.enqueue(presenceFrame(t, user(0), protocol.PresenceOnline))
	for i := 1; i < 1000; i++ {
		if !c.enqueue(presenceFrame(t, user(i), protocol.PresenceOffline)) {
			t.Fatalf("presence update %d refused", i)
		}
	}
	c.enqueue(presenceFrame(t, user(0), protocol.PresenceOffline))
	// A message makes room by evicting the oldest presence frame (u0000 online, superseded by
	// the held offline) and then the next (u0001, held).
	c.enqueue(frame(t, protocol.Frame{Type: protocol.TypeMessage, Seq: 1, Body: "hi"}))
	c.enqueue(frame(t, protocol.Frame{Type: protocol.TypeMessage, Seq: 2, Body: "hi"}))
	if c.closed || len(c.queue) != te.s.cfg.QueueLen {
		t.Fatalf("closed %v with %d queued; want open with a full queue", c.closed, len(c.queue))
	}
	got, resync := picture(t, c)
	for i := 0; i < 1000; i++ {
		if got[user(i)] != protocol.PresenceOffline {
			t.Fatalf("%s ends %q; want offline (%d users seen)", user(i), got[user(i)], len(got))
		}
	}
	if resync {
		t.Error("presence.resync sent though nothing was lost")
	}
	if n := testutil.ToFloat64(te.s.metrics.drops.WithLabelValues("queue_full_ephemeral")); n != 0 {
		t.Errorf("%v presence updates dropped", n)
	}
}

// Held states are bounded (twice the subscription limit); an update past the bound is
// dropped, and the client is told so with presence.resync.
func TestPresenceLostIsSignalled(t *testing.T) {
	te := newTestEdge(t, Config{QueueLen: 4, MaxSubscriptions: 5}, nil)
	c := stalledConn(te)
	for i := 0; i < 4+10+1; i++ {
		c.enqueue(presenceFrame(t, fmt.Sprintf("u%d", i), protocol.PresenceOnline))
	}
	if len(c.held) != 10 || !c.heldLost {
		t.Fatalf("held %d, lost %v; want 10 held and the loss noted", len(c.held), c.heldLost)
	}
	if _, resync := picture(t, c); !resync {
		t.Error("no presence.resync after a presence update was dropped")
	}
	if n := testutil.ToFloat64(te.s.metrics.drops.WithLabelValues("presence_resync")); n != 1 {
		t.Errorf("presence_resync drops %v; want 1", n)
	}
}
