package loadtest

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/teststack"
)

// The scenarios run here, small, against a real parleyd (built from this module) on the test
// stack, so what users run against their deployment is itself checked: the chat and fanout
// checkers must find nothing wrong with a healthy server, and presence must see every
// change, the offline one only after the server's grace period.

var parleydBin string

func TestMain(m *testing.M) {
	os.Exit(teststack.RunWithParleyd(m, &parleydBin))
}

// startParleyd runs parleyd with all roles on the test stack (its own JetStream stream) and
// returns its public and admin addresses once it is ready.
func startParleyd(t *testing.T, secret string, grace time.Duration) (public, admin string) {
	id := teststack.ID(t)
	public, admin = teststack.FreeAddr(t), teststack.FreeAddr(t)
	teststack.Cassandra(t) // the test keyspace is migrated
	cmd := exec.Command(parleydBin, "run")
	cmd.Env = append(os.Environ(), "PARLEY_AUTH_HS256_SECRET="+secret, "PARLEY_LOG_LEVEL=warn",
		"PARLEY_LISTEN_ADDR="+public, "PARLEY_ADMIN_ADDR="+admin, "PARLEY_EDGE_DRAIN_WINDOW=100ms", "PARLEY_EDGE_DRAIN_DELAY=0", "PARLEY_EDGE_REBALANCE=false",
		"PARLEY_CASSANDRA_KEYSPACE="+teststack.Keyspace, "PARLEY_CASSANDRA_CONSISTENCY=ONE",
		"PARLEY_PRESENCE_GRACE="+grace.String(),
		"PARLEY_DELIVERY_STREAM=T_"+id, "PARLEY_DELIVERY_SUBJECT_PREFIX=test."+id+".")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		teststack.DeleteStreams(t, "T_"+id)
	})
	if !teststack.Eventually(t, 60*time.Second, func() bool { return teststack.Ready(admin) }) {
		t.Fatalf("parleyd never ready:\n%s", out.String())
	}
	return public, admin
}

func TestScenariosAgainstParleyd(t *testing.T) {
	const secret = "loadtest-scenarios-test-secret-0123456789"
	const grace = time.Second
	public, admin := startParleyd(t, secret, grace)
	d, err := NewDialer(Target{WS: "ws://" + public + "/v1/ws", Metrics: "http://" + admin + "/metrics", Secret: []byte(secret)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	api := "http://" + public
	prefix := teststack.ID(t) + "_"

	t.Run("chat", func(t *testing.T) {
		res, err := RunChat(ctx, d, ChatConfig{Users: 20, Rate: 50, Duration: 2 * time.Second, API: api, UserPrefix: prefix + "c"}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		v := res.Verdict
		if !v.OK() || v.Sent < 50 || v.Accepted != v.Sent || v.Delivered != 2*v.Accepted || v.Expected != v.Delivered || res.Errors != 0 {
			t.Errorf("chat verdict %+v, errors %d; want every message accepted and delivered to both devices", v, res.Errors)
		}
		if res.DeliveredLatency.Count != int64(v.Delivered) {
			t.Errorf("delivered latency counted %d deliveries; want %d", res.DeliveredLatency.Count, v.Delivered)
		}
	})

	t.Run("fanout", func(t *testing.T) {
		res, err := RunFanout(ctx, d, FanoutConfig{API: api, Members: 20, Rate: 5, Duration: 2 * time.Second, UserPrefix: prefix + "f"}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		v := res.Verdict
		if !v.OK() || v.Accepted < 5 || v.Delivered != 20*v.Accepted || res.Errors != 0 {
			t.Errorf("fanout verdict %+v, errors %d; want every message on all 20 devices", v, res.Errors)
		}
	})

	t.Run("idle", func(t *testing.T) {
		// 300 handshakes cost the server some 40 ms of CPU: enough to show in
		// process_cpu_seconds_total, which moves in 10 ms ticks (50 sometimes read as 0).
		res, err := RunIdle(ctx, d, "http://"+admin+"/metrics", IdleConfig{Conns: 300, Concurrency: 8, Hold: 100 * time.Millisecond, UserPrefix: prefix + "i"}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if res.Conns != 300 || res.Failed != 0 || res.After.Connections-res.Before.Connections != 300 {
			t.Errorf("idle: %d connected, %d failed, server counted %v more; want 300, 0, 300",
				res.Conns, res.Failed, res.After.Connections-res.Before.Connections)
		}
		if res.ServerCPUSeconds <= 0 || res.HandshakesPerCPUSecond <= 0 || res.After.RSS <= 0 {
			t.Errorf("idle: server CPU %v s, %v handshakes per CPU second, RSS %v; want them measured",
				res.ServerCPUSeconds, res.HandshakesPerCPUSecond, res.After.RSS)
		}
	})

	t.Run("presence", func(t *testing.T) {
		res, err := RunPresence(ctx, d, PresenceConfig{API: api, Pairs: 10, Rate: 20, Disconnect: true, UserPrefix: prefix + "p"}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if res.Missed != 0 || res.Online.Requests != 10 {
			t.Errorf("online: missed %d, seen %d; want all 10 seen", res.Missed, res.Online.Requests)
		}
		if res.Offline == nil || res.MissedOffline != 0 || res.Offline.Requests != 10 {
			t.Fatalf("offline: %+v, missed %d; want all 10 seen", res.Offline, res.MissedOffline)
		}
		// A watcher must not see offline before the grace period is over.
		if first := time.Duration(res.Offline.Min * float64(time.Millisecond)); first < grace {
			t.Errorf("an offline was seen %v after the close; want none before the %v grace", first, grace)
		}
	})
}
