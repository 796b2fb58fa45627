package wire

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/breaker"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/protocol"
)

// The one error table: each domain error gets its code and the status of that code, wrapped
// or not; anything unknown is a retryable unavailable.
func TestMap(t *testing.T) {
	cases := []struct {
		err        error
		code       protocol.Code
		status     int
		retryAfter time.Duration
	}{
		{fmt.Errorf("read: %w", chat.ErrNotFound), protocol.CodeNotFound, http.StatusNotFound, 0},
		{fmt.Errorf("%w: bad since", chat.ErrInvalid), protocol.CodeBadRequest, http.StatusBadRequest, 0},
		{fmt.Errorf("%w: 1001 members", chat.ErrTooManyMembers), protocol.CodeBadRequest, http.StatusBadRequest, 0},
		{fmt.Errorf("%w: empty", chat.ErrInvalidID), protocol.CodeBadRequest, http.StatusBadRequest, 0},
		{chat.ErrInvalidConversation, protocol.CodeBadRequest, http.StatusBadRequest, 0},
		{chat.ErrInvalidClientMsgID, protocol.CodeBadRequest, http.StatusBadRequest, 0},
		{fmt.Errorf("%w: cassandra (circuit open)", breaker.ErrUnavailable), protocol.CodeUnavailable, http.StatusServiceUnavailable, storageRetryAfter},
		{fmt.Errorf("query: %w", context.DeadlineExceeded), protocol.CodeUnavailable, http.StatusServiceUnavailable, timeoutRetryAfter},
		{errors.New("gocql: no hosts available"), protocol.CodeUnavailable, http.StatusServiceUnavailable, storageRetryAfter},
		{protocol.Errorf(protocol.CodeForbidden, "no"), protocol.CodeForbidden, http.StatusForbidden, 0},
	}
	for _, c := range cases {
		got := Map(c.err)
		if got.Code != c.code || got.Status != c.status || got.RetryAfter != c.retryAfter || got.Message == "" {
			t.Errorf("Map(%v) = %+v; want code %s, status %d, retry after %v and a message", c.err, got, c.code, c.status, c.retryAfter)
		}
		if pe := ProtocolError(c.err); pe.Code != c.code {
			t.Errorf("ProtocolError(%v) = %v; want code %s", c.err, pe, c.code)
		}
	}
	// An unknown error's text (driver details) is not shown to the client.
	if got := Map(errors.New("secret host 10.0.0.7 down")); got.Message != "storage unavailable; retry later" {
		t.Errorf("unknown error shown as %q", got.Message)
	}
}

// Every protocol code has a status, and retryable codes are 5xx or 429.
func TestStatusOfEveryCode(t *testing.T) {
	for _, c := range protocol.Codes {
		s := Status(c)
		if s < 400 || s > 599 {
			t.Errorf("Status(%s) = %d", c, s)
		}
		if c.Retryable() != (s >= 500 || s == http.StatusTooManyRequests) {
			t.Errorf("Status(%s) = %d but retryable is %v", c, s, c.Retryable())
		}
	}
}

// A stored message keeps every field on the wire, and the sync mapping carries unread and the
// peer.
func TestMessageAndSync(t *testing.T) {
	conv := chat.NewConversationID()
	cmid := chat.NewClientMsgID()
	m := chat.Message{Conversation: conv, Seq: 7, Kind: chat.MessageText, Sender: "alice", SenderDevice: "phone",
		ClientMsgID: cmid, Body: "hi", CreatedAt: time.UnixMilli(1_800_000_000_000), EditedSeq: 9,
		Reactions: []chat.Reaction{{Emoji: "👍", Users: []chat.UserID{"bob"}}}}
	w := Message(m)
	if w.Conversation != conv.String() || w.Seq != 7 || w.ClientMsgID != cmid.String() || w.TS != 1_800_000_000_000 ||
		w.EditedSeq != 9 || len(w.Reactions) != 1 || w.Reactions[0].Users[0] != "bob" {
		t.Errorf("Message = %+v", w)
	}
	if f := MessageFrame(m); f.Type != protocol.TypeMessage || f.Seq != 7 || f.Body != "hi" {
		t.Errorf("MessageFrame = %+v", f)
	}
	res := SyncResult(chat.SyncResult{Conversations: []chat.Progress{{Conversation: conv, LastSeq: 10, ReadSeq: 4, Unread: 2, Peer: "bob"}},
		Messages: []chat.Message{m}, More: true, Since: "tok"})
	if res.Type != protocol.TypeSyncResult || len(res.Conversations) != 1 || res.Conversations[0].Unread != 2 || res.Conversations[0].Peer != "bob" ||
		len(res.Messages) != 1 || !res.More || res.Since != "tok" {
		t.Errorf("SyncResult = %+v", res)
	}
	req, perr := SyncRequest(protocol.Frame{Since: "tok", Limit: 5, Cursors: []protocol.Cursor{{Conversation: conv.String(), Seq: 3}}})
	if perr != nil || req.Cursors[conv] != 3 || req.Limit != 5 || req.Since != "tok" {
		t.Errorf("SyncRequest = %+v, %v", req, perr)
	}
	if _, perr := SyncRequest(protocol.Frame{Cursors: []protocol.Cursor{{Conversation: "nope"}}}); perr == nil || perr.Code != protocol.CodeBadRequest {
		t.Errorf("bad cursor: %v; want bad_request", perr)
	}
}

