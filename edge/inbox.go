package edge

import (
	"context"

	"github.com/nats-io/nats.go"

	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/routing"
	"github.com/parleyhq/parley/protocol"
)

// Syncer answers a sync frame with one sync.result page for the user (the inbox, adapted by
// parleyd). Errors are protocol errors: the adapter owns the mapping of its store's errors.
type Syncer interface {
	Sync(ctx context.Context, user chat.UserID, req protocol.Frame) (protocol.Frame, *protocol.Error)
}

// ReadResult is what marking read did.
type ReadResult struct {
	// ReadSeq is the user's read position after the call; Moved says whether it changed.
	ReadSeq int64
	Moved   bool
	// Notify are the users to send the read receipt to: the members, the reader included (so
	// the reader's other devices learn the new position).
	Notify []chat.UserID
}

// Reader moves a user's read position forward.
type Reader interface {
	MarkRead(ctx context.Context, user chat.UserID, conv chat.ConversationID, seq int64) (ReadResult, *protocol.Error)
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
// member's devices get a read receipt. Call before serving.
func (s *Server) EnableRead(r Reader) {
	s.Handle(protocol.TypeRead, func(ctx context.Context, c *Conn, f protocol.Frame) {
		conv, err := chat.ParseConversationID(f.Conversation)
		if err != nil {
			c.SendError(f.ID, protocol.Errorf(protocol.CodeBadRequest, "conversation is not a UUID"))
			return
		}
		ctx, cancel := context.WithTimeout(ctx, sendTimeout)
		defer cancel()
		res, perr := r.MarkRead(ctx, c.user, conv, f.Seq)
		if perr != nil {
			c.SendError(f.ID, perr)
			return
		}
		if f.ID != "" {
			c.Send(protocol.Frame{Type: protocol.TypeOK, ID: f.ID, Seq: res.ReadSeq})
		}
		if !res.Moved || s.nc == nil {
			return
		}
		data, err := protocol.Encode(protocol.Frame{Type: protocol.TypeReceipt, Conversation: f.Conversation,
			Seq: res.ReadSeq, User: string(c.user), Kind: "read", TS: s.now().UnixMilli()})
		if err != nil {
			return
		}
		for _, u := range res.Notify {
			m := nats.NewMsg(routing.UserSubject(u))
			m.Header.Set(routing.HeaderFrameType, string(protocol.TypeReceipt))
			m.Data = data
			_ = s.nc.PublishMsg(m) // best effort: sync carries read positions too
		}
	})
}
