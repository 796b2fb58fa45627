package delivery

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/routing"
)

// Membership effects: whether a membership event still applies when it is sequenced, what a
// stored event changes (message state, the member list, the member's inbox row), and whom an
// entry is for (the cached member list).

// rejection is a membership event that does not apply when it comes to be sequenced.
type rejection struct{ reason string }

func (r *rejection) Error() string { return "rejected: " + r.reason }

// checkMembership decides whether a membership event still applies now, in sequence order:
// the edge and the API checked when they accepted it, but other changes may have been
// sequenced since.
func (w *Worker) checkMembership(ctx context.Context, m chat.Message) error {
	mem, err := w.store.Member(ctx, m.Conversation, m.TargetUser)
	in := err == nil && mem.Active()
	if err != nil && !errors.Is(err, chat.ErrNotFound) {
		return err
	}
	switch {
	case m.Kind == chat.MessageMemberAdded && in:
		return &rejection{"already a member"}
	case m.Kind != chat.MessageMemberAdded && !in:
		return &rejection{"not a member"}
	case m.Kind == chat.MessageMemberAdded:
		active, err := w.store.ActiveMembers(ctx, m.Conversation)
		if err != nil {
			return err
		}
		if len(active) >= w.store.MaxMembers() {
			return &rejection{"the group is full"}
		}
	}
	return nil
}

// applyEffects folds a stored event into the state it changes. Idempotent: it runs again when
// a redelivery finds the event stored.
func (w *Worker) applyEffects(ctx context.Context, ps *partitionState, m chat.Message) error {
	switch {
	case m.Kind.TargetsMessage():
		return w.store.ApplyEvent(ctx, m)
	case m.Kind.Membership():
		delete(ps.members, m.Conversation) // the next fan-out reads the new member list
		mem, err := w.store.ApplyMembership(ctx, m)
		if err != nil {
			return err
		}
		if err := w.inbox.ApplyMembership(ctx, m, mem); err != nil {
			return err
		}
		// Edges cache membership answers: tell them (best effort; their TTL bounds the rest).
		_ = w.nc.Publish(routing.MembershipSubject(m.Conversation.String()), nil)
	}
	return nil
}

// recipients are the users an entry is for: the current members, and for a removal or leaving
// also the member who is out (their devices learn it, their inbox row records it).
func (w *Worker) recipients(ctx context.Context, ps *partitionState, m chat.Message) ([]chat.UserID, error) {
	users, err := w.memberList(ctx, ps, m.Conversation)
	if err != nil {
		return nil, err
	}
	if m.Kind == chat.MessageMemberRemoved || m.Kind == chat.MessageMemberLeft {
		users = append(slices.Clip(users), m.TargetUser)
	}
	return users, nil
}

type cachedMembers struct {
	users []chat.UserID
	at    time.Time
}

// membersTTL bounds how stale the member list used for live fan-out may be. Live push is best
// effort; a member added a moment ago catches up through sync.
const membersTTL = 5 * time.Second

func (w *Worker) memberList(ctx context.Context, ps *partitionState, conv chat.ConversationID) ([]chat.UserID, error) {
	if c, ok := ps.members[conv]; ok && w.now().Sub(c.at) < membersTTL {
		return c.users, nil
	}
	users, err := w.store.ActiveMembers(ctx, conv)
	if err != nil {
		return nil, err
	}
	ps.members[conv] = cachedMembers{users: users, at: w.now()}
	return users, nil
}
