package chaos

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// LocalConfig describes a deployment on this machine: parleyd processes that LocalTarget
// starts itself, one per role, and the Redis, NATS and Cassandra that deploy/local/stack.sh
// runs (their PID files are under StateDir).
type LocalConfig struct {
	// Parleyd is the parleyd binary; Stack is deploy/local/stack.sh.
	Parleyd, Stack string
	// StateDir is the stack's state directory (PARLEY_STATE_DIR); LogDir receives the
	// parleyd logs and the output of stack.sh.
	StateDir, LogDir string
	// Env is the environment of parleyd and stack.sh: the PARLEY_* settings (ports and
	// addresses of the stack, token secret, keyspace).
	Env []string
	// Edges, Deliveries and APIs are the number of parleyd processes of each role
	// (defaults 2, 2, 1).
	Edges, Deliveries, APIs int
	// KeepStack leaves running, at Close, the stack services that StartLocal started.
	KeepStack bool
	Logger    *slog.Logger
}

// LocalTarget is a Target on this machine.
type LocalTarget struct {
	cfg      LocalConfig
	parleyds []*parleydProcess
	stack    []*scriptProcess
	started  string // file listing the stack services StartLocal started

	mu   sync.Mutex
	turn map[Kind]int // round robin among processes of a kind
}

var _ Target = (*LocalTarget)(nil)

