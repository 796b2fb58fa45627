package history

import (
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/protocol"
)

// WireMessage is a stored message as the protocol and the REST API carry it.
func WireMessage(m chat.Message) protocol.Message {
	return protocol.Message{
		Conversation: m.Conversation.String(), Seq: m.Seq, Sender: string(m.Sender), SenderDevice: string(m.SenderDevice),
		ClientMsgID: chat.ConversationID(m.ClientMsgID).String(), Kind: string(m.Kind), Body: m.Body,
		TargetSeq: m.TargetSeq, TS: m.CreatedAt.UnixMilli(),
	}
}
