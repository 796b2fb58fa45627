package chaos

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// DefectKind names a broken promise.
type DefectKind string

// The defects Check looks for.
const (
	// Lost: a send was accepted, yet no final read holds it (promise 1).
	Lost DefectKind = "lost"
	// Duplicated: a device surfaced one message twice, a read returned a seq twice, or two
	// seqs hold the same (sender, client_msg_id) anywhere (promises 2 and 4).
	Duplicated DefectKind = "duplicated"
	// Reordered: a device surfaced a seq below one it had already surfaced (promise 4).
	Reordered DefectKind = "reordered"
	// Phantom: a message surfaced or read that was never sent, whose send was refused, or
	// whose body or kind is not what was sent.
	Phantom DefectKind = "phantom"
	// Gap: a seq of 1..last (last: the highest seq of the conversation's final reads) missing
	// from a final read (promise 3).
	Gap DefectKind = "gap"
	// Divergent: one (conversation, seq) seen holding two different messages anywhere:
	// devices, sync, REST, live or final (promise 3).
	Divergent DefectKind = "divergent"
	// SenderFIFO: A was accepted before B was sent (same sender, same conversation), yet
	// seq(A) > seq(B).
	SenderFIFO DefectKind = "sender-fifo"
	// Refused: a valid send by a member was refused for good (the workload only makes valid
	// sends, so any refusal is a defect).
	Refused DefectKind = "refused"
	// Undelivered: after the faults healed and every device reconnected and synced, a device
	// of a member never surfaced a message that the final reads hold (promise 4).
	Undelivered DefectKind = "undelivered"
	// Unread: a conversation with sends has no final read, so nothing about it was checked.
	Unread DefectKind = "unread"
)

// DefectKinds lists every kind, in report order.
var DefectKinds = []DefectKind{Lost, Duplicated, Reordered, Phantom, Gap, Divergent, SenderFIFO, Refused, Undelivered, Unread}

// Defect is one broken promise, with where it was seen.
type Defect struct {
	Kind         DefectKind `json:"kind"`
	Conversation string     `json:"conversation"`
	Seq          int64      `json:"seq,omitempty"`
	ClientMsgID  string     `json:"client_msg_id,omitempty"`
	Where        string     `json:"where,omitempty"`
	Detail       string     `json:"detail"`
}

func (d Defect) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s conv %s", d.Kind, short(d.Conversation))
	if d.Seq > 0 {
		fmt.Fprintf(&b, " seq %d", d.Seq)
	}
	if d.ClientMsgID != "" {
		fmt.Fprintf(&b, " msg %s", short(d.ClientMsgID))
	}
	if d.Where != "" {
		fmt.Fprintf(&b, " at %s", d.Where)
	}
	return b.String() + ": " + d.Detail
}

// short abbreviates a UUID to its first 8 characters.
func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// Verdict is what Check found: the defects, and counts that show what was checked.
type Verdict struct {
	Defects []Defect `json:"defects"`
	// Counts of the history.
	Sends    int `json:"sends"`
	Accepted int `json:"accepted"`
	Refused  int `json:"refused"`
	Unknown  int `json:"unknown"` // never answered, even after the faults healed
	Resent   int `json:"resent"`  // went unanswered past the SDK's resend delay at least once
	Surfaced int `json:"surfaced"`
	// Reads and what the final reads hold.
	FinalReads int `json:"final_reads"`
	LiveReads  int `json:"live_reads"`
	Messages   int `json:"messages"` // distinct (conversation, seq) in the final reads
}

// OK reports whether the run kept every promise.
func (v Verdict) OK() bool { return len(v.Defects) == 0 }

// Count returns how many defects of kind were found.
func (v Verdict) Count(kind DefectKind) int {
	n := 0
	for _, d := range v.Defects {
		if d.Kind == kind {
			n++
		}
	}
	return n
}

type convSeq struct {
	conv string
	seq  int64
}

// observation is an entry and who saw it.
type observation struct {
	e     Entry
	where string
	final bool
}

