package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/parleyhq/parley/delivery"
	"github.com/parleyhq/parley/history"
	"github.com/parleyhq/parley/inbox"
	"github.com/parleyhq/parley/internal/backend"
	"github.com/parleyhq/parley/internal/cli"
)

// logTool is what reconcile and reproject share: NATS, Cassandra and a worker that is never
// run, only asked to check or project the log.
type logTool struct {
	lc      logConfig
	nc      backend.NATSConfig
	cc      backend.CassandraConfig
	dc      delivery.Config
	timeout time.Duration
}

func (t *logTool) register(fs *flag.FlagSet) {
	t.lc.register(fs)
	cli.String(fs, &t.nc.URL, "nats-url", backend.DefaultNATSURL, func(s string) error {
		return (backend.NATSConfig{URL: s}).Validate()
	}, "NATS server URL(s), comma-separated.")
	cassandraFlags(fs, &t.cc)
	deliveryFlags(fs, &t.dc)
	cli.Duration(fs, &t.timeout, "timeout", 10*time.Minute, time.Second, 24*time.Hour,
		"Deadline of the whole command, including waiting for NATS and Cassandra to answer.")
}

// open connects and returns the worker and a function that closes everything.
func (t *logTool) open(ctx context.Context, name string, stderr io.Writer) (*delivery.Worker, func(), error) {
	logger := t.lc.logger(stderr)
	reg := prometheus.NewRegistry()
	n, err := backend.OpenNATS(ctx, t.nc, reg, logger)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", name, unreachable("NATS", redactURLs(t.nc.URL), err))
	}
	cass, err := backend.NewCassandra(t.cc, reg, logger)
	if err != nil {
		n.Close()
		return nil, nil, cli.Usage(err)
	}
	s, err := openCassandra(cass, strings.Join(t.cc.Hosts, ","))(ctx, cass.Keyspace())
	if err != nil {
		n.Close()
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	closeAll := func() { backend.CloseCassandra(s, 5*time.Second); n.Close() }
	store, err := history.New(s, history.Config{})
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	w, err := delivery.NewWorker(t.dc, n.JetStream, n.Conn, store, inbox.New(s, store, inbox.Config{}), reg, logger)
	if err != nil {
		closeAll()
		return nil, nil, cli.Usage(err)
	}
	return w, closeAll, nil
}

func reconcileCommand(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	const synopsis = "Usage: parleyd reconcile --once [flags]\n\n" +
		"Checks the sequenced log of the last --lookback against Cassandra (every entry there, the same message at\n" +
		"its seq, every member's inbox row up to date) and repairs what is missing or different from the log, as\n" +
		"the delivery role does every --reconciler-interval. It takes the reconciler's lease, so it does not run\n" +
		"while another node holds it. Prints what it repaired; exit status 0 also when it repaired something."
	var (
		t        logTool
		once     bool
		lookback time.Duration
	)
	fs := flag.NewFlagSet("reconcile", flag.ContinueOnError)
	t.register(fs)
	cli.Bool(fs, &once, "once", false, "Run one pass and exit (the only mode of this command; the delivery role runs it on a schedule).")
	cli.Duration(fs, &lookback, "lookback", 15*time.Minute, time.Minute, 365*24*time.Hour, "How far back the pass reads the log.")
	if err := cli.Parse(fs, args, getenv, stdout, synopsis); err != nil {
		return cli.IgnoreHelp(err)
	}
	if !once {
		return cli.Usage(errors.New("reconcile runs with --once (the delivery role runs it on a schedule)"))
	}
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	w, closeAll, err := t.open(ctx, "reconcile", stderr)
	if err != nil {
		return err
	}
	defer closeAll()
	r, err := w.ReconcileOnce(ctx, delivery.ReconcilerConfig{Lookback: lookback})
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	fmt.Fprintf(stdout, "checked %d log entries: repaired %d missing messages, %d divergent messages, %d inbox rows\n",
		r.Entries, r.Messages, r.Divergent, r.InboxRows)
	return nil
}

func reprojectCommand(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	const synopsis = "Usage: parleyd reproject [flags]\n\n" +
		"Writes every entry of the sequenced log (or those of the last --since) into Cassandra again: messages,\n" +
		"client_msg_ids, the effects of events and the inbox rows. Every write is idempotent, so it is safe to run\n" +
		"at any time, also beside running workers; use it after restoring Cassandra or to rebuild it."
	var (
		t     logTool
		since time.Duration
	)
	fs := flag.NewFlagSet("reproject", flag.ContinueOnError)
	t.register(fs)
	cli.Duration(fs, &since, "since", 0, 0, 3650*24*time.Hour, "Only the entries of this last period (0: the whole log).")
	if err := cli.Parse(fs, args, getenv, stdout, synopsis); err != nil {
		return cli.IgnoreHelp(err)
	}
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	w, closeAll, err := t.open(ctx, "reproject", stderr)
	if err != nil {
		return err
	}
	defer closeAll()
	var start *time.Time
	if since > 0 {
		s := time.Now().Add(-since)
		start = &s
	}
	n, err := w.Reproject(ctx, start)
	if err != nil {
		return fmt.Errorf("reproject (after %d entries): %w", n, err)
	}
	fmt.Fprintf(stdout, "projected %d log entries\n", n)
	return nil
}
