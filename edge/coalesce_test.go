package edge

import (
	"testing"
	"time"

	"github.com/parleyhq/parley/protocol"
)

// Presence events: a user's first event goes out at once; more within the interval are held
// and only the latest goes out when it ends.
func TestPresenceCoalescing(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	c := newCoalescer(presenceInterval)
	ev := func(state string) protocol.PresenceState { return protocol.PresenceState{User: "alice", State: state} }
	if !c.event(ev("online"), now) {
		t.Fatal("the first event was not sent at once")
	}
	now = now.Add(50 * time.Millisecond)
	if c.event(ev("offline"), now) || c.event(ev("online"), now) {
		t.Fatal("an event within the interval was sent at once")
	}
	if due := c.due(now); len(due) != 0 {
		t.Fatalf("within the interval: due %+v; want nothing yet", due)
	}
	if st, held := c.pending["alice"]; !held || st.State != "online" {
		t.Fatalf("within the interval: held %+v, %v; want the latest (online) held", st, held)
	}
	now = now.Add(presenceInterval)
	if due := c.due(now); len(due) != 1 || due[0].State != "online" {
		t.Fatalf("when the interval ended: due %+v; want the held online event", due)
	}
	now = now.Add(presenceInterval)
	c.due(now)
	if len(c.sent) != 0 || len(c.pending) != 0 {
		t.Error("old send times are not forgotten")
	}
}
