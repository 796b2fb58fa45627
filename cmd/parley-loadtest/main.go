// Command parley-loadtest drives a Parley deployment like real devices and reports what it
// held. Runs are bounded in connections and time, stop by themselves, and refuse targets
// outside the loopback range unless --allow-remote is given.
//
//	parley-loadtest idle      [--conns 19000] [--concurrency 64] [--hold 20s]
//	parley-loadtest connect   --conns 100000 --workers 6 --listen-addr A1,...,A6 --admin-addr M1,...,M6
//	parley-loadtest broadcast [--users 100] [--devices 10] [--rate 100] [--duration 10s] [--runs 3]
//	parley-loadtest chat      [--users 200] [--rate 500] [--duration 20s]
//	parley-loadtest fanout    [--members 1000] [--rate 5] [--duration 20s]
//	parley-loadtest history   [--page-rate 500] [--inbox-rate 10] [--duration 20s]
//	parley-loadtest presence  [--pairs 500] [--rate 50]
//	parley-loadtest reconnect-storm [--users 1000] [--missed 10]
//
// It reads its settings as parleyd does (internal/cli): every flag is also a PARLEY_*
// variable, a flag on the command line wins, a wrong value stops it with one line naming the
// setting and exit status 2, and `parley-loadtest SCENARIO --help` lists the flags. The target
// is given by parleyd's own settings: --listen-addr (PARLEY_LISTEN_ADDR), --admin-addr
// (PARLEY_ADMIN_ADDR) where the server's metrics are read, --auth-hs256-secret
// (PARLEY_AUTH_HS256_SECRET) and, for broadcast, --nats-url (PARLEY_NATS_URL); so the
// environment parleyd was started with points the load test at it. docs/benchmarks.md has
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

	"github.com/parleyhq/parley/internal/admin"
	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/backend"
	"github.com/parleyhq/parley/internal/cli"
	"github.com/parleyhq/parley/loadtest"
	"github.com/parleyhq/parley/protocol"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "parley-loadtest: %v\n", err)
	}
	os.Exit(cli.ExitStatus(err)) // 2 for a wrong setting, 1 for a failed run
}

const synopsis = `Usage: parley-loadtest SCENARIO [flags]

Scenarios:
  idle             hold idle connections; the edge's memory per connection and handshakes per CPU second
  connect          spread connections over several edges and worker processes, then measure the edges
  broadcast        publish on users' NATS subjects as delivery does: the edge's fan-out alone
  chat             users in direct conversations send through the whole pipeline; nothing may be lost
  fanout           one member of a group sends; every member's device must get every message
  history          read pages of messages and whole inboxes through the REST API
  presence         watchers see their targets come online, then go offline
  reconnect-storm  every device drops, misses messages, comes back at once and syncs

The target is parleyd's own settings, flag or variable: --listen-addr (PARLEY_LISTEN_ADDR),
--admin-addr (PARLEY_ADMIN_ADDR), --auth-hs256-secret (PARLEY_AUTH_HS256_SECRET), and for
broadcast --nats-url (PARLEY_NATS_URL). Run 'parley-loadtest SCENARIO --help' for the flags.`

// scenarios are the names run accepts, in the order of the synopsis.
var scenarios = []string{"idle", "connect", "broadcast", "chat", "fanout", "history", "presence", "reconnect-storm"}

