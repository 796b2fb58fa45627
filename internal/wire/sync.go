package wire

import (
	"unicode/utf8"

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

// messageOverhead bounds the bytes of a message's JSON that MessageBytes does not count
// string by string: the braces, every field name and separator, two UUIDs and five
// integers of up to 20 characters.
const messageOverhead = 2 + len(`"conversation":"",`) + 36 + len(`"seq":,`) + 20 + len(`"sender":"",`) +
	len(`"sender_device":"",`) + len(`"client_msg_id":"",`) + 36 + len(`"kind":"",`) + len(`"body":"",`) +
	len(`"target_seq":,`) + 20 + len(`"user":"",`) + len(`"ts":,`) + 20 + len(`"edited_seq":,`) + 20 +
	len(`"deleted":true,`) + len(`"reactions":[],`)

// MessageBytes is at least the size of m's JSON in a sync.result (Message(m) as encoding/json
// writes it), and within messageOverhead of it: sync pages are bounded in bytes with it
// (chat.SyncRequest.Size) without encoding every message twice.
func MessageBytes(m chat.Message) int {
	n := messageOverhead + jsonStringBytes(string(m.Sender)) + jsonStringBytes(string(m.SenderDevice)) +
		jsonStringBytes(string(m.Kind)) + jsonStringBytes(m.Body) + jsonStringBytes(string(m.TargetUser))
	for _, r := range m.Reactions {
		n += len(`{"emoji":"","users":[]},`) + jsonStringBytes(r.Emoji)
		for _, u := range r.Users {
			n += len(`"",`) + jsonStringBytes(string(u))
		}
	}
	return n
}

// jsonStringBytes bounds the bytes of s inside a JSON string as encoding/json writes it:
// quotes and backslashes take two bytes; control characters, '<', '>' and '&' (escaped for
// HTML), U+2028, U+2029 and each byte of invalid UTF-8 take six.
func jsonStringBytes(s string) int {
	n := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			switch {
			case b < 0x20 || b == '<' || b == '>' || b == '&':
				n += 6
			case b == '"' || b == '\\':
				n += 2
			default:
				n++
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			n += 6
		case r == '\u2028' || r == '\u2029':
			n += 6
		default:
			n += size
		}
		i += size
	}
	return n
}
