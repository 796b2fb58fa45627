package chaos

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
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
	"time"
)

// ClusterConfig describes the replicated cluster of deploy/cluster/cluster.sh: 3 NATS
// servers, 3 Cassandra nodes, a Redis primary and replica with 3 Sentinels, parleyd edges,
// delivery workers and apis, and HAProxy in front. The script starts and restarts every node;
// the target reads the nodes from `cluster.sh nodes`.
type ClusterConfig struct {
	// Script is deploy/cluster/cluster.sh; LogDir receives its output (cluster.log).
	Script, LogDir string
	// Env is the script's environment (PARLEY_ROOT, PARLEY_CLUSTER_*).
	Env []string
	// KeepCluster leaves running, at Close, the nodes StartCluster started.
	KeepCluster bool
	Logger      *slog.Logger
}

// ClusterTarget is a Target on the local cluster. Clients use HAProxy's one URL; the nemesis
// hits nodes by kind: the JetStream stream leader or the meta leader (in turn), the Redis
// primary, the delivery worker owning the most partitions, and the others in turn.
type ClusterTarget struct {
	cfg     ClusterConfig
	url     string
	nodes   []*clusterNode
	started string // file listing the nodes StartCluster started

	mu   sync.Mutex
	turn map[Kind]int
}

var _ Target = (*ClusterTarget)(nil)

// clusterNode is a node as `cluster.sh nodes` lists it.
type clusterNode struct {
	*scriptProcess
	role   string // the script's kind: nats, cassandra, redis, sentinel, edge, delivery, api, haproxy
	health string // URL answering 200 when ready; empty for Redis, Sentinels and Cassandra
	addr   string // host:port it serves on
}

// kinds maps the script's kinds to the nemesis's; Sentinels and HAProxy are checked but not hit.
var clusterKinds = map[string]Kind{"nats": KindNATS, "cassandra": KindCassandra, "redis": KindRedis,
	"edge": KindEdge, "delivery": KindDelivery, "api": KindAPI}

// StartCluster brings up whatever part of the cluster is not running and reads its nodes.
func StartCluster(ctx context.Context, cfg ClusterConfig) (*ClusterTarget, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.LogDir, 0o755); err != nil {
		return nil, err
	}
	t := &ClusterTarget{cfg: cfg, started: filepath.Join(cfg.LogDir, "cluster-started"), turn: map[Kind]int{}}
	_ = os.Remove(t.started)
	if _, err := t.script(ctx, "up", "--started-file", t.started); err != nil {
		return nil, fmt.Errorf("cluster up: %w", err)
	}
	out, err := t.script(ctx, "url")
	if err != nil {
		return nil, err
	}
	t.url = strings.TrimSpace(out)
	if out, err = t.script(ctx, "nodes"); err != nil {
		return nil, err
	}
	if t.nodes, err = t.parseNodes(out); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *ClusterTarget) parseNodes(out string) ([]*clusterNode, error) {
	var nodes []*clusterNode
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Split(sc.Text(), "\t")
		if len(f) != 6 {
			return nil, fmt.Errorf("cluster.sh nodes: line %q: want 6 tab-separated fields", sc.Text())
		}
		name := f[0]
		n := &clusterNode{role: f[1], health: f[4], addr: f[5]}
		n.scriptProcess = &scriptProcess{name: name, kind: clusterKinds[f[1]], word: f[3], pidFile: f[2],
			restart: func(ctx context.Context) error {
				return retryUp(ctx, t.cfg.Logger, []string{name}, func() error {
					_, err := t.script(ctx, "up", name)
					return err
				})
			}}
		nodes = append(nodes, n)
	}
	if len(nodes) == 0 {
		return nil, errors.New("cluster.sh nodes listed no node")
	}
	return nodes, nil
}

