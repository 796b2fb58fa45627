package chaos

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeTarget records what the nemesis does to its processes.
type fakeTarget struct {
	mu    sync.Mutex
	log   []string
	procs []*fakeProcess
}

type fakeProcess struct {
	t           *fakeTarget
	name        string
	kind        Kind
	pid         int
	stopped     bool
	failRestart bool
}

func (t *fakeTarget) record(s string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.log = append(t.log, s)
}

func (t *fakeTarget) Edges() []string { return nil }
func (t *fakeTarget) API() string     { return "" }
func (t *fakeTarget) Processes() []Process {
	var out []Process
	for _, p := range t.procs {
		out = append(out, p)
	}
	return out
}
func (t *fakeTarget) Victim(_ context.Context, k Kind) (Process, error) {
	for _, p := range t.procs {
		if p.kind == k {
			return p, nil
		}
	}
	return nil, errors.New("none")
}
func (t *fakeTarget) Healthy(context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, p := range t.procs {
		if p.pid == 0 || p.stopped {
			return errors.New(p.name + " down")
		}
	}
	return nil
}

func (p *fakeProcess) Name() string { return p.name }
func (p *fakeProcess) Kind() Kind   { return p.kind }
func (p *fakeProcess) PID() int {
	p.t.mu.Lock()
	defer p.t.mu.Unlock()
	return p.pid
}
func (p *fakeProcess) Kill() error {
	p.t.record("kill " + p.name)
	p.t.mu.Lock()
	defer p.t.mu.Unlock()
	p.pid = 0
	return nil
}
func (p *fakeProcess) Stop() error {
	p.t.record("stop " + p.name)
	p.t.mu.Lock()
	defer p.t.mu.Unlock()
	p.stopped = true
	return nil
}
func (p *fakeProcess) Cont() error {
	p.t.mu.Lock()
	defer p.t.mu.Unlock()
	if p.stopped {
		p.t.log = append(p.t.log, "cont "+p.name)
	}
	p.stopped = false
	return nil
}
func (p *fakeProcess) Restart(context.Context) error {
	p.t.record("restart " + p.name)
	p.t.mu.Lock()
	defer p.t.mu.Unlock()
	if p.failRestart {
		p.failRestart = false // the next attempt (Heal, before the next fault) works
		return errors.New("port in use")
	}
	p.pid = 42
	return nil
}

func newFakeTarget() *fakeTarget {
	t := &fakeTarget{}
	for _, k := range Kinds {
		t.procs = append(t.procs, &fakeProcess{t: t, name: string(k) + "-1", kind: k, pid: 1})
	}
	return t
}

func TestNemesis(t *testing.T) {
	ft := newFakeTarget()
	ft.procs[4].failRestart = true // cassandra
	probes := 0
	n := &Nemesis{Target: ft, Settle: time.Millisecond, RecoverTimeout: time.Second,
		Probe: func(context.Context, time.Duration) error { probes++; ft.record("probe"); return nil }}
	recs := n.Run(context.Background(), []Fault{
		{Kind: KindDelivery, Action: Kill, Hold: time.Millisecond},
		{Kind: KindCassandra, Action: Kill, Hold: time.Millisecond},
		{Kind: KindRedis, Action: Pause, Hold: time.Millisecond},
	}, nil)
	want := []string{
		"kill delivery-1", "restart delivery-1", "probe",
		"kill cassandra-1", "restart cassandra-1", // fails: no probe, the record says why
		"restart cassandra-1", // mended before the next fault
		"stop redis-1", "cont redis-1", "probe",
	}
	if !slices.Equal(ft.log, want) {
		t.Errorf("nemesis did\n%s\nwant\n%s", strings.Join(ft.log, "\n"), strings.Join(want, "\n"))
	}
	if len(recs) != 3 || recs[0].Recovered.IsZero() || recs[1].Err == "" || !recs[1].Recovered.IsZero() || recs[2].Recovered.IsZero() {
		t.Errorf("records %+v", recs)
	}
	if recs[0].Process != "delivery-1" || recs[0].PID != 1 {
		t.Errorf("record names %s pid %d", recs[0].Process, recs[0].PID)
	}
}

func TestProfiles(t *testing.T) {
	count := func(s []Fault, k Kind, a Action) int {
		n := 0
		for _, f := range s {
			if f.Kind == k && f.Action == a {
				n++
			}
		}
		return n
	}
	rng := rand.New(rand.NewPCG(1, 2))
	short, _ := ProfileByName("short")
	s := short.Schedule(rng)
	if n := count(s, KindCassandra, Kill); n < 3 {
		t.Errorf("short has %d Cassandra kills; want at least 3", n)
	}
	for _, k := range Kinds {
		for _, a := range []Action{Kill, Pause} {
			if count(s, k, a) == 0 {
				t.Errorf("short lacks %s %s", k, a)
			}
		}
	}
	for _, f := range s {
		if f.Action == Pause && (f.Hold < 15*time.Second || f.Hold > 20*time.Second) {
			t.Errorf("pause of %v", f.Hold)
		}
	}
	control, _ := ProfileByName("control")
	if c := control.Schedule(rng); count(c, KindCassandra, Kill) != 0 || len(c) != len(s)-count(s, KindCassandra, Kill) {
		t.Errorf("control is not short without its Cassandra kills: %v", c)
	}
	long, _ := ProfileByName("long")
	l := long.Schedule(rng)
	if len(l) < 60 {
		t.Errorf("long has %d faults; want at least 60", len(l))
	}
	for _, k := range Kinds {
		for _, a := range []Action{Kill, Pause} {
			if count(l, k, a) < 5 {
				t.Errorf("long has %s %s %d times; want at least 5", k, a, count(l, k, a))
			}
		}
	}
	for _, f := range l {
		if f.Action == Pause && (f.Hold < 15*time.Second || f.Hold > 20*time.Second) {
			t.Errorf("pause of %v", f.Hold)
		}
	}
}

func TestAlive(t *testing.T) {
	if !alive(os.Getpid()) {
		t.Error("this process is not alive")
	}
	if alive(1 << 30) {
		t.Error("a pid that cannot exist is alive")
	}
}
