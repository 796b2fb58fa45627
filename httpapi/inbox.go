package httpapi

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/parleyhq/parley/inbox"
	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/cursor"
	"github.com/parleyhq/parley/internal/routing"
	"github.com/parleyhq/parley/internal/wire"
	"github.com/parleyhq/parley/protocol"
	"github.com/parleyhq/parley/protocol/rest"
)

func (a *API) listConversations(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	limit := 50
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return errorf(http.StatusBadRequest, protocol.CodeBadRequest, "limit must be a non-negative integer")
		}
		if n > 0 {
			limit = min(n, 200)
		}
	}
	scope := cursor.Scope{Purpose: cursor.PurposeInbox, User: id.User}
	var after inbox.Position
	if v := r.URL.Query().Get("cursor"); v != "" {
		b, err := a.cfg.Cursors.Open(scope, v)
		if err != nil {
			return err
		}
		if after, err = parsePosition(string(b)); err != nil {
			return errorf(http.StatusBadRequest, protocol.CodeBadRequest, "cursor is not one this API returned to you")
		}
	}
	entries, more, err := a.inbox.Page(r.Context(), id.User, after, limit)
	if err != nil {
		return err
	}
	out := rest.Inbox{Conversations: []rest.InboxEntry{}}
	for _, e := range entries {
		out.Conversations = append(out.Conversations, rest.InboxEntry{ID: e.Conversation.String(), Kind: string(e.Kind),
			Title: e.Title, Peer: string(e.Peer), LastSeq: e.LastSeq, ReadSeq: e.ReadSeq, Unread: e.Unread, LastAt: e.LastAt.UnixMilli(),
			LastSender: string(e.LastSender), LastPreview: e.Preview})
	}
	if more {
		out.Next = a.cfg.Cursors.Seal(scope, []byte(formatPosition(inbox.PositionOf(entries[len(entries)-1]))))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// An inbox cursor's payload is the position of the page's last entry: "<last activity, Unix
// milliseconds>:<conversation id>" (sealed by internal/cursor, so clients never see it bare).
func formatPosition(p inbox.Position) string {
	return strconv.FormatInt(p.At.UnixMilli(), 10) + ":" + p.Conversation.String()
}

func parsePosition(s string) (inbox.Position, error) {
	ms, id, ok := strings.Cut(s, ":")
	if !ok {
		return inbox.Position{}, errors.New("no separator")
	}
	n, err := strconv.ParseInt(ms, 10, 64)
	if err != nil {
		return inbox.Position{}, err
	}
	conv, err := chat.ParseConversationID(id)
	if err != nil {
		return inbox.Position{}, err
	}
	return inbox.Position{At: time.UnixMilli(n), Conversation: conv}, nil
}

type readRequest struct {
	Seq int64 `json:"seq"`
}

// ReadJSON answers a read: the read position after it.
type ReadJSON struct {
	ReadSeq int64 `json:"read_seq"`
}

func (a *API) markRead(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	var req readRequest
	if err := decodeJSON(r, 1024, &req); err != nil {
		return err
	}
	if req.Seq < 1 {
		return errorf(http.StatusBadRequest, protocol.CodeBadRequest, "seq must be at least 1")
	}
	read, moved, err := a.inbox.MarkRead(r.Context(), id.User, convOf(r), req.Seq)
	if err != nil {
		return err
	}
	if moved && a.live != nil {
		a.pushReadReceipt(r.Context(), convOf(r), id.User, read)
	}
	writeJSON(w, http.StatusOK, ReadJSON{ReadSeq: read})
	return nil
}

// pushReadReceipt tells the members' devices, the reader's own included, that reader has read
// up to seq. Best effort: sync carries read positions too.
func (a *API) pushReadReceipt(ctx context.Context, conv chat.ConversationID, reader chat.UserID, seq int64) {
	to, err := a.store.ActiveMembers(ctx, conv)
	if err != nil {
		return
	}
	data, err := protocol.Encode(wire.Receipt(conv, seq, reader, chat.ReceiptRead, a.now()))
	if err != nil {
		return
	}
	routing.Publish(a.live, to, string(protocol.TypeReceipt), data)
}
