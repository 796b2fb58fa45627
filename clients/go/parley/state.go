package parley

import (
	"sort"

	"github.com/parleyhq/parley/protocol"
)

// tracker is the client's seq/dedupe state machine: per conversation, the seq up to which
// messages were handed to the app (the cursor), and messages received ahead of a gap.
// Offering a message returns what may now be delivered, in seq order, each seq once; a
// message past a gap is held and reported, so the caller fetches the gap (sync) first.
// It is not safe for concurrent use.
type tracker struct {
	cursor  map[string]int64
	pending map[string]map[int64]held
	clock   int64 // counts offers: the "time" a message was held
}

type held struct {
	m  protocol.Message
	at int64
}

func newTracker(cursors map[string]int64) *tracker {
	t := &tracker{cursor: map[string]int64{}, pending: map[string]map[int64]held{}}
	for c, s := range cursors {
		t.cursor[c] = s
	}
	return t
}

// offer takes one received message (live or synced) and returns the messages now ready, and
// whether a gap is open in its conversation (a message is held waiting for earlier ones).
func (t *tracker) offer(m protocol.Message) (ready []protocol.Message, gap bool) {
	t.clock++
	conv := m.Conversation
	cur := t.cursor[conv]
	if m.Seq <= cur {
		return nil, t.gap(conv) // a duplicate: already delivered
	}
	if m.Seq > cur+1 {
		p := t.pending[conv]
		if p == nil {
			p = map[int64]held{}
			t.pending[conv] = p
		}
		if _, dup := p[m.Seq]; !dup {
			p[m.Seq] = held{m: m, at: t.clock}
		}
		return nil, true
	}
	ready = append(ready, m)
	cur = m.Seq
	for p := t.pending[conv]; p != nil; {
		next, ok := p[cur+1]
		if !ok {
			break
		}
		delete(p, cur+1)
		ready = append(ready, next.m)
		cur++
	}
	t.cursor[conv] = cur
	return ready, t.gap(conv)
}

// now is the tracker's clock: a sync that starts at now answers for every message held at or
// before it.
func (t *tracker) now() int64 { return t.clock }

// settle is called when a sync that started at clock value start has completed. reached is,
// per conversation, the last seq the sync's answer covered (its conversations' last_seq):
// the server had stored every seq up to it and returned all of those this member may see. A
// gap still open before a message held before start, with that message's seq covered, is
// seqs the member may not see (they joined later): the cursor moves past it and the held
// messages are released. A gap the sync did not cover (the server had not stored those seqs
// yet: it pushes a message live before storing it while its store is down) stays open.
func (t *tracker) settle(start int64, reached map[string]int64) (ready []protocol.Message) {
	for conv, p := range t.pending {
		first := int64(-1)
		for s, h := range p {
			if h.at <= start && (first < 0 || s < first) {
				first = s
			}
		}
		if first < 0 || reached[conv] < first {
			continue
		}
		for s := range p {
			if s < first {
				delete(p, s)
			}
		}
		h := p[first]
		delete(p, first)
		t.cursor[conv] = first - 1
		r, _ := t.offer(h.m)
		ready = append(ready, r...)
	}
	return ready
}

// gap reports whether messages of conv are held behind a missing seq; drops empty holds.
func (t *tracker) gap(conv string) bool {
	if len(t.pending[conv]) == 0 {
		delete(t.pending, conv)
		return false
	}
	return true
}

// cursors returns a copy of every conversation's cursor, in conversation order.
func (t *tracker) cursors() []protocol.Cursor {
	out := make([]protocol.Cursor, 0, len(t.cursor))
	for c, s := range t.cursor {
		out = append(out, protocol.Cursor{Conversation: c, Seq: s})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Conversation < out[j].Conversation })
	return out
}
