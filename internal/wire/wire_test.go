package wire

import (
	"context"
	"errors"
	"fmt"
	"net/http"
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