// Check examines a history and returns every defect it holds. It is pure: the same history
// gives the same verdict, in the same order.
func Check(h History) Verdict {
	var v Verdict
	c := checker{h: h, v: &v, sends: map[key]*Send{}}
	c.index()
	c.phantoms()
	c.divergence()
	c.duplicates()
	c.devices()
	c.finals()
	c.fifo()
	slices.SortStableFunc(v.Defects, func(a, b Defect) int {
		return cmp.Or(
			cmp.Compare(slices.Index(DefectKinds, a.Kind), slices.Index(DefectKinds, b.Kind)),
			cmp.Compare(a.Conversation, b.Conversation),
			cmp.Compare(a.Seq, b.Seq),
			cmp.Compare(a.ClientMsgID, b.ClientMsgID),
			cmp.Compare(a.Where, b.Where))
	})
	return v
}

type checker struct {
	h     History
	v     *Verdict
	sends map[key]*Send
	obs   []observation
	// final: per conversation, the final reads; truth: per conversation and seq, the entry
	// the final reads hold (the first one when they disagree, which divergence reports).
	final map[string][]Read
	truth map[string]map[int64]Entry
}

func (c *checker) add(d Defect) { c.v.Defects = append(c.v.Defects, d) }

// index counts the history and gathers every observation in a fixed order.
func (c *checker) index() {
	for i := range c.h.Sends {
		s := &c.h.Sends[i]
		c.sends[s.key()] = s
		c.v.Sends++
		switch s.Outcome {
		case SendAccepted:
			c.v.Accepted++
		case SendRefused:
			c.v.Refused++
			c.add(Defect{Kind: Refused, Conversation: s.Conversation, ClientMsgID: s.ClientMsgID, Where: s.Device,
				Detail: "a valid send was refused for good: " + s.Err})
		default:
			c.v.Unknown++
		}
		if !s.UnknownSince.IsZero() {
			c.v.Resent++
		}
	}
	for _, dev := range slices.Sorted(maps.Keys(c.h.Devices)) {
		for _, e := range c.h.Devices[dev] {
			c.obs = append(c.obs, observation{e: e, where: dev})
			c.v.Surfaced++
		}
	}
	c.final = map[string][]Read{}
	c.truth = map[string]map[int64]Entry{}
	for _, r := range c.h.Reads {
		if r.Final {
			c.v.FinalReads++
			c.final[r.Conversation] = append(c.final[r.Conversation], r)
			t := c.truth[r.Conversation]
			if t == nil {
				t = map[int64]Entry{}
				c.truth[r.Conversation] = t
			}
			for _, e := range r.Entries {
				if _, ok := t[e.Seq]; !ok {
					t[e.Seq] = e
				}
			}
		} else {
			c.v.LiveReads++
		}
		for _, e := range r.Entries {
			c.obs = append(c.obs, observation{e: e, where: r.Source, final: r.Final})
		}
	}
	for _, t := range c.truth {
		c.v.Messages += len(t)
	}
}

// phantoms: every observed entry must be a text message that was sent, not refused, with
// the body it was sent with. Reported once per message.
func (c *checker) phantoms() {
	seen := map[key]bool{}
	for _, o := range c.obs {
		e := o.e
		var why string
		s, sent := c.sends[e.key()]
		switch {
		case e.Kind != "" && e.Kind != "text":
			why = fmt.Sprintf("an entry of kind %q, which the workload never creates", e.Kind)
		case !sent:
			why = fmt.Sprintf("never sent by %s to this conversation", e.Sender)
		case s.Outcome == SendRefused:
			why = "its send was refused"
		case e.Body != s.Body:
			why = fmt.Sprintf("body %q, sent as %q", e.Body, s.Body)
		default:
			continue
		}
		if seen[e.key()] {
			continue
		}
		seen[e.key()] = true
		c.add(Defect{Kind: Phantom, Conversation: e.Conversation, Seq: e.Seq, ClientMsgID: e.ClientMsgID, Where: o.where, Detail: why})
	}
}

// divergence: one (conversation, seq), one message, everywhere.
func (c *checker) divergence() {
	at := map[convSeq]map[string][]string{} // identity -> where
	for _, o := range c.obs {
		cs := convSeq{o.e.Conversation, o.e.Seq}
		m := at[cs]
		if m == nil {
			m = map[string][]string{}
			at[cs] = m
		}
		if !slices.Contains(m[o.e.identity()], o.where) {
			m[o.e.identity()] = append(m[o.e.identity()], o.where)
		}
	}
	for cs, m := range at {
		if len(m) < 2 {
			continue
		}
		var parts []string
		for _, id := range slices.Sorted(maps.Keys(m)) {
			sender, rest, _ := strings.Cut(id, "/")
			cmid, _, _ := strings.Cut(rest, "/")
			parts = append(parts, fmt.Sprintf("%s/%s seen by %s", sender, short(cmid), list(m[id], 3)))
		}
		c.add(Defect{Kind: Divergent, Conversation: cs.conv, Seq: cs.seq,
			Detail: fmt.Sprintf("%d different messages: %s", len(m), strings.Join(parts, "; "))})
	}
}

