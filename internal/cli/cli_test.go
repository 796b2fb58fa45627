package cli

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

type settings struct {
	addr    string
	timeout time.Duration
	n       int
	ratio   float64
	level   string
	on      bool
}

func newFlagSet(s *settings) *flag.FlagSet {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	String(fs, &s.addr, "listen-addr", DefaultListenAddr, HostPort, "Address.")
	Duration(fs, &s.timeout, "timeout", 5*time.Second, time.Millisecond, time.Minute, "Deadline.")
	Int(fs, &s.n, "conns", 10, 1, 100, "Connections.")
	Float(fs, &s.ratio, "ratio", 0.5, 0.01, 1, "Ratio.")
	Enum(fs, &s.level, "log-level", "info", []string{"debug", "info"}, "Level.")
	Bool(fs, &s.on, "allow-remote", false, "Remote.")
	return fs
}

func env(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }

func TestEnvName(t *testing.T) {
	for _, tt := range []struct{ flag, want string }{
		{"listen-addr", "PARLEY_LISTEN_ADDR"},
		{"auth-hs256-secret", "PARLEY_AUTH_HS256_SECRET"},
		{"rate", "PARLEY_RATE"},
	} {
		if got := EnvName(tt.flag); got != tt.want {
			t.Errorf("EnvName(%q) = %q; want %q", tt.flag, got, tt.want)
		}
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want settings
	}{
		{"defaults", nil, nil, settings{addr: DefaultListenAddr, timeout: 5 * time.Second, n: 10, ratio: 0.5, level: "info"}},
		{"flags", []string{"--listen-addr=127.0.0.1:9000", "--timeout", "2s", "--conns=3", "--ratio=1", "--log-level=debug", "--allow-remote"}, nil,
			settings{addr: "127.0.0.1:9000", timeout: 2 * time.Second, n: 3, ratio: 1, level: "debug", on: true}},
		{"environment", nil, map[string]string{"PARLEY_LISTEN_ADDR": "127.0.0.1:9001", "PARLEY_CONNS": "7", "PARLEY_ALLOW_REMOTE": "true"},
			settings{addr: "127.0.0.1:9001", timeout: 5 * time.Second, n: 7, ratio: 0.5, level: "info", on: true}},
		{"a flag wins", []string{"--conns=3"}, map[string]string{"PARLEY_CONNS": "7", "PARLEY_TIMEOUT": "1s"},
			settings{addr: DefaultListenAddr, timeout: time.Second, n: 3, ratio: 0.5, level: "info"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got settings
			if err := Parse(newFlagSet(&got), tt.args, env(tt.env), io.Discard, ""); err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v; want %+v", got, tt.want)
			}
		})
	}
}

// Every wrong value is a UsageError of one line naming the setting and the value.
func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"out of range", []string{"--conns=0"}, nil, `invalid value "0" for flag -conns: 0 out of range [1, 100]`},
		{"negative duration", []string{"--timeout=-1s"}, nil, `invalid value "-1s" for flag -timeout: -1s out of range [1ms, 1m0s]`},
		{"not a duration", []string{"--timeout=soon"}, nil, `invalid value "soon" for flag -timeout: not a duration (want e.g. 500ms, 2s, 1m)`},
		{"not a number", []string{"--ratio=half"}, nil, `invalid value "half" for flag -ratio: not a number`},
		{"enum", []string{"--log-level=loud"}, nil, `invalid value "loud" for flag -log-level: want one of debug, info`},
		{"address", []string{"--listen-addr=localhost"}, nil, `invalid value "localhost" for flag -listen-addr: want host:port`},
		{"port", []string{"--listen-addr=localhost:99999"}, nil, `invalid value "localhost:99999" for flag -listen-addr: port "99999" out of range [0, 65535]`},
		{"variable", nil, map[string]string{"PARLEY_CONNS": "500"}, `invalid value "500" for PARLEY_CONNS (flag --conns): 500 out of range [1, 100]`},
		{"bool variable", nil, map[string]string{"PARLEY_ALLOW_REMOTE": "yes"}, `invalid value "yes" for PARLEY_ALLOW_REMOTE (flag --allow-remote): parse error`},
		{"unknown flag", []string{"--nope"}, nil, `flag provided but not defined: -nope`},
		{"stray argument", []string{"--conns=2", "extra"}, nil, `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s settings
			err := Parse(newFlagSet(&s), tt.args, env(tt.env), io.Discard, "")
			var ue UsageError
			if !errors.As(err, &ue) || ExitStatus(err) != 2 {
				t.Fatalf("Parse(%q) = %v; want a usage error (exit status 2)", tt.args, err)
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("error\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	var s settings
	var out bytes.Buffer
	err := Parse(newFlagSet(&s), []string{"--help"}, env(nil), &out, "Usage: test [flags]")
	if !errors.Is(err, ErrHelp) || IgnoreHelp(err) != nil || ExitStatus(err) != 0 {
		t.Fatalf("Parse(--help) = %v; want ErrHelp, exit status 0", err)
	}
	for _, want := range []string{
		"Usage: test [flags]\n\nFlags",
		"  --listen-addr  PARLEY_LISTEN_ADDR (default 127.0.0.1:8080)\n      Address.\n",
		"  --timeout  PARLEY_TIMEOUT (default 5s, 1ms to 1m0s)\n",
		"  --conns  PARLEY_CONNS (default 10, 1 to 100)\n",
		"  --ratio  PARLEY_RATIO (default 0.5, 0.01 to 1)\n",
		"  --log-level  PARLEY_LOG_LEVEL (default info, one of debug, info)\n",
		"  --allow-remote  PARLEY_ALLOW_REMOTE (default false)\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("help does not contain %q:\n%s", want, out.String())
		}
	}
}

// A secret's format returns "", so --help never prints it, not even as a default.
func TestSecretNotPrinted(t *testing.T) {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	var secret []byte
	Value(fs, &secret, "auth-hs256-secret", []byte("default-secret"), func(s string) ([]byte, error) { return []byte(s), nil },
		func([]byte) string { return "" }, "Secret.")
	var out bytes.Buffer
	_ = Parse(fs, []string{"-h"}, env(map[string]string{"PARLEY_AUTH_HS256_SECRET": "env-secret"}), &out, "")
	if strings.Contains(out.String(), "default-secret") || strings.Contains(out.String(), "env-secret") {
		t.Errorf("help shows the secret:\n%s", out.String())
	}
}

func TestExitStatus(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want int
	}{
		{nil, 0},
		{ErrHelp, 0},
		{Usagef("bad %s", "value"), 2},
		{Usage(errors.New("bad")), 2},
		{errors.Join(errors.New("context"), Usagef("bad")), 2},
		{errors.New("cannot reach NATS"), 1},
	} {
		if got := ExitStatus(tt.err); got != tt.want {
			t.Errorf("ExitStatus(%v) = %d; want %d", tt.err, got, tt.want)
		}
	}
	if Usage(nil) != nil {
		t.Error("Usage(nil) is not nil")
	}
}
