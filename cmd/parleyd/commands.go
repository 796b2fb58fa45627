package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"

	gocql "github.com/apache/cassandra-gocql-driver/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/parleyhq/parley/delivery"
	"github.com/parleyhq/parley/delivery/ingest"
	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/backend"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/cli"
	"github.com/parleyhq/parley/internal/schema"
)

func runCommand(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var cfg runConfig
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	cfg.register(fs)
	if err := cli.Parse(fs, args, getenv, stdout, "Usage: parleyd run [flags]\n\nServes the roles given by --roles until SIGINT or SIGTERM."); err != nil {
		return cli.IgnoreHelp(err)
	}
	if err := cfg.validate(); err != nil {
		return cli.Usage(err)
	}
	if err := serve(ctx, cfg, cfg.log.logger(stderr)); err != nil {
		return fmt.Errorf("run: %w", err)
	}
	return nil
}

func migrateCommand(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var (
		lc      logConfig
		cc      backend.CassandraConfig
		repl    schema.Replication
		timeout time.Duration
	)
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	lc.register(fs)
	cassandraFlags(fs, &cc)
	migrationFlags(fs, &repl)
	cli.Duration(fs, &timeout, "timeout", 5*time.Minute, time.Second, time.Hour,
		"Deadline of the whole migration, including waiting for Cassandra to answer.")
	if err := cli.Parse(fs, args, getenv, stdout, "Usage: parleyd migrate [flags]\n\nCreates the keyspace if needed and applies pending migrations. Safe to run again and from several processes at once."); err != nil {
		return cli.IgnoreHelp(err)
	}
	logger := lc.logger(stderr)
	cass, err := backend.NewCassandra(cc, prometheus.NewRegistry(), logger)
	if err != nil {
		return cli.Usage(err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hosts := strings.Join(cc.Hosts, ",")
	res, err := schema.Migrate(ctx, openCassandra(cass, hosts), schema.Config{Keyspace: cass.Keyspace(), Replication: repl}, logger)
	var ue *unreachableError
	if errors.As(err, &ue) {
		return fmt.Errorf("migrate: %w", err)
	}
	if err != nil {
		return fmt.Errorf("migrate: keyspace %s on Cassandra at %s: %w", cass.Keyspace(), hosts, err)
	}
	if len(res.Applied) == 0 {
		fmt.Fprintf(stdout, "keyspace %s: schema at version %d, nothing to apply\n", cass.Keyspace(), res.To)
		return nil
	}
	fmt.Fprintf(stdout, "keyspace %s: schema version %d -> %d (applied %v)\n", cass.Keyspace(), res.From, res.To, res.Applied)
	return nil
}

func tokenCommand(args []string, getenv func(string) string, stdout io.Writer) error {
	var (
		ac     auth.Config
		user   string
		device string
		ttl    time.Duration
	)
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	cli.String(fs, &user, "user", "", func(s string) error { _, err := chat.ParseUserID(s); return err },
		"User id (the token's subject). Required.")
	cli.String(fs, &device, "device", "", func(s string) error { _, err := chat.ParseDeviceID(s); return err },
		"Device id (the token's device claim); empty: the client names its device in hello.")
	cli.Duration(fs, &ttl, "ttl", 24*time.Hour, time.Minute, 365*24*time.Hour, "How long the token is valid.")
	authFlags(fs, &ac, nil)
	if err := cli.Parse(fs, args, getenv, stdout, "Usage: parleyd token --user ID [--device D] [--ttl 24h] [flags]\n\nPrints a signed HS256 token for development and load tests."); err != nil {
		return cli.IgnoreHelp(err)
	}
	if user == "" {
		return cli.Usage(errors.New("--user is required"))
	}
	if ac.HS256Secret == nil {
		return cli.Usage(errors.New("--auth-hs256-secret (PARLEY_AUTH_HS256_SECRET) is required"))
	}
	a, err := auth.New(ac, time.Now)
	if err != nil {
		return cli.Usage(err)
	}
	tok, err := a.Mint(chat.UserID(user), chat.DeviceID(device), ttl)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}

func dlqCommand(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	const synopsis = "Usage: parleyd dlq list [flags]\n       parleyd dlq replay ID [flags]\n\n" +
		"Dead letters are accepted sends that could not be sequenced (docs/delivery.md). list shows them with\n" +
		"their reason; replay ID puts one back into the ingest stream once the cause is fixed (a resend is\n" +
		"deduplicated, so replaying twice cannot create a second message) and deletes the dead letter."
	var (
		lc      logConfig
		nc      backend.NATSConfig
		dc      delivery.Config
		limit   int
		timeout time.Duration
	)
	fs := flag.NewFlagSet("dlq", flag.ContinueOnError)
	lc.register(fs)
	cli.String(fs, &nc.URL, "nats-url", backend.DefaultNATSURL, func(s string) error {
		return (backend.NATSConfig{URL: s}).Validate()
	}, "NATS server URL(s), comma-separated.")
	deliveryFlags(fs, &dc)
	cli.Int(fs, &limit, "limit", 100, 1, 100000, "How many dead letters dlq list shows at most.")
	cli.Duration(fs, &timeout, "timeout", time.Minute, time.Second, time.Hour,
		"Deadline of the whole command, including waiting for NATS to answer.")
	if len(args) == 0 || (args[0] != "list" && args[0] != "replay") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			cli.PrintUsage(stdout, fs, synopsis)
			return nil
		}
		return cli.Usage(errors.New("want dlq list or dlq replay ID"))
	}
	sub, args := args[0], args[1:]
	var id uint64
	if sub == "replay" {
		if len(args) == 0 {
			return cli.Usage(errors.New("dlq replay needs the ID shown by dlq list"))
		}
		n, err := strconv.ParseUint(args[0], 10, 64)
		if err != nil || n == 0 {
			return cli.Usagef("dlq replay: %q is not an ID (a positive integer from dlq list)", args[0])
		}
		id, args = n, args[1:]
	}
	if err := cli.Parse(fs, args, getenv, stdout, synopsis); err != nil {
		return cli.IgnoreHelp(err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	addr := redactURLs(nc.URL)
	n, err := backend.OpenNATS(ctx, nc, prometheus.NewRegistry(), lc.logger(stderr))
	if err != nil {
		return fmt.Errorf("dlq: %w", unreachable("NATS", addr, err))
	}
	defer n.Close()
	if sub == "replay" {
		if err := delivery.ReplayDeadLetter(ctx, n.JetStream, dc.Ingest, id); err != nil {
			return fmt.Errorf("dlq replay %d: stream %s on NATS at %s: %w", id, delivery.DeadLetterStream(dc.Ingest), addr, err)
		}
		fmt.Fprintf(stdout, "dead letter %d replayed\n", id)
		return nil
	}
	dead, err := delivery.ListDeadLetters(ctx, n.JetStream, dc.Ingest, limit)
	if err != nil {
		return fmt.Errorf("dlq list: stream %s on NATS at %s: %w", delivery.DeadLetterStream(dc.Ingest), addr, err)
	}
	if len(dead) == 0 {
		fmt.Fprintln(stdout, "no dead letters")
		return nil
	}
	for _, d := range dead {
		summary := string(d.Data)
		if s, err := ingest.Decode(d.Data); err == nil {
			summary = fmt.Sprintf("conversation %s sender %s client_msg_id %s", s.Conversation, s.Sender, s.ClientMsgID)
		} else if len(summary) > 80 {
			summary = summary[:80] + "..."
		}
		fmt.Fprintf(stdout, "%d\t%s\t%s\t%s\n", d.ID, d.Time.UTC().Format(time.RFC3339), d.Reason, summary)
	}
	return nil
}

// unreachableError is a service that never answered: the message names the service and the
// address that was tried, so an operator sees at once which setting to check.
type unreachableError struct {
	service, addr string
	err           error
}

func unreachable(service, addr string, err error) error {
	return &unreachableError{service: service, addr: addr, err: err}
}

func (e *unreachableError) Error() string {
	return fmt.Sprintf("cannot reach %s at %s: %v", e.service, e.addr, e.err)
}

func (e *unreachableError) Unwrap() error { return e.err }

// openCassandra opens sessions as cass.Open does, naming hosts when Cassandra never answers.
func openCassandra(cass *backend.Cassandra, hosts string) schema.SessionOpener {
	return func(ctx context.Context, keyspace string) (*gocql.Session, error) {
		s, err := cass.Open(ctx, keyspace)
		if err != nil {
			return nil, unreachable("Cassandra", hosts, err)
		}
		return s, nil
	}
}

// redactURLs is a comma-separated list of URLs without their user information (a NATS URL may
// carry a password or a token there), for error messages.
func redactURLs(list string) string {
	urls := strings.Split(list, ",")
	for i, raw := range urls {
		raw = strings.TrimSpace(raw)
		if u, err := url.Parse(raw); err == nil {
			u.User = nil
			raw = u.String()
		}
		urls[i] = raw
	}
	return strings.Join(urls, ",")
}
