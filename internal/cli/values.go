package cli

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"
)

// value is a flag.Value that parses and checks in one step, so a wrong value fails where it
// is parsed, with the flag's or the variable's name in the error.
type value[T any] struct {
	p      *T
	parse  func(string) (T, error)
	format func(T) string
	accept string // what it accepts, for --help ("" when the usage text says it)
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

func (v *value[T]) accepts() string { return v.accept }

// Value defines a flag of any type: *p starts as def, parse turns a string into a checked
// value, format prints one (the default in --help; return "" for a secret).
func Value[T any](fs *flag.FlagSet, p *T, name string, def T, parse func(string) (T, error), format func(T) string, usage string) {
	define(fs, p, name, def, parse, format, "", usage)
}

func define[T any](fs *flag.FlagSet, p *T, name string, def T, parse func(string) (T, error), format func(T) string, accept, usage string) {
	*p = def
	fs.Var(&value[T]{p: p, parse: parse, format: format, accept: accept}, name, usage)
}

// Duration defines a flag accepting a Go duration in [lo, hi].
func Duration(fs *flag.FlagSet, p *time.Duration, name string, def, lo, hi time.Duration, usage string) {
	define(fs, p, name, def, func(s string) (time.Duration, error) {
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, errors.New("not a duration (want e.g. 500ms, 2s, 1m)")
		}
		if d < lo || d > hi {
			return 0, fmt.Errorf("%v out of range [%v, %v]", d, lo, hi)
		}
		return d, nil
	}, time.Duration.String, fmt.Sprintf("%v to %v", lo, hi), usage)
}

// Int defines a flag accepting an integer in [lo, hi].
func Int(fs *flag.FlagSet, p *int, name string, def, lo, hi int, usage string) {
	define(fs, p, name, def, func(s string) (int, error) {
		n, err := strconv.Atoi(s)
		if err != nil {
			return 0, errors.New("not an integer")
		}
		if n < lo || n > hi {
			return 0, fmt.Errorf("%d out of range [%d, %d]", n, lo, hi)
		}
		return n, nil
	}, strconv.Itoa, fmt.Sprintf("%d to %d", lo, hi), usage)
}

// Float defines a flag accepting a number in [lo, hi].
func Float(fs *flag.FlagSet, p *float64, name string, def, lo, hi float64, usage string) {
	format := func(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }
	define(fs, p, name, def, func(s string) (float64, error) {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return 0, errors.New("not a number")
		}
		if f < lo || f > hi {
			return 0, fmt.Errorf("%v out of range [%v, %v]", f, lo, hi)
		}
		return f, nil
	}, format, format(lo)+" to "+format(hi), usage)
}

// Enum defines a flag accepting one of allowed.
func Enum(fs *flag.FlagSet, p *string, name, def string, allowed []string, usage string) {
	define(fs, p, name, def, func(s string) (string, error) {
		if !slices.Contains(allowed, s) {
			return "", fmt.Errorf("want one of %s", strings.Join(allowed, ", "))
		}
		return s, nil
	}, func(s string) string { return s }, "one of "+strings.Join(allowed, ", "), usage)
}

// String defines a flag accepting any string that check accepts (nil: any string).
func String(fs *flag.FlagSet, p *string, name, def string, check func(string) error, usage string) {
	Value(fs, p, name, def, func(s string) (string, error) {
		if check != nil {
			if err := check(s); err != nil {
				return "", err
			}
		}
		return s, nil
	}, func(s string) string { return s }, usage)
}

// Bool defines a plain boolean (the standard one, so "--x" alone means true); its variable
// takes true, false, 1 or 0.
func Bool(fs *flag.FlagSet, p *bool, name string, def bool, usage string) {
	fs.BoolVar(p, name, def, usage)
}

// HostPort checks a listen or dial address: host:port, the port in [0, 65535].
func HostPort(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return errors.New("want host:port")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q out of range [0, 65535]", port)
	}
	return nil
}
