package httpapi

import (
	"context"
	"net/http"

	"github.com/parleyhq/parley/history"
	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/protocol"
	"github.com/parleyhq/parley/protocol/rest"
)

type createRequest struct {
	Kind    string   `json:"kind"`
	With    string   `json:"with,omitempty"`
	Title   string   `json:"title,omitempty"`
	Members []string `json:"members,omitempty"`
}

func (a *API) createConversation(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	var req createRequest
	if err := decodeJSON(r, 64<<10, &req); err != nil {
		return err
	}
	var (
		conv    chat.ConversationID
		created = true
		err     error
	)
	switch req.Kind {
	case string(chat.KindDirect):
		other, perr := chat.ParseUserID(req.With)
		if perr != nil {
			return errorf(http.StatusBadRequest, protocol.CodeBadRequest, "with: %v", perr)
		}
		if conv, created, err = a.store.CreateDirect(r.Context(), id.User, other, a.now()); err == nil {
			// Every time, also when it existed: it repairs a creation that stopped half-way.
			err = a.inbox.Add(r.Context(), history.Conversation{ID: conv, Kind: chat.KindDirect}, []chat.UserID{id.User, other}, a.now())
		}
	case string(chat.KindGroup):
		if len(req.Title) > 256 {
			return errorf(http.StatusBadRequest, protocol.CodeBadRequest, "title over 256 bytes")
		}
		members := make([]chat.UserID, 0, len(req.Members))
		for _, m := range req.Members {
			u, perr := chat.ParseUserID(m)
			if perr != nil {
				return errorf(http.StatusBadRequest, protocol.CodeBadRequest, "members: %v", perr)
			}
			members = append(members, u)
		}
		if conv, err = a.store.CreateGroup(r.Context(), id.User, req.Title, members, a.now()); err == nil {
			err = a.inbox.Add(r.Context(), history.Conversation{ID: conv, Kind: chat.KindGroup, Title: req.Title},
				append([]chat.UserID{id.User}, members...), a.now())
		}
	default:
		return errorf(http.StatusBadRequest, protocol.CodeBadRequest, `kind must be "direct" or "group"`)
	}
	if err != nil {
		return err
	}
	out, err := a.conversationJSON(r.Context(), conv)
	if err != nil {
		return err
	}
	status := http.StatusCreated
	if !created {
		status = http.StatusOK
	}
	w.Header().Set("Location", "/v1/conversations/"+conv.String())
	writeJSON(w, status, out)
	return nil
}

func (a *API) conversationJSON(ctx context.Context, conv chat.ConversationID) (rest.Conversation, error) {
	c, err := a.store.Conversation(ctx, conv)
	if err != nil {
		return rest.Conversation{}, err
	}
	last, err := a.store.LastSeq(ctx, conv)
	if err != nil {
		return rest.Conversation{}, err
	}
	ms, err := a.store.Members(ctx, conv)
	if err != nil {
		return rest.Conversation{}, err
	}
	out := rest.Conversation{ID: conv.String(), Kind: string(c.Kind), Title: c.Title, CreatedBy: string(c.CreatedBy),
		CreatedAt: c.CreatedAt.UnixMilli(), LastSeq: last, Members: []rest.Member{}}
	for _, m := range ms {
		if m.Active() {
			out.Members = append(out.Members, rest.Member{User: string(m.User), Role: string(m.Role)})
		}
	}
	return out, nil
}

func (a *API) getConversation(w http.ResponseWriter, r *http.Request, _ auth.Identity) error {
	out, err := a.conversationJSON(r.Context(), convOf(r))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
