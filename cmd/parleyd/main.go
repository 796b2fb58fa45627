// Command parleyd is the Parley server: one binary whose roles (edge, delivery, api) can all
// run in one process on a laptop or be spread over many processes in production.
//
//	parleyd run      [--roles=all|edge,delivery,api] [flags]   serve
//	parleyd migrate  [flags]                                   apply the Cassandra schema
//	parleyd token    --user ID [--device D] [--ttl 24h]        mint a development token
//	parleyd dlq      list | replay ID                          inspect and replay dead letters
//	parleyd admin    revoke --user ID [--device D] | --jti J   revoke tokens; admin revocations lists them
//	parleyd version
//
// Every flag can also be set with a PARLEY_* environment variable; `parleyd CMD --help` lists
// them with their defaults and ranges.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/parleyhq/parley/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "parleyd: %v\n", err)
	}
	os.Exit(cli.ExitStatus(err)) // 2 for a wrong setting, 1 for a failure
}

const synopsis = `Usage: parleyd COMMAND [flags]

Commands:
  run       serve the roles given by --roles (default all: edge, delivery, api)
  migrate   create the keyspace and apply pending Cassandra migrations
  token     mint a development token (HS256) for a user
  dlq       list the dead letters, or replay one (dlq list | dlq replay ID)
  admin     revoke tokens (admin revoke --user ID [--device D] | --jti J) or list revocations (admin revocations)
  reconcile check the recent log against Cassandra and repair it (reconcile --once)
  reproject write the whole sequenced log into Cassandra again
  version   print the version

Run 'parleyd COMMAND --help' for the flags of a command.`

// run is parleyd without the process: arguments, environment and output are injected.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, synopsis)
		return cli.Usage(errors.New("missing command"))
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "run":
		return runCommand(ctx, args, getenv, stdout, stderr)
	case "migrate":
		return migrateCommand(ctx, args, getenv, stdout, stderr)
	case "token":
		return tokenCommand(args, getenv, stdout)
	case "dlq":
		return dlqCommand(ctx, args, getenv, stdout, stderr)
	case "admin":
		return adminCommand(ctx, args, getenv, stdout, stderr)
	case "reconcile":
		return reconcileCommand(ctx, args, getenv, stdout, stderr)
	case "reproject":
		return reprojectCommand(ctx, args, getenv, stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "parleyd", version())
		return nil
	case "help", "-h", "-help", "--help":
		fmt.Fprintln(stdout, synopsis)
		return nil
	}
	return cli.Usagef("unknown command %q (want run, migrate, token, dlq, admin, reconcile, reproject or version)", cmd)
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return bi.Main.Version + " " + s.Value[:12]
			}
		}
		return bi.Main.Version
	}
	return "unknown"
}
