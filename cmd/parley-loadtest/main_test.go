package main

import (
	"bytes"
	"context"
	"flag"
	"io"
	"strings"
	"testing"

	"github.com/parleyhq/parley/internal/cli"
)

func env(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }

const testSecret = "0123456789abcdef0123456789abcdef"

// The target comes from the variables parleyd reads, so one environment points both at the
// same server; a flag overrides them.
func TestTargetFromParleydSettings(t *testing.T) {
	tests := []struct {
		name              string
		args              []string
		env               map[string]string
		ws, metrics, api  string
		secret            string
		allowRemoteWanted bool
	}{
		{"defaults", nil, map[string]string{"PARLEY_AUTH_HS256_SECRET": testSecret},
			"ws://127.0.0.1:8080/v1/ws", "http://127.0.0.1:8081/metrics", "http://127.0.0.1:8080", testSecret, false},
		{"parleyd's variables", nil, map[string]string{"PARLEY_LISTEN_ADDR": "127.0.0.1:9000", "PARLEY_ADMIN_ADDR": "127.0.0.1:9001", "PARLEY_AUTH_HS256_SECRET": testSecret},
			"ws://127.0.0.1:9000/v1/ws", "http://127.0.0.1:9001/metrics", "http://127.0.0.1:9000", testSecret, false},
		{"flags win", []string{"--listen-addr=127.0.0.1:7000", "--admin-addr", "127.0.0.1:7001", "--auth-hs256-secret=" + strings.Repeat("x", 32), "--allow-remote"},
			map[string]string{"PARLEY_LISTEN_ADDR": "127.0.0.1:9000", "PARLEY_ADMIN_ADDR": "127.0.0.1:9001", "PARLEY_AUTH_HS256_SECRET": testSecret},
			"ws://127.0.0.1:7000/v1/ws", "http://127.0.0.1:7001/metrics", "http://127.0.0.1:7000", strings.Repeat("x", 32), true},
		{"several edges", []string{"--listen-addr=127.0.0.1:9101, 127.0.0.1:9102", "--admin-addr=127.0.0.1:9201,127.0.0.1:9202"}, map[string]string{"PARLEY_AUTH_HS256_SECRET": testSecret},
			"ws://127.0.0.1:9101/v1/ws,ws://127.0.0.1:9102/v1/ws", "http://127.0.0.1:9201/metrics,http://127.0.0.1:9202/metrics", "http://127.0.0.1:9101", testSecret, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tf targetFlags
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			tf.register(fs, true)
			if err := cli.Parse(fs, tt.args, env(tt.env), io.Discard, ""); err != nil {
				t.Fatal(err)
			}
			got := tf.target()
			if got.WS != tt.ws || got.Metrics != tt.metrics || tf.api() != tt.api || string(got.Secret) != tt.secret || got.AllowRemote != tt.allowRemoteWanted {
				t.Errorf("target %+v, api %q\nwant ws %q, metrics %q, api %q, secret %q, allow remote %v",
					got, tf.api(), tt.ws, tt.metrics, tt.api, tt.secret, tt.allowRemoteWanted)
			}
		})
	}
}

