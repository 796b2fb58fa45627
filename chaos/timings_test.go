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
		errs    int
	}{
		{"never wrong", []PresenceSample{good(0), good(500), good(1000)}, 0, 0},
		{"unknown, then right", []PresenceSample{good(0), unknown(500), unknown(1000), good(1500), good(2000)}, 1500 * time.Millisecond, 0},
		{"a failed read is counted, not judged", []PresenceSample{good(200), failed(500), good(1000)}, 0, 1},
		{"right, wrong again, right: the last recovery counts", []PresenceSample{unknown(500), good(1000), unknown(1500), failed(2000), good(2500)}, 2500 * time.Millisecond, 1},
		{"still wrong at the window's end", []PresenceSample{good(500), unknown(1000)}, notWithin, 0},
	} {
		got, errs := presenceConverged(c.samples, at(0), at(3000))
		if got != c.want || errs != c.errs {
			t.Errorf("%s: presenceConverged = %v, %d failed; want %v, %d", c.name, got, errs, c.want, c.errs)
		}
	}
}

func TestDeliveryTimes(t *testing.T) {
	send := func(conv, id string, invoked, settled int) Send {
		return Send{Conversation: conv, Sender: "u1", ClientMsgID: id, Outcome: SendAccepted, Invoked: at(invoked), Settled: at(settled)}
	}
	entry := func(conv, id string, ms int) Entry {
		return Entry{Conversation: conv, Sender: "u1", ClientMsgID: id, At: at(ms)}
	}
	h := History{
		Probe: "probe",
		Sends: []Send{
			send("c", "before", -5000, -4990), // accepted before the fault: counts for catching up only
			send("c", "m1", 100, 150),
			send("c", "m2", 2000, 2050),
			send("probe", "p", 100, 150), // never judged
		},
		Members: map[string][]string{"c": {"u1/d1", "u2/d1"}, "probe": {"u1/d1"}},
		Devices: map[string][]Entry{
			"u1/d1": {entry("c", "before", -4980), entry("c", "m1", 3100), entry("c", "m2", 3200)},
			"u2/d1": {entry("c", "before", -4000), entry("c", "m1", 5150), entry("c", "m2", 3300)},
		},
	}
	first, last := surfacedTimes(h)
	delay, catchUp := deliveryTimes(h, first, last, at(0), at(10000))
	if delay != 3000*time.Millisecond {
		t.Errorf("delivery delay = %v; want 3s (m1: sent at 0.1 s, first device at 3.1 s)", delay)
	}
	if catchUp != 5000*time.Millisecond {
		t.Errorf("catch-up = %v; want 5s (m1: accepted at 0.15 s, the last device at 5.15 s)", catchUp)
	}
	h.Devices["u2/d1"] = h.Devices["u2/d1"][:2] // m2 never reaches u2
	first, last = surfacedTimes(h)
	if _, catchUp := deliveryTimes(h, first, last, at(0), at(10000)); catchUp != notWithin {
		t.Errorf("catch-up with a device that never got m2 = %v; want notWithin", catchUp)
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
