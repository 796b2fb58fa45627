package chaos

import (
	"slices"
	"time"
)

// PresenceSample is one look at the workload users' presence (GET /v1/presence, every one
// of them has a connected device throughout, so each should be online).
type PresenceSample struct {
	At time.Time `json:"at"`
	// Online, Offline and Unknown count the users in each state; Err is set when the request
	// failed (no answer at all).
	Online  int    `json:"online"`
	Offline int    `json:"offline"`
	Unknown int    `json:"unknown"`
	Err     string `json:"err,omitempty"`
}

// converged: every user online.
func (s PresenceSample) converged() bool {
	return s.Err == "" && s.Offline == 0 && s.Unknown == 0 && s.Online > 0
}

// Timings are what a fault cost the apps, measured from the history (clients' view) in the
// window from the fault's injection to the next fault (or the end of the load). A negative
// duration means "not within the window".
type Timings struct {
	// AcceptPause is the longest time in the window during which no send was accepted
	// (counted from the last acceptance before the fault).
	AcceptPause time.Duration `json:"accept_pause_ns"`
	// DeliveryPause is the longest time, in the worst conversation, between two messages
	// first surfaced live by any device (counted from the last one before the fault). It
	// includes the workload's own spacing: a conversation gets a message every 0.25 s on
	// average.
	DeliveryPause time.Duration `json:"delivery_pause_ns"`
	// CatchUp is the time from the fault until every member device had surfaced every
	// message accepted between 10 s before the fault and its heal.
	CatchUp time.Duration `json:"catch_up_ns"`
	// PresenceConverged is the time from the fault until the presence of every user was
	// right again (online) for good within the window; 0 when it never went wrong.
	PresenceConverged time.Duration `json:"presence_converged_ns"`
}

// notWithin marks a timing the window did not see end.
const notWithin = -1

// MeasureTimings fills each fault's Timings from h. faults are in injection order; loadEnd is
// when the load stopped.
func MeasureTimings(h History, faults []FaultRecord, loadEnd time.Time) {
	accepts := acceptTimes(h)
	firsts := firstSurfaced(h)
	for i := range faults {
		f := &faults[i]
		if f.Injected.IsZero() {
			continue
		}
		end := loadEnd
		if i+1 < len(faults) && !faults[i+1].Injected.IsZero() {
			end = faults[i+1].Injected
		}
		f.Timings.AcceptPause = longestPause(accepts, f.Injected, end)
		for _, ts := range firsts {
			f.Timings.DeliveryPause = max(f.Timings.DeliveryPause, longestPause(ts, f.Injected, end))
		}
		f.Timings.CatchUp = catchUp(h, f.Injected.Add(-10*time.Second), f.Healed, f.Injected, end)
		f.Timings.PresenceConverged = presenceConverged(h.Presence, f.Injected, end)
	}
}

// acceptTimes: when each accepted send was accepted, sorted.
func acceptTimes(h History) []time.Time {
	var out []time.Time
	for _, s := range h.Sends {
		if s.Outcome == SendAccepted && !s.Settled.IsZero() {
			out = append(out, s.Settled)
		}
	}
	slices.SortFunc(out, time.Time.Compare)
	return out
}

// firstSurfaced: per conversation, when each of its messages was first surfaced by any
// device, sorted.
func firstSurfaced(h History) map[string][]time.Time {
	first := map[string]map[int64]time.Time{}
	for _, entries := range h.Devices {
		for _, e := range entries {
			m := first[e.Conversation]
			if m == nil {
				m = map[int64]time.Time{}
				first[e.Conversation] = m
			}
			if t, ok := m[e.Seq]; !ok || e.At.Before(t) {
				m[e.Seq] = e.At
			}
		}
	}
	out := map[string][]time.Time{}
	for conv, m := range first {
		ts := make([]time.Time, 0, len(m))
		for _, t := range m {
			ts = append(ts, t)
		}
		slices.SortFunc(ts, time.Time.Compare)
		out[conv] = ts
	}
	return out
}

// longestPause is the longest gap between consecutive events of sorted ts that overlaps
// [from, to), cut at to: from the last event before from to the first after it, and each gap
// after that until to. 0 when no event precedes from (nothing to pause).
func longestPause(ts []time.Time, from, to time.Time) time.Duration {
	i, _ := slices.BinarySearchFunc(ts, from, time.Time.Compare)
	if i == 0 {
		return 0
	}
	prev := ts[i-1]
	var longest time.Duration
	for ; i < len(ts) && ts[i].Before(to); i++ { // after it, the events after to
		longest = max(longest, ts[i].Sub(prev))
		prev = ts[i]
	}
	return max(longest, to.Sub(prev))
}

// catchUp: from `at` until every member device surfaced every message accepted in
// [from, to]; notWithin when some device had not by end.
func catchUp(h History, from, to, at, end time.Time) time.Duration {
	want := map[key]string{} // message -> its conversation
	for _, s := range h.Sends {
		if s.Outcome == SendAccepted && !s.Settled.Before(from) && !s.Settled.After(to) {
			want[s.key()] = s.Conversation
		}
	}
	if len(want) == 0 {
		return 0
	}
	seen := map[string]map[key]time.Time{} // device -> message -> when
	for dev, entries := range h.Devices {
		m := map[key]time.Time{}
		for _, e := range entries {
			if _, ok := want[e.key()]; ok {
				if t, ok := m[e.key()]; !ok || e.At.Before(t) {
					m[e.key()] = e.At
				}
			}
		}
		seen[dev] = m
	}
	var last time.Time
	for k, conv := range want {
		for _, dev := range h.Members[conv] {
			t, ok := seen[dev][k]
			if !ok || t.After(end) {
				return notWithin
			}
			if t.After(last) {
				last = t
			}
		}
	}
	return max(0, last.Sub(at))
}

// presenceConverged: from `at` until the first sample after which every sample in the
// window is converged; 0 if every sample was; notWithin if the window's last one is not.
func presenceConverged(samples []PresenceSample, at, end time.Time) time.Duration {
	var lastBad time.Time
	var lastIn *PresenceSample
	for i := range samples {
		s := &samples[i]
		if s.At.Before(at) || !s.At.Before(end) {
			continue
		}
		lastIn = s
		if !s.converged() {
			lastBad = s.At
		}
	}
	switch {
	case lastIn == nil || lastBad.IsZero():
		return 0
	case !lastIn.converged():
		return notWithin
	}
	// The first good sample after the last bad one.
	for _, s := range samples {
		if s.At.After(lastBad) && s.At.Before(end) {
			return s.At.Sub(at)
		}
	}
	return notWithin
}
