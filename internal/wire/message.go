package wire

import (
	"time"

	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/protocol"
)

// Message is a stored message as the protocol and the REST API carry it.
func Message(m chat.Message) protocol.Message {
	w := protocol.Message{
		Conversation: m.Conversation.String(), Seq: m.Seq, Sender: string(m.Sender), SenderDevice: string(m.SenderDevice),
		ClientMsgID: m.ClientMsgID.String(), Kind: string(m.Kind), Body: m.Body,
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

// MessageFrame is the live-push frame of a stored message (its latest state is not part of
// it: a live message is new).
func MessageFrame(m chat.Message) protocol.Frame {
	w := Message(m)
	return protocol.Frame{
		Type: protocol.TypeMessage, Conversation: w.Conversation, Seq: w.Seq, Sender: w.Sender,
		SenderDevice: w.SenderDevice, ClientMsgID: w.ClientMsgID, Kind: w.Kind, Body: w.Body, TargetSeq: w.TargetSeq,
		User: w.User, TS: w.TS,
	}
}

// Receipt is the frame telling members that user's devices have received (chat.ReceiptDelivered)
// or the user has read (chat.ReceiptRead) a conversation up to seq.
func Receipt(conv chat.ConversationID, seq int64, user chat.UserID, kind string, at time.Time) protocol.Frame {
	return protocol.Frame{Type: protocol.TypeReceipt, Conversation: conv.String(), Seq: seq,
		User: string(user), Kind: kind, TS: at.UnixMilli()}
}
