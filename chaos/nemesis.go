package chaos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"
)

// Action is what the nemesis does to a process.
type Action string

// Actions.
const (
	// Kill: SIGKILL, wait Hold, restart (and wait until it is ready).
	Kill Action = "kill"
	// Pause: SIGSTOP, wait Hold, SIGCONT.
	Pause Action = "pause"
)

// Fault is one planned fault.
type Fault struct {
	Kind   Kind          `json:"kind"`
	Action Action        `json:"action"`
	Hold   time.Duration `json:"hold"`
}

func (f Fault) String() string { return string(f.Kind) + " " + string(f.Action) }

// FaultRecord is what happened when a fault was injected.
type FaultRecord struct {
	Fault
	Process  string    `json:"process"`
	PID      int       `json:"pid"`
	Injected time.Time `json:"injected"`
	// Healed is when the process was back: restarted and ready, or resumed.
	Healed time.Time `json:"healed"`
	// Recovered is when the deployment worked end to end again (Target.Healthy, then a
	// probe message through every edge reached every probe device); zero if it did not
	// within the probe timeout.
	Recovered time.Time `json:"recovered,omitzero"`
	Err       string    `json:"err,omitempty"`
	// The load in the 10 s before the fault: sends invoked and accepted, and messages
	// stored (first surfaced by some device, so stored by the pipeline, in that window);
	// StoredLast is the messages stored in the last 100 ms: for a Cassandra kill, writes
	// that Cassandra's commit log may not have marked yet (see docs/reliability.md).
	Invoked, Accepted, Stored, StoredLast int
	// Timings are what the fault cost the apps (MeasureTimings, after the run).
	Timings Timings `json:"timings"`
}

// Outage is how long the deployment did not work end to end: injection to recovery.
func (r FaultRecord) Outage() time.Duration {
	if r.Recovered.IsZero() {
		return 0
	}
	return r.Recovered.Sub(r.Injected)
}

// AfterHeal is recovery time once the process was back.
func (r FaultRecord) AfterHeal() time.Duration {
	if r.Recovered.IsZero() || r.Healed.IsZero() {
		return 0
	}
	return r.Recovered.Sub(r.Healed)
}

// Nemesis injects a schedule of faults into a target, one at a time, each after Settle of
// steady load since the last recovery.
type Nemesis struct {
	Target Target
	// Probe checks the deployment end to end (Workload.Probe).
	Probe func(ctx context.Context, timeout time.Duration) error
	// Load reports the load in a window (Workload.Load), recorded with each fault.
	Load func(from, to time.Time) (invoked, accepted, stored int)
	// Settle is the steady load between a recovery and the next fault (default 6 s);
	// RecoverTimeout bounds the wait for health and the probe after a heal (default 90 s).
	Settle, RecoverTimeout time.Duration
	Logger                 *slog.Logger
}

// Run injects every fault of schedule in order and returns what happened. It stops early
// only when ctx ends.
func (n *Nemesis) Run(ctx context.Context, schedule []Fault, onFault func(FaultRecord)) []FaultRecord {
	if n.Settle == 0 {
		n.Settle = 6 * time.Second
	}
	if n.RecoverTimeout == 0 {
		n.RecoverTimeout = 90 * time.Second
	}
	if n.Logger == nil {
		n.Logger = slog.New(slog.DiscardHandler)
	}
	var out []FaultRecord
	for i, f := range schedule {
		select {
		case <-ctx.Done():
			return out
		case <-time.After(n.Settle):
		}
		r := n.inject(ctx, f)
		n.Logger.Info("fault", "n", i+1, "of", len(schedule), "fault", f.String(), "process", r.Process,
			"outage", r.Outage().Round(100*time.Millisecond), "err", r.Err)
		out = append(out, r)
		if onFault != nil {
			onFault(r)
		}
	}
	return out
}

