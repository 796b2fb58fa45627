// Command parleyd is the Parley server: one binary whose roles (edge, delivery, api) can all
// run in one process on a laptop or be spread over many processes in production.
//
//	parleyd run      [--roles=all|edge,delivery,api] [flags]   serve
//	parleyd migrate  [flags]                                   apply the Cassandra schema
//	parleyd token    --user ID [--device D] [--ttl 24h]        mint a development token
//	parleyd dlq      list | replay ID                          inspect and replay dead letters
//	parleyd version
//
// Every flag can also be set with a PARLEY_* environment variable; `parleyd CMD --help` lists
// them with their defaults and ranges.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	var ue usageError
	switch {
	case err == nil:
	case errors.As(err, &ue):
		fmt.Fprintf(os.Stderr, "parleyd: %v\n", err)
		os.Exit(2)
	default:
		fmt.Fprintf(os.Stderr, "parleyd: %v\n", err)
		os.Exit(1)
	}
}

// usageError is a wrong command line or configuration value: exit status 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

const synopsis = `Usage: parleyd COMMAND [flags]

Commands:
  run       serve the roles given by --roles (default all: edge, delivery, api)
  migrate   create the keyspace and apply pending Cassandra migrations
  token     mint a development token (HS256) for a user
  dlq       list the dead letters, or replay one (dlq list | dlq replay ID)
  version   print the version

Run 'parleyd COMMAND --help' for the flags of a command.`

// run is parleyd without the process: arguments, environment and output are injected.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, synopsis)
		return usageError{errors.New("missing command")}
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
	case "version", "--version":
		fmt.Fprintln(stdout, "parleyd", version())
		return nil
	case "help", "-h", "-help", "--help":
		fmt.Fprintln(stdout, synopsis)
		return nil
	}
	return usageError{fmt.Errorf("unknown command %q (want run, migrate, token, dlq or version)", cmd)}
}

// parseCommandFlags parses a subcommand's flags; --help prints its usage and returns errHelp.
func parseCommandFlags(fs *flag.FlagSet, args []string, getenv func(string) string, stdout io.Writer, synopsis string) error {
	err := parseFlags(fs, args, getenv)
	if errors.Is(err, flag.ErrHelp) {
		printUsage(stdout, fs, synopsis)
		return errHelp
	}
	if err != nil {
		return usageError{err}
	}
	return nil
}

// errHelp ends a command successfully after printing its help.
var errHelp = errors.New("help printed")

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
