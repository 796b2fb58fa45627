// Command parley-loadtest drives a Parley deployment like real devices and reports what it
// held. Runs are bounded in connections and time, stop by themselves, and refuse targets
// outside the loopback range unless --allow-remote is given.
//
//	parley-loadtest idle      --conns 19000 [--concurrency 64] [--hold 20s]
//	parley-loadtest broadcast --users 100 --devices 10 --rate 100 --duration 10s [--runs 3]
//	parley-loadtest chat      --users 200 --rate 500 --duration 20s
//	parley-loadtest history   --page-rate 500 --inbox-rate 10 --duration 20s
//	parley-loadtest presence  --pairs 500 --rate 50
//	parley-loadtest fanout    --members 1000 --rate 5 --duration 20s
//	parley-loadtest reconnect-storm --users 1000 --missed 10
//	parley-loadtest connect   --conns 100000 --workers 6 --ws URL1,...,URL6 --metrics M1,...,M6
//
// The HS256 secret comes from --secret or PARLEY_AUTH_HS256_SECRET. docs/benchmarks.md has
// the commands and the figures measured with them.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/parleyhq/parley/loadtest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "parley-loadtest: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New("want a scenario: idle, broadcast, chat, history or presence")
	}
	scenario, args := args[0], args[1:]
	fs := flag.NewFlagSet(scenario, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		t       loadtest.Target
		secret  string
		jsonOut string
	)
	fs.StringVar(&t.WS, "ws", "ws://127.0.0.1:8080/v1/ws", "WebSocket URL of the edge (comma-separated for several: connections round-robin)")
	fs.StringVar(&t.Metrics, "metrics", "http://127.0.0.1:8081/metrics", "the edge's Prometheus endpoint (admin listener; comma-separated, one per edge, for connect)")
	fs.StringVar(&secret, "secret", getenv("PARLEY_AUTH_HS256_SECRET"), "HS256 secret to mint tokens (PARLEY_AUTH_HS256_SECRET)")
	fs.BoolVar(&t.AllowRemote, "allow-remote", false, "allow a target outside 127.0.0.0/8")
	fs.StringVar(&jsonOut, "json", "", "also write the result as JSON to this file")
	var htmlOut string
	fs.StringVar(&htmlOut, "html", "", "chat, fanout: also write an HTML report (inline charts, opens offline) to this file")
	prefix := fmt.Sprintf("lt%d_", time.Now().Unix())

	var runScenario func(d *loadtest.Dialer) (any, error)
	switch scenario {
	case "idle":
		var cfg loadtest.IdleConfig
		fs.IntVar(&cfg.Conns, "conns", 1000, "connections to open (at most 19,000 per process: the open-files limit is 20,000)")
		fs.IntVar(&cfg.Concurrency, "concurrency", 64, "handshakes in flight")
		fs.DurationVar(&cfg.Hold, "hold", 10*time.Second, "how long to hold the connections before measuring")
		runScenario = func(d *loadtest.Dialer) (any, error) {
			if cfg.Conns > 19000 {
				return nil, fmt.Errorf("--conns %d: at most 19000 per process (open-files limit); run several processes", cfg.Conns)
			}
			cfg.UserPrefix = prefix
			return loadtest.RunIdle(ctx, d, t.Metrics, cfg, stderr)
		}
	case "broadcast":
		var (
			cfg  loadtest.BroadcastConfig
			runs int
		)
		fs.IntVar(&cfg.Users, "users", 100, "users")
		fs.IntVar(&cfg.Devices, "devices", 10, "connections (devices) per user")
		fs.IntVar(&cfg.Rate, "rate", 100, "frames per second, each to every connection")
		fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "how long to publish (at most 5m)")
		fs.StringVar(&cfg.NATSURL, "nats", "nats://127.0.0.1:14222", "NATS URL to publish on (as the delivery pipeline does)")
		fs.IntVar(&runs, "runs", 3, "runs; the summary gives each and the median p99")
		runScenario = func(d *loadtest.Dialer) (any, error) {
			if cfg.Duration > 5*time.Minute || cfg.Users*cfg.Devices > 19000 || runs < 1 || runs > 10 {
				return nil, errors.New("bounds: --duration at most 5m, users x devices at most 19000, --runs 1 to 10")
			}
			var results []loadtest.BroadcastResult
			for r := 0; r < runs && ctx.Err() == nil; r++ {
				cfg.UserPrefix = fmt.Sprintf("%sr%d_", prefix, r)
				res, err := loadtest.RunBroadcast(ctx, d, cfg, stderr)
				if err != nil {
					return nil, err
				}
				fmt.Fprintf(stdout, "run %d: %d conns, sent %d, received %d of %d, lost %d, reordered %d, p50 %.2fms p90 %.2fms p99 %.2fms max %.2fms\n",
					r+1, res.Conns, res.Sent, res.Received, res.Expected, res.Lost, res.Reordered, res.P50MS, res.P90MS, res.P99MS, res.MaxMS)
				results = append(results, res)
			}
			p99 := make([]float64, len(results))
			for i, r := range results {
				p99[i] = r.P99MS
			}
			sort.Float64s(p99)
			fmt.Fprintf(stdout, "median p99 over %d runs: %.2fms\n", len(results), p99[len(p99)/2])
			return results, nil
		}
	case "chat":
		var cfg loadtest.ChatConfig
		fs.IntVar(&cfg.Users, "users", 200, "users (even): paired into direct conversations, one device each")
		fs.IntVar(&cfg.Rate, "rate", 500, "messages per second in total, over the WebSocket")
		fs.DurationVar(&cfg.Duration, "duration", 20*time.Second, "how long to send (at most 10m)")
		fs.DurationVar(&cfg.Grace, "grace", 10*time.Second, "after sending, how long to wait for accepted messages to arrive before counting them lost (at most 10m)")
		fs.StringVar(&cfg.API, "api", "http://127.0.0.1:8080", "REST API base URL (conversations are created there)")
		runScenario = func(d *loadtest.Dialer) (any, error) {
			if cfg.Duration > 10*time.Minute || cfg.Grace <= 0 || cfg.Grace > 10*time.Minute || cfg.Users > 19000 || cfg.Rate > 100000 {
				return nil, errors.New("bounds: --duration at most 10m, --grace above 0 and at most 10m, --users at most 19000, --rate at most 100000")
			}
			cfg.UserPrefix = prefix
			res, err := loadtest.RunChat(ctx, d, cfg, stderr)
			if err != nil {
				return nil, err
			}
			verdict := "OK: nothing lost, duplicated, reordered or invented"
			if !res.Verdict.OK() {
				verdict = "FAULTS FOUND"
			}
			fmt.Fprintf(stdout, "\nchat: %d users, %d msg/s asked for %v; %s\n", cfg.Users, cfg.Rate, cfg.Duration, verdict)
			fmt.Fprintf(stdout, "%-22s %8s %9s %9s %9s %9s %9s\n", "", "count", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms")
			for _, l := range []struct {
				name string
				s    loadtest.LatencySummary
			}{{"send -> accepted", res.AcceptedLatency}, {"send -> delivered", res.DeliveredLatency}} {
				fmt.Fprintf(stdout, "%-22s %8d %9.1f %9.1f %9.1f %9.1f %9.1f\n", l.name, l.s.Count, l.s.P50, l.s.P90, l.s.P99, l.s.P999, l.s.Max)
			}
			fmt.Fprintf(stdout, "sent %d, accepted %d (%.0f/s), errors %d; deliveries %d of %d; lost (not delivered %v after the end) %d, duplicated %d, reordered %d, phantom %d\n",
				res.Sent, res.Accepted, res.Throughput, res.Errors, res.Delivered, res.Expected, cfg.Grace, res.Undelivered, res.Duplicated, res.Reordered, res.Phantom)
			if err := writeHTML(htmlOut, res.Report("parley-loadtest "+strings.Join(append([]string{scenario}, args...), " "),
				[][2]string{{"users", fmt.Sprint(cfg.Users)}, {"rate (msg/s)", fmt.Sprint(cfg.Rate)}, {"duration", cfg.Duration.String()},
					{"target", t.WS}, {"api", cfg.API}}), stdout); err != nil {
				return nil, err
			}
			return res, nil
		}
	case "history":
		var cfg loadtest.HistoryConfig
		fs.StringVar(&cfg.API, "api", "http://127.0.0.1:8080", "REST API base URL")
		fs.IntVar(&cfg.Members, "members", 50, "members of the seeded group (the pages are read by them in turn)")
		fs.IntVar(&cfg.Messages, "messages", 2000, "messages seeded into the group")
		fs.IntVar(&cfg.Conversations, "conversations", 1000, "conversations seeded into the reader's inbox")
		fs.IntVar(&cfg.PageRate, "page-rate", 500, "pages of 50 messages read per second")
		fs.IntVar(&cfg.InboxRate, "inbox-rate", 10, "whole-inbox listings per second (one user: at most the API's per-user rate)")
		fs.DurationVar(&cfg.Duration, "duration", 20*time.Second, "how long to read (at most 10m)")
		runScenario = func(d *loadtest.Dialer) (any, error) {
			if cfg.Duration > 10*time.Minute || cfg.Messages > 100000 || cfg.Conversations > 5000 || cfg.PageRate > 20000 {
				return nil, errors.New("bounds: --duration at most 10m, --messages at most 100000, --conversations at most 5000, --page-rate at most 20000")
			}
			cfg.UserPrefix = prefix
			res, err := loadtest.RunHistory(ctx, d, cfg, stderr)
			if err != nil {
				return nil, err
			}
			for _, l := range []struct {
				name string
				l    loadtest.Latency
			}{{"pages of 50", res.Pages}, {fmt.Sprintf("inbox of %d", res.Conversations), res.Inbox}} {
				fmt.Fprintf(stdout, "%s: %d requests (%.0f/s), errors %v; p50 %.1fms p90 %.1fms p99 %.1fms p99.9 %.1fms max %.1fms\n",
					l.name, l.l.Requests, l.l.Rate, l.l.Errors, l.l.P50, l.l.P90, l.l.P99, l.l.P999, l.l.Max)
			}
			return res, nil
		}
	case "connect":
		var cfg loadtest.ConnectConfig
		fs.IntVar(&cfg.Conns, "conns", 10000, "connections to open in total (one user each)")
		fs.IntVar(&cfg.Workers, "workers", 1, "harness processes to spread them over (at most 19,000 connections each)")
		fs.IntVar(&cfg.Concurrency, "concurrency", 64, "handshakes in flight per worker")
		fs.DurationVar(&cfg.Settle, "settle", 20*time.Second, "how long to hold all connections before measuring the edges")
		runScenario = func(*loadtest.Dialer) (any, error) {
			if cfg.Conns > 200000 || cfg.Workers > 16 || cfg.Settle > 10*time.Minute {
				return nil, errors.New("bounds: --conns at most 200000, --workers at most 16, --settle at most 10m")
			}
			self, err := os.Executable()
			if err != nil {
				return nil, err
			}
			cfg.Self, cfg.UserPrefix = self, prefix
			cfg.WorkerArgs = []string{"--ws", t.WS}
			if t.AllowRemote {
				cfg.WorkerArgs = append(cfg.WorkerArgs, "--allow-remote")
			}
			os.Setenv("PARLEY_AUTH_HS256_SECRET", secret) // the workers mint tokens too
			res, err := loadtest.RunConnect(ctx, t, cfg, stderr)
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(stdout, "connect: %d connections over %d edges and %d workers, %d failed; %.0f handshakes/s; edges' RSS %.0f bytes/conn (heap %.0f, stacks %.0f)\n",
				res.Conns, res.Edges, res.Workers, res.Failed, res.HandshakesPerSec, res.RSSPerConn, res.HeapPerConn, res.StackPerConn)
			return res, nil
		}
	case "fanout":
		var cfg loadtest.FanoutConfig
		fs.StringVar(&cfg.API, "api", "http://127.0.0.1:8080", "REST API base URL (the group is created there)")
		fs.IntVar(&cfg.Members, "members", 1000, "members of the group, one device each")
		fs.IntVar(&cfg.Rate, "rate", 5, "messages per second in total (one sender per 10/s: a connection may send 20 frames/s by default)")
		fs.DurationVar(&cfg.Duration, "duration", 20*time.Second, "how long to send (at most 10m)")
		fs.DurationVar(&cfg.Grace, "grace", 30*time.Second, "after sending, how long to wait for accepted messages to arrive before counting them lost (at most 10m)")
		runScenario = func(d *loadtest.Dialer) (any, error) {
			if cfg.Duration > 10*time.Minute || cfg.Grace <= 0 || cfg.Grace > 10*time.Minute {
				return nil, errors.New("bounds: --duration at most 10m, --grace above 0 and at most 10m")
			}
			cfg.UserPrefix = prefix
			res, err := loadtest.RunFanout(ctx, d, cfg, stderr)
			if err != nil {
				return nil, err
			}
			v, a, dl := res.Verdict, res.AcceptedLatency, res.DeliveredLatency
			fmt.Fprintf(stdout, "fanout: %d members, sent %d, accepted %d, deliveries %d of %d; lost %d, duplicated %d, reordered %d, phantom %d, errors %d\n",
				res.Members, v.Sent, v.Accepted, v.Delivered, v.Expected, v.Lost, v.Duplicated, v.Reordered, v.Phantom, res.Errors)
			fmt.Fprintf(stdout, "send->accepted p50 %.1fms p99 %.1fms; send->delivered (each member) p50 %.1fms p90 %.1fms p99 %.1fms p99.9 %.1fms max %.1fms\n",
				a.P50, a.P99, dl.P50, dl.P90, dl.P99, dl.P999, dl.Max)
			if err := writeHTML(htmlOut, res.Report("parley-loadtest "+strings.Join(append([]string{scenario}, args...), " "),
				[][2]string{{"members", fmt.Sprint(cfg.Members)}, {"rate (msg/s)", fmt.Sprint(cfg.Rate)}, {"duration", cfg.Duration.String()},
					{"target", t.WS}, {"api", cfg.API}}), stdout); err != nil {
				return nil, err
			}
			return res, nil
		}
	case "reconnect-storm":
		var cfg loadtest.StormConfig
		fs.StringVar(&cfg.API, "api", "http://127.0.0.1:8080", "REST API base URL")
		fs.IntVar(&cfg.Users, "users", 1000, "devices (even: users in direct pairs)")
		fs.IntVar(&cfg.Missed, "missed", 10, "messages posted to each conversation while everyone is away")
		runScenario = func(d *loadtest.Dialer) (any, error) {
			cfg.UserPrefix = prefix
			res, err := loadtest.RunStorm(ctx, d, cfg, stderr)
			if err != nil {
				return nil, err
			}
			v := res.Verdict
			fmt.Fprintf(stdout, "reconnect-storm: %d devices, %d failed; all caught up %.2fs after the storm began; missed deliveries %d of %d, lost %d, duplicated %d, reordered %d\n",
				res.Users, res.Failed, res.AllCaughtUp.Seconds(), v.Delivered, v.Expected, v.Lost, v.Duplicated, v.Reordered)
			fmt.Fprintf(stdout, "back (hello) p50 %.0fms p99 %.0fms max %.0fms; caught up p50 %.0fms p99 %.0fms max %.0fms\n",
				res.Back.P50, res.Back.P99, res.Back.Max, res.CaughtUp.P50, res.CaughtUp.P99, res.CaughtUp.Max)
			return res, nil
		}
	case "connect-worker": // started by connect, not by hand
		var offset, conns, concurrency int
		var wprefix string
		fs.IntVar(&offset, "offset", 0, "global index of the first connection")
		fs.IntVar(&conns, "conns", 0, "connections")
		fs.IntVar(&concurrency, "concurrency", 64, "handshakes in flight")
		fs.StringVar(&wprefix, "prefix", "", "user id prefix")
		runScenario = func(d *loadtest.Dialer) (any, error) {
			return nil, loadtest.RunConnectWorker(ctx, d, offset, conns, concurrency, wprefix, os.Stdin, stdout)
		}
	case "presence":
		var cfg loadtest.PresenceConfig
		fs.StringVar(&cfg.API, "api", "http://127.0.0.1:8080", "REST API base URL (conversations are created there)")
		fs.IntVar(&cfg.Pairs, "pairs", 500, "watcher/target pairs (two connections each pair)")
		fs.IntVar(&cfg.Rate, "rate", 50, "targets connecting (then disconnecting) per second")
		fs.BoolVar(&cfg.Disconnect, "disconnect", true, "after connecting, disconnect the targets and measure the time to the watchers' offline (the server's presence grace included)")
		runScenario = func(d *loadtest.Dialer) (any, error) {
			cfg.UserPrefix = prefix
			res, err := loadtest.RunPresence(ctx, d, cfg, stderr)
			if err != nil {
				return nil, err
			}
			l := res.Online
			fmt.Fprintf(stdout, "presence: %d pairs, missed %d; target connect -> watcher online: p50 %.1fms p90 %.1fms p99 %.1fms p99.9 %.1fms max %.1fms\n",
				res.Pairs, res.Missed, l.P50, l.P90, l.P99, l.P999, l.Max)
			if o := res.Offline; o != nil {
				fmt.Fprintf(stdout, "presence: missed offline %d; target close -> watcher offline (grace included): min %.1fms p50 %.1fms p90 %.1fms p99 %.1fms p99.9 %.1fms max %.1fms\n",
					res.MissedOffline, o.Min, o.P50, o.P90, o.P99, o.P999, o.Max)
			}
			return res, nil
		}
	default:
		return fmt.Errorf("unknown scenario %q (want idle, connect, broadcast, chat, fanout, history, presence or reconnect-storm)", scenario)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	t.Secret = []byte(secret)
	d, err := loadtest.NewDialer(t)
	if err != nil {
		return err
	}
	res, err := runScenario(d)
	if err != nil {
		return err
	}
	if scenario == "connect-worker" {
		return nil
	}
	out, _ := json.MarshalIndent(res, "", "  ")
	if scenario == "idle" {
		fmt.Fprintln(stdout, string(out))
	}
	if jsonOut != "" {
		return os.WriteFile(jsonOut, out, 0o644)
	}
	return nil
}

// writeHTML writes a run's report to path ("" writes nothing).
func writeHTML(path string, r *loadtest.Report, stdout io.Writer) error {
	if path == "" {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	err = r.WriteHTML(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	fmt.Fprintf(stdout, "report: %s\n", path)
	return nil
}
