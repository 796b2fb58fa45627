package parley

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/protocol"
)

// A server that says hello and then freezes (reads nothing, answers nothing, keeps the TCP
// connection open, as a SIGSTOPped edge does) is pinged, then given up: the client connects
// again. Without liveness it would wait on the frozen connection for ever.
func TestFrozenServerIsGivenUp(t *testing.T) {
	var (
		conns atomic.Int32
		pings atomic.Int32
	)
	up := websocket.Upgrader{Subprotocols: []string{protocol.Subprotocol}}
	frozen := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		conns.Add(1)
		_ = ws.WriteJSON(protocol.Frame{Type: protocol.TypeHello, Session: "s", User: "u", Device: "d", Version: protocol.Version})
		go func() { // count what the client sends, answer nothing
			for {
				var f protocol.Frame
				if ws.ReadJSON(&f) != nil {
					return
				}
				if f.Type == protocol.TypePing {
					pings.Add(1)
				}
			}
		}()
		<-frozen
	}))
	defer srv.Close()
	defer close(frozen)
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/v1/ws"
	c, err := Dial(context.Background(), url, WithToken(StaticToken("t")), WithDevice("d"),
		WithLiveness(200*time.Millisecond, 800*time.Millisecond), WithBackoff(10*time.Millisecond, 50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for conns.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if conns.Load() < 2 {
		t.Fatalf("the client stayed on the frozen connection (%d connections, %d pings)", conns.Load(), pings.Load())
	}
	if pings.Load() == 0 {
		t.Error("the client gave the connection up without pinging first")
	}
}
