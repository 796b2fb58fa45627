package edge

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/parleyhq/parley/delivery/ingest"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/protocol"
)

// blockingAcker holds every Ack until release is closed, and records the highest seq per
// conversation it was asked for.
type blockingAcker struct {
	release chan struct{}
	mu      sync.Mutex
	calls   int
	highest map[chat.ConversationID]int64
}

func (a *blockingAcker) Ack(ctx context.Context, _ chat.UserID, _ chat.DeviceID, conv chat.ConversationID, seq int64) (int64, bool, error) {
	select {
	case <-a.release:
	case <-ctx.Done():
		return 0, false, ctx.Err()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls++
	a.highest[conv] = max(a.highest[conv], seq)
	return seq, false, nil
}

type everyoneIsMember struct{}

func (everyoneIsMember) IsActiveMember(context.Context, chat.ConversationID, chat.UserID) (bool, error) {
	return true, nil
}
func (everyoneIsMember) ActiveMembers(context.Context, chat.ConversationID) ([]chat.UserID, error) {
	return nil, nil
}

type nopPublisher struct{}

func (nopPublisher) Publish(context.Context, ingest.Entry) error { return nil }

// A slow position store does not hold back a connection's other frames: a send behind ten
// acks is accepted while the acks still wait, and the acks (coalesced per conversation) are
// answered once the store takes them.
func TestAcksDoNotHoldBackSends(t *testing.T) {
	acker := &blockingAcker{release: make(chan struct{}), highest: map[chat.ConversationID]int64{}}
	te := newTestEdgeSetup(t, Config{}, nil, time.Millisecond, func(s *Server) {
		s.EnableSend(everyoneIsMember{}, nopPublisher{})
		s.EnableAck(acker, everyoneIsMember{})
	})
	released := false
	defer func() {
		if !released {
			close(acker.release)
		}
	}()
	ws := te.connect("alice", "phone")
	convs := []string{uuid.NewString(), uuid.NewString()}
	for i := 1; i <= 10; i++ {
		write(t, ws, fmt.Sprintf(`{"type":"ack","id":"a%d","conversation":%q,"seq":%d}`, i, convs[i%2], i))
	}
	write(t, ws, fmt.Sprintf(`{"type":"send","id":"s1","conversation":%q,"client_msg_id":%q,"body":"hi"}`, convs[0], uuid.NewString()))
	if f := readFrame(t, ws); f.Type != protocol.TypeAccepted || f.ID != "s1" {
		t.Fatalf("first frame while the acks wait: %+v; want the send's accepted", f)
	}
	close(acker.release)
	released = true
	oks := map[string]int64{}
	for len(oks) < 10 {
		f := readFrame(t, ws)
		if f.Type != protocol.TypeOK {
			t.Fatalf("frame %+v; want ok for each ack", f)
		}
		oks[f.ID] = f.Seq
	}
	acker.mu.Lock()
	defer acker.mu.Unlock()
	if acker.highest[chat.ConversationID(uuid.MustParse(convs[0]))] != 10 || acker.highest[chat.ConversationID(uuid.MustParse(convs[1]))] != 9 {
		t.Fatalf("positions applied %v; want 10 and 9", acker.highest)
	}
	if acker.calls > 10 {
		t.Fatalf("%d store calls for 10 acks of 2 conversations", acker.calls)
	}
}
