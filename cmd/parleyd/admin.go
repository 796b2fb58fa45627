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
	"github.com/parleyhq/parley/internal/cli"
	"github.com/parleyhq/parley/internal/revocation"
)

// adminCommand is `parleyd admin revoke` and `parleyd admin revocations`: the revocation
// bucket through NATS directly (like dlq), the same store the admin API's
// /admin/v1/revocations writes. Access to NATS is its credential.
func adminCommand(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	const synopsis = "Usage: parleyd admin revoke (--user ID [--device D] | --jti JTI) [flags]\n" +
		"       parleyd admin revocations [flags]\n\n" +
		"revoke withdraws tokens before they expire (a logout, a lost device): every token of a user, or of a\n" +
		"user's device, issued up to now, or one token by its jti. Every edge closes the matching connections\n" +
		"(close 4003) within seconds and refuses them at the handshake (401 token_revoked). revocations lists\n" +
		"the stored revocations. Both reach the bucket through NATS, like POST and GET /admin/v1/revocations."
	var (
		lc      logConfig
		nc      backend.NATSConfig
		rc      revocation.Config
		rev     auth.Revocation
		timeout time.Duration
	)
	fs := flag.NewFlagSet("admin", flag.ContinueOnError)
	lc.register(fs)
	cli.String(fs, &nc.URL, "nats-url", backend.DefaultNATSURL, func(s string) error {
		return (backend.NATSConfig{URL: s}).Validate()
	}, "NATS server URL(s), comma-separated.")
	revocationFlags(fs, &rc)
	cli.Value(fs, &rev.User, "user", "", func(s string) (chat.UserID, error) { return chat.ParseUserID(s) },
		func(u chat.UserID) string { return string(u) }, "revoke: the user whose tokens are revoked.")
	cli.Value(fs, &rev.Device, "device", "", func(s string) (chat.DeviceID, error) { return chat.ParseDeviceID(s) },
		func(d chat.DeviceID) string { return string(d) }, "revoke: only the user's tokens on this device.")
	cli.String(fs, &rev.TokenID, "jti", "", nil, "revoke: the one token with this jti (instead of --user).")
	cli.Duration(fs, &timeout, "timeout", time.Minute, time.Second, time.Hour,
		"Deadline of the whole command, including waiting for NATS to answer.")
	if len(args) == 0 || (args[0] != "revoke" && args[0] != "revocations") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			cli.PrintUsage(stdout, fs, synopsis)
			return nil
		}
		return cli.Usage(errors.New("want admin revoke or admin revocations"))
	}
	sub, args := args[0], args[1:]
	if err := cli.Parse(fs, args, getenv, stdout, synopsis); err != nil {
		return cli.IgnoreHelp(err)
	}
	if sub == "revoke" {
		rev.At = time.Now() // validated here, stored with the same rule by the store
		if err := rev.Validate(); err != nil {
			return cli.Usagef("admin revoke: %v (--user, --user with --device, or --jti)", err)
		}
		rev.At = time.Time{}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	logger := lc.logger(stderr)
	addr := redactURLs(nc.URL)
	n, err := backend.OpenNATS(ctx, nc, prometheus.NewRegistry(), logger)
	if err != nil {
		return fmt.Errorf("admin: %w", unreachable("NATS", addr, err))
	}
	defer n.Close()
	store, err := revocation.Open(ctx, n.JetStream, n.Conn, rc, prometheus.NewRegistry(), logger)
	if err != nil {
		return fmt.Errorf("admin %s: NATS at %s: %w", sub, addr, err)
	}
	if sub == "revoke" {
		stored, err := store.Revoke(ctx, rev)
		if err != nil {
			return fmt.Errorf("admin revoke: NATS at %s: %w", addr, err)
		}
		fmt.Fprintln(stdout, describe(stored))
		return nil
	}
	revs, err := store.List(ctx)
	if err != nil {
		return fmt.Errorf("admin revocations: NATS at %s: %w", addr, err)
	}
	if len(revs) == 0 {
		fmt.Fprintln(stdout, "no revocations")
	}
	for _, r := range revs {
		fmt.Fprintln(stdout, describe(r))
	}
	return nil
}

// describe is one revocation on one line: its time, then what it names.
func describe(r auth.Revocation) string {
	at := r.At.UTC().Format(time.RFC3339Nano)
	switch {
	case r.TokenID != "":
		return fmt.Sprintf("%s\tjti %s", at, r.TokenID)
	case r.Device != "":
		return fmt.Sprintf("%s\tuser %s device %s (tokens issued until then)", at, r.User, r.Device)
	}
	return fmt.Sprintf("%s\tuser %s (tokens issued until then)", at, r.User)
}