// A wrong setting stops the run before it connects anywhere, with one line naming the
// setting, and exit status 2.
func TestBadSettingsAreUsageErrors(t *testing.T) {
	secret := map[string]string{"PARLEY_AUTH_HS256_SECRET": testSecret}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"no scenario", nil, nil, "missing scenario"},
		{"unknown scenario", []string{"soak"}, nil, `unknown scenario "soak" (want idle, connect, broadcast, chat, fanout, history, presence, reconnect-storm)`},
		{"no secret", []string{"chat"}, nil, "--auth-hs256-secret (PARLEY_AUTH_HS256_SECRET) is required: the secret parleyd verifies tokens with (make run keeps it in .parley/dev-hs256-secret)"},
		{"short secret", []string{"chat", "--auth-hs256-secret=short"}, nil, `invalid value "short" for flag -auth-hs256-secret: secret is 5 bytes, at least 32 required`},
		{"bad address", []string{"chat", "--listen-addr=localhost"}, secret, `invalid value "localhost" for flag -listen-addr: "localhost": want host:port`},
		{"bad address variable", []string{"idle"}, map[string]string{"PARLEY_ADMIN_ADDR": "127.0.0.1:8081,nohost"},
			`invalid value "127.0.0.1:8081,nohost" for PARLEY_ADMIN_ADDR (flag --admin-addr): "nohost": want host:port`},
		{"rate out of range", []string{"chat", "--rate=0"}, secret, `invalid value "0" for flag -rate: 0 out of range [1, 100000]`},
		{"rate variable out of range", []string{"fanout"}, map[string]string{"PARLEY_RATE": "5000", "PARLEY_AUTH_HS256_SECRET": testSecret},
			`invalid value "5000" for PARLEY_RATE (flag --rate): 5000 out of range [1, 1000]`},
		{"duration too long", []string{"broadcast", "--duration=6m"}, secret, `invalid value "6m" for flag -duration: 6m0s out of range [1s, 5m0s]`},
		{"odd users", []string{"chat", "--users=201"}, secret, "--users 201: want an even number (users are paired)"},
		{"too many connections", []string{"broadcast", "--users=1000", "--devices=20"}, secret, "--users 1000 x --devices 20 is 20000 connections; at most 19,000 per process"},
		{"too few workers", []string{"connect", "--conns=100000", "--workers=2"}, secret, "--conns 100000 over --workers 2: want at least one and at most 19,000 connections per worker (--workers 6 or more)"},
		{"idle on two servers", []string{"idle", "--admin-addr=127.0.0.1:1,127.0.0.1:2"}, secret, "idle measures one server: give --admin-addr one address"},
		{"remote target", []string{"chat"}, map[string]string{"PARLEY_LISTEN_ADDR": "10.0.0.1:8080", "PARLEY_AUTH_HS256_SECRET": testSecret},
			"target 10.0.0.1:8080 is not a loopback address; pass --allow-remote to load-test another machine you own"},
		{"bad nats url", []string{"broadcast", "--nats-url=nowhere"}, secret, `invalid value "nowhere" for flag -nats-url: nats url "nowhere": want nats://host:port`},
		{"old flag name", []string{"chat", "--ws=ws://127.0.0.1:8080/v1/ws"}, secret, "flag provided but not defined: -ws"},
		{"stray argument", []string{"chat", "fast"}, secret, `unexpected argument "fast"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(context.Background(), tt.args, env(tt.env), io.Discard, io.Discard)
			if cli.ExitStatus(err) != 2 {
				t.Fatalf("run(%q) = %v; want a usage error (exit status 2)", tt.args, err)
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("run(%q) error\n got %q\nwant %q", tt.args, got, tt.want)
			}
		})
	}
}

func TestHelpListsEveryFlagWithItsVariable(t *testing.T) {
	tests := []struct {
		scenario string
		want     []string
	}{
		{"idle", []string{"--listen-addr  PARLEY_LISTEN_ADDR (default 127.0.0.1:8080)", "--admin-addr  PARLEY_ADMIN_ADDR (default 127.0.0.1:8081)",
			"--conns  PARLEY_CONNS (default 1000, 1 to 19000)", "--auth-hs256-secret  PARLEY_AUTH_HS256_SECRET\n"}},
		{"broadcast", []string{"--nats-url  PARLEY_NATS_URL (default nats://127.0.0.1:14222)", "--runs  PARLEY_RUNS (default 3, 1 to 10)"}},
		{"chat", []string{"--users  PARLEY_USERS (default 200, 2 to 19000)", "--html  PARLEY_HTML", "--grace  PARLEY_GRACE (default 10s, 1ms to 10m0s)"}},
		{"connect", []string{"--workers  PARLEY_WORKERS (default 1, 1 to 16)", "--admin-addr"}},
		{"fanout", []string{"--members  PARLEY_MEMBERS (default 1000, 2 to 1000)"}},
		{"history", []string{"--page-rate  PARLEY_PAGE_RATE (default 500, 0 to 20000)"}},
		{"presence", []string{"--disconnect  PARLEY_DISCONNECT (default true)"}},
		{"reconnect-storm", []string{"--missed  PARLEY_MISSED (default 10, 1 to 1000)"}},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		// A secret in the environment must not show up in the help.
		if err := run(context.Background(), []string{tt.scenario, "--help"}, env(map[string]string{"PARLEY_AUTH_HS256_SECRET": testSecret}), &out, io.Discard); err != nil {
			t.Fatalf("%s --help: %v", tt.scenario, err)
		}
		for _, w := range append(tt.want, "Usage: parley-loadtest "+tt.scenario) {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%s --help does not contain %q:\n%s", tt.scenario, w, out.String())
			}
		}
		if strings.Contains(out.String(), testSecret) {
			t.Errorf("%s --help shows the secret", tt.scenario)
		}
	}
	// Only the scenarios that read the server's metrics take its admin address.
	var out bytes.Buffer
	_ = run(context.Background(), []string{"chat", "-h"}, env(nil), &out, io.Discard)
	if strings.Contains(out.String(), "--admin-addr") {
		t.Errorf("chat --help offers --admin-addr, which chat does not read")
	}
}

func TestCommandLineHidesTheSecret(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--rate", "5"}, "chat --rate 5"},
		{[]string{"--auth-hs256-secret=" + testSecret, "--rate=5"}, "chat --auth-hs256-secret=REDACTED --rate=5"},
		{[]string{"-auth-hs256-secret", testSecret, "--rate=5"}, "chat -auth-hs256-secret REDACTED --rate=5"},
	} {
		if got := commandLine("chat", tt.args); got != tt.want {
			t.Errorf("commandLine(%q) = %q; want %q", tt.args, got, tt.want)
		}
	}
}
