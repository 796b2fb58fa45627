package wire

import (
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/protocol"
)

// SyncRequest reads a sync frame (already validated by the protocol codec).
func SyncRequest(f protocol.Frame) (chat.SyncRequest, *protocol.Error) {
	req := chat.SyncRequest{Since: f.Since, Limit: f.Limit, Cursors: make(map[chat.ConversationID]int64, len(f.Cursors))}
	for _, c := range f.Cursors {
		id, err := chat.ParseConversationID(c.Conversation)
		if err != nil {
			return chat.SyncRequest{}, protocol.Errorf(protocol.CodeBadRequest, "cursor conversation is not a UUID")
		}
		req.Cursors[id] = c.Seq
	}
	return req, nil
}

// SyncResult is the sync.result frame of one page (the caller sets its id).
func SyncResult(res chat.SyncResult) protocol.Frame {
	out := protocol.Frame{Type: protocol.TypeSyncResult, Since: res.Since, More: res.More,
		Conversations: make([]protocol.Conversation, 0, len(res.Conversations)),
		Messages:      make([]protocol.Message, 0, len(res.Messages))}
	for _, p := range res.Conversations {
		out.Conversations = append(out.Conversations, protocol.Conversation{Conversation: p.Conversation.String(),
			LastSeq: p.LastSeq, ReadSeq: p.ReadSeq, Unread: p.Unread, Peer: string(p.Peer)})
	}
	for _, m := range res.Messages {
		out.Messages = append(out.Messages, Message(m))
	}
	return out
}
