package wire

import (
	"unicode/utf8"

	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/protocol"
)

// SyncRequest reads a sync frame (already validated by the protocol codec).
func SyncRequest(f protocol.Frame) (chat.SyncRequest, *protocol.Error) {
	req := chat.SyncRequest{Since: f.Since, Page: f.Page, Limit: f.Limit, Cursors: make(map[chat.ConversationID]int64, len(f.Cursors))}
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
	out := protocol.Frame{Type: protocol.TypeSyncResult, Since: res.Since, Page: res.Page, More: res.More,
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

// tokenBytes bounds a since or page token the server writes: a key id of at most 32
// characters, a payload of at most 40 bytes in base64url (54 characters), a 16-byte MAC (22),
// two dots; none needs escaping in JSON.
const tokenBytes = 32 + 1 + 54 + 1 + 22

// syncResultOverhead bounds what a sync.result frame has besides its entries, its messages and
// its id: the braces, the field names, the since and page tokens, the brackets and more.
const syncResultOverhead = 2 + len(`"type":"sync.result",`) + len(`"id":"",`) + len(`"since":"",`) + tokenBytes +
	len(`"page":"",`) + tokenBytes + len(`"messages":[],`) + len(`"conversations":[],`) + len(`"more":true`)

// SyncResultOverhead bounds the bytes of a sync.result answering the request id that are
// neither entries (ConversationBytes) nor messages (MessageBytes): the edge bounds a whole
// page with it.
func SyncResultOverhead(id string) int { return syncResultOverhead + jsonStringBytes(id) }

// conversationOverhead bounds the bytes of an entry's JSON besides its peer: the braces, every
// field name and separator (one more comma, the one between entries), a UUID and three
// integers of up to 20 characters.
const conversationOverhead = 2 + len(`"conversation":"",`) + 36 + len(`"last_seq":,`) + 20 + len(`"read_seq":,`) + 20 +
	len(`"unread":,`) + 20 + len(`"peer":"",`)

// ConversationBytes is at least the size of p's JSON in a sync.result, whatever its counts:
// sync pages count their entries with it (chat.SyncRequest.EntrySize).
func ConversationBytes(p chat.Progress) int {
	return conversationOverhead + jsonStringBytes(string(p.Peer))
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