// duplicates: one message, one seq; a device surfaces a message once; a read returns a
// seq once.
func (c *checker) duplicates() {
	seqs := map[key]map[int64][]string{}
	for _, o := range c.obs {
		m := seqs[o.e.key()]
		if m == nil {
			m = map[int64][]string{}
			seqs[o.e.key()] = m
		}
		if !slices.Contains(m[o.e.Seq], o.where) {
			m[o.e.Seq] = append(m[o.e.Seq], o.where)
		}
	}
	for k, m := range seqs {
		if len(m) < 2 {
			continue
		}
		var parts []string
		for _, s := range slices.Sorted(maps.Keys(m)) {
			parts = append(parts, fmt.Sprintf("seq %d (%s)", s, list(m[s], 2)))
		}
		c.add(Defect{Kind: Duplicated, Conversation: k.conv, ClientMsgID: k.id,
			Detail: fmt.Sprintf("one message held by %d seqs: %s", len(m), strings.Join(parts, ", "))})
	}
	for _, dev := range slices.Sorted(maps.Keys(c.h.Devices)) {
		n := map[key]int{}
		for _, e := range c.h.Devices[dev] {
			n[e.key()]++
			if n[e.key()] == 2 {
				c.add(Defect{Kind: Duplicated, Conversation: e.Conversation, Seq: e.Seq, ClientMsgID: e.ClientMsgID, Where: dev,
					Detail: "the SDK surfaced this message to the app twice"})
			}
		}
	}
	for _, r := range c.h.Reads {
		n := map[int64]int{}
		for _, e := range r.Entries {
			n[e.Seq]++
			if n[e.Seq] == 2 {
				c.add(Defect{Kind: Duplicated, Conversation: r.Conversation, Seq: e.Seq, Where: r.Source,
					Detail: "the read returned this seq twice"})
			}
		}
	}
}

// devices: each device surfaces a conversation's seqs in increasing order.
func (c *checker) devices() {
	for _, dev := range slices.Sorted(maps.Keys(c.h.Devices)) {
		top := map[string]int64{}
		seen := map[key]bool{}
		for _, e := range c.h.Devices[dev] {
			if seen[e.key()] {
				continue // surfaced again: a duplicate, reported as such
			}
			seen[e.key()] = true
			if e.Seq < top[e.Conversation] {
				c.add(Defect{Kind: Reordered, Conversation: e.Conversation, Seq: e.Seq, ClientMsgID: e.ClientMsgID, Where: dev,
					Detail: fmt.Sprintf("surfaced after seq %d", top[e.Conversation])})
			}
			top[e.Conversation] = max(top[e.Conversation], e.Seq)
		}
	}
}

