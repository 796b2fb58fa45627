package delivery

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/parleyhq/parley/history"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/internal/routing"
)

// Membership: whether a membership event still applies when it is sequenced, what a projected
// event changes (the member list, the member's inbox row, the edges' caches), and whom an
// entry is for.

// rejection is a membership event that does not apply when it comes to be sequenced.
type rejection struct{ reason string }

func (r *rejection) Error() string { return "rejected: " + r.reason }

// errNotProjected: a membership event must be checked against the member list as the log
// leaves it, and the projector has not written the conversation's earlier entries yet. The
// sequencer retries (while Cassandra is down, membership changes wait; messages do not).
var errNotProjected = errors.New("earlier entries of the conversation are not projected yet")

// checkMembership decides whether a membership event still applies now, in sequence order:
// the edge and the API checked when they accepted it, but other changes may have been
// sequenced since. It reads the member list from Cassandra once every earlier entry of the
// conversation is projected.
func (w *Worker) checkMembership(ctx context.Context, ps *seqState, cs *convState, m chat.Message) error {
	if cs.head > 0 {
		floor, err := w.projectedFloor(ctx, ps.p)
		if err != nil {
			return err
		}
		if floor < cs.head {
			return fmt.Errorf("%s: %w", m.Kind, errNotProjected)
		}
	}
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

// applyEffects folds a projected event into the state it changes. Idempotent: the projector
// may apply it again after a crash, and the reconciler after a repair.
func (w *Worker) applyEffects(ctx context.Context, m chat.Message) error {
	switch {
	case m.Kind.TargetsMessage():
		return w.store.ApplyEvent(ctx, m)
	case m.Kind.Membership():
		if m.Kind == chat.MessageMemberAdded {
			// The new member's inbox row first, so that once the member list lets them read
			// the conversation it is in their inbox too (corrected below if the addition turns
			// out to be a replay that no longer applies).
			if err := w.inbox.ApplyMembership(ctx, m, history.Member{User: m.TargetUser, JoinedSeq: m.Seq}); err != nil {
				return err
			}
		}
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

// withLeaver is users plus, for a removal or leaving, the member who is out (their devices
// learn it, their inbox row records it).
// membersAt is the current members who were already members at seq: the inbox rows an entry
// at seq belongs in. During a live projection they are the current members (entries come in
// order); during a replay (reproject, the reconciler) a member who left and came back since
// must not get an entry of the time they were out (their row would preview a message they
// may not see).
func membersAt(ms []history.Member, seq int64) []chat.UserID {
	users := make([]chat.UserID, 0, len(ms))
	for _, m := range ms {
		if m.Active() && m.JoinedSeq <= seq {
			users = append(users, m.User)
		}
	}
	return users
}

func withLeaver(users []chat.UserID, m chat.Message) []chat.UserID {
	if (m.Kind == chat.MessageMemberRemoved || m.Kind == chat.MessageMemberLeft) && !slices.Contains(users, m.TargetUser) {
		return append(slices.Clip(users), m.TargetUser)
	}
	return users
}

// memberCache is a partition's fan-out view of its conversations' members: read from
// Cassandra, kept membersTTL, followed through the membership events the fan-out sees in the
// log, and used up to membersStale old while Cassandra cannot answer, so live push goes on
// during an outage.
type memberCache struct {
	entries map[chat.ConversationID]cachedMembers
}

type cachedMembers struct {
	users []chat.UserID
	at    time.Time
}

// membersTTL bounds how stale the member list used for live fan-out is while Cassandra
// answers; membersStale how stale it may get while Cassandra does not. Live push is best
// effort; a member added a moment ago catches up through sync.
const (
	membersTTL   = 5 * time.Second
	membersStale = 10 * time.Minute
)

// members returns the conversation's current members.
func (w *Worker) members(ctx context.Context, mc *memberCache, conv chat.ConversationID) ([]chat.UserID, error) {
	c, ok := mc.entries[conv]
	if ok && w.now().Sub(c.at) < membersTTL {
		return c.users, nil
	}
	users, err := w.store.ActiveMembers(ctx, conv)
	if err != nil {
		if ok && w.now().Sub(c.at) < membersStale {
			return c.users, nil
		}
		return nil, err
	}
	mc.entries[conv] = cachedMembers{users: users, at: w.now()}
	return users, nil
}

// follow applies a membership event seen in the log to the cached member list, so fan-out
// follows membership exactly even while the list cannot be read again.
func (mc *memberCache) follow(m chat.Message) {
	c, ok := mc.entries[m.Conversation]
	if !ok || !m.Kind.Membership() {
		return
	}
	users := slices.DeleteFunc(slices.Clone(c.users), func(u chat.UserID) bool { return u == m.TargetUser })
	if m.Kind == chat.MessageMemberAdded {
		users = append(users, m.TargetUser)
	}
	mc.entries[m.Conversation] = cachedMembers{users: users, at: c.at}
}
