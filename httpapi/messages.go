package httpapi

import (
	"net/http"
	"strconv"

	"github.com/parleyhq/parley/delivery/ingest"
	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/wire"
	"github.com/parleyhq/parley/protocol"
	"github.com/parleyhq/parley/protocol/rest"
)

// MessagesJSON is a page of messages.
type MessagesJSON struct {
	Messages []protocol.Message `json:"messages"`
}

func (a *API) listMessages(w http.ResponseWriter, r *http.Request, _ auth.Identity) error {
	q := r.URL.Query()
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
	if hasBefore && hasAfter {
		return errorf(http.StatusBadRequest, protocol.CodeBadRequest, "give before or after, not both")
	}
	limit = min(limit, 200) // clamped; 0 means the default of 50
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
