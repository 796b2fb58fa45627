package chaos

import (
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"
)

const testConv = "c0ffee00-0000-4000-8000-000000000001"

var (
	t0          = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	testDevices = []string{"alice/d1", "alice/d2", "bob/d1", "bob/d2"}
)

func testID(i int) string { return fmt.Sprintf("m%02d", i) }

// cleanHistory is n messages in one direct conversation, alternately by alice and bob, each
// accepted 50 ms after it was sent, sent 100 ms apart, stored at seq i, surfaced in order on
// all four devices and returned by a final sync and a final REST read (and the first half by
// a live REST read).
func cleanHistory(n int) History {
	h := History{Devices: map[string][]Entry{}, Members: map[string][]string{testConv: testDevices}}
	var entries []Entry
	for i := 1; i <= n; i++ {
		sender := "alice"
		if i%2 == 0 {
			sender = "bob"
		}
		at := t0.Add(time.Duration(i) * 100 * time.Millisecond)
		h.Sends = append(h.Sends, Send{Conversation: testConv, Sender: sender, Device: sender + "/d1", ClientMsgID: testID(i),
			Body: "body " + testID(i), Invoked: at, Outcome: SendAccepted, Settled: at.Add(50 * time.Millisecond)})
		entries = append(entries, Entry{Conversation: testConv, Seq: int64(i), Sender: sender, ClientMsgID: testID(i), Kind: "text", Body: "body " + testID(i)})
	}
	for _, d := range testDevices {
		h.Devices[d] = slices.Clone(entries)
	}
	h.Reads = []Read{
		{Source: "sync alice", Conversation: testConv, Final: true, Entries: slices.Clone(entries)},
		{Source: "rest bob", Conversation: testConv, Final: true, Entries: slices.Clone(entries)},
		{Source: "rest-live alice", Conversation: testConv, Entries: slices.Clone(entries[:n/2])},
	}
	return h
}

// everywhere applies f to every observed entry list (devices and reads).
func everywhere(h *History, f func([]Entry) []Entry) {
	for d, es := range h.Devices {
		h.Devices[d] = f(es)
	}
	for i := range h.Reads {
		h.Reads[i].Entries = f(h.Reads[i].Entries)
	}
}

func finals(h *History, f func([]Entry) []Entry) {
	for i := range h.Reads {
		if h.Reads[i].Final {
			h.Reads[i].Entries = f(h.Reads[i].Entries)
		}
	}
}

func readBy(h *History, source string) *Read {
	for i := range h.Reads {
		if h.Reads[i].Source == source {
			return &h.Reads[i]
		}
	}
	panic("no read " + source)
}

func sendOf(h *History, id string) *Send {
	for i := range h.Sends {
		if h.Sends[i].ClientMsgID == id {
			return &h.Sends[i]
		}
	}
	panic("no send " + id)
}

func entryOf(h *History, id string, seq int64) Entry {
	s := sendOf(h, id)
	return Entry{Conversation: s.Conversation, Seq: seq, Sender: s.Sender, ClientMsgID: id, Kind: "text", Body: s.Body}
}

func counts(v Verdict) map[DefectKind]int {
	m := map[DefectKind]int{}
	for _, d := range v.Defects {
		m[d.Kind]++
	}
	return m
}

