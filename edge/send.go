package edge

import (
	"context"

	"github.com/parleyhq/parley/delivery/ingest"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/protocol"
)

// Membership says whether a user is a current member of a conversation. The edge asks it
// before accepting a send; it is implemented over the history store (history.Store).
type Membership interface {
	IsActiveMember(ctx context.Context, conv chat.ConversationID, user chat.UserID) (bool, error)
}

// Publisher makes a send durable: it returns once the ingest stream has stored it
// (ingest.Ingest).
type Publisher interface {
	Publish(ctx context.Context, s ingest.Entry) error
}

var _ Publisher = (*ingest.Ingest)(nil)

// EnableSend makes the edge accept send frames: members only, answered with accepted once the
// send is durable in the ingest stream. Call before serving.
func (s *Server) EnableSend(members Membership, pub Publisher) {
	cache := s.membership
	cache.inner = members
	s.Handle(protocol.TypeSend, func(ctx context.Context, c *Conn, f protocol.Frame) {
		conv, err := chat.ParseConversationID(f.Conversation)
		if err != nil {
			c.SendError(f.ID, protocol.Errorf(protocol.CodeBadRequest, "conversation is not a UUID"))
			return
		}
		cmid, err := chat.ParseClientMsgID(f.ClientMsgID)
		if err != nil {
			c.SendError(f.ID, protocol.Errorf(protocol.CodeBadRequest, "client_msg_id is not a UUID"))
			return
		}
		ctx, cancel := context.WithTimeout(ctx, handlerTimeout)
		defer cancel()
		ok, err := cache.IsActiveMember(ctx, conv, c.user)
		if err != nil {
			s.logger.Warn("send: membership check", "conversation", conv, "err", err)
			c.SendError(f.ID, protocol.Errorf(protocol.CodeUnavailable, "cannot check membership now; retry with the same client_msg_id"))
			return
		}
		if !ok {
			c.SendError(f.ID, protocol.Errorf(protocol.CodeNotFound, "no such conversation"))
			return
		}
		now := s.now()
		if err := pub.Publish(ctx, ingest.Entry{Conversation: conv, Sender: c.user, SenderDevice: c.device,
			ClientMsgID: cmid, Body: f.Body, Kind: chat.MessageText, AcceptedAt: now}); err != nil {
			s.logger.Warn("send: publish", "conversation", conv, "err", err)
			c.SendError(f.ID, protocol.Errorf(protocol.CodeUnavailable, "message not accepted; retry with the same client_msg_id"))
			return
		}
		c.Send(protocol.Frame{Type: protocol.TypeAccepted, ID: f.ID, Conversation: f.Conversation,
			ClientMsgID: f.ClientMsgID, TS: now.UnixMilli()})
	})
}
