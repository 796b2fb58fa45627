// Command parley-chaos runs Parley's fault-injection suite on this machine: it brings the
// local stack up (deploy/local/stack.sh, on the ports of the PARLEY_* variables), starts
// parleyd processes per role (2 edges, 2 delivery workers, 1 api by default), drives them
// with Go SDK clients while SIGKILLing and SIGSTOPping each kind of process on a schedule,
// then reads everything back and checks the history (package chaos, docs/reliability.md).
//
//	parley-chaos --parleyd bin/parleyd [--profile short|control|long] [--seed N]
//
// It exits 1 when the run found a defect, 2 on a usage error. Everything is on loopback;
// it signals only the processes it started and the stack's own PID files name.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/parleyhq/parley/chaos"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr)
	stop()
	var ue usageError
	switch {
	case err == nil:
	case errors.As(err, &ue):
		fmt.Fprintf(os.Stderr, "parley-chaos: %v\n", err)
		os.Exit(2)
	case errors.Is(err, errDefects):
		os.Exit(1)
	default:
		fmt.Fprintf(os.Stderr, "parley-chaos: %v\n", err)
		os.Exit(1)
	}
}

type usageError struct{ error }

var errDefects = errors.New("defects found")

// run is the command without the process: arguments, environment and output are injected.
func run(ctx context.Context, args, environ []string, stdout, stderr io.Writer) error {
	getenv := func(name string) string {
		for _, kv := range environ {
			if k, v, ok := strings.Cut(kv, "="); ok && k == name {
				return v
			}
		}
		return ""
	}
	fs := flag.NewFlagSet("parley-chaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		profile    = fs.String("profile", "short", "fault schedule: "+profileNames())
		seed       = fs.Uint64("seed", uint64(time.Now().UnixNano()%1e9), "seed of the schedule's holds and order and of the load's choices")
		parleyd    = fs.String("parleyd", "", "the parleyd binary to run (required; `make chaos-short` builds bin/parleyd)")
		stack      = fs.String("stack", "deploy/local/stack.sh", "the local stack's script")
		cluster    = fs.String("cluster", "", "run against the replicated cluster of this script (deploy/cluster/cluster.sh) instead of the local stack: it starts what is not running, and clients go through its load balancer; --edges, --deliveries, --apis and --keyspace are the cluster's own then")
		stateDir   = fs.String("state-dir", envOr(getenv, "PARLEY_STATE_DIR", ".parley"), "the stack's state directory (PARLEY_STATE_DIR)")
		outDir     = fs.String("out", "", "where logs, result.json and history.json go (default STATE_DIR/chaos/<time>)")
		keyspace   = fs.String("keyspace", "parley_chaos", "Cassandra keyspace of the run (created and migrated by the api process)")
		rate       = fs.Float64("rate", 60, "messages per second, in total")
		maxMsgs    = fs.Int("max-messages", 200000, "stop sending after this many messages (the schedule bounds the time)")
		users      = fs.Int("users", 8, "users (even, at least 4); each has two devices")
		edges      = fs.Int("edges", 2, "edge processes")
		deliveries = fs.Int("deliveries", 2, "delivery processes")
		apis       = fs.Int("apis", 1, "api processes")
		keepStack  = fs.Bool("keep-stack", false, "leave running the stack services this run started")
		examples   = fs.Int("examples", 10, "defects of each kind printed in full")
		verbose    = fs.Bool("v", false, "log the suite's own steps (JSON on stderr)")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{err}
	}
	prof, ok := chaos.ProfileByName(*profile)
	if !ok {
		return usageError{fmt.Errorf("--profile %q: want one of %s", *profile, profileNames())}
	}
	if *parleyd == "" {
		return usageError{errors.New("--parleyd is required (go build -o bin/parleyd ./cmd/parleyd)")}
	}
	bin, err := filepath.Abs(*parleyd)
	if err != nil {
		return err
	}
	state, err := filepath.Abs(*stateDir)
	if err != nil {
		return err
	}
	out := *outDir
	if out == "" {
		out = filepath.Join(state, "chaos", time.Now().Format("20060102-150405"))
	}
	if out, err = filepath.Abs(out); err != nil {
		return err
	}
	env, secret, err := parleydEnv(environ, getenv, state, *keyspace)
	if err != nil {
		return usageError{err}
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	logger := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	// The SDK clients say when they reconnect, which under faults is often: to a file.
	clientLog, err := os.Create(filepath.Join(out, "clients.log"))
	if err != nil {
		return err
	}
	defer clientLog.Close()
	clientLogger := slog.New(slog.NewJSONHandler(clientLog, &slog.HandlerOptions{Level: slog.LevelWarn}))

	started := time.Now()
	var target interface {
		chaos.Target
		Close(context.Context) error
	}
	if *cluster != "" {
		fmt.Fprintf(stdout, "%s  starting the cluster (%s); logs in %s\n", started.Format("15:04:05"), *cluster, out)
		ct, err := chaos.StartCluster(ctx, chaos.ClusterConfig{Script: *cluster, LogDir: out, Env: environ, KeepCluster: *keepStack, Logger: logger})
		if err != nil {
			return err
		}
		target = ct
		// The cluster's parleyd verify tokens with the cluster's secret.
		if secret, err = clusterSecret(ctx, *cluster, environ); err != nil {
			_ = ct.Close(context.WithoutCancel(ctx))
			return err
		}
	} else {
		fmt.Fprintf(stdout, "%s  starting the stack and parleyd (%d edges, %d delivery, %d api); logs in %s\n",
			started.Format("15:04:05"), *edges, *deliveries, *apis, out)
		lt, err := chaos.StartLocal(ctx, chaos.LocalConfig{Parleyd: bin, Stack: *stack, StateDir: state, LogDir: out, Env: env,
			Edges: *edges, Deliveries: *deliveries, APIs: *apis, KeepStack: *keepStack, Logger: logger})
		if err != nil {
			return err
		}
		target = lt
	}
	defer func() {
		if err := target.Close(context.WithoutCancel(ctx)); err != nil {
			fmt.Fprintf(stderr, "parley-chaos: stopping: %v\n", err)
		}
	}()
	fmt.Fprintf(stdout, "%s  up in %v: edges %s, api %s\n", time.Now().Format("15:04:05"),
		time.Since(started).Round(time.Second), strings.Join(target.Edges(), " "), target.API())

	res, err := chaos.Run(ctx, chaos.RunConfig{Profile: prof, Seed: *seed, Target: target, Progress: stdout, Logger: logger,
		Workload: chaos.WorkloadConfig{Logger: clientLogger, Secret: secret, Prefix: fmt.Sprintf("x%d-", time.Now().Unix()), Users: *users, Rate: *rate, MaxMessages: *maxMsgs}})
	if err != nil {
		return err
	}
	chaos.WriteReport(stdout, res, *examples)
	if err := writeJSON(filepath.Join(out, "result.json"), res); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(out, "history.json"), res.History); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nresult: %s/result.json; history: %s/history.json; logs: %s\n", out, out, out)
	fmt.Fprintf(stdout, "run again with: parley-chaos --profile %s --seed %d\n", prof.Name, *seed)
	if res.Failed() {
		return errDefects
	}
	return nil
}

