package edge

import (
	"context"

	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/routing"
	"github.com/parleyhq/parley/protocol"
)

// Syncer answers a sync frame with one sync.result page for the user (the inbox, adapted by
// parleyd). Errors are protocol errors: the adapter owns the mapping of its store's errors.
type Syncer interface {
	Sync(ctx context.Context, user chat.UserID, req protocol.Frame) (protocol.Frame, *protocol.Error)
}

// Position is a user's read or delivered position after an ack or read frame.
type Position struct {
	// Seq is the position after the call; Moved says whether it changed.
	Seq   int64
	Moved bool
	// Notify are the users to send the receipt to when it moved: for read, the members with
	// the reader included (their other devices learn the position); for delivered, the others.
	Notify []chat.UserID
}

// Reader moves a user's read position forward.
type Reader interface {
	MarkRead(ctx context.Context, user chat.UserID, conv chat.ConversationID, seq int64) (Position, *protocol.Error)
}

// Acker records that a device received a conversation up to a seq; the Position is the
// user's delivered position.
type Acker interface {
	Ack(ctx context.Context, user chat.UserID, device chat.DeviceID, conv chat.ConversationID, seq int64) (Position, *protocol.Error)
}

// EnableAck makes the edge accept ack frames: the device's cursor and the user's delivered
// position move forward, and the other members get a "delivered" receipt when the position
// moved. Call before serving.
func (s *Server) EnableAck(a Acker) {
	s.Handle(protocol.TypeAck, s.positionHandler("delivered", func(ctx context.Context, c *Conn, conv chat.ConversationID, seq int64) (Position, *protocol.Error) {
		return a.Ack(ctx, c.user, c.device, conv, seq)
	}))
}

// positionHandler serves ack and read: move a position, answer ok (with an id) and send the
// receipt of kind to the users the mover names when the position moved.
func (s *Server) positionHandler(kind string, move func(ctx context.Context, c *Conn, conv chat.ConversationID, seq int64) (Position, *protocol.Error)) Handler {
	return func(ctx context.Context, c *Conn, f protocol.Frame) {
		conv, err := chat.ParseConversationID(f.Conversation)
		if err != nil {
			c.SendError(f.ID, protocol.Errorf(protocol.CodeBadRequest, "conversation is not a UUID"))
			return
		}
		ctx, cancel := context.WithTimeout(ctx, sendTimeout)
		defer cancel()
		res, perr := move(ctx, c, conv, f.Seq)
		if perr != nil {
			c.SendError(f.ID, perr)
			return
		}
		if f.ID != "" {
			c.Send(protocol.Frame{Type: protocol.TypeOK, ID: f.ID, Seq: res.Seq})
		}
		if res.Moved {
			s.publishReceipt(f.Conversation, res.Seq, c.user, kind, res.Notify)
		}
	}
}

// publishReceipt sends a receipt frame to users' subjects. Best effort: sync carries the
// positions too.
func (s *Server) publishReceipt(conv string, seq int64, user chat.UserID, kind string, to []chat.UserID) {
	if s.nc == nil {
		return
	}
	data, err := protocol.Encode(protocol.Frame{Type: protocol.TypeReceipt, Conversation: conv,
		Seq: seq, User: string(user), Kind: kind, TS: s.now().UnixMilli()})
	if err != nil {
		return
	}
	routing.Publish(s.nc, to, string(protocol.TypeReceipt), data)
}

// EnableSync makes the edge answer sync frames. Call before serving.
func (s *Server) EnableSync(sy Syncer) {
	s.Handle(protocol.TypeSync, func(ctx context.Context, c *Conn, f protocol.Frame) {
		ctx, cancel := context.WithTimeout(ctx, sendTimeout)
		defer cancel()
		res, perr := sy.Sync(ctx, c.user, f)
		if perr != nil {
			c.SendError(f.ID, perr)
			return
		}
		res.Type, res.ID = protocol.TypeSyncResult, f.ID
		c.Send(res)
	})
}

// EnableRead makes the edge accept read frames: the read position moves forward and every
// member's devices (the reader's other devices included) get a read receipt. Call before
// serving.
func (s *Server) EnableRead(r Reader) {
	s.Handle(protocol.TypeRead, s.positionHandler("read", func(ctx context.Context, c *Conn, conv chat.ConversationID, seq int64) (Position, *protocol.Error) {
		return r.MarkRead(ctx, c.user, conv, seq)
	}))
}
