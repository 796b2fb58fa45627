package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"time"
)

// RunConfig is one run of the suite.
type RunConfig struct {
	Profile Profile
	Seed    uint64
	// Target is the deployment; its Edges and API fill the workload's.
	Target   Target
	Workload WorkloadConfig
	// Warmup is the steady load before the first fault (default 10 s); Settle the load
	// between a recovery and the next fault (default 6 s); RecoverTimeout the longest wait
	// for a recovery (default 90 s).
	Warmup, Settle, RecoverTimeout time.Duration
	// Progress receives a line per fault and per phase.
	Progress io.Writer
	Logger   *slog.Logger
}

// Result is what a run did and found.
type Result struct {
	Profile string        `json:"profile"`
	Seed    uint64        `json:"seed"`
	Started time.Time     `json:"started"`
	Elapsed time.Duration `json:"elapsed_ns"`
	// Users, Devices, Conversations describe the workload.
	Users, Devices, Conversations int
	Faults                        []FaultRecord `json:"faults"`
	// Pending counts the sends still unanswered once everything healed and every device
	// reconnected (the SDK keeps resending them; not a defect by itself).
	Pending        int `json:"pending"`
	LiveReadErrors int `json:"live_read_errors"`
	// BacklogWait is how long the pipeline took, after the load, to work off its backlog
	// before the final reads (MetricsTarget).
	BacklogWait time.Duration `json:"backlog_wait_ns"`
	Errors      []string      `json:"errors,omitempty"`
	Verdict     Verdict       `json:"verdict"`
	History     History       `json:"-"`
}

// Failed reports whether the run found a defect or could not check everything.
func (r Result) Failed() bool { return !r.Verdict.OK() || len(r.Errors) > 0 }

// Run runs the workload against the target under the profile's faults, heals, reads every
// conversation back and checks the history. An error means the run could not be made (the
// deployment never worked); defects are in the Result.
func Run(ctx context.Context, cfg RunConfig) (Result, error) {
	if cfg.Warmup == 0 {
		cfg.Warmup = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	say := func(format string, args ...any) {
		fmt.Fprintf(cfg.Progress, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
	}
	res := Result{Profile: cfg.Profile.Name, Seed: cfg.Seed, Started: time.Now()}
	wc := cfg.Workload
	wc.Edges, wc.API, wc.Seed = cfg.Target.Edges(), cfg.Target.API(), cfg.Seed
	if wc.Logger == nil {
		wc.Logger = cfg.Logger
	}
	w, err := NewWorkload(wc)
	if err != nil {
		return res, err
	}
	defer w.Close()
	if err := w.Setup(ctx); err != nil {
		return res, fmt.Errorf("setup: %w", err)
	}
	res.Users, res.Devices, res.Conversations = wc.Users, w.Devices(), w.Conversations()
	if res.Users == 0 {
		res.Users = 8
	}
	schedule := cfg.Profile.Schedule(rand.New(rand.NewPCG(cfg.Seed, 1)))
	say("profile %s, seed %d: %d faults; %d devices of %d users in %d conversations (with the probes), %v msg/s",
		cfg.Profile.Name, cfg.Seed, len(schedule), res.Devices, res.Users+2, res.Conversations, w.cfg.Rate)
	w.Start(ctx)
	sleep(ctx, cfg.Warmup)
	if err := w.Probe(ctx, 60*time.Second); err != nil {
		w.Stop()
		return res, fmt.Errorf("before any fault: %w", err)
	}
	inv, acc, _ := w.Load(time.Now().Add(-cfg.Warmup), time.Now())
	say("warm-up: %d sent, %d accepted in %v; probe through every edge ok", inv, acc, cfg.Warmup)

	n := &Nemesis{Target: cfg.Target, Probe: w.Probe, Load: w.Load, Settle: cfg.Settle, RecoverTimeout: cfg.RecoverTimeout, Logger: cfg.Logger}
	i := 0
	res.Faults = n.Run(ctx, schedule, func(r FaultRecord) {
		i++
		status := fmt.Sprintf("recovered in %v", r.Outage().Round(100*time.Millisecond))
		if r.Err != "" {
			status = "NOT RECOVERED: " + r.Err
		}
		say("fault %d/%d %-15s %-11s pid %-7d 10 s before: %d sent, %d accepted, %d stored (%d in the last 100 ms); %s",
			i, len(schedule), r.Fault.String(), r.Process, r.PID, r.Invoked, r.Accepted, r.Stored, r.StoredLast, status)
	})
	if ctx.Err() != nil {
		w.Stop()
		return res, ctx.Err()
	}

	// Heal: whatever a fault left behind is mended, under load. Without a working
	// deployment the final reads would mean nothing: stop there.
	if err := Heal(ctx, cfg.Target, 3*time.Minute); err != nil {
		w.Stop()
		res.Errors = append(res.Errors, "could not heal the deployment after the faults, so nothing was read back or checked: "+err.Error())
		res.Elapsed = time.Since(res.Started)
		return res, nil
	}
	sleep(ctx, n.Settle)
	w.Stop()
	loadEnd := time.Now()
	say("load stopped; waiting for every send to be answered")
	pending := w.Drain(ctx, 90*time.Second)
	say("%d sends unanswered; reconnecting every device (it syncs from its cursors and resends its outbox)", pending)
	if err := w.Reconnect(ctx, 2*time.Minute); err != nil {
		res.Errors = append(res.Errors, err.Error())
	}
	res.Pending = w.Drain(ctx, 30*time.Second)
	w.Quiesce(ctx, 5*time.Second, time.Minute)
	if mt, ok := cfg.Target.(MetricsTarget); ok {
		took, err := waitBacklog(ctx, mt.DeliveryMetrics(), 3*time.Minute)
		res.BacklogWait = took
		if err != nil {
			say("the pipeline still has a backlog after %v (%v): reading anyway", took.Round(time.Second), err)
		} else if took > 10*time.Second {
			say("the pipeline worked off its backlog in %v", took.Round(time.Second))
		}
	}
	say("%d sends unanswered; reading every conversation back (sync and REST, every member)", res.Pending)
	if err := w.FinalReads(ctx); err != nil {
		res.Errors = append(res.Errors, err.Error())
	}
	res.LiveReadErrors = w.LiveReadErrors()
	res.History = w.History()
	MeasureTimings(res.History, res.Faults, loadEnd)
	res.Verdict = Check(res.History)
	res.Elapsed = time.Since(res.Started)
	say("checked in %v total", res.Elapsed.Round(time.Second))
	return res, nil
}

// waitBacklog waits until a delivery worker reports no backlog twice in a row (the gauges are
// refreshed every 5 s), or timeout; it returns how long it waited.
func waitBacklog(ctx context.Context, urls []string, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	zeros := 0
	var last error
	for time.Since(start) < timeout && ctx.Err() == nil {
		for _, u := range urls {
			n, err := backlog(ctx, u)
			if err != nil {
				last = err
				continue
			}
			if n == 0 {
				zeros++
			} else {
				zeros, last = 0, fmt.Errorf("%.0f messages and entries still to do", n)
			}
			break
		}
		if zeros >= 2 {
			return time.Since(start), nil
		}
		sleep(ctx, 5*time.Second)
	}
	if last == nil {
		last = ctx.Err()
	}
	return time.Since(start), last
}

func waitHealthy(ctx context.Context, t Target, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := t.Healthy(ctx)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return errors.New("not healthy: " + err.Error())
		}
		sleep(ctx, 500*time.Millisecond)
	}
}