// clusterSecret asks the cluster's script for the HS256 secret its parleyd verify tokens with.
func clusterSecret(ctx context.Context, script string, environ []string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, script, "secret")
	cmd.Env = environ
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s secret: %w", script, err)
	}
	return bytes.TrimSpace(out), nil
}

func profileNames() string {
	var names []string
	for _, p := range chaos.Profiles {
		names = append(names, p.Name)
	}
	return strings.Join(names, ", ")
}

func envOr(getenv func(string) string, name, def string) string {
	if v := getenv(name); v != "" {
		return v
	}
	return def
}

// parleydEnv is the environment of the parleyd processes and stack.sh: environ,
// with the stack's addresses derived from the PARLEY_*_PORT variables as deploy/local/env.sh
// derives them (so a run on other ports needs only those), a fresh token secret unless
// one is set, and the run's keyspace. The addresses must be on loopback.
func parleydEnv(environ []string, getenv func(string) string, stateDir, keyspace string) ([]string, []byte, error) {
	port := func(name, def string) string { return envOr(getenv, name, def) }
	addrs := map[string]string{
		"PARLEY_REDIS_ADDR":      envOr(getenv, "PARLEY_REDIS_ADDR", "127.0.0.1:"+port("PARLEY_REDIS_PORT", "16379")),
		"PARLEY_NATS_URL":        envOr(getenv, "PARLEY_NATS_URL", "nats://127.0.0.1:"+port("PARLEY_NATS_PORT", "14222")),
		"PARLEY_CASSANDRA_HOSTS": envOr(getenv, "PARLEY_CASSANDRA_HOSTS", "127.0.0.1:"+port("PARLEY_CASSANDRA_PORT", "19042")),
	}
	for name, a := range addrs {
		for _, one := range strings.Split(a, ",") {
			host := one
			if u, err := url.Parse(one); err == nil && u.Host != "" {
				host = u.Host
			}
			if h, _, err := net.SplitHostPort(host); err == nil {
				host = h
			}
			if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
				return nil, nil, fmt.Errorf("%s=%s is not on loopback: the suite only runs against this machine's stack", name, a)
			}
		}
	}
	secret := []byte(getenv("PARLEY_AUTH_HS256_SECRET"))
	if len(secret) == 0 {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		secret = []byte(hex.EncodeToString(b))
	}
	var env []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "PARLEY_ROLES", "PARLEY_LISTEN_ADDR", "PARLEY_ADMIN_ADDR", "PARLEY_CASSANDRA_KEYSPACE", "PARLEY_AUTH_HS256_SECRET", "PARLEY_STATE_DIR":
			continue // set below or by flags
		}
		if _, ok := addrs[name]; ok {
			continue
		}
		env = append(env, kv)
	}
	for name, a := range addrs {
		env = append(env, name+"="+a)
	}
	env = append(env, "PARLEY_AUTH_HS256_SECRET="+string(secret), "PARLEY_CASSANDRA_KEYSPACE="+keyspace, "PARLEY_STATE_DIR="+stateDir)
	return env, secret, nil
}

func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}
