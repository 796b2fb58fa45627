package history

import (
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/protocol"
)

// WireMessage is a stored message as the protocol and the REST API carry it.
func WireMessage(m chat.Message) protocol.Message {
	w := protocol.Message{
		Conversation: m.Conversation.String(), Seq: m.Seq, Sender: string(m.Sender), SenderDevice: string(m.SenderDevice),
		ClientMsgID: chat.ConversationID(m.ClientMsgID).String(), Kind: string(m.Kind), Body: m.Body,
		TargetSeq: m.TargetSeq, User: string(m.TargetUser), TS: m.CreatedAt.UnixMilli(),
		EditedSeq: m.EditedSeq, Deleted: m.Deleted,
	}
	for _, r := range m.Reactions {
		users := make([]string, len(r.Users))
		for i, u := range r.Users {
			users[i] = string(u)
		}
		w.Reactions = append(w.Reactions, protocol.Reaction{Emoji: r.Emoji, Users: users})
	}
	return w
}
