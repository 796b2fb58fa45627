package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/parleyhq/parley/delivery/ingest"
	"github.com/parleyhq/parley/history"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/teststack"
)

// childEnv marks a copy of this test binary started as a parleyd process: TestMain runs
// parleyd's run with the arguments after "--" and the real environment instead of the tests.
const childEnv = "PARLEY_TEST_CHILD_PROCESS"

// runChild is TestMain's branch for child processes.
func runChild() {
	args := os.Args
	for i, a := range args {
		if a == "--" {
			args = args[i+1:]
			break
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// process is a parleyd started as its own OS process, so it can be killed with SIGKILL.
type process struct {
	cmd    *exec.Cmd
	admin  string
	public string
	out    *bytes.Buffer
}

func startProcess(t *testing.T, vars map[string]string, args ...string) *process {
	t.Helper()
	p := &process{admin: teststack.FreeAddr(t), public: teststack.FreeAddr(t), out: &bytes.Buffer{}}
	p.cmd = exec.Command(os.Args[0], append([]string{"-test.run=^$", "--"}, args...)...)
	p.cmd.Env = append(os.Environ(), childEnv+"=1", "PARLEY_ADMIN_ADDR="+p.admin, "PARLEY_LISTEN_ADDR="+p.public)
	for k, v := range vars {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.kill() })
	if !teststack.Eventually(t, 60*time.Second, func() bool { return teststack.Ready(p.admin) }) {
		t.Fatalf("child parleyd never ready; output:\n%s", p.out)
	}
	return p
}

// kill sends SIGKILL (no shutdown of any kind) and reaps the process.
func (p *process) kill() {
	if p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		_ = p.cmd.Wait()
	}
}

// Delivery processes killed with SIGKILL in the middle of a stream of messages lose nothing,
// duplicate nothing and leave no gap; with two processes, the survivor takes the partitions
// over within 15 s (the default pinned TTL is 10 s).
func TestDeliveryProcessKilled(t *testing.T) {
	id := teststack.ID(t)
	icfg := ingest.Config{Stream: "T_" + id, SubjectPrefix: "test." + id + ".", Partitions: 4}
	vars := map[string]string{
		"PARLEY_AUTH_HS256_SECRET": testSecret, "PARLEY_LOG_LEVEL": "warn",
		"PARLEY_CASSANDRA_KEYSPACE": teststack.Keyspace, "PARLEY_CASSANDRA_CONSISTENCY": "ONE",
		"PARLEY_DELIVERY_STREAM": icfg.Stream, "PARLEY_DELIVERY_SUBJECT_PREFIX": icfg.SubjectPrefix,
		"PARLEY_DELIVERY_PARTITIONS": strconv.Itoa(icfg.Partitions),
	}
	n := teststack.NATS(t)
	ctx := context.Background()
	if err := ingest.EnsureStream(ctx, n.JetStream, icfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { teststack.DeleteStreams(t, icfg.Stream) })
	pub, err := ingest.New(n.JetStream, icfg)
	if err != nil {
		t.Fatal(err)
	}
	store, err := history.New(teststack.Cassandra(t), history.Config{})
	if err != nil {
		t.Fatal(err)
	}
	a, b := chat.UserID(id+"_a"), chat.UserID(id+"_b")
	conv, _, err := store.CreateDirect(ctx, a, b, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	const total = 300
	send := func(i int) {
		s := ingest.Entry{Conversation: conv, Sender: a, SenderDevice: "d", Body: strconv.Itoa(i), Kind: chat.MessageText, AcceptedAt: time.Now()}
		binary.BigEndian.PutUint64(s.ClientMsgID[8:], uint64(i)+1)
		for {
			if err := pub.Publish(ctx, s); err == nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	lastSeq := func() int64 {
		last, err := store.LastSeq(ctx, conv)
		if err != nil {
			return -1
		}
		return last
	}

	// Phase 1: one process, killed mid-stream and restarted.
	first := startProcess(t, vars, "run", "--roles=delivery")
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 150; i++ {
			send(i)
			time.Sleep(10 * time.Millisecond)
		}
	}()
	teststack.Eventually(t, 30*time.Second, func() bool { return lastSeq() >= 40 })
	first.kill()
	second := startProcess(t, vars, "run", "--roles=delivery")
	wg.Wait()
	if !teststack.Eventually(t, 60*time.Second, func() bool { return lastSeq() >= 150 }) {
		t.Fatalf("after the kill and restart, %d of 150 messages were sequenced; restarted process:\n%s", lastSeq(), second.out)
	}

	// Phase 2: two processes; the one holding the partitions is killed mid-stream.
	third := startProcess(t, vars, "run", "--roles=delivery")
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 150; i < total; i++ {
			send(i)
			time.Sleep(10 * time.Millisecond)
		}
	}()
	teststack.Eventually(t, 30*time.Second, func() bool { return lastSeq() >= 190 })
	second.kill() // started first, so it holds every partition
	killed, before := time.Now(), lastSeq()
	teststack.Eventually(t, 30*time.Second, func() bool { return lastSeq() > before+5 })
	failover := time.Since(killed)
	wg.Wait()
	if !teststack.Eventually(t, 60*time.Second, func() bool { return lastSeq() >= total }) {
		t.Fatalf("after killing one of two processes, %d of %d messages were sequenced; survivor:\n%s", lastSeq(), total, third.out)
	}
	t.Logf("failover after SIGKILL: the survivor sequenced again %v after the kill", failover.Round(100*time.Millisecond))
	if failover > 15*time.Second {
		t.Errorf("failover took %v; want at most 15s", failover)
	}

	// The survivor reports that it owns the conversation's partition (a partition gets a
	// pinned sequencer with its first message; this test sends to one conversation).
	part := strconv.Itoa(ingest.Partition(conv, icfg.Partitions))
	owns := func() bool {
		resp, err := http.Get("http://" + third.admin + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return bytes.Contains(body, []byte(`parley_delivery_partition_owned{partition="`+part+`"} 1`))
	}
	if !teststack.Eventually(t, 20*time.Second, owns) {
		t.Errorf("the survivor does not report owning partition %s", part)
	}

	// The log: seqs 1..total, each message once, in the order it was published.
	time.Sleep(time.Second) // a wrongly sequenced duplicate would land by now
	var log []chat.Message
	for after := int64(0); ; {
		page, err := store.After(ctx, conv, history.Window{}, after, 200)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		log = append(log, page...)
		after = page[len(page)-1].Seq
	}
	if len(log) != total {
		t.Fatalf("log has %d messages; want %d (lost or duplicated)", len(log), total)
	}
	for i, m := range log {
		if m.Seq != int64(i+1) || m.Body != strconv.Itoa(i) {
			t.Fatalf("log[%d] = seq %d body %q; want seq %d body %q (a gap, duplicate or reordering)", i, m.Seq, m.Body, i+1, strconv.Itoa(i))
		}
	}
}