// StartLocal brings the stack up (what is not running already), then starts the parleyd
// processes, the api first (it applies the migrations), and waits until all are ready.
func StartLocal(ctx context.Context, cfg LocalConfig) (*LocalTarget, error) {
	if cfg.Edges == 0 {
		cfg.Edges = 2
	}
	if cfg.Deliveries == 0 {
		cfg.Deliveries = 2
	}
	if cfg.APIs == 0 {
		cfg.APIs = 1
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.LogDir, 0o755); err != nil {
		return nil, err
	}
	t := &LocalTarget{cfg: cfg, started: filepath.Join(cfg.LogDir, "stack-started"), turn: map[Kind]int{}}
	_ = os.Remove(t.started)
	if err := t.stackUp(ctx, "--started-file", t.started); err != nil {
		return nil, fmt.Errorf("stack up: %w", err)
	}
	for _, s := range []struct {
		name string
		kind Kind
		word string
	}{{"redis", KindRedis, "redis-server"}, {"nats", KindNATS, "nats-server"}, {"cassandra", KindCassandra, "CassandraDaemon"}} {
		t.stack = append(t.stack, &scriptProcess{name: s.name, kind: s.kind, word: s.word,
			pidFile: filepath.Join(cfg.StateDir, s.name, s.name+".pid"),
			restart: func(ctx context.Context) error { return t.stackUp(ctx, s.name) }})
	}
	add := func(kind Kind, n int) error {
		for i := 1; i <= n; i++ {
			listen, err := freeAddr()
			if err != nil {
				return err
			}
			admin, err := freeAddr()
			if err != nil {
				return err
			}
			t.parleyds = append(t.parleyds, &parleydProcess{name: fmt.Sprintf("%s-%d", kind, i), kind: kind, listen: listen, admin: admin, t: t})
		}
		return nil
	}
	for _, k := range []struct {
		kind Kind
		n    int
	}{{KindAPI, cfg.APIs}, {KindDelivery, cfg.Deliveries}, {KindEdge, cfg.Edges}} {
		if err := add(k.kind, k.n); err != nil {
			return nil, err
		}
	}
	// The api first: it migrates the keyspace, so the others start on a finished schema.
	if err := t.parleyds[0].start(ctx); err != nil {
		t.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	errs := make(chan error, len(t.parleyds))
	for _, p := range t.parleyds[1:] {
		go func() { errs <- p.start(ctx) }()
	}
	var err error
	for range t.parleyds[1:] {
		err = errors.Join(err, <-errs)
	}
	if err != nil {
		t.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	return t, nil
}

// stackCmd runs stack.sh with args, its output appended to the log directory's stack.log.
func (t *LocalTarget) stackCmd(ctx context.Context, args ...string) error {
	f, err := os.OpenFile(filepath.Join(t.cfg.LogDir, "stack.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	fmt.Fprintf(f, "== %s stack.sh %s\n", time.Now().Format(time.RFC3339), strings.Join(args, " "))
	var tail bytes.Buffer
	cmd := exec.CommandContext(ctx, t.cfg.Stack, args...)
	cmd.Env = t.cfg.Env
	cmd.Stdout, cmd.Stderr = io.MultiWriter(f, &tail), io.MultiWriter(f, &tail)
	if err := cmd.Run(); err != nil {
		out := tail.String()
		if len(out) > 2000 {
			out = out[len(out)-2000:]
		}
		return fmt.Errorf("stack.sh %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// Edges implements Target.
func (t *LocalTarget) Edges() []string {
	var out []string
	for _, p := range t.parleyds {
		if p.kind == KindEdge {
			out = append(out, "ws://"+p.listen+"/v1/ws")
		}
	}
	return out
}

// API implements Target.
func (t *LocalTarget) API() string {
	for _, p := range t.parleyds {
		if p.kind == KindAPI {
			return "http://" + p.listen
		}
	}
	return ""
}

// Processes implements Target.
func (t *LocalTarget) Processes() []Process {
	var out []Process
	for _, p := range t.parleyds {
		out = append(out, p)
	}
	for _, s := range t.stack {
		out = append(out, s)
	}
	return out
}

// Victim implements Target: among delivery workers the one that owns the most partitions
// (parley_delivery_partition_owned), otherwise the processes of the kind in turn.
func (t *LocalTarget) Victim(ctx context.Context, kind Kind) (Process, error) {
	var of []Process
	for _, p := range t.Processes() {
		if p.Kind() == kind {
			of = append(of, p)
		}
	}
	if len(of) == 0 {
		return nil, fmt.Errorf("no %s process", kind)
	}
	if kind == KindDelivery {
		best, most := -1, 0
		for i, p := range of {
			if n := p.(*parleydProcess).ownedPartitions(ctx); n > most {
				best, most = i, n
			}
		}
		if best >= 0 {
			return of[best], nil
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	p := of[t.turn[kind]%len(of)]
	t.turn[kind]++
	return p, nil
}

// Healthy implements Target: every stack service runs (not stopped), and every parleyd
// answers /readyz with 200 (which checks its connections to NATS, Redis and Cassandra).
func (t *LocalTarget) Healthy(ctx context.Context) error {
	var bad []string
	for _, s := range t.stack {
		if s.PID() == 0 {
			bad = append(bad, s.name+" not running")
		} else if s.isStopped() {
			bad = append(bad, s.name+" stopped")
		}
	}
	for _, p := range t.parleyds {
		if err := p.ready(ctx); err != nil {
			bad = append(bad, p.name+": "+err.Error())
		}
	}
	if len(bad) > 0 {
		return errors.New(strings.Join(bad, "; "))
	}
	return nil
}

// Close resumes anything stopped, stops the parleyd processes (SIGTERM, then SIGKILL after
// 10 s) and, unless KeepStack, the stack services StartLocal started.
func (t *LocalTarget) Close(ctx context.Context) error {
	for _, p := range t.Processes() {
		if p.PID() != 0 {
			_ = p.Cont()
		}
	}
	var wg sync.WaitGroup
	for _, p := range t.parleyds {
		wg.Add(1)
		go func() { defer wg.Done(); p.terminate(10 * time.Second) }()
	}
	wg.Wait()
	if t.cfg.KeepStack {
		return nil
	}
	if _, err := os.Stat(t.started); err != nil {
		return nil // started nothing
	}
	return t.stackCmd(ctx, "down", "--from-file", t.started)
}

// Logs says where the logs are.
func (t *LocalTarget) Logs() string { return t.cfg.LogDir }

// DeliveryMetrics implements MetricsTarget.
func (t *LocalTarget) DeliveryMetrics() []string {
	var out []string
	for _, p := range t.parleyds {
		if p.kind == KindDelivery {
			out = append(out, "http://"+p.admin+"/metrics")
		}
	}
	return out
}

// freeAddr returns a loopback address with a port nobody listens on now.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// parleydProcess is a parleyd with some roles, started (and restarted) by LocalTarget with
// the same addresses every time.
type parleydProcess struct {
	name          string
	kind          Kind
	listen, admin string
	t             *LocalTarget

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the current process has been reaped
	stopped bool
}

func (p *parleydProcess) Name() string { return p.name }
func (p *parleydProcess) Kind() Kind   { return p.kind }

func (p *parleydProcess) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	select {
	case <-p.exited:
		return 0
	default:
		return p.cmd.Process.Pid
	}
}

// start runs the process and waits until /readyz answers 200 (at most 3 minutes).
func (p *parleydProcess) start(ctx context.Context) error {
	logf, err := os.OpenFile(filepath.Join(p.t.cfg.LogDir, p.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.t.cfg.Parleyd, "run", "--roles="+string(p.kind), "--listen-addr="+p.listen, "--admin-addr="+p.admin)
	cmd.Env = p.t.cfg.Env
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: a Ctrl-C in the terminal reaches the suite, which stops it in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(exited)
	}()
	p.mu.Lock()
	p.cmd, p.exited, p.stopped = cmd, exited, false
	p.mu.Unlock()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		if p.ready(ctx) == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("%s exited during start-up (see %s)", p.name, logf.Name())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after 3 minutes (see %s)", p.name, logf.Name())
		}
	}
}

// ready asks /readyz.
func (p *parleydProcess) ready(ctx context.Context) error {
	if p.PID() == 0 {
		return errors.New("not running")
	}
	if p.isStopped() {
		return errors.New("stopped")
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.admin+"/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		return fmt.Errorf("readyz %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return nil
}

func (p *parleydProcess) isStopped() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopped
}

func (p *parleydProcess) signal(sig syscall.Signal) error {
	pid := p.PID()
	if pid == 0 {
		return fmt.Errorf("%s is not running", p.name)
	}
	return syscall.Kill(pid, sig)
}

func (p *parleydProcess) Kill() error {
	if err := p.signal(syscall.SIGKILL); err != nil {
		return err
	}
	p.mu.Lock()
	exited := p.exited
	p.stopped = false
	p.mu.Unlock()
	select {
	case <-exited:
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("%s still running 30 s after SIGKILL", p.name)
	}
}

func (p *parleydProcess) Stop() error {
	if err := p.signal(syscall.SIGSTOP); err != nil {
		return err
	}
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	return nil
}

func (p *parleydProcess) Cont() error {
	p.mu.Lock()
	p.stopped = false
	p.mu.Unlock()
	return p.signal(syscall.SIGCONT)
}

func (p *parleydProcess) Restart(ctx context.Context) error {
	if p.PID() != 0 {
		return fmt.Errorf("%s is still running", p.name)
	}
	return p.start(ctx)
}

// terminate sends SIGTERM and waits for the graceful shutdown, then kills.
func (p *parleydProcess) terminate(grace time.Duration) {
	if p.signal(syscall.SIGTERM) != nil {
		return
	}
	p.mu.Lock()
	exited := p.exited
	p.mu.Unlock()
	select {
	case <-exited:
	case <-time.After(grace):
		_ = p.Kill()
	}
}

// ownedPartitions counts the partitions this delivery worker reports owning.
func (p *parleydProcess) ownedPartitions(ctx context.Context) int {
	return ownedPartitions(ctx, "http://"+p.admin+"/metrics")
}

// backlog sums what a delivery worker's metrics say the pipeline still has to do: messages
// not yet taken by a sequencer (parley_delivery_partition_pending) and log entries not yet
// in Cassandra (parley_delivery_projection_pending). Every worker reports every partition.
func backlog(ctx context.Context, metricsURL string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var sum float64
	seen := false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "parley_delivery_partition_pending{") && !strings.HasPrefix(line, "parley_delivery_projection_pending{") {
			continue
		}
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
				sum += v
				seen = true
			}
		}
	}
	if !seen {
		return 0, errors.New("no backlog gauges yet")
	}
	return sum, sc.Err()
}

// ownedPartitions counts the partitions a delivery worker's metrics say it owns
// (parley_delivery_partition_owned); 0 when they cannot be read.
func ownedPartitions(ctx context.Context, metricsURL string) int {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL, nil)
	if err != nil {
		return 0
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	n := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "parley_delivery_partition_owned{") && strings.HasSuffix(line, "} 1") {
			n++
		}
	}
	return n
}