// finals: the final reads hold every accepted message, with no gap, and every member's
// device surfaced all of it.
func (c *checker) finals() {
	inFinal := map[key]bool{}
	for _, reads := range c.final {
		for _, r := range reads {
			for _, e := range r.Entries {
				inFinal[e.key()] = true
			}
		}
	}
	// Where a lost message was seen before it vanished helps to read the report.
	seenAt := map[key]observation{}
	for _, o := range c.obs {
		if _, ok := seenAt[o.e.key()]; !ok {
			seenAt[o.e.key()] = o
		}
	}
	unread := map[string]bool{}
	for i := range c.h.Sends {
		s := &c.h.Sends[i]
		if s.Outcome != SendAccepted {
			continue
		}
		if _, ok := c.final[s.Conversation]; !ok {
			if !unread[s.Conversation] {
				unread[s.Conversation] = true
				c.add(Defect{Kind: Unread, Conversation: s.Conversation, Detail: "no final read of this conversation: nothing in it was checked"})
			}
			continue
		}
		if inFinal[s.key()] {
			continue
		}
		detail := fmt.Sprintf("accepted %s after send, absent from every final read", s.Settled.Sub(s.Invoked).Round(time.Millisecond))
		var seq int64
		if o, ok := seenAt[s.key()]; ok {
			seq = o.e.Seq
			detail += fmt.Sprintf("; seen at seq %d by %s", o.e.Seq, o.where)
		} else {
			detail += "; never seen anywhere"
		}
		c.add(Defect{Kind: Lost, Conversation: s.Conversation, Seq: seq, ClientMsgID: s.ClientMsgID, Where: s.Device, Detail: detail})
	}
	for _, conv := range slices.Sorted(maps.Keys(c.final)) {
		reads := c.final[conv]
		var last int64
		for s := range c.truth[conv] {
			last = max(last, s)
		}
		missing := map[int64][]string{}
		for _, r := range reads {
			have := map[int64]bool{}
			for _, e := range r.Entries {
				have[e.Seq] = true
			}
			for s := int64(1); s <= last; s++ {
				if !have[s] {
					missing[s] = append(missing[s], r.Source)
				}
			}
		}
		for _, s := range slices.Sorted(maps.Keys(missing)) {
			detail := fmt.Sprintf("missing from %s of %d final reads (%s), last seq %d", count(len(missing[s]), len(reads)), len(reads), list(missing[s], 3), last)
			c.add(Defect{Kind: Gap, Conversation: conv, Seq: s, Detail: detail})
		}
		for _, dev := range c.h.Members[conv] {
			got := map[key]bool{}
			for _, e := range c.h.Devices[dev] {
				got[e.key()] = true
			}
			for _, s := range slices.Sorted(maps.Keys(c.truth[conv])) {
				e := c.truth[conv][s]
				if !got[e.key()] {
					c.add(Defect{Kind: Undelivered, Conversation: conv, Seq: s, ClientMsgID: e.ClientMsgID, Where: dev,
						Detail: "the final reads hold it; this member's device never surfaced it"})
				}
			}
		}
	}
}

// fifo: what one sender had accepted before sending B is sequenced before B.
func (c *checker) fifo() {
	seqOf := map[key]int64{} // the lowest seq a final read gives the message
	for _, t := range c.truth {
		for _, e := range t {
			if s, ok := seqOf[e.key()]; !ok || e.Seq < s {
				seqOf[e.key()] = e.Seq
			}
		}
	}
	type group struct{ sender, conv string }
	groups := map[group][]*Send{}
	for i := range c.h.Sends {
		s := &c.h.Sends[i]
		if _, ok := seqOf[s.key()]; ok {
			g := group{s.Sender, s.Conversation}
			groups[g] = append(groups[g], s)
		}
	}
	for _, g := range slices.SortedFunc(maps.Keys(groups), func(a, b group) int {
		return cmp.Or(cmp.Compare(a.conv, b.conv), cmp.Compare(a.sender, b.sender))
	}) {
		sends := groups[g]
		byInvoked := slices.Clone(sends)
		slices.SortStableFunc(byInvoked, func(a, b *Send) int { return a.Invoked.Compare(b.Invoked) })
		var bySettled []*Send
		for _, s := range sends {
			if s.Outcome == SendAccepted {
				bySettled = append(bySettled, s)
			}
		}
		slices.SortStableFunc(bySettled, func(a, b *Send) int { return a.Settled.Compare(b.Settled) })
		j := 0
		var top *Send // of the sends accepted so far, the one with the highest seq
		for _, b := range byInvoked {
			for j < len(bySettled) && bySettled[j].Settled.Before(b.Invoked) {
				if top == nil || seqOf[bySettled[j].key()] > seqOf[top.key()] {
					top = bySettled[j]
				}
				j++
			}
			if top != nil && seqOf[top.key()] > seqOf[b.key()] {
				c.add(Defect{Kind: SenderFIFO, Conversation: g.conv, Seq: seqOf[b.key()], ClientMsgID: b.ClientMsgID, Where: g.sender,
					Detail: fmt.Sprintf("sent after %s was accepted, yet sequenced before it (seq %d)", short(top.ClientMsgID), seqOf[top.key()])})
			}
		}
	}
}

func list(s []string, n int) string {
	if len(s) <= n {
		return strings.Join(s, ", ")
	}
	return strings.Join(s[:n], ", ") + fmt.Sprintf(" and %d more", len(s)-n)
}

func count(n, of int) string {
	if n == of {
		return "all"
	}
	return fmt.Sprint(n)
}