func (n *Nemesis) inject(ctx context.Context, f Fault) FaultRecord {
	r := FaultRecord{Fault: f}
	// A fault is only meaningful on a deployment that works: mend what an earlier one left.
	if err := Heal(ctx, n.Target, n.RecoverTimeout); err != nil {
		r.Err = "skipped: " + err.Error()
		return r
	}
	p, err := n.Target.Victim(ctx, f.Kind)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	r.Process, r.PID = p.Name(), p.PID()
	if n.Load != nil {
		now := time.Now()
		r.Invoked, r.Accepted, r.Stored = n.Load(now.Add(-10*time.Second), now)
		_, _, r.StoredLast = n.Load(now.Add(-100*time.Millisecond), now)
	}
	r.Injected = time.Now() // the signal follows at once
	switch f.Action {
	case Kill:
		err = p.Kill()
		if err == nil {
			sleep(ctx, f.Hold)
			err = p.Restart(ctx)
		}
	case Pause:
		err = p.Stop()
		sleep(ctx, f.Hold)
		if cerr := p.Cont(); err == nil {
			err = cerr
		}
	default:
		err = fmt.Errorf("unknown action %q", f.Action)
	}
	r.Healed = time.Now()
	if err != nil {
		r.Err = err.Error()
		return r
	}
	deadline := r.Healed.Add(n.RecoverTimeout)
	for {
		herr := n.Target.Healthy(ctx)
		if herr == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			r.Err = "not healthy: " + herr.Error()
			return r
		}
		sleep(ctx, 200*time.Millisecond)
	}
	if n.Probe != nil {
		if err := n.Probe(ctx, time.Until(deadline)); err != nil {
			r.Err = err.Error()
			return r
		}
	}
	r.Recovered = time.Now()
	return r
}

