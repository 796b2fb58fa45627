package main

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/cli"
	"github.com/parleyhq/parley/internal/teststack"
)

// A command that cannot reach a service says which service and which address it tried, with
// the password of a URL left out. The addresses are loopback ports nothing listens on, so the
// test needs no stack; the rest of the message (after the address) is the driver's.
func TestUnreachableServiceIsNamedWithItsAddress(t *testing.T) {
	closed, closed2 := teststack.FreeAddr(t), teststack.FreeAddr(t)
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string // the start of the error
	}{
		{"dlq list", []string{"dlq", "list", "--nats-url=nats://" + closed}, nil,
			"dlq: cannot reach NATS at nats://" + closed + ": "},
		{"dlq replay, URL from the environment", []string{"dlq", "replay", "7"}, map[string]string{"PARLEY_NATS_URL": "nats://" + closed},
			"dlq: cannot reach NATS at nats://" + closed + ": "},
		{"dlq, credentials left out", []string{"dlq", "list", "--nats-url=nats://alice:hunter2@" + closed + ",nats://tok3n@" + closed2}, nil,
			"dlq: cannot reach NATS at nats://" + closed + ",nats://" + closed2 + ": "},
		{"migrate", []string{"migrate", "--cassandra-hosts=" + closed}, nil,
			"migrate: cannot reach Cassandra at " + closed + ": "},
		{"migrate, hosts from the environment", []string{"migrate"}, map[string]string{"PARLEY_CASSANDRA_HOSTS": closed + "," + closed2},
			"migrate: cannot reach Cassandra at " + closed + "," + closed2 + ": "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			vars := map[string]string{"PARLEY_TIMEOUT": "1s", "PARLEY_LOG_LEVEL": "error"}
			for k, v := range tt.env {
				vars[k] = v
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := run(ctx, tt.args, env(vars), io.Discard, io.Discard)
			if err == nil {
				t.Fatalf("run(%q) succeeded; want it to fail", tt.args)
			}
			got := err.Error()
			if !strings.HasPrefix(got, tt.want) {
				t.Errorf("run(%q) error\n got %q\nwant it to start with %q", tt.args, got, tt.want)
			}
			if strings.Contains(got, "hunter2") || strings.Contains(got, "tok3n") || strings.Contains(got, "\n") {
				t.Errorf("error %q shows a credential or is not one line", got)
			}
			if s := cli.ExitStatus(err); s != 1 {
				t.Errorf("exit status %d; want 1 (a failure at run time, not a usage error)", s)
			}
		})
	}
}

func TestRedactURLs(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"nats://127.0.0.1:14222", "nats://127.0.0.1:14222"},
		{"nats://alice:hunter2@10.0.0.1:4222", "nats://10.0.0.1:4222"},
		{"nats://tok3n@a:4222, nats://b:4222", "nats://a:4222,nats://b:4222"},
	} {
		if got := redactURLs(tt.in); got != tt.want {
			t.Errorf("redactURLs(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

// dlq's help lists its flags as the other commands' do, whether asked before or after list.
func TestDLQHelpListsItsFlags(t *testing.T) {
	for _, args := range [][]string{{"dlq", "--help"}, {"dlq", "list", "--help"}, {"dlq", "replay", "3", "-h"}} {
		var out strings.Builder
		if err := run(context.Background(), args, env(nil), &out, io.Discard); err != nil {
			t.Fatalf("run(%q) = %v", args, err)
		}
		for _, want := range []string{"Usage: parleyd dlq list", "--nats-url  PARLEY_NATS_URL (default nats://127.0.0.1:14222)",
			"--timeout  PARLEY_TIMEOUT (default 1m0s, 1s to 1h0m0s)", "--delivery-stream  PARLEY_DELIVERY_STREAM"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("run(%q) printed no %q:\n%s", args, want, out.String())
			}
		}
	}
}

// parleyd run names the service it waited for in vain, too.
func TestRunNamesTheServiceItCouldNotReach(t *testing.T) {
	closed := teststack.FreeAddr(t)
	vars := map[string]string{"PARLEY_ADMIN_ADDR": teststack.FreeAddr(t), "PARLEY_LISTEN_ADDR": teststack.FreeAddr(t),
		"PARLEY_NATS_URL": "nats://" + closed, "PARLEY_STARTUP_TIMEOUT": "1s", "PARLEY_LOG_LEVEL": "error"}
	err := run(context.Background(), []string{"run", "--roles=delivery"}, env(vars), io.Discard, io.Discard)
	want := "run: cannot reach NATS at nats://" + closed + ": "
	if err == nil || !strings.HasPrefix(err.Error(), want) || cli.ExitStatus(err) != 1 {
		t.Errorf("run against a closed NATS port: %v; want an error starting with %q, exit status 1", err, want)
	}
}
