package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Flags are the standard library's flag package with three additions: every flag can also be
// set from a PARLEY_* environment variable (a flag on the command line wins), every value is
// checked against its accepted range as it is parsed (so the error names the setting), and
// --help lists each flag with its variable and default. The environment is read through an
// injected getenv so tests never touch the process environment; that is why this is a small
// overlay on flag rather than a flags-and-env library.

// envName is the environment variable for a flag: "redis-addr" -> "PARLEY_REDIS_ADDR".
func envName(flagName string) string {
	return "PARLEY_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseFlags parses args, then fills every flag not given on the command line from its
// environment variable. Errors are one line and name the flag or variable.
func parseFlags(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || set[f.Name] {
			return
		}
		v := getenv(envName(f.Name))
		if v == "" {
			return
		}
		if e := fs.Set(f.Name, v); e != nil {
			err = fmt.Errorf("invalid value %q for %s (flag --%s): %v", v, envName(f.Name), f.Name, e)
		}
	})
	return err
}

// printUsage writes the help of a subcommand: synopsis, then every flag with its variable.
func printUsage(w io.Writer, fs *flag.FlagSet, synopsis string) {
	fmt.Fprintf(w, "%s\n\nFlags (each can also be set with the environment variable shown; a flag wins):\n", synopsis)
	fs.VisitAll(func(f *flag.Flag) {
		def := ""
		if f.DefValue != "" {
			def = fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(w, "  --%s  %s%s\n      %s\n", f.Name, envName(f.Name), def, f.Usage)
	})
}

// value is a flag.Value that parses and checks in one step.
type value[T any] struct {
	p      *T
	parse  func(string) (T, error)
	format func(T) string
}

func (v *value[T]) Set(s string) error {
	x, err := v.parse(s)
	if err != nil {
		return err
	}
	*v.p = x
	return nil
}

func (v *value[T]) String() string {
	if v == nil || v.p == nil {
		return ""
	}
	return v.format(*v.p)
}

func defineValue[T any](fs *flag.FlagSet, p *T, name string, def T, parse func(string) (T, error), format func(T) string, usage string) {
	*p = def
	fs.Var(&value[T]{p: p, parse: parse, format: format}, name, usage)
}

// durationFlag accepts a Go duration in [lo, hi].
func durationFlag(fs *flag.FlagSet, p *time.Duration, name string, def, lo, hi time.Duration, usage string) {
	defineValue(fs, p, name, def, func(s string) (time.Duration, error) {
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("not a duration (want e.g. 500ms, 2s, 1m)")
		}
		if d < lo || d > hi {
			return 0, fmt.Errorf("%v out of range [%v, %v]", d, lo, hi)
		}
		return d, nil
	}, time.Duration.String, usage)
}

// intFlag accepts an integer in [lo, hi].
func intFlag(fs *flag.FlagSet, p *int, name string, def, lo, hi int, usage string) {
	defineValue(fs, p, name, def, func(s string) (int, error) {
		n, err := strconv.Atoi(s)
		if err != nil {
			return 0, fmt.Errorf("not an integer")
		}
		if n < lo || n > hi {
			return 0, fmt.Errorf("%d out of range [%d, %d]", n, lo, hi)
		}
		return n, nil
	}, strconv.Itoa, usage)
}

// floatFlag accepts a number in [lo, hi].
func floatFlag(fs *flag.FlagSet, p *float64, name string, def, lo, hi float64, usage string) {
	defineValue(fs, p, name, def, func(s string) (float64, error) {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return 0, fmt.Errorf("not a number")
		}
		if f < lo || f > hi {
			return 0, fmt.Errorf("%v out of range [%v, %v]", f, lo, hi)
		}
		return f, nil
	}, func(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }, usage)
}

// enumFlag accepts one of allowed.
func enumFlag(fs *flag.FlagSet, p *string, name, def string, allowed []string, usage string) {
	defineValue(fs, p, name, def, func(s string) (string, error) {
		if !slices.Contains(allowed, s) {
			return "", fmt.Errorf("want one of %s", strings.Join(allowed, ", "))
		}
		return s, nil
	}, func(s string) string { return s }, usage)
}

// stringFlag accepts any string that check accepts (nil: any string).
func stringFlag(fs *flag.FlagSet, p *string, name, def string, check func(string) error, usage string) {
	defineValue(fs, p, name, def, func(s string) (string, error) {
		if check != nil {
			if err := check(s); err != nil {
				return "", err
			}
		}
		return s, nil
	}, func(s string) string { return s }, usage)
}

// boolFlag is a plain boolean (the standard one, so "--x" alone means true).
func boolFlag(fs *flag.FlagSet, p *bool, name string, def bool, usage string) {
	fs.BoolVar(p, name, def, usage)
}

// hostPort checks a listen or dial address.
func hostPort(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("want host:port")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q out of range [0, 65535]", port)
	}
	return nil
}
