// Package cli is the command line shared by Parley's binaries, parleyd and parley-loadtest, so
// that both read settings the same way: every flag can also be set from a PARLEY_*
// environment variable (a flag on the command line wins), every value is checked against
// what it accepts as it is parsed (so the error names the setting and the value), --help lists
// each flag with its variable, default and range, and a wrong setting is a UsageError: one
// line, exit status 2.
//
// It is the standard library's flag package with those additions rather than a flags library:
// the environment is read through an injected getenv, so commands are tested without touching
// the process environment, and the range checks live in typed flag values. Only cmd/ imports
// it (internal/archtest): components take a Config, and only main reads flags and environment.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// DefaultListenAddr is parleyd's public address when --listen-addr (PARLEY_LISTEN_ADDR) is not
// set, and so the address parley-loadtest targets by default.
const DefaultListenAddr = "127.0.0.1:8080"

// EnvName is the environment variable of a flag: "redis-addr" -> "PARLEY_REDIS_ADDR".
func EnvName(flagName string) string {
	return "PARLEY_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// ErrHelp is returned by Parse after it wrote the usage: the command has nothing more to do
// and ends successfully (see IgnoreHelp).
var ErrHelp = errors.New("help printed")

// IgnoreHelp returns nil for ErrHelp and err otherwise.
func IgnoreHelp(err error) error {
	if errors.Is(err, ErrHelp) {
		return nil
	}
	return err
}

// Parse parses args into fs, then sets every flag not given on the command line from its
// environment variable, read with getenv. -h or --help writes the usage (synopsis, then the
// flags) to help and returns ErrHelp. Any other error is a UsageError of one line that names
// the flag or variable and the value; arguments left after the flags are an error too.
func Parse(fs *flag.FlagSet, args []string, getenv func(string) string, help io.Writer, synopsis string) error {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		PrintUsage(help, fs, synopsis)
		return ErrHelp
	} else if err != nil {
		return Usage(err)
	}
	if fs.NArg() > 0 {
		return Usagef("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || set[f.Name] {
			return
		}
		v := getenv(EnvName(f.Name))
		if v == "" {
			return
		}
		if e := fs.Set(f.Name, v); e != nil {
			err = Usagef("invalid value %q for %s (flag --%s): %v", v, EnvName(f.Name), f.Name, e)
		}
	})
	return err
}

// PrintUsage writes synopsis, then every flag of fs with its variable, default, what it
// accepts and its usage text.
func PrintUsage(w io.Writer, fs *flag.FlagSet, synopsis string) {
	fmt.Fprintf(w, "%s\n\nFlags (each can also be set with the environment variable shown; a flag wins):\n", synopsis)
	fs.VisitAll(func(f *flag.Flag) {
		var notes []byte
		if f.DefValue != "" {
			notes = fmt.Appendf(notes, "default %s", f.DefValue)
		}
		if a, ok := f.Value.(interface{ accepts() string }); ok && a.accepts() != "" {
			if len(notes) > 0 {
				notes = append(notes, ", "...)
			}
			notes = append(notes, a.accepts()...)
		}
		paren := ""
		if len(notes) > 0 {
			paren = " (" + string(notes) + ")"
		}
		fmt.Fprintf(w, "  --%s  %s%s\n      %s\n", f.Name, EnvName(f.Name), paren, f.Usage)
	})
}

// UsageError is a wrong command line or setting: the command did nothing, and the process
// exits with status 2 (ExitStatus).
type UsageError struct{ Err error }

func (e UsageError) Error() string { return e.Err.Error() }
func (e UsageError) Unwrap() error { return e.Err }

// Usage marks err as a UsageError; nil stays nil.
func Usage(err error) error {
	if err == nil {
		return nil
	}
	var ue UsageError
	if errors.As(err, &ue) {
		return err
	}
	return UsageError{err}
}

// Usagef is Usage(fmt.Errorf(format, args...)).
func Usagef(format string, args ...any) error {
	return UsageError{fmt.Errorf(format, args...)}
}

// ExitStatus is the process's exit status after a command returned err: 0 for nil (and
// ErrHelp), 2 for a UsageError, 1 for any other failure.
func ExitStatus(err error) int {
	var ue UsageError
	switch {
	case err == nil, errors.Is(err, ErrHelp):
		return 0
	case errors.As(err, &ue):
		return 2
	}
	return 1
}
