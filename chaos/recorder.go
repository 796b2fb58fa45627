package chaos

import (
	"slices"
	"sync"
	"time"

	"github.com/parleyhq/parley/protocol"
)

// recorder collects the history as the clients make it. It is safe for concurrent use.
type recorder struct {
	mu      sync.Mutex
	sends   []Send
	byID    map[string]int     // client_msg_id -> index in sends
	early   map[string]Send    // outcomes that arrived before their send was registered
	devices map[string][]Entry // per device, in surfaced order
	reads   []Read
	samples []PresenceSample
	last    time.Time // when anything was last surfaced
}

func newRecorder() *recorder {
	return &recorder{byID: map[string]int{}, early: map[string]Send{}, devices: map[string][]Entry{}}
}

// sent registers a send the app made (after Send returned its id).
func (r *recorder) sent(s Send) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.early[s.ClientMsgID]; ok {
		s.Outcome, s.Settled, s.Err = e.Outcome, e.Settled, e.Err
		delete(r.early, s.ClientMsgID)
	}
	r.byID[s.ClientMsgID] = len(r.sends)
	r.sends = append(r.sends, s)
}

// settled records the outcome of a send. The first answer counts: the SDK reports one.
func (r *recorder) settled(id string, o Outcome, err string, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	i, ok := r.byID[id]
	if !ok {
		r.early[id] = Send{Outcome: o, Settled: at, Err: err}
		return
	}
	if r.sends[i].Outcome == SendUnknown {
		r.sends[i].Outcome, r.sends[i].Settled, r.sends[i].Err = o, at, err
	}
}

// markUnknown stamps the sends still unanswered after wait (the SDK has resent them by then).
func (r *recorder) markUnknown(now time.Time, wait time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.sends {
		s := &r.sends[i]
		if s.Outcome == SendUnknown && s.UnknownSince.IsZero() && now.Sub(s.Invoked) > wait {
			s.UnknownSince = now
		}
	}
}

// pending counts the sends without an outcome.
func (r *recorder) pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, s := range r.sends {
		if s.Outcome == SendUnknown {
			n++
		}
	}
	return n
}

func entryOfMessage(m protocol.Message, at time.Time) Entry {
	return Entry{Conversation: m.Conversation, Seq: m.Seq, Sender: m.Sender, ClientMsgID: m.ClientMsgID, Kind: m.Kind, Body: m.Body, At: at}
}

// surfaced records a message the SDK handed to the app on device.
func (r *recorder) surfaced(device string, m protocol.Message, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.devices[device] = append(r.devices[device], entryOfMessage(m, at))
	r.last = at
}

// lastSurfaced is when any device last surfaced a message.
func (r *recorder) lastSurfaced() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// has reports whether every device surfaced the message id of conversation.
func (r *recorder) has(conversation, id string, devices []string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, d := range devices {
		if !slices.ContainsFunc(r.devices[d], func(e Entry) bool { return e.Conversation == conversation && e.ClientMsgID == id }) {
			return false
		}
	}
	return true
}

func (r *recorder) read(rd Read) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reads = append(r.reads, rd)
}

// load says what happened in [from, to): sends invoked, sends accepted, and distinct
// (conversation, seq) surfaced, i.e. messages the pipeline had stored by then.
func (r *recorder) load(from, to time.Time) (invoked, accepted, sequenced int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	in := func(t time.Time) bool { return !t.Before(from) && t.Before(to) }
	for _, s := range r.sends {
		if in(s.Invoked) {
			invoked++
		}
		if s.Outcome == SendAccepted && in(s.Settled) {
			accepted++
		}
	}
	seen := map[convSeq]bool{}
	for _, es := range r.devices {
		for _, e := range es {
			if in(e.At) {
				seen[convSeq{e.Conversation, e.Seq}] = true
			}
		}
	}
	return invoked, accepted, len(seen)
}

// history returns a copy of what was recorded.
// presence records a presence sample.
func (r *recorder) presence(s PresenceSample) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.samples = append(r.samples, s)
}

func (r *recorder) history(members map[string][]string) History {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := History{Sends: slices.Clone(r.sends), Devices: map[string][]Entry{}, Members: members, Reads: slices.Clone(r.reads),
		Presence: slices.Clone(r.samples)}
	for d, es := range r.devices {
		h.Devices[d] = slices.Clone(es)
	}
	return h
}