// Heal restarts every process of the target that is not running, resumes the others
// (SIGCONT is harmless to a running process) and waits until the target is healthy.
func Heal(ctx context.Context, t Target, timeout time.Duration) error {
	var errs []error
	for _, p := range t.Processes() {
		if p.PID() == 0 {
			if err := p.Restart(ctx); err != nil {
				errs = append(errs, fmt.Errorf("restart %s: %w", p.Name(), err))
			}
		} else if err := p.Cont(); err != nil {
			errs = append(errs, fmt.Errorf("resume %s: %w", p.Name(), err))
		}
	}
	if err := waitHealthy(ctx, t, timeout); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// Profile is a named schedule of faults.
type Profile struct {
	Name        string
	Description string
	// Schedule returns the faults in order; rng draws the holds (and the order, for long).
	Schedule func(rng *rand.Rand) []Fault
}

// pauseHold is a SIGSTOP's duration: 15 to 20 s (longer than the SDK's resend delay and
// the delivery pinned TTL, so the pause is felt).
func pauseHold(rng *rand.Rand) time.Duration {
	return 15*time.Second + time.Duration(rng.Int64N(int64(5*time.Second)))
}

// killHold is how long a killed process stays down before the restart.
func killHold(k Kind, rng *rand.Rand) time.Duration {
	if k == KindCassandra {
		return 2 * time.Second
	}
	return time.Second + time.Duration(rng.Int64N(int64(2*time.Second)))
}

func kill(k Kind, rng *rand.Rand) Fault  { return Fault{Kind: k, Action: Kill, Hold: killHold(k, rng)} }
func pause(k Kind, rng *rand.Rand) Fault { return Fault{Kind: k, Action: Pause, Hold: pauseHold(rng)} }

// shortSchedule: six Cassandra SIGKILLs under load, spread out (a kill loses writes only
// when some were acknowledged in the last ~100 ms, so one kill in three or so shows it),
// and one SIGKILL and one SIGSTOP of every other kind. The SIGSTOPs are kept to 15 s to fit
// ten minutes.
func shortSchedule(rng *rand.Rand, cassandraKills bool) []Fault {
	var s []Fault
	add := func(f Fault) { s = append(s, f) }
	ck := func() {
		if cassandraKills {
			add(kill(KindCassandra, rng))
		}
	}
	p := func(k Kind) Fault { return Fault{Kind: k, Action: Pause, Hold: 15 * time.Second} }
	ck()
	add(kill(KindDelivery, rng))
	add(kill(KindEdge, rng))
	ck()
	add(p(KindCassandra))
	add(kill(KindAPI, rng))
	ck()
	add(kill(KindNATS, rng))
	add(p(KindDelivery))
	ck()
	add(kill(KindRedis, rng))
	add(p(KindEdge))
	ck()
	add(p(KindNATS))
	add(p(KindAPI))
	ck()
	add(p(KindRedis))
	return s
}

// clusterSchedule is the failover suite of the replicated cluster (ClusterTarget): every
// fault of the cluster issue twice, in order: the NATS stream leader and the meta leader
// killed (twice each, the target alternates), a Cassandra node killed and one stopped for
// 60 s, the Redis primary killed, an edge killed behind HAProxy, the delivery owner of the
// busiest partitions killed and SIGSTOPped, an api killed.
func clusterSchedule(rng *rand.Rand) []Fault {
	var s []Fault
	for range 2 {
		s = append(s,
			kill(KindNATS, rng), kill(KindNATS, rng),
			kill(KindCassandra, rng), Fault{Kind: KindCassandra, Action: Pause, Hold: 60 * time.Second},
			kill(KindRedis, rng),
			kill(KindEdge, rng),
			kill(KindDelivery, rng), Fault{Kind: KindDelivery, Action: Pause, Hold: 15 * time.Second},
			kill(KindAPI, rng))
	}
	return s
}

// Profiles are the schedules cmd/parley-chaos offers.
var Profiles = []Profile{
	{Name: "short", Description: "at most 10 minutes: 6 Cassandra SIGKILLs under load, and one SIGKILL and one SIGSTOP of every other kind (and a Cassandra SIGSTOP)",
		Schedule: func(rng *rand.Rand) []Fault { return shortSchedule(rng, true) }},
	{Name: "smoke", Description: "two faults (a delivery SIGKILL, an edge SIGSTOP): checks the set-up in about a minute",
		Schedule: func(rng *rand.Rand) []Fault {
			return []Fault{kill(KindDelivery, rng), {Kind: KindEdge, Action: Pause, Hold: 15 * time.Second}}
		}},
	{Name: "cluster", Description: "the cluster's failover suite (--cluster): NATS stream and meta leader, a Cassandra node (killed, stopped 60 s), the Redis primary, an edge, the busiest delivery owner (killed, stopped), an api; each twice, 18 faults",
		Schedule: clusterSchedule},
	{Name: "cluster-smoke", Description: "the cluster smoke test of make test (--cluster): a NATS stream leader SIGKILL and an edge SIGKILL behind HAProxy",
		Schedule: func(rng *rand.Rand) []Fault { return []Fault{kill(KindNATS, rng), kill(KindEdge, rng)} }},
	{Name: "control", Description: "the short profile without its Cassandra SIGKILLs: today's code should pass it (the checker's control run)",
		Schedule: func(rng *rand.Rand) []Fault { return shortSchedule(rng, false) }},
	{Name: "long", Description: "66 faults in random order: every kind SIGKILLed and SIGSTOPped 5 times each, and 6 more Cassandra SIGKILLs",
		Schedule: func(rng *rand.Rand) []Fault {
			var s []Fault
			for _, k := range Kinds {
				for range 5 {
					s = append(s, kill(k, rng), pause(k, rng))
				}
			}
			for range 6 {
				s = append(s, kill(KindCassandra, rng))
			}
			rng.Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] })
			return s
		}},
}

// ProfileByName returns the profile called name.
func ProfileByName(name string) (Profile, bool) {
	for _, p := range Profiles {
		if p.Name == name {
			return p, true
		}
	}
	return Profile{}, false
}
