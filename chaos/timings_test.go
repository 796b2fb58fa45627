package chaos

import (
	"testing"
	"time"
)

var tz = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func at(ms int) time.Time { return tz.Add(time.Duration(ms) * time.Millisecond) }

func TestLongestPause(t *testing.T) {
	ts := []time.Time{at(0), at(100), at(200), at(3200), at(3300), at(9000)}
	for _, c := range []struct {
		name     string
		from, to time.Time
		want     time.Duration
	}{
		{"a 3 s gap after the fault", at(250), at(3400), 3000 * time.Millisecond},
		{"counted from the last event before the fault", at(150), at(3250), 3000 * time.Millisecond},
		{"a window with nothing after the fault runs to its end", at(3400), at(5000), 1700 * time.Millisecond},
		{"the gap is cut at the window's end", at(3350), at(4300), 1000 * time.Millisecond},
		{"nothing before the fault", at(-10), at(50), 0},
	} {
		if got := longestPause(ts, c.from, c.to); got != c.want {
			t.Errorf("%s: longestPause = %v; want %v", c.name, got, c.want)
		}
	}
}

func TestPresenceConverged(t *testing.T) {
	good := func(ms int) PresenceSample { return PresenceSample{At: at(ms), Online: 8} }
	unknown := func(ms int) PresenceSample { return PresenceSample{At: at(ms), Online: 2, Unknown: 6} }
	failed := func(ms int) PresenceSample { return PresenceSample{At: at(ms), Err: "503"} }
	for _, c := range []struct {
		name    string
		samples []PresenceSample
		want    time.Duration
	}{
		{"never wrong", []PresenceSample{good(0), good(500), good(1000)}, 0},
		{"unknown, then right", []PresenceSample{good(0), unknown(500), unknown(1000), good(1500), good(2000)}, 1500 * time.Millisecond},
		{"a failed request counts as not right", []PresenceSample{failed(500), good(1000)}, 1000 * time.Millisecond},
		{"right, wrong again, right: the last recovery counts", []PresenceSample{unknown(500), good(1000), unknown(1500), good(2500)}, 2500 * time.Millisecond},
		{"still wrong at the window's end", []PresenceSample{good(500), unknown(1000)}, notWithin},
	} {
		if got := presenceConverged(c.samples, at(0), at(3000)); got != c.want {
			t.Errorf("%s: presenceConverged = %v; want %v", c.name, got, c.want)
		}
	}
}

func TestCatchUp(t *testing.T) {
	h := History{
		Sends: []Send{
			{Conversation: "c", Sender: "u1", ClientMsgID: "m1", Outcome: SendAccepted, Settled: at(100)},
			{Conversation: "c", Sender: "u1", ClientMsgID: "m2", Outcome: SendAccepted, Settled: at(2000)},
			{Conversation: "c", Sender: "u1", ClientMsgID: "old", Outcome: SendAccepted, Settled: at(-20000)},
		},
		Members: map[string][]string{"c": {"u1/d1", "u2/d1"}},
		Devices: map[string][]Entry{
			"u1/d1": {{Conversation: "c", Seq: 1, Sender: "u1", ClientMsgID: "m1", At: at(150)}, {Conversation: "c", Seq: 2, Sender: "u1", ClientMsgID: "m2", At: at(2100)}},
			"u2/d1": {{Conversation: "c", Seq: 1, Sender: "u1", ClientMsgID: "m1", At: at(4000)}, {Conversation: "c", Seq: 2, Sender: "u1", ClientMsgID: "m2", At: at(4100)}},
		},
	}
	if got := catchUp(h, at(-10000), at(3000), at(0), at(10000)); got != 4100*time.Millisecond {
		t.Errorf("catchUp = %v; want 4.1s (u2's device surfaced m2 last)", got)
	}
	if got := catchUp(h, at(-10000), at(3000), at(0), at(4050)); got != notWithin {
		t.Errorf("catchUp with the window ending before u2 caught up = %v; want notWithin", got)
	}
	h.Devices["u2/d1"] = h.Devices["u2/d1"][:1]
	if got := catchUp(h, at(-10000), at(3000), at(0), at(10000)); got != notWithin {
		t.Errorf("catchUp with m2 never surfaced by u2 = %v; want notWithin", got)
	}
}

func TestMeasureTimingsWindows(t *testing.T) {
	// Accepts every 100 ms except a 2 s hole after the first fault; the second fault, 10 s
	// later, sees none.
	var sends []Send
	for ms := 0; ms < 20000; ms += 100 {
		if ms > 5000 && ms < 7000 {
			continue
		}
		sends = append(sends, Send{Conversation: "c", Sender: "u", ClientMsgID: time.Duration(ms).String(), Outcome: SendAccepted, Settled: at(ms)})
	}
	faults := []FaultRecord{{Injected: at(5050), Healed: at(6000)}, {Injected: at(15050), Healed: at(16000)}}
	MeasureTimings(History{Sends: sends}, faults, at(20000))
	if got := faults[0].Timings.AcceptPause; got != 2*time.Second {
		t.Errorf("first fault's accept pause = %v; want 2s", got)
	}
	if got := faults[1].Timings.AcceptPause; got != 100*time.Millisecond {
		t.Errorf("second fault's accept pause = %v; want 100ms (no hole)", got)
	}
}