// script runs cluster.sh with args, its output appended to cluster.log; it returns stdout.
func (t *ClusterTarget) script(ctx context.Context, args ...string) (string, error) {
	f, err := os.OpenFile(filepath.Join(t.cfg.LogDir, "cluster.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fmt.Fprintf(f, "== %s cluster.sh %s\n", time.Now().Format(time.RFC3339), strings.Join(args, " "))
	var stdout, tail bytes.Buffer
	cmd := exec.CommandContext(ctx, t.cfg.Script, args...)
	cmd.Env = t.cfg.Env
	cmd.Stdout, cmd.Stderr = io.MultiWriter(f, &stdout), io.MultiWriter(f, &tail)
	if err := cmd.Run(); err != nil {
		out := tail.String()
		if len(out) > 2000 {
			out = out[len(out)-2000:]
		}
		return "", fmt.Errorf("cluster.sh %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return stdout.String(), nil
}

// DeliveryMetrics implements MetricsTarget.
func (t *ClusterTarget) DeliveryMetrics() []string {
	var out []string
	for _, n := range t.ofRole("delivery") {
		out = append(out, strings.TrimSuffix(n.health, "/readyz")+"/metrics")
	}
	return out
}

// URL is the load balancer's URL.
func (t *ClusterTarget) URL() string { return t.url }

// Logs says where the script's output is.
func (t *ClusterTarget) Logs() string { return t.cfg.LogDir }

// Edges implements Target: one URL, HAProxy's; it spreads the devices over the edges.
func (t *ClusterTarget) Edges() []string {
	return []string{"ws" + strings.TrimPrefix(t.url, "http") + "/v1/ws"}
}

// API implements Target: HAProxy's URL, in front of every api.
func (t *ClusterTarget) API() string { return t.url }

// Processes implements Target: every node the nemesis may hit (not the Sentinels or HAProxy).
func (t *ClusterTarget) Processes() []Process {
	var out []Process
	for _, n := range t.nodes {
		if n.kind != "" {
			out = append(out, n)
		}
	}
	return out
}

func (t *ClusterTarget) ofRole(role string) []*clusterNode {
	var out []*clusterNode
	for _, n := range t.nodes {
		if n.role == role {
			out = append(out, n)
		}
	}
	return out
}

func (t *ClusterTarget) byName(name string) *clusterNode {
	for _, n := range t.nodes {
		if n.name == name {
			return n
		}
	}
	return nil
}

// Victim implements Target. NATS: the leader of the sequenced log's stream and the meta
// leader, in turn; Redis: the primary the Sentinels name; delivery: the worker owning the
// most partitions; the others in turn.
func (t *ClusterTarget) Victim(ctx context.Context, kind Kind) (Process, error) {
	t.mu.Lock()
	turn := t.turn[kind]
	t.turn[kind]++
	t.mu.Unlock()
	var role string
	for r, k := range clusterKinds {
		if k == kind {
			role = r
		}
	}
	of := t.ofRole(role)
	if len(of) == 0 {
		return nil, fmt.Errorf("no %s node", kind)
	}
	switch kind {
	case KindNATS:
		stream, meta, err := t.natsLeaders(ctx)
		if err != nil {
			return nil, err
		}
		leader := stream
		if turn%2 == 1 {
			leader = meta
		}
		// nats-server names itself parley-<node> (cluster.sh).
		if n := t.byName(strings.TrimPrefix(leader, "parley-")); n != nil {
			return n, nil
		}
		return nil, fmt.Errorf("NATS leader %q is no node of the cluster", leader)
	case KindRedis:
		addr, err := t.redisPrimary(ctx)
		if err != nil {
			return nil, err
		}
		for _, n := range of {
			if n.addr == addr {
				return n, nil
			}
		}
		return nil, fmt.Errorf("redis primary %s is no node of the cluster", addr)
	case KindDelivery:
		best, most := -1, 0
		for i, n := range of {
			if c := ownedPartitions(ctx, strings.TrimSuffix(n.health, "/readyz")+"/metrics"); c > most {
				best, most = i, c
			}
		}
		if best >= 0 {
			return of[best], nil
		}
	}
	return of[turn%len(of)], nil
}

// logStream is the stream whose leader a NATS fault kills: the sequenced log, the busiest.
const logStream = "PARLEY_INGEST_LOG"

// natsLeaders asks a running NATS server who leads the log stream and the meta group.
func (t *ClusterTarget) natsLeaders(ctx context.Context) (stream, meta string, err error) {
	var errs []error
	for _, n := range t.ofRole("nats") {
		if n.PID() == 0 || n.isStopped() {
			continue
		}
		base, _, _ := strings.Cut(n.health, "/healthz")
		var jsz struct {
			Meta struct {
				Leader string `json:"leader"`
			} `json:"meta_cluster"`
			Accounts []struct {
				Streams []struct {
					Name    string `json:"name"`
					Cluster struct {
						Leader string `json:"leader"`
					} `json:"cluster"`
				} `json:"stream_detail"`
			} `json:"account_details"`
		}
		if err := getJSON(ctx, base+"/jsz?streams=true", &jsz); err != nil {
			errs = append(errs, err)
			continue
		}
		for _, a := range jsz.Accounts {
			for _, s := range a.Streams {
				if s.Name == logStream {
					stream = s.Cluster.Leader
				}
			}
		}
		if stream != "" && jsz.Meta.Leader != "" {
			return stream, jsz.Meta.Leader, nil
		}
		errs = append(errs, fmt.Errorf("%s: no leader of %s or of the meta group yet", n.name, logStream))
	}
	return "", "", fmt.Errorf("NATS leaders: %w", errors.Join(errs...))
}

func getJSON(ctx context.Context, url string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// redisPrimary asks the Sentinels which Redis is the primary (host:port); they must agree.
func (t *ClusterTarget) redisPrimary(ctx context.Context) (string, error) {
	seen := map[string]int{}
	var errs []error
	for _, s := range t.ofRole("sentinel") {
		if s.PID() == 0 {
			continue
		}
		addr, err := respCommand(ctx, s.addr, "SENTINEL", "get-master-addr-by-name", sentinelMaster)
		if err != nil || len(addr) != 2 {
			errs = append(errs, fmt.Errorf("%s: %v", s.name, err))
			continue
		}
		seen[net.JoinHostPort(addr[0], addr[1])]++
	}
	if len(seen) != 1 {
		return "", fmt.Errorf("the Sentinels do not name one primary: %v %v", seen, errors.Join(errs...))
	}
	for a := range seen {
		return a, nil
	}
	return "", nil
}

// sentinelMaster is the name the Sentinels monitor the primary by (cluster.sh's default).
const sentinelMaster = "parley"

// Healthy implements Target: every node runs and is not stopped; parleyd, NATS and HAProxy
// answer their health URL; Cassandra and Redis accept connections; the Sentinels agree on a
// primary that answers as one; HAProxy has every edge and api in rotation.
func (t *ClusterTarget) Healthy(ctx context.Context) error {
	var bad []string
	for _, n := range t.nodes {
		if err := n.ready(ctx); err != nil {
			bad = append(bad, n.name+": "+err.Error())
		}
	}
	if len(bad) == 0 {
		if err := t.primaryReady(ctx); err != nil {
			bad = append(bad, err.Error())
		}
	}
	if len(bad) == 0 {
		if down := t.outOfRotation(ctx); len(down) > 0 {
			bad = append(bad, "haproxy: not in rotation: "+strings.Join(down, ", "))
		}
	}
	if len(bad) > 0 {
		return errors.New(strings.Join(bad, "; "))
	}
	return nil
}

func (n *clusterNode) ready(ctx context.Context) error {
	if n.PID() == 0 {
		return errors.New("not running")
	}
	if n.isStopped() {
		return errors.New("stopped")
	}
	if n.health != "" {
		ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.health, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
		}
		return nil
	}
	c, err := net.DialTimeout("tcp", n.addr, 2*time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

func (t *ClusterTarget) primaryReady(ctx context.Context) error {
	addr, err := t.redisPrimary(ctx)
	if err != nil {
		return err
	}
	role, err := respCommand(ctx, addr, "ROLE")
	if err != nil {
		return fmt.Errorf("redis primary %s: %w", addr, err)
	}
	if len(role) == 0 || role[0] != "master" {
		return fmt.Errorf("redis primary %s does not answer as a primary yet (role %v)", addr, role)
	}
	return nil
}

// respCommand sends one command to a Redis server or Sentinel and returns the reply's strings:
// the elements of an array (the scalar ones; nested arrays are skipped), or a single bulk or
// simple string. The suite talks to Redis like the operator's redis-cli, without a driver
// (internal/archtest keeps the stores' drivers out of it); this is all it needs to ask.
func respCommand(ctx context.Context, addr string, args ...string) ([]string, error) {
	d := net.Dialer{Timeout: time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(c, b.String()); err != nil {
		return nil, err
	}
	r := bufio.NewReader(c)
	var read func(depth int) ([]string, error)
	read = func(depth int) ([]string, error) {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			return nil, errors.New("empty reply line")
		}
		switch line[0] {
		case '+', ':':
			return []string{line[1:]}, nil
		case '-':
			return nil, errors.New(line[1:])
		case '$':
			n, err := strconv.Atoi(line[1:])
			if err != nil || n < 0 {
				return nil, err // a nil bulk string: no value
			}
			buf := make([]byte, n+2)
			if _, err := io.ReadFull(r, buf); err != nil {
				return nil, err
			}
			return []string{string(buf[:n])}, nil
		case '*':
			n, err := strconv.Atoi(line[1:])
			if err != nil || n < 0 {
				return nil, err
			}
			var out []string
			for range n {
				el, err := read(depth + 1)
				if err != nil {
					return nil, err
				}
				if depth == 0 {
					out = append(out, el...)
				}
			}
			return out, nil
		}
		return nil, fmt.Errorf("unexpected reply %q", line)
	}
	return read(0)
}

// outOfRotation lists the edges and apis HAProxy does not send traffic to (from its stats CSV).
func (t *ClusterTarget) outOfRotation(ctx context.Context) []string {
	var lb *clusterNode
	for _, n := range t.ofRole("haproxy") {
		lb = n
	}
	if lb == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, lb.health+";csv", nil)
	if err != nil {
		return []string{err.Error()}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return []string{err.Error()}
	}
	defer resp.Body.Close()
	r := csv.NewReader(resp.Body)
	r.FieldsPerRecord = -1
	rows, err := r.ReadAll()
	if err != nil {
		return []string{"stats: " + err.Error()}
	}
	var down []string
	for _, row := range rows {
		// # pxname,svname,...; field 17 is the status.
		if len(row) < 18 || (row[0] != "edges" && row[0] != "apis") || row[1] == "FRONTEND" || row[1] == "BACKEND" {
			continue
		}
		if row[17] != "UP" {
			down = append(down, row[1]+" "+row[17])
		}
	}
	return down
}

// Close resumes anything stopped, copies the parleyd and HAProxy logs of the run into LogDir
// and, unless KeepCluster, stops the nodes StartCluster started.
func (t *ClusterTarget) Close(ctx context.Context) error {
	for _, n := range t.nodes {
		if n.PID() != 0 {
			_ = n.Cont()
		}
	}
	t.copyLogs()
	if t.cfg.KeepCluster {
		return nil
	}
	if st, err := os.Stat(t.started); err != nil || st.Size() == 0 {
		return nil // started nothing
	}
	_, err := t.script(ctx, "down", "--from-file", t.started)
	return err
}

// copyLogs copies the end (at most 8 MiB each) of the logs of every parleyd and of HAProxy,
// earlier starts' (cluster.sh keeps them in <name>.log.old) then the current one's, into
// LogDir, so a run's directory holds what the run saw; the other nodes' logs stay under the
// cluster's state directory.
func (t *ClusterTarget) copyLogs() {
	for _, n := range t.nodes {
		switch n.role {
		case "edge", "delivery", "api", "haproxy":
		default:
			continue
		}
		dst, err := os.Create(filepath.Join(t.cfg.LogDir, n.name+".log"))
		if err != nil {
			continue
		}
		base := filepath.Join(filepath.Dir(n.pidFile), n.name+".log")
		for _, src := range []string{base + ".old", base} {
			f, err := os.Open(src)
			if err != nil {
				continue
			}
			if st, err := f.Stat(); err == nil && st.Size() > 8<<20 {
				_, _ = f.Seek(st.Size()-8<<20, io.SeekStart)
			}
			_, _ = io.Copy(dst, f)
			_ = f.Close()
		}
		_ = dst.Close()
	}
}