// scriptProcess is a process a script started and keeps a PID file of (a service of
// deploy/local/stack.sh, a node of deploy/cluster/cluster.sh); restart runs the script again.
type scriptProcess struct {
	name    string // the script's name for it: redis, nats-2, edge-1
	kind    Kind
	word    string // must appear in the process's command line (as the script checks)
	pidFile string
	restart func(ctx context.Context) error

	mu      sync.Mutex
	stopped bool
}

func (s *scriptProcess) Name() string { return s.name }
func (s *scriptProcess) Kind() Kind   { return s.kind }

// PID reads the PID file and checks that the process is alive (not a zombie) and is the
// service, so a reused PID is never signalled.
func (s *scriptProcess) PID() int {
	data, err := os.ReadFile(s.pidFile)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return 0
	}
	if !alive(pid) {
		return 0
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !bytes.Contains(cmdline, []byte(s.word)) {
		return 0
	}
	return pid
}

// alive: the process exists and is not a zombie.
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...; comm may hold spaces and parentheses: the state follows the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) {
		return false
	}
	return stat[i+2] != 'Z' && stat[i+2] != 'X'
}

func (s *scriptProcess) signal(sig syscall.Signal) (int, error) {
	pid := s.PID()
	if pid == 0 {
		return 0, fmt.Errorf("%s is not running", s.name)
	}
	return pid, syscall.Kill(pid, sig)
}

