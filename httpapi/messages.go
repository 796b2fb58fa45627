package httpapi

import (
	"net/http"
	"strconv"

	"github.com/parleyhq/parley/delivery/ingest"
	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/cursor"
	"github.com/parleyhq/parley/internal/wire"
	"github.com/parleyhq/parley/protocol"
	"github.com/parleyhq/parley/protocol/rest"
)

// MessagesJSON is a page of messages.
type MessagesJSON struct {
	Messages []protocol.Message `json:"messages"`
	// Next continues in the page's direction; absent when the page is not full (or reached
	// the first message the caller may see, paging backwards).
	Next string `json:"next,omitempty"`
}

// A messages page cursor is signed for the user and the conversation: "b<seq>" continues
// backwards before seq, "a<seq>" forwards after it.
func messagesScope(user chat.UserID, conv chat.ConversationID) cursor.Scope {
	return cursor.Scope{Purpose: cursor.PurposeMessages, User: user, Conversation: conv}
}

func (a *API) listMessages(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	q := r.URL.Query()
	scope := messagesScope(id.User, convOf(r))
	num := func(name string) (int64, bool, error) {
		v := q.Get(name)
		if v == "" {
			return 0, false, nil
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return 0, false, errorf(http.StatusBadRequest, protocol.CodeBadRequest, "%s must be a non-negative integer", name)
		}
		return n, true, nil
	}
	before, hasBefore, err := num("before")
	if err != nil {
		return err
	}
	after, hasAfter, err := num("after")
	if err != nil {
		return err
	}
	limit, _, err := num("limit")
	if err != nil {
		return err
	}
	if v := q.Get("cursor"); v != "" {
		if hasBefore || hasAfter {
			return errorf(http.StatusBadRequest, protocol.CodeBadRequest, "give cursor, before or after, not two of them")
		}
		b, err := a.cfg.Cursors.Open(scope, v)
		if err != nil {
			return err
		}
		n, perr := strconv.ParseInt(string(b[min(1, len(b)):]), 10, 64)
		if perr != nil || n < 0 || len(b) == 0 || (b[0] != 'a' && b[0] != 'b') {
			return errorf(http.StatusBadRequest, protocol.CodeBadRequest, "cursor is not one this API returned to you")
		}
		if b[0] == 'a' {
			after, hasAfter = n, true
		} else {
			before, hasBefore = n, true
		}
	}
	if hasBefore && hasAfter {
		return errorf(http.StatusBadRequest, protocol.CodeBadRequest, "give before or after, not both")
	}
	limit = min(limit, 200) // clamped; 0 means the default of 50
	full := int(limit)
	if full == 0 {
		full = 50
	}
	var page []chat.Message
	win := memberOf(r).Window()
	if hasAfter {
		page, err = a.store.After(r.Context(), convOf(r), win, after, int(limit))
	} else {
		if hasBefore && before == 0 {
			before = 1 // nothing is before seq 1
		}
		page, err = a.store.Before(r.Context(), convOf(r), win, before, int(limit))
	}
	if err != nil {
		return err
	}
	out := MessagesJSON{Messages: make([]protocol.Message, 0, len(page))}
	for _, m := range page {
		out.Messages = append(out.Messages, wire.Message(m))
	}
	if len(page) >= full {
		end := page[len(page)-1].Seq
		switch {
		case hasAfter:
			out.Next = a.cfg.Cursors.Seal(scope, strconv.AppendInt([]byte("a"), end, 10))
		case end > max(1, win.From):
			out.Next = a.cfg.Cursors.Seal(scope, strconv.AppendInt([]byte("b"), end, 10))
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

type postRequest struct {
	Body string `json:"body"`
}

func (a *API) postMessage(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	key := r.Header.Get("Idempotency-Key")
	cmid, err := chat.ParseClientMsgID(key) // the message's client_msg_id
	if err != nil {
		return errorf(http.StatusBadRequest, protocol.CodeBadRequest, "Idempotency-Key must be a UUID (it becomes the client_msg_id)")
	}
	var req postRequest
	if err := decodeJSON(r, int64(a.cfg.MaxBodyBytes)+1024, &req); err != nil {
		return err
	}
	if req.Body == "" {
		return errorf(http.StatusBadRequest, protocol.CodeBadRequest, "body is empty")
	}
	if len(req.Body) > a.cfg.MaxBodyBytes {
		return errorf(http.StatusRequestEntityTooLarge, protocol.CodeBodyTooLarge, "body over %d bytes", a.cfg.MaxBodyBytes)
	}
	now := a.now()
	device := id.Device
	if device == "" {
		device = "rest"
	}
	if err := a.pub.Publish(r.Context(), ingest.Entry{Conversation: convOf(r), Sender: id.User, SenderDevice: device,
		ClientMsgID: cmid, Body: req.Body, Kind: chat.MessageText, AcceptedAt: now}); err != nil {
		return &apiError{status: http.StatusServiceUnavailable, code: protocol.CodeUnavailable,
			msg: "message not accepted; retry with the same Idempotency-Key", retryAfter: 1}
	}
	writeJSON(w, http.StatusAccepted, rest.Accepted{Conversation: convOf(r).String(), ClientMsgID: cmid.String(),
		Kind: string(chat.MessageText), AcceptedAt: now.UnixMilli()})
	return nil
}