// run is parley-loadtest without the process: arguments, environment and output are injected.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, synopsis)
		return cli.Usage(errors.New("missing scenario"))
	}
	scenario, args := args[0], args[1:]
	switch scenario {
	case "help", "-h", "-help", "--help":
		fmt.Fprintln(stdout, synopsis)
		return nil
	}
	fs := flag.NewFlagSet(scenario, flag.ContinueOnError)
	var (
		tf      targetFlags
		jsonOut string
		htmlOut string
	)
	jsonFlag := func() {
		cli.String(fs, &jsonOut, "json", "", nil, "Also write the result as JSON to this file.")
	}
	htmlFlag := func() {
		cli.String(fs, &htmlOut, "html", "", nil, "Also write an HTML report (inline charts, opens offline) to this file.")
	}
	prefix := fmt.Sprintf("lt%d_", time.Now().Unix())
	// report writes the HTML report of --html, made by mk from the command line and settings.
	report := func(mk func(command string, settings [][2]string) *loadtest.Report, settings ...[2]string) error {
		if htmlOut == "" {
			return nil
		}
		settings = append(settings, [2]string{"target", tf.target().WS}, [2]string{"api", tf.api()})
		return writeHTML(htmlOut, mk("parley-loadtest "+commandLine(scenario, args), settings), stdout)
	}

	var (
		usage string
		check func() error // settings that depend on each other, after parsing
		// runScenario runs the parsed scenario against the target's dialer.
		runScenario func(d *loadtest.Dialer) (any, error)
	)
	switch scenario {
	case "idle":
		var cfg loadtest.IdleConfig
		usage = "Usage: parley-loadtest idle [flags]\n\nOpens --conns connections (one user each), holds them, and reads the server's /metrics before and\nafter: RSS, heap and goroutine stacks per connection, handshakes per server CPU second."
		tf.register(fs, true)
		cli.Int(fs, &cfg.Conns, "conns", 1000, 1, 19000, "Connections to open (at most 19,000 per process: the open-files limit is 20,000; use connect for more).")
		cli.Int(fs, &cfg.Concurrency, "concurrency", 64, 1, 10000, "Handshakes in flight.")
		cli.Duration(fs, &cfg.Hold, "hold", 10*time.Second, 0, 10*time.Minute, "How long to hold the connections before measuring.")
		jsonFlag()
		check = func() error {
			if len(tf.admin) != 1 {
				return errors.New("idle measures one server: give --admin-addr one address")
			}
			return nil
		}
		runScenario = func(d *loadtest.Dialer) (any, error) {
			cfg.UserPrefix = prefix
			return loadtest.RunIdle(ctx, d, tf.target().Metrics, cfg, stderr)
		}
	case "connect":
		var cfg loadtest.ConnectConfig
		usage = "Usage: parley-loadtest connect --listen-addr A1,...,An --admin-addr M1,...,Mn [flags]\n\nOpens --conns connections round-robin over the edges at --listen-addr from --workers processes of\nthis binary, holds them --settle, then reads every edge's /metrics (one --admin-addr per edge)."
		tf.register(fs, true)
		cli.Int(fs, &cfg.Conns, "conns", 10000, 1, 200000, "Connections to open in total (one user each).")
		cli.Int(fs, &cfg.Workers, "workers", 1, 1, 16, "Harness processes to spread them over (at most 19,000 connections each).")
		cli.Int(fs, &cfg.Concurrency, "concurrency", 64, 1, 10000, "Handshakes in flight per worker.")
		cli.Duration(fs, &cfg.Settle, "settle", 20*time.Second, 0, 10*time.Minute, "How long to hold all connections before measuring the edges.")
		jsonFlag()
		check = func() error {
			if per := (cfg.Conns + cfg.Workers - 1) / cfg.Workers; per > 19000 || cfg.Conns < cfg.Workers {
				return fmt.Errorf("--conns %d over --workers %d: want at least one and at most 19,000 connections per worker (--workers %d or more)",
					cfg.Conns, cfg.Workers, (cfg.Conns+18999)/19000)
			}
			return nil
		}
		runScenario = func(*loadtest.Dialer) (any, error) {
			self, err := os.Executable()
			if err != nil {
				return nil, err
			}
			cfg.Self, cfg.UserPrefix = self, prefix
			cfg.WorkerArgs = []string{"--listen-addr", strings.Join(tf.listen, ",")}
			if tf.allowRemote {
				cfg.WorkerArgs = append(cfg.WorkerArgs, "--allow-remote")
			}
			// The workers mint tokens too; the environment keeps the secret off their command line.
			if err := os.Setenv(cli.EnvName("auth-hs256-secret"), string(tf.secret)); err != nil {
				return nil, err
			}
			res, err := loadtest.RunConnect(ctx, tf.target(), cfg, stderr)
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(stdout, "connect: %d connections over %d edges and %d workers, %d failed; %.0f handshakes/s; edges' RSS %.0f bytes/conn (heap %.0f, stacks %.0f)\n",
				res.Conns, res.Edges, res.Workers, res.Failed, res.HandshakesPerSec, res.RSSPerConn, res.HeapPerConn, res.StackPerConn)
			return res, nil
		}
	case "connect-worker": // started by connect, not by hand
		var offset, conns, concurrency int
		var wprefix string
		usage = "Usage: parley-loadtest connect-worker [flags]\n\nOne worker process of connect, which starts it."
		tf.register(fs, false)
		cli.Int(fs, &offset, "offset", 0, 0, 200000, "Global index of the first connection.")
		cli.Int(fs, &conns, "conns", 0, 0, 19000, "Connections.")
		cli.Int(fs, &concurrency, "concurrency", 64, 1, 10000, "Handshakes in flight.")
		cli.String(fs, &wprefix, "prefix", "", nil, "User id prefix.")
		runScenario = func(d *loadtest.Dialer) (any, error) {
			return nil, loadtest.RunConnectWorker(ctx, d, offset, conns, concurrency, wprefix, os.Stdin, stdout)
		}
	case "broadcast":
		var (
			cfg  loadtest.BroadcastConfig
			runs int
		)
		usage = "Usage: parley-loadtest broadcast [flags]\n\nConnects --users x --devices connections to the edge and publishes --rate frames per second on the\nusers' NATS subjects, as the delivery pipeline does: every frame goes to every connection. Measures\npublish-to-read latency, loss and order, --runs times."
		tf.register(fs, false)
		cli.String(fs, &cfg.NATSURL, "nats-url", backend.DefaultNATSURL, func(s string) error {
			return (backend.NATSConfig{URL: s}).Validate()
		}, "NATS server URL to publish on (parleyd's --nats-url).")
		cli.Int(fs, &cfg.Users, "users", 100, 1, 19000, "Users.")
		cli.Int(fs, &cfg.Devices, "devices", 10, 1, 1000, "Connections (devices) per user; users x devices at most 19,000.")
		cli.Int(fs, &cfg.Rate, "rate", 100, 1, 100000, "Frames per second, each to every connection.")
		cli.Duration(fs, &cfg.Duration, "duration", 10*time.Second, time.Second, 5*time.Minute, "How long to publish.")
		cli.Int(fs, &runs, "runs", 3, 1, 10, "Runs; the summary gives each and the median p99.")
		jsonFlag()
		check = func() error {
			if cfg.Users*cfg.Devices > 19000 {
				return fmt.Errorf("--users %d x --devices %d is %d connections; at most 19,000 per process", cfg.Users, cfg.Devices, cfg.Users*cfg.Devices)
			}
			return nil
		}
		runScenario = func(d *loadtest.Dialer) (any, error) {
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
			if len(results) == 0 {
				return nil, ctx.Err()
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
		usage = "Usage: parley-loadtest chat [flags]\n\nPairs --users into direct conversations (created through the REST API), one device each, and sends\n--rate messages per second over the WebSocket for --duration; every accepted message must reach both\ndevices once and in order."
		tf.register(fs, false)
		cli.Int(fs, &cfg.Users, "users", 200, 2, 19000, "Users (an even number): paired into direct conversations, one device each.")
		cli.Int(fs, &cfg.Rate, "rate", 500, 1, 100000, "Messages per second in total, over the WebSocket.")
		cli.Duration(fs, &cfg.Duration, "duration", 20*time.Second, time.Second, 10*time.Minute, "How long to send.")
		cli.Duration(fs, &cfg.Grace, "grace", 10*time.Second, time.Millisecond, 10*time.Minute,
			"After sending, how long to wait for accepted messages to arrive before counting them lost.")
		jsonFlag()
		htmlFlag()
		check = func() error {
			if cfg.Users%2 != 0 {
				return fmt.Errorf("--users %d: want an even number (users are paired)", cfg.Users)
			}
			return nil
		}
		runScenario = func(d *loadtest.Dialer) (any, error) {
			cfg.UserPrefix, cfg.API = prefix, tf.api()
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
			err = report(res.Report, [2]string{"users", fmt.Sprint(cfg.Users)}, [2]string{"rate (msg/s)", fmt.Sprint(cfg.Rate)},
				[2]string{"duration", cfg.Duration.String()})
			return res, err
		}
	case "fanout":
		var cfg loadtest.FanoutConfig
		usage = "Usage: parley-loadtest fanout [flags]\n\nCreates one group of --members (through the REST API), one device each; members send --rate messages\nper second through the whole pipeline, and every member's device must get every message once and in order."
		tf.register(fs, false)
		cli.Int(fs, &cfg.Members, "members", 1000, 2, 1000, "Members of the group, one device each.")
		cli.Int(fs, &cfg.Rate, "rate", 5, 1, 1000, "Messages per second in total (one sender per 10/s: a connection may send 20 frames/s by default).")
		cli.Duration(fs, &cfg.Duration, "duration", 20*time.Second, time.Second, 10*time.Minute, "How long to send.")
		cli.Duration(fs, &cfg.Grace, "grace", 30*time.Second, time.Millisecond, 10*time.Minute,
			"After sending, how long to wait for accepted messages to arrive before counting them lost.")
		jsonFlag()
		htmlFlag()
		runScenario = func(d *loadtest.Dialer) (any, error) {
			cfg.UserPrefix, cfg.API = prefix, tf.api()
			res, err := loadtest.RunFanout(ctx, d, cfg, stderr)
			if err != nil {
				return nil, err
			}
			v, a, dl := res.Verdict, res.AcceptedLatency, res.DeliveredLatency
			fmt.Fprintf(stdout, "fanout: %d members, sent %d, accepted %d, deliveries %d of %d; lost %d, duplicated %d, reordered %d, phantom %d, errors %d\n",
				res.Members, v.Sent, v.Accepted, v.Delivered, v.Expected, v.Lost, v.Duplicated, v.Reordered, v.Phantom, res.Errors)
			fmt.Fprintf(stdout, "send->accepted p50 %.1fms p99 %.1fms; send->delivered (each member) p50 %.1fms p90 %.1fms p99 %.1fms p99.9 %.1fms max %.1fms\n",
				a.P50, a.P99, dl.P50, dl.P90, dl.P99, dl.P999, dl.Max)
			err = report(res.Report, [2]string{"members", fmt.Sprint(cfg.Members)}, [2]string{"rate (msg/s)", fmt.Sprint(cfg.Rate)},
				[2]string{"duration", cfg.Duration.String()})
			return res, err
		}
	case "history":
		var cfg loadtest.HistoryConfig
		usage = "Usage: parley-loadtest history [flags]\n\nSeeds a group with --messages and a reader with --conversations through the REST API, then reads\npages of 50 messages at --page-rate and the reader's whole inbox at --inbox-rate (0 skips either)."
		tf.register(fs, false)
		cli.Int(fs, &cfg.Members, "members", 50, 2, 1000, "Members of the seeded group (the pages are read by them in turn).")
		cli.Int(fs, &cfg.Messages, "messages", 2000, 50, 100000, "Messages seeded into the group.")
		cli.Int(fs, &cfg.Conversations, "conversations", 1000, 1, 5000, "Conversations seeded into the reader's inbox.")
		cli.Int(fs, &cfg.PageRate, "page-rate", 500, 0, 20000, "Pages of 50 messages read per second; 0: none.")
		cli.Int(fs, &cfg.InboxRate, "inbox-rate", 10, 0, 1000, "Whole-inbox listings per second (one user: at most the API's per-user rate); 0: none.")
		cli.Duration(fs, &cfg.Duration, "duration", 20*time.Second, time.Second, 10*time.Minute, "How long to read.")
		jsonFlag()
		runScenario = func(d *loadtest.Dialer) (any, error) {
			cfg.UserPrefix, cfg.API = prefix, tf.api()
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
	case "presence":
		var cfg loadtest.PresenceConfig
		usage = "Usage: parley-loadtest presence [flags]\n\nConnects --pairs watchers, each subscribed to a target it shares a conversation with; the targets\nthen connect at --rate per second (and disconnect), and every watcher must see each change."
		tf.register(fs, false)
		cli.Int(fs, &cfg.Pairs, "pairs", 500, 1, 9000, "Watcher/target pairs (two connections each pair).")
		cli.Int(fs, &cfg.Rate, "rate", 50, 1, 10000, "Targets connecting (then disconnecting) per second.")
		cli.Bool(fs, &cfg.Disconnect, "disconnect", true,
			"After connecting, disconnect the targets and measure the time to the watchers' offline (the server's presence grace included).")
		jsonFlag()
		runScenario = func(d *loadtest.Dialer) (any, error) {
			cfg.UserPrefix, cfg.API = prefix, tf.api()
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
	case "reconnect-storm":
		var cfg loadtest.StormConfig
		usage = "Usage: parley-loadtest reconnect-storm [flags]\n\nConnects --users devices in direct pairs, drops them all, posts --missed messages to every\nconversation meanwhile, then reconnects every device at once; each must catch up by sync."
		tf.register(fs, false)
		cli.Int(fs, &cfg.Users, "users", 1000, 2, 19000, "Devices (an even number: users in direct pairs).")
		cli.Int(fs, &cfg.Missed, "missed", 10, 1, 1000, "Messages posted to each conversation while everyone is away.")
		jsonFlag()
		check = func() error {
			if cfg.Users%2 != 0 {
				return fmt.Errorf("--users %d: want an even number (users are paired)", cfg.Users)
			}
			return nil
		}
		runScenario = func(d *loadtest.Dialer) (any, error) {
			cfg.UserPrefix, cfg.API = prefix, tf.api()
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
	default:
		return cli.Usagef("unknown scenario %q (want %s)", scenario, strings.Join(scenarios, ", "))
	}
	if err := cli.Parse(fs, args, getenv, stdout, usage); err != nil {
		return cli.IgnoreHelp(err)
	}
	if err := tf.check(); err != nil {
		return cli.Usage(err)
	}
	if check != nil {
		if err := check(); err != nil {
			return cli.Usage(err)
		}
	}
	d, err := loadtest.NewDialer(tf.target())
	if err != nil {
		return cli.Usage(err)
	}
	if scenario != "connect-worker" {
		fmt.Fprintf(stderr, "%s: target %s\n", scenario, strings.Join(tf.listen, ","))
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

// targetFlags are the deployment under test, named as parleyd names the same settings so one
// environment configures both.
type targetFlags struct {
	listen      []string
	admin       []string // only for the scenarios that read the server's metrics
	secret      []byte
	allowRemote bool
}

func (tf *targetFlags) register(fs *flag.FlagSet, metrics bool) {
	addrList(fs, &tf.listen, "listen-addr", cli.DefaultListenAddr,
		"parleyd's public address (its --listen-addr): WebSocket ws://ADDR/v1/ws, REST API http://ADDR. Comma-separated for several edges: connections go round-robin, REST calls to the first.")
	if metrics {
		addrList(fs, &tf.admin, "admin-addr", admin.DefaultAddr,
			"parleyd's admin address (its --admin-addr), where http://ADDR/metrics is read; for connect, comma-separated, one per edge.")
	}
	cli.Value(fs, &tf.secret, "auth-hs256-secret", nil, func(s string) ([]byte, error) {
		if len(s) < auth.MinSecretLen {
			return nil, fmt.Errorf("secret is %d bytes, at least %d required", len(s), auth.MinSecretLen)
		}
		return []byte(s), nil
	}, func([]byte) string { return "" }, // never print a secret
		"The HS256 secret parleyd verifies tokens with (its --auth-hs256-secret), to mint the virtual users' tokens; make run keeps it in .parley/dev-hs256-secret. Required.")
	cli.Bool(fs, &tf.allowRemote, "allow-remote", false, "Allow targets outside 127.0.0.0/8 (load-test only machines you own).")
}

// check reports a missing setting.
func (tf *targetFlags) check() error {
	if len(tf.secret) == 0 {
		return errors.New("--auth-hs256-secret (PARLEY_AUTH_HS256_SECRET) is required: the secret parleyd verifies tokens with (make run keeps it in .parley/dev-hs256-secret)")
	}
	return nil
}

// target is the loadtest.Target of the flags: WebSocket and metrics URLs from the addresses.
func (tf *targetFlags) target() loadtest.Target {
	urls := func(scheme string, addrs []string, path string) string {
		out := make([]string, len(addrs))
		for i, a := range addrs {
			out[i] = scheme + "://" + a + path
		}
		return strings.Join(out, ",")
	}
	return loadtest.Target{
		WS:          urls("ws", tf.listen, protocol.Path),
		Metrics:     urls("http", tf.admin, "/metrics"),
		Secret:      tf.secret,
		AllowRemote: tf.allowRemote,
	}
}

// api is the REST API's base URL: the first public address.
func (tf *targetFlags) api() string { return "http://" + tf.listen[0] }

// addrList defines a flag of comma-separated host:port addresses.
func addrList(fs *flag.FlagSet, p *[]string, name, def, usage string) {
	cli.Value(fs, p, name, []string{def}, func(s string) ([]string, error) {
		var addrs []string
		for _, a := range strings.Split(s, ",") {
			a = strings.TrimSpace(a)
			if err := cli.HostPort(a); err != nil {
				return nil, fmt.Errorf("%q: %v", a, err)
			}
			addrs = append(addrs, a)
		}
		return addrs, nil
	}, func(a []string) string { return strings.Join(a, ",") }, usage)
}

// commandLine is the command as given, for a report, with the secret's value left out.
func commandLine(scenario string, args []string) string {
	out := []string{scenario}
	hide := false
	for _, a := range args {
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		switch {
		case hide:
			a, hide = "REDACTED", false
		case strings.HasPrefix(a, "-") && name == "auth-hs256-secret" && hasValue:
			a = a[:strings.Index(a, "=")+1] + "REDACTED"
		case strings.HasPrefix(a, "-") && name == "auth-hs256-secret":
			hide = true
		}
		out = append(out, a)
	}
	return strings.Join(out, " ")
}

// writeHTML writes a run's report to path.
func writeHTML(path string, r *loadtest.Report, stdout io.Writer) error {
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