func (s *scriptProcess) isStopped() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopped
}

func (s *scriptProcess) Kill() error {
	pid, err := s.signal(syscall.SIGKILL)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.stopped = false
	s.mu.Unlock()
	for deadline := time.Now().Add(30 * time.Second); alive(pid); {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s (pid %d) still running 30 s after SIGKILL", s.name, pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

func (s *scriptProcess) Stop() error {
	if _, err := s.signal(syscall.SIGSTOP); err != nil {
		return err
	}
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	return nil
}

func (s *scriptProcess) Cont() error {
	s.mu.Lock()
	s.stopped = false
	s.mu.Unlock()
	_, err := s.signal(syscall.SIGCONT)
	return err
}

// Restart runs the script's start of this process, which waits until it is ready.
func (s *scriptProcess) Restart(ctx context.Context) error { return s.restart(ctx) }

// stackUp runs `stack.sh up args...`, again every 5 s for up to 2 minutes while it fails.
// The stack's ports may be in the kernel's ephemeral range (32768-60999 by default; the
// local ports 4xxxx are): while a service is down, any outgoing connection on the machine
// may take its port as a source port (a TIME-WAIT of 60 s after it closes), and the start
// fails with "address in use" until it is free again.
func (t *LocalTarget) stackUp(ctx context.Context, args ...string) error {
	return retryUp(ctx, t.cfg.Logger, args, func() error { return t.stackCmd(ctx, append([]string{"up"}, args...)...) })
}

// retryUp runs up again every 5 s for up to 2 minutes while it fails (see stackUp).
func retryUp(ctx context.Context, logger *slog.Logger, args []string, up func() error) error {
	var errs []error
	deadline := time.Now().Add(2 * time.Minute)
	for attempt := 1; ; attempt++ {
		err := up()
		if err == nil {
			if len(errs) > 0 {
				logger.Warn("up after failed attempts", "args", args, "failed", len(errs), "err", errors.Join(errs...))
			}
			return nil
		}
		errs = append(errs, fmt.Errorf("attempt %d: %w", attempt, firstLine(err)))
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%w\nlast output: %v", errors.Join(errs...), err)
		}
		sleep(ctx, 5*time.Second)
	}
}

// firstLine keeps the first line of an error (stack.sh's output follows it).
func firstLine(err error) error {
	msg, _, _ := strings.Cut(err.Error(), "\n")
	return errors.New(msg)
}
