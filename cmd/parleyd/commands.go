package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/backend"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/schema"
)

func runCommand(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var cfg runConfig
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	cfg.register(fs)
	if err := parseCommandFlags(fs, args, getenv, stdout, "Usage: parleyd run [flags]\n\nServes the roles given by --roles until SIGINT or SIGTERM."); err != nil {
		return ignoreHelp(err)
	}
	if err := cfg.validate(); err != nil {
		return usageError{err}
	}
	return serve(ctx, cfg, cfg.log.logger(stderr))
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
	durationFlag(fs, &timeout, "timeout", 5*time.Minute, time.Second, time.Hour,
		"Deadline of the whole migration, including waiting for Cassandra to answer.")
	if err := parseCommandFlags(fs, args, getenv, stdout, "Usage: parleyd migrate [flags]\n\nCreates the keyspace if needed and applies pending migrations. Safe to run again and from several processes at once."); err != nil {
		return ignoreHelp(err)
	}
	logger := lc.logger(stderr)
	cass, err := backend.NewCassandra(cc, prometheus.NewRegistry(), logger)
	if err != nil {
		return usageError{err}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res, err := schema.Migrate(ctx, cass.Open, schema.Config{Keyspace: cass.Keyspace(), Replication: repl}, logger)
	if err != nil {
		return err
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
	stringFlag(fs, &user, "user", "", func(s string) error { _, err := chat.ParseUserID(s); return err },
		"User id (the token's subject). Required.")
	stringFlag(fs, &device, "device", "", func(s string) error { _, err := chat.ParseDeviceID(s); return err },
		"Device id (the token's device claim); empty: the client names its device in hello.")
	durationFlag(fs, &ttl, "ttl", 24*time.Hour, time.Minute, 365*24*time.Hour, "How long the token is valid.")
	authFlags(fs, &ac, nil)
	if err := parseCommandFlags(fs, args, getenv, stdout, "Usage: parleyd token --user ID [--device D] [--ttl 24h] [flags]\n\nPrints a signed HS256 token for development and load tests."); err != nil {
		return ignoreHelp(err)
	}
	if user == "" {
		return usageError{errors.New("--user is required")}
	}
	if ac.HS256Secret == nil {
		return usageError{errors.New("--auth-hs256-secret (PARLEY_AUTH_HS256_SECRET) is required")}
	}
	a, err := auth.New(ac, time.Now)
	if err != nil {
		return usageError{err}
	}
	tok, err := a.Mint(chat.UserID(user), chat.DeviceID(device), ttl)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}

func ignoreHelp(err error) error {
	if errors.Is(err, errHelp) {
		return nil
	}
	return err
}
