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
	return s.Offline == 0 && s.Unknown == 0 && s.Online > 0
}

// Timings are what a fault cost the apps, measured from the history (the clients' view) in the
// window from the fault's injection to the next fault (or the end of the load). A negative
// duration means "not within the window". The probe conversation is left out.
type Timings struct {
	// AcceptPause is the longest time in the window during which no send was accepted
	// (counted from the last acceptance before the fault): how long accepting paused.
	AcceptPause time.Duration `json:"accept_pause_ns"`
	// DeliveryDelay is the longest a message sent in the window waited, from the send to the
	// first member device surfacing it live: how long live delivery paused.
	DeliveryDelay time.Duration `json:"delivery_delay_ns"`
	// CatchUp is the longest a message accepted in the window (or in the 10 s before it)
	// took, from its acceptance, to reach every member device: how long until every device
	// had caught up.
	CatchUp time.Duration `json:"catch_up_ns"`
	// PresenceConverged is the time from the fault until the presence the apps read was
	// right again (every user online) for good within the window; 0 when it never went
	// wrong. Failed reads count in PresenceErrors, not as wrong answers.
	PresenceConverged time.Duration `json:"presence_converged_ns"`
	PresenceErrors    int           `json:"presence_errors"`
}

// notWithin marks a timing the window did not see end.
const notWithin = -1

// MeasureTimings fills each fault's Timings from h. faults are in injection order; loadEnd is
// when the load stopped.
func MeasureTimings(h History, faults []FaultRecord, loadEnd time.Time) {
	accepts := acceptTimes(h)
	first, last := surfacedTimes(h)
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
		f.Timings.DeliveryDelay, f.Timings.CatchUp = deliveryTimes(h, first, last, f.Injected, end)
		f.Timings.PresenceConverged, f.Timings.PresenceErrors = presenceConverged(h.Presence, f.Injected, end)
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

// surfacedTimes: for each message, when the first and when the last device surfaced it
// (last only once every member device has: a message some member device never surfaced has
// no entry in last).
func surfacedTimes(h History) (first, last map[key]time.Time) {
	first, last = map[key]time.Time{}, map[key]time.Time{}
	byDevice := map[key]map[string]time.Time{}
	for dev, entries := range h.Devices {
		for _, e := range entries {
			k := e.key()
			if t, ok := first[k]; !ok || e.At.Before(t) {
				first[k] = e.At
			}
			m := byDevice[k]
			if m == nil {
				m = map[string]time.Time{}
				byDevice[k] = m
			}
			if t, ok := m[dev]; !ok || e.At.Before(t) {
				m[dev] = e.At
			}
		}
	}
	for k, m := range byDevice {
		var latest time.Time
		complete := true
		for _, dev := range h.Members[k.conv] {
			t, ok := m[dev]
			if !ok {
				complete = false
				break
			}
			if t.After(latest) {
				latest = t
			}
		}
		if complete {
			last[k] = latest
		}
	}
	return first, last
}

// deliveryTimes: the longest wait from send to the first device (messages sent in [from, to))
// and from acceptance to the last member device (messages accepted in [from-10s, to)); either
// is notWithin when such a message had not reached its devices by to + catchUpGrace.
func deliveryTimes(h History, first, last map[key]time.Time, from, to time.Time) (delay, catchUp time.Duration) {
	limit := to.Add(catchUpGrace)
	for _, s := range h.Sends {
		if s.Conversation == h.Probe || s.Outcome != SendAccepted {
			continue
		}
		k := s.key()
		if !s.Invoked.Before(from) && s.Invoked.Before(to) && delay >= 0 {
			if t, ok := first[k]; !ok || t.After(limit) {
				delay = notWithin
			} else {
				delay = max(delay, t.Sub(s.Invoked))
			}
		}
		if !s.Settled.Before(from.Add(-10*time.Second)) && s.Settled.Before(to) && catchUp >= 0 {
			if t, ok := last[k]; !ok || t.After(limit) {
				catchUp = notWithin
			} else {
				catchUp = max(catchUp, t.Sub(s.Settled))
			}
		}
	}
	return delay, catchUp
}

// catchUpGrace is how long after a fault's window its messages may still arrive and count.
const catchUpGrace = time.Minute

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

// presenceConverged: from `at` until the first good sample after the last wrong one in the
// window; 0 if no sample was wrong; notWithin if the window's last one is wrong. Failed reads
// are counted, not judged.
func presenceConverged(samples []PresenceSample, at, end time.Time) (time.Duration, int) {
	var lastBad time.Time
	var lastIn *PresenceSample
	failed := 0
	for i := range samples {
		s := &samples[i]
		if s.At.Before(at) || !s.At.Before(end) {
			continue
		}
		if s.Err != "" {
			failed++
			continue
		}
		lastIn = s
		if !s.converged() {
			lastBad = s.At
		}
	}
	switch {
	case lastIn == nil || lastBad.IsZero():
		return 0, failed
	case !lastIn.converged():
		return notWithin, failed
	}
	for _, s := range samples {
		if s.Err == "" && s.At.After(lastBad) && s.At.Before(end) {
			return s.At.Sub(at), failed
		}
	}
	return notWithin, failed
}
