package edge

import (
	"context"
	"sync"

	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/routing"
	"github.com/parleyhq/parley/internal/wire"
	"github.com/parleyhq/parley/protocol"
)

// A device's positions in its conversations: sync (what it missed), ack (what it has
// received) and read (what its user has read). The inbox (inbox.Inbox) keeps them; the edge
// parses the frames, maps the answers and errors through internal/wire, and sends receipts.

// Syncer answers sync requests with one page of what the user's device missed.
type Syncer interface {
	Sync(ctx context.Context, user chat.UserID, req chat.SyncRequest) (chat.SyncResult, error)
}

// Reader moves a user's read position forward (clamped to the last seq). It returns the
// position after the call and whether it moved.
type Reader interface {
	MarkRead(ctx context.Context, user chat.UserID, conv chat.ConversationID, seq int64) (int64, bool, error)
}

// Acker records that a device received a conversation up to a seq. It returns the user's
// delivered position (the furthest of their devices) and whether it moved.
type Acker interface {
	Ack(ctx context.Context, user chat.UserID, device chat.DeviceID, conv chat.ConversationID, seq int64) (int64, bool, error)
}

// EnableSync makes the edge answer sync frames. Call before serving.
func (s *Server) EnableSync(sy Syncer) {
	s.Handle(protocol.TypeSync, func(ctx context.Context, c *Conn, f protocol.Frame) {
		req, perr := wire.SyncRequest(f)
		if perr != nil {
			c.SendError(f.ID, perr)
			return
		}
		// The whole sync.result frame, entries included, is bounded in bytes as well as in
		// messages, so that it fits in the connection's queue beside half a queue of other
		// frames (Config.SyncPageBytes is at most half of QueueBytes).
		req.MaxBytes = s.cfg.SyncPageBytes - wire.SyncResultOverhead(f.ID)
		req.Size, req.EntrySize = wire.MessageBytes, wire.ConversationBytes
		ctx, cancel := context.WithTimeout(ctx, handlerTimeout)
		defer cancel()
		res, err := sy.Sync(ctx, c.user, req)
		if err != nil {
			c.SendError(f.ID, wire.ProtocolError(err))
			return
		}
		out := wire.SyncResult(res)
		out.ID = f.ID
		c.Send(out)
	})
}

// EnableAck makes the edge accept ack frames: the device's cursor and the user's delivered
// position move forward, and the other members get a "delivered" receipt when the position
// moved. members lists who they are. Call before serving.
//
// Acks are applied off the connection's reader (ackQueue): a device in busy conversations acks
// several times a second, each a write to the inbox store, and the frames behind them (a
// send) must not wait for those writes. Acks of one conversation are coalesced while they wait
// (the position only moves forward, so the highest seq is the one that counts); each gets its
// answer once it is applied.
func (s *Server) EnableAck(a Acker, members MemberLister) {
	move := func(ctx context.Context, c *Conn, conv chat.ConversationID, seq int64) (int64, bool, error) {
		return a.Ack(ctx, c.user, c.device, conv, seq)
	}
	inline := s.positionHandler(chat.ReceiptDelivered, members, move)
	s.Handle(protocol.TypeAck, func(ctx context.Context, c *Conn, f protocol.Frame) {
		conv, err := chat.ParseConversationID(f.Conversation)
		if err != nil {
			c.SendError(f.ID, protocol.Errorf(protocol.CodeBadRequest, "conversation is not a UUID"))
			return
		}
		if c.acks == nil {
			c.acks = &ackQueue{pending: map[chat.ConversationID]*pendingAck{}}
		}
		start, ok := c.acks.add(conv, f.Seq, f.ID)
		if !ok { // too many conversations waiting: this one waits on the reader, as before
			inline(ctx, c, f)
			return
		}
		if start {
			go s.drainAcks(c, members, move)
		}
	})
}

// ackQueue is a connection's acks waiting to be applied, one entry per conversation in
// arrival order. It exists from a connection's first ack on (an idle connection has none).
type ackQueue struct {
	mu      sync.Mutex
	order   []chat.ConversationID
	pending map[chat.ConversationID]*pendingAck
	running bool // a drainAcks goroutine works the queue
}

// pendingAck is the highest seq acked in a conversation and the ids of the frames to answer.
type pendingAck struct {
	seq int64
	ids []string
}

// maxPendingAcks bounds the conversations a connection's queue holds (a few hundred bytes
// each); past it an ack is applied on the reader, which holds back the connection's next
// frames until it is done.
const maxPendingAcks = 256

