package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/edge"
	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/teststack"
	"github.com/parleyhq/parley/protocol"
)

// procKB reads a "Name:   123 kB" line of /proc/<pid>/status (VmRSS, VmHWM).
func procKB(t *testing.T, pid int, name string) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read the process status: %v", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("%s: %q", name, line)
			}
			return kb
		}
	}
	t.Fatalf("no %s in /proc/%d/status", name, pid)
	return 0
}

// slowReaderSlackMiB is what a parleyd process may grow by, above the connections' queue caps,
// while 20 never-reading clients ask for large syncs (docs/benchmarks.md, "Memory of clients
// that never read"): the Go heap may reach twice the live heap before it is collected
// (GOGC=100), every connection's sync in flight holds the store's rows and the page being
// encoded, and the runtime keeps freed spans a while before returning them. The bytes already
// written into the kernel's socket buffers are not in the process's RSS. Under -race (make
// test) every allocation also has shadow memory, and a fresh clone's run once grew 87 MiB
// (RSS 320 MiB before the syncs); without the bound the growth is over 400 MiB.
const slowReaderSlackMiB = 80

// Memory per connection is bounded in bytes: 20 clients that never read, each asking for six
// sync pages of messages whose JSON is large (bodies of '<', which JSON escapes to six bytes),
// grow a parleyd process by less than 20 times the per-connection queue cap plus the slack.
// Before the cap, each page (30 messages of 96 KiB of JSON) was queued whole, whatever its
// size: the process grew by hundreds of MiB.
func TestSlowReadersMemoryIsBounded(t *testing.T) {
	id := teststack.ID(t)
	vars := map[string]string{
		"PARLEY_AUTH_HS256_SECRET": testSecret, "PARLEY_LOG_LEVEL": "error",
		"PARLEY_CASSANDRA_KEYSPACE": teststack.Keyspace, "PARLEY_CASSANDRA_CONSISTENCY": "ONE",
		"PARLEY_DELIVERY_STREAM": "T_" + id, "PARLEY_DELIVERY_SUBJECT_PREFIX": "test." + id + ".",
	}
	t.Cleanup(func() { teststack.DeleteStreams(t, vars["PARLEY_DELIVERY_STREAM"]) })
	p := startProcess(t, vars, "run")
	a, _ := auth.New(auth.Config{HS256Secret: []byte(testSecret)}, nil)
	alice, bob := chat.UserID(id+"_alice"), chat.UserID(id+"_bob")
	status, data := restCall(t, a, p.public, alice, "POST", "/v1/conversations", `{"kind":"direct","with":"`+string(bob)+`"}`)
	var conv struct{ ID string }
	if err := json.Unmarshal(data, &conv); err != nil || status != http.StatusCreated {
		t.Fatalf("create conversation: %d %s", status, data)
	}

	// Alice sends 30 messages of 16 KiB of '<' (written without HTML escaping: 16 KiB frames).
	const messages = 30
	body := strings.Repeat("<", 16<<10)
	sender := dialEdge(t, a, p.public, alice, "sender")
	for i := 0; i < messages; i++ {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(protocol.Frame{Type: protocol.TypeSend, ID: "s" + strconv.Itoa(i), Conversation: conv.ID,
			ClientMsgID: chat.NewClientMsgID().String(), Body: body})
		if err := sender.WriteMessage(websocket.TextMessage, buf.Bytes()); err != nil {
			t.Fatal(err)
		}
		_ = sender.SetReadDeadline(time.Now().Add(20 * time.Second))
		for {
			var f protocol.Frame
			if err := sender.ReadJSON(&f); err != nil {
				t.Fatalf("waiting for accepted: %v", err)
			}
			if f.ID == "s"+strconv.Itoa(i) {
				if f.Type != protocol.TypeAccepted {
					t.Fatalf("send %d: %+v", i, f)
				}
				break
			}
		}
	}
	sender.Close()
	// A reading device of bob's pages through the whole conversation once: every message is
	// stored, and the process has served syncs before it is measured. Live pushes of the 16 KiB
	// messages (a second push of the last one too, if the projector lagged: delivery's owed
	// pushes) share its queue with the pages: a reader too slow for them under -race is closed
	// as a slow consumer (4009) and, as a client would, connects again and syncs again.
	reader := dialEdge(t, a, p.public, bob, "reader")
	if !teststack.Eventually(t, 30*time.Second, func() bool {
		cursor, got := int64(0), 0
		for page := 0; page < 100; page++ {
			req := protocol.Frame{Type: protocol.TypeSync, ID: "w" + strconv.Itoa(page), Limit: protocol.MaxSyncLimit,
				Cursors: []protocol.Cursor{{Conversation: conv.ID, Seq: cursor}}}
			if err := reader.WriteJSON(req); err != nil {
				t.Fatal(err)
			}
			_ = reader.SetReadDeadline(time.Now().Add(20 * time.Second))
			var f protocol.Frame
			for f.ID != req.ID {
				f = protocol.Frame{}
				if err := reader.ReadJSON(&f); err != nil {
					if websocket.IsCloseError(err, protocol.CloseSlowConsumer) {
						reader.Close()
						reader = dialEdge(t, a, p.public, bob, "reader")
						return false
					}
					t.Fatalf("warm-up sync: %v", err)
				}
			}
			got += len(f.Messages)
			if n := len(f.Messages); n > 0 {
				cursor = f.Messages[n-1].Seq
			}
			if !f.More {
				break
			}
		}
		return got == messages
	}) {
		t.Fatalf("bob's warm-up sync never returned the %d messages", messages)
	}
	reader.Close()

	// 20 connections (alice's 10 and bob's 10, the most allowed per user) that never read ask
	// for 6 full pages each.
	pid := p.cmd.Process.Pid
	var slow []*websocket.Conn
	for i := 0; i < 20; i++ {
		u := alice
		if i%2 == 1 {
			u = bob
		}
		slow = append(slow, dialEdge(t, a, p.public, u, "slow"+strconv.Itoa(i)))
	}
	time.Sleep(time.Second)
	base := procKB(t, pid, "VmRSS")
	for _, ws := range slow {
		for j := 0; j < 6; j++ {
			if err := ws.WriteJSON(protocol.Frame{Type: protocol.TypeSync, ID: "y" + strconv.Itoa(j), Limit: protocol.MaxSyncLimit}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Wait until the peak stops growing: every sync has been answered (or the connection
	// closed as a slow consumer).
	peak := procKB(t, pid, "VmHWM")
	for still := 0; still < 3; {
		time.Sleep(time.Second)
		if now := procKB(t, pid, "VmHWM"); now > peak {
			peak, still = now, 0
		} else {
			still++
		}
	}
	growthMiB := float64(peak-base) / 1024
	capMiB := float64(defaultQueueBytesForTest) / (1 << 20)
	limit := 20*capMiB + slowReaderSlackMiB
	t.Logf("RSS %.1f MiB before the syncs, peak %.1f MiB: growth %.1f MiB (limit 20 x %.0f MiB + %d MiB slack = %.0f MiB)",
		float64(base)/1024, float64(peak)/1024, growthMiB, capMiB, slowReaderSlackMiB, limit)
	if growthMiB > limit {
		t.Errorf("20 never-reading clients grew parleyd by %.1f MiB; want at most %.0f MiB", growthMiB, limit)
	}
}

// defaultQueueBytesForTest is the default per-connection cap the test's bound is computed from.
const defaultQueueBytesForTest = edge.DefaultQueueBytes