// Each case builds a clean history, breaks one promise the way a real defect would, and
// says exactly which defects that must produce (collateral ones included: a defect rarely
// comes alone).
func TestCheck(t *testing.T) {
	const n = 6
	cases := []struct {
		name   string
		mutate func(h *History)
		want   map[DefectKind]int
	}{
		{"clean", func(*History) {}, nil},
		{"lost: the last message was accepted and never stored", func(h *History) {
			everywhere(h, func(es []Entry) []Entry { return slices.DeleteFunc(es, func(e Entry) bool { return e.Seq == n }) })
		}, map[DefectKind]int{Lost: 1}},
		{"Cassandra forgot seq 5 and the sequencer gave it to the next message", func(h *History) {
			// Before the crash every device surfaced m1..m5; the store lost m5, and m6 got
			// seq 5. The devices' cursors are at 5: the SDK drops m6 as already seen.
			for d := range h.Devices {
				h.Devices[d] = h.Devices[d][:5]
			}
			finals(h, func(es []Entry) []Entry { return append(es[:4], entryOf(h, testID(6), 5)) })
		}, map[DefectKind]int{Lost: 1, Divergent: 1, Undelivered: 4}},
		{"duplicated: the SDK surfaced a message twice", func(h *History) {
			h.Devices["alice/d1"] = append(h.Devices["alice/d1"], h.Devices["alice/d1"][2])
		}, map[DefectKind]int{Duplicated: 1}},
		{"duplicated: two seqs hold one client_msg_id", func(h *History) {
			finals(h, func(es []Entry) []Entry { return append(es, entryOf(h, testID(2), n+1)) })
		}, map[DefectKind]int{Duplicated: 1}},
		{"duplicated: a read returned a seq twice", func(h *History) {
			r := readBy(h, "sync alice")
			r.Entries = slices.Insert(r.Entries, 3, r.Entries[2])
		}, map[DefectKind]int{Duplicated: 1}},
		{"reordered: a device surfaced 3 before 2", func(h *History) {
			es := h.Devices["bob/d2"]
			es[1], es[2] = es[2], es[1]
		}, map[DefectKind]int{Reordered: 1}},
		{"phantom: a device surfaced a message nobody sent", func(h *History) {
			h.Devices["alice/d2"] = append(h.Devices["alice/d2"], Entry{Conversation: testConv, Seq: n + 1, Sender: "mallory", ClientMsgID: "x1", Kind: "text", Body: "hi"})
		}, map[DefectKind]int{Phantom: 1}},
		{"phantom: the server stored a message nobody sent", func(h *History) {
			everywhere(h, func(es []Entry) []Entry {
				return append(es, Entry{Conversation: testConv, Seq: n + 1, Sender: "alice", ClientMsgID: "x2", Kind: "text", Body: "hi"})
			})
		}, map[DefectKind]int{Phantom: 1}},
		{"phantom: a message appears in another conversation", func(h *History) {
			h.Members["other"] = []string{"alice/d1"}
			e := entryOf(h, testID(3), 1)
			e.Conversation = "other"
			h.Devices["alice/d1"] = append(h.Devices["alice/d1"], e)
		}, map[DefectKind]int{Phantom: 1}},
		{"phantom: a refused send was stored", func(h *History) {
			s := sendOf(h, testID(3))
			s.Outcome, s.Err = SendRefused, "not_found"
		}, map[DefectKind]int{Refused: 1, Phantom: 1}},
		{"phantom: a message's body changed", func(h *History) {
			everywhere(h, func(es []Entry) []Entry {
				es[1].Body = "tampered"
				return es
			})
		}, map[DefectKind]int{Phantom: 1}},
		{"phantom: an event nobody made", func(h *History) {
			everywhere(h, func(es []Entry) []Entry {
				return append(es, Entry{Conversation: testConv, Seq: n + 1, Sender: "alice", ClientMsgID: "x3", Kind: "delete"})
			})
		}, map[DefectKind]int{Phantom: 1}},
		{"gap: no message holds seq 3", func(h *History) {
			everywhere(h, func(es []Entry) []Entry {
				for i := range es {
					if es[i].Seq >= 3 {
						es[i].Seq++
					}
				}
				return es
			})
		}, map[DefectKind]int{Gap: 1}},
		{"gap: the sync read lacks seq 4", func(h *History) {
			r := readBy(h, "sync alice")
			r.Entries = slices.DeleteFunc(r.Entries, func(e Entry) bool { return e.Seq == 4 })
		}, map[DefectKind]int{Gap: 1}},
		{"divergent: REST swapped two seqs", func(h *History) {
			r := readBy(h, "rest bob")
			r.Entries[2].Seq, r.Entries[3].Seq = 4, 3
		}, map[DefectKind]int{Divergent: 2, Duplicated: 2}},
		{"divergent: one device saw another message at a seq", func(h *History) {
			// bob/d2 surfaced m5 at seq 4 and never m4: the store answered differently.
			es := h.Devices["bob/d2"]
			h.Devices["bob/d2"] = append(es[:3], entryOf(h, testID(5), 4), es[5])
		}, map[DefectKind]int{Divergent: 1, Duplicated: 1, Undelivered: 1}},
		{"sender FIFO: m1 was accepted before m3 was sent, yet m3 has the lower seq", func(h *History) {
			everywhere(h, func(es []Entry) []Entry {
				for i := range es {
					switch es[i].Seq {
					case 1:
						es[i] = entryOf(h, testID(3), 1)
					case 3:
						es[i] = entryOf(h, testID(1), 3)
					}
				}
				return es
			})
		}, map[DefectKind]int{SenderFIFO: 1}},
		{"sender FIFO: concurrent sends may land in either order", func(h *History) {
			sendOf(h, testID(1)).Settled = sendOf(h, testID(3)).Invoked.Add(time.Millisecond)
			everywhere(h, func(es []Entry) []Entry {
				for i := range es {
					switch es[i].Seq {
					case 1:
						es[i] = entryOf(h, testID(3), 1)
					case 3:
						es[i] = entryOf(h, testID(1), 3)
					}
				}
				return es
			})
		}, nil},
		{"refused: a valid send was refused", func(h *History) {
			h.Sends = append(h.Sends, Send{Conversation: testConv, Sender: "bob", Device: "bob/d2", ClientMsgID: "r1", Body: "b",
				Invoked: t0, Outcome: SendRefused, Settled: t0, Err: "internal"})
		}, map[DefectKind]int{Refused: 1}},
		{"unknown sends are not defects, stored or not", func(h *History) {
			h.Sends = append(h.Sends,
				Send{Conversation: testConv, Sender: "bob", Device: "bob/d2", ClientMsgID: "u1", Body: "b", Invoked: t0.Add(time.Hour), Outcome: SendUnknown},
				Send{Conversation: testConv, Sender: "bob", Device: "bob/d2", ClientMsgID: "u2", Body: "b", Invoked: t0.Add(time.Hour), Outcome: SendUnknown})
			everywhere(h, func(es []Entry) []Entry { return append(es, entryOf(h, "u2", n+1)) })
		}, nil},
		{"undelivered: a device never surfaced seq 4", func(h *History) {
			h.Devices["bob/d1"] = slices.DeleteFunc(h.Devices["bob/d1"], func(e Entry) bool { return e.Seq == 4 })
		}, map[DefectKind]int{Undelivered: 1}},
		{"unread: no final read", func(h *History) {
			h.Reads = slices.DeleteFunc(h.Reads, func(r Read) bool { return r.Final })
		}, map[DefectKind]int{Unread: 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := cleanHistory(n)
			tc.mutate(&h)
			v := Check(h)
			got := counts(v)
			if !maps.Equal(got, tc.want) && (len(got) != 0 || len(tc.want) != 0) {
				t.Errorf("defects %v, want %v", got, tc.want)
				for _, d := range v.Defects {
					t.Log(d)
				}
			}
			if v.OK() != (len(tc.want) == 0) {
				t.Errorf("OK() = %v with defects %v", v.OK(), got)
			}
		})
	}
}

func TestCheckCounts(t *testing.T) {
	h := cleanHistory(6)
	sendOf(&h, testID(6)).UnknownSince = t0
	v := Check(h)
	want := Verdict{Sends: 6, Accepted: 6, Resent: 1, Surfaced: 24, FinalReads: 2, LiveReads: 1, Messages: 6}
	v.Defects = nil
	if fmt.Sprint(v) != fmt.Sprint(want) {
		t.Errorf("got %+v, want %+v", v, want)
	}
}

// The verdict is deterministic: the same history gives the same defects in the same order.
func TestCheckDeterministic(t *testing.T) {
	h := cleanHistory(20)
	for d := range h.Devices {
		h.Devices[d] = h.Devices[d][:15]
	}
	finals(&h, func(es []Entry) []Entry { return es[:12] })
	first := fmt.Sprint(Check(h).Defects)
	for range 5 {
		if got := fmt.Sprint(Check(h).Defects); got != first {
			t.Fatalf("verdicts differ:\n%s\n%s", first, got)
		}
	}
}