// add queues an ack. start says the caller must start a drainAcks; ok false: the queue is full.
func (q *ackQueue) add(conv chat.ConversationID, seq int64, id string) (start, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	p := q.pending[conv]
	if p == nil {
		if len(q.pending) >= maxPendingAcks {
			return false, false
		}
		p = &pendingAck{seq: seq}
		q.pending[conv] = p
		q.order = append(q.order, conv)
	}
	p.seq = max(p.seq, seq)
	p.ids = append(p.ids, id)
	start = !q.running
	q.running = true
	return start, true
}

// next takes the oldest waiting conversation; ok false (and the queue marked idle) when none.
func (q *ackQueue) next() (chat.ConversationID, pendingAck, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.order) == 0 {
		q.running = false
		q.order = nil
		return chat.ConversationID{}, pendingAck{}, false
	}
	conv := q.order[0]
	q.order = q.order[1:]
	p := q.pending[conv]
	delete(q.pending, conv)
	return conv, *p, true
}

// drainAcks applies a connection's queued acks until none is left.
func (s *Server) drainAcks(c *Conn, members MemberLister, move func(ctx context.Context, c *Conn, conv chat.ConversationID, seq int64) (int64, bool, error)) {
	for {
		conv, p, ok := c.acks.next()
		if !ok {
			return
		}
		ctx, cancel := context.WithTimeout(s.ctx, handlerTimeout)
		seq, moved, err := move(ctx, c, conv, p.seq)
		for _, id := range p.ids {
			switch {
			case err != nil:
				c.SendError(id, wire.ProtocolError(err))
			case id != "":
				c.Send(protocol.Frame{Type: protocol.TypeOK, ID: id, Seq: seq})
			}
		}
		if err == nil && moved {
			s.publishReceipt(ctx, members, conv, seq, c.user, chat.ReceiptDelivered)
		}
		cancel()
	}
}

// EnableRead makes the edge accept read frames: the read position moves forward and every
// member's devices (the reader's other devices included) get a read receipt. Call before
// serving.
func (s *Server) EnableRead(r Reader, members MemberLister) {
	s.Handle(protocol.TypeRead, s.positionHandler(chat.ReceiptRead, members, func(ctx context.Context, c *Conn, conv chat.ConversationID, seq int64) (int64, bool, error) {
		return r.MarkRead(ctx, c.user, conv, seq)
	}))
}

// positionHandler serves ack and read: move a position, answer ok (with an id) and send the
// receipt of kind when the position moved.
func (s *Server) positionHandler(kind string, members MemberLister, move func(ctx context.Context, c *Conn, conv chat.ConversationID, seq int64) (int64, bool, error)) Handler {
	return func(ctx context.Context, c *Conn, f protocol.Frame) {
		conv, err := chat.ParseConversationID(f.Conversation)
		if err != nil {
			c.SendError(f.ID, protocol.Errorf(protocol.CodeBadRequest, "conversation is not a UUID"))
			return
		}
		ctx, cancel := context.WithTimeout(ctx, handlerTimeout)
		defer cancel()
		seq, moved, err := move(ctx, c, conv, f.Seq)
		if err != nil {
			c.SendError(f.ID, wire.ProtocolError(err))
			return
		}
		if f.ID != "" {
			c.Send(protocol.Frame{Type: protocol.TypeOK, ID: f.ID, Seq: seq})
		}
		if moved {
			s.publishReceipt(ctx, members, conv, seq, c.user, kind)
		}
	}
}

// publishReceipt sends a receipt frame to the members' subjects: for read, every member (the
// reader's other devices learn the position); for delivered, the others. Best effort: on any
// failure nothing is sent, and sync carries the positions too.
func (s *Server) publishReceipt(ctx context.Context, members MemberLister, conv chat.ConversationID, seq int64, user chat.UserID, kind string) {
	if s.nc == nil {
		return
	}
	users, err := s.membership.activeMembers(ctx, members, conv)
	if err != nil {
		return
	}
	to := users
	if kind == chat.ReceiptDelivered {
		to = make([]chat.UserID, 0, len(users))
		for _, u := range users {
			if u != user {
				to = append(to, u)
			}
		}
	}
	data, err := protocol.Encode(wire.Receipt(conv, seq, user, kind, s.now()))
	if err != nil {
		return
	}
	routing.Publish(s.nc, to, string(protocol.TypeReceipt), data)
}
