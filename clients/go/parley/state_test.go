package parley

import (
	"encoding/hex"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/protocol"
)

// FuzzTracker checks the seq/dedupe state machine against its model: whatever order,
// duplication and loss the live feed has, as long as a sync eventually supplies what was
// missed, the app sees seqs 1..n of each conversation exactly once and in order.
func FuzzTracker(f *testing.F) {
	f.Add(uint64(1), uint8(20))
	f.Add(uint64(42), uint8(200))
	f.Add(uint64(7), uint8(3))
	f.Fuzz(func(t *testing.T, seed uint64, n uint8) {
		r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
		convs := []string{"a", "b", "c"}
		total := int64(n) + 1
		tr := newTracker(nil)
		got := map[string][]int64{}
		deliver := func(ready []protocol.Message) {
			for _, m := range ready {
				got[m.Conversation] = append(got[m.Conversation], m.Seq)
			}
		}
		// The live feed: every seq of every conversation, shuffled locally, some duplicated,
		// some lost.
		var live []protocol.Message
		for _, c := range convs {
			for s := int64(1); s <= total; s++ {
				if r.IntN(10) == 0 {
					continue // lost
				}
				live = append(live, protocol.Message{Conversation: c, Seq: s})
				if r.IntN(8) == 0 {
					live = append(live, protocol.Message{Conversation: c, Seq: s}) // duplicated
				}
			}
		}
		for i := range live { // local reordering: swap with a near neighbour
			if j := i + r.IntN(4); j < len(live) {
				live[i], live[j] = live[j], live[i]
			}
		}
		for _, m := range live {
			ready, _ := tr.offer(m)
			deliver(ready)
			if r.IntN(20) == 0 { // a sync in the middle returns a prefix of what was missed
				for _, c := range tr.cursors() {
					upto := c.Seq + int64(r.IntN(5))
					for s := c.Seq + 1; s <= min(upto, total); s++ {
						ready, _ := tr.offer(protocol.Message{Conversation: c.Conversation, Seq: s})
						deliver(ready)
					}
				}
			}
		}
		// The final sync returns everything after each cursor.
		start := tr.now()
		for _, c := range convs {
			for s := tr.cursor[c] + 1; s <= total; s++ {
				ready, _ := tr.offer(protocol.Message{Conversation: c, Seq: s})
				deliver(ready)
			}
		}
		reached := map[string]int64{}
		for _, c := range convs {
			reached[c] = total
		}
		deliver(tr.settle(start, reached))
		for _, c := range convs {
			if int64(len(got[c])) != total {
				t.Fatalf("conversation %s delivered %d of %d: %v", c, len(got[c]), total, got[c])
			}
			for i, s := range got[c] {
				if s != int64(i+1) {
					t.Fatalf("conversation %s delivered %v; want 1..%d in order, once", c, got[c], total)
				}
			}
		}
		if len(tr.pending) != 0 {
			t.Fatalf("messages still held: %v", tr.pending)
		}
	})
}

// A member added later first receives a message far past seq 1; the sync that follows returns
// nothing earlier (they may not see it), so the held message is released and the cursor moves.
func TestTrackerLateJoin(t *testing.T) {
	tr := newTracker(nil)
	if ready, gap := tr.offer(protocol.Message{Conversation: "g", Seq: 41}); len(ready) != 0 || !gap {
		t.Fatalf("seq 41 first: ready %v gap %v; want held", ready, gap)
	}
	start := tr.now()
	ready, _ := tr.offer(protocol.Message{Conversation: "g", Seq: 41}) // the sync returns it again
	ready = append(ready, tr.settle(start, map[string]int64{"g": 41})...)
	if len(ready) != 1 || ready[0].Seq != 41 || tr.cursor["g"] != 41 {
		t.Fatalf("after the sync: ready %v cursor %d; want 41 delivered", ready, tr.cursor["g"])
	}
	// A message that arrives after a sync started is not settled by it.
	tr.offer(protocol.Message{Conversation: "g", Seq: 44})
	if r := tr.settle(start, map[string]int64{"g": 44}); len(r) != 0 {
		t.Fatalf("settled %v, held after the sync started", r)
	}
}

// A message pushed live before the server stored it (its store was down) arrives past a gap;
// a sync that does not yet cover it (the conversation's last_seq below it) must not take the
// gap for seqs the member may not see: the held message waits, and the gap is filled by a
// later sync. (Settling here made the fault-injection suite's devices skip 263 messages.)
func TestTrackerDoesNotSettleWhatTheSyncDidNotCover(t *testing.T) {
	tr := newTracker(map[string]int64{"c": 10})
	tr.offer(protocol.Message{Conversation: "c", Seq: 15})
	start := tr.now()
	// The sync returns 11 and 12 only: the server has stored up to 12.
	var ready []protocol.Message
	for s := int64(11); s <= 12; s++ {
		r, _ := tr.offer(protocol.Message{Conversation: "c", Seq: s})
		ready = append(ready, r...)
	}
	ready = append(ready, tr.settle(start, map[string]int64{"c": 12})...)
	if len(ready) != 2 || tr.cursor["c"] != 12 || !tr.gap("c") {
		t.Fatalf("ready %v cursor %d gap %v; want 11, 12 delivered and 15 still held", ready, tr.cursor["c"], tr.gap("c"))
	}
	// The next sync covers it.
	start = tr.now()
	for s := int64(13); s <= 15; s++ {
		r, _ := tr.offer(protocol.Message{Conversation: "c", Seq: s})
		ready = append(ready, r...)
	}
	ready = append(ready, tr.settle(start, map[string]int64{"c": 15})...)
	if len(ready) != 5 || tr.cursor["c"] != 15 || tr.gap("c") {
		t.Fatalf("ready %v cursor %d; want 11..15 once", ready, tr.cursor["c"])
	}
}

// Client message ids are UUIDv7: version 7, the RFC 4122 variant, and the current time in
// their first 48 bits (the server relies on it while its store is down).
func TestNewUUIDIsVersion7(t *testing.T) {
	before := time.Now().UnixMilli()
	id := newUUID()
	after := time.Now().UnixMilli()
	raw, err := hex.DecodeString(strings.ReplaceAll(id, "-", ""))
	if err != nil || len(raw) != 16 || len(id) != 36 {
		t.Fatalf("newUUID() = %q", id)
	}
	if raw[6]>>4 != 7 || raw[8]>>6 != 2 {
		t.Errorf("%s: version %d, variant %d; want 7 and 2", id, raw[6]>>4, raw[8]>>6)
	}
	var ms int64
	for _, b := range raw[:6] {
		ms = ms<<8 | int64(b)
	}
	if ms < before || ms > after {
		t.Errorf("%s carries %d ms; want between %d and %d", id, ms, before, after)
	}
	if newUUID() == id {
		t.Error("two ids are equal")
	}
}