// MessageBytes is never below the size of the message's JSON, and close above it, for text
// that JSON escapes (HTML characters, controls, quotes, U+2028, invalid UTF-8) or not.
func TestMessageBytesBoundsTheJSON(t *testing.T) {
	bodies := map[string]string{
		"empty":   "",
		"ascii":   "Hello, Bob",
		"html":    strings.Repeat("<a href=\"x\">&</a>", 100),
		"control": "\x00\x01\b\f\n\r\t\x1f",
		"quotes":  `"\"\\`,
		"unicode": "héllo 👍 世界 \u2028\u2029",
		"invalid": "a\xffb\xc3(c\xed\xa0\x80",
	}
	for name, body := range bodies {
		m := chat.Message{Conversation: chat.NewConversationID(), Seq: 1 << 40, Kind: chat.MessageText, Sender: "alice<>",
			SenderDevice: "phone&", ClientMsgID: chat.NewClientMsgID(), Body: body, TargetSeq: 1 << 50, TargetUser: "bob",
			CreatedAt: time.UnixMilli(1_800_000_000_000), EditedSeq: 1 << 60, Deleted: true,
			Reactions: []chat.Reaction{{Emoji: "👍", Users: []chat.UserID{"bob", "carol\u2028"}}, {Emoji: "<3", Users: []chat.UserID{"dave"}}}}
		for _, m := range []chat.Message{m, {Body: body}} {
			data, err := json.Marshal(Message(m))
			if err != nil {
				t.Fatal(err)
			}
			got := MessageBytes(m)
			if got < len(data) || got > len(data)+messageOverhead {
				t.Errorf("%s: MessageBytes = %d for %d bytes of JSON; want between %d and %d", name, got, len(data), len(data), len(data)+messageOverhead)
			}
		}
	}
}

// A whole sync.result is within SyncResultOverhead plus its entries' ConversationBytes and
// its messages' MessageBytes, whatever the counts, peers, tokens and id.
func TestSyncResultBytesBoundTheFrame(t *testing.T) {
	keyID := strings.Repeat("k", 32) // the longest key id a token can carry
	token := func(payload int) string {
		return keyID + "." + strings.Repeat("A", (payload*8+5)/6) + "." + strings.Repeat("B", 22)
	}
	peers := []chat.UserID{"", "bob", "<&>\u2028\"\\", chat.UserID(strings.Repeat("p", 128))}
	for _, id := range []string{"", "r1", strings.Repeat("<", protocol.MaxIDBytes)} {
		res := chat.SyncResult{Since: token(8), Page: token(40), More: true}
		bound := SyncResultOverhead(id)
		for i, p := range peers {
			e := chat.Progress{Conversation: chat.NewConversationID(), LastSeq: 1<<63 - 1, ReadSeq: -1 << 63, Unread: -1 << 63, Peer: p}
			if i == 0 {
				e = chat.Progress{Conversation: chat.NewConversationID()}
			}
			res.Conversations = append(res.Conversations, e)
			bound += ConversationBytes(e)
			m := chat.Message{Conversation: e.Conversation, Seq: 1, Kind: chat.MessageText, Sender: "alice", Body: string(p)}
			res.Messages = append(res.Messages, m)
			bound += MessageBytes(m)
		}
		f := SyncResult(res)
		f.ID = id
		data, err := protocol.Encode(f)
		if err != nil {
			t.Fatal(err)
		}
		if len(data) > bound {
			t.Errorf("id %q: sync.result of %d bytes; the bound says %d", id, len(data), bound)
		}
		one, _ := json.Marshal(SyncResult(chat.SyncResult{Conversations: res.Conversations[3:]}).Conversations[0])
		if got := ConversationBytes(res.Conversations[3]); got < len(one) || got > len(one)+conversationOverhead {
			t.Errorf("ConversationBytes = %d for %d bytes of JSON", got, len(one))
		}
	}
}
