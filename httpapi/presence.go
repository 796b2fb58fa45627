package httpapi

import (
	"context"
	"net/http"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/protocol"
)

// PresenceReader reads users' presence (presence.Presence).
type PresenceReader interface {
	States(ctx context.Context, users []chat.UserID) []protocol.PresenceState
}

// WatchPolicy decides whose presence a user may see (inbox.WatchPolicy, as for the edge).
type WatchPolicy interface {
	Refused(ctx context.Context, watcher chat.UserID, targets []chat.UserID) ([]chat.UserID, error)
}

// EnablePresence serves GET /v1/presence from r under policy. Call before serving.
func (a *API) EnablePresence(r PresenceReader, policy WatchPolicy) { a.presence, a.policy = r, policy }

// MaxPresenceUsers bounds one presence query (as one presence.subscribe frame).
const MaxPresenceUsers = protocol.MaxUsersPerCall

// PresenceJSON answers GET /v1/presence.
type PresenceJSON struct {
	Presence []protocol.PresenceState `json:"presence"`
}

func (a *API) getPresence(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	if a.presence == nil {
		return &apiError{status: http.StatusServiceUnavailable, code: protocol.CodeUnavailable, msg: "presence is not served here", retryAfter: 5}
	}
	names := r.URL.Query()["user"]
	if len(names) == 0 || len(names) > MaxPresenceUsers {
		return errorf(http.StatusBadRequest, protocol.CodeBadRequest, "give 1 to %d user parameters", MaxPresenceUsers)
	}
	users := make([]chat.UserID, 0, len(names))
	for _, n := range names {
		u, err := chat.ParseUserID(n)
		if err != nil {
			return errorf(http.StatusBadRequest, protocol.CodeBadRequest, "user: %v", err)
		}
		users = append(users, u)
	}
	refused, err := a.policy.Refused(r.Context(), id.User, users)
	if err != nil {
		return err
	}
	if len(refused) > 0 {
		return errorf(http.StatusForbidden, protocol.CodeForbidden, "you may not see the presence of %s (you share no conversation)", refused[0])
	}
	writeJSON(w, http.StatusOK, PresenceJSON{Presence: a.presence.States(r.Context(), users)})
	return nil
}
