package inbox

import (
	"context"
	"fmt"

	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/protocol"
)

// MaxWatchTargets bounds the users one presence check may name (the protocol's limit per
// presence.subscribe frame and the REST presence query's): a target who shares no direct
// conversation with the watcher costs a read of the target's inbox partition.
const MaxWatchTargets = protocol.MaxUsersPerCall

// WatchPolicy decides whose presence a user may watch: the users they share a conversation
// with, or, with Anyone, everybody.
type WatchPolicy struct {
	inbox  *Inbox
	anyone bool
}

// WatchPolicy returns the presence policy on this inbox; anyone lets every user watch every
// other.
func (in *Inbox) WatchPolicy(anyone bool) WatchPolicy { return WatchPolicy{inbox: in, anyone: anyone} }

// Refused returns the targets watcher may not watch. It reads the watcher's inbox once (the
// conversation rows only, no unread counts); a target with a direct conversation in it needs
// nothing more, any other one read of their own inbox rows (at most MaxWatchTargets).
func (p WatchPolicy) Refused(ctx context.Context, watcher chat.UserID, targets []chat.UserID) ([]chat.UserID, error) {
	if p.anyone {
		return nil, nil
	}
	if len(targets) > MaxWatchTargets {
		return nil, fmt.Errorf("%w: %d users, at most %d per presence check", chat.ErrInvalid, len(targets), MaxWatchTargets)
	}
	mine, err := p.inbox.current(ctx, watcher)
	if err != nil {
		return nil, err
	}
	shared := make(map[chat.ConversationID]bool, len(mine))
	for _, e := range mine {
		shared[e.Conversation] = true
	}
	var refused []chat.UserID
	for _, t := range targets {
		if t == watcher || shared[chat.DirectConversationID(watcher, t)] {
			continue
		}
		theirs, err := p.inbox.current(ctx, t)
		if err != nil {
			return nil, err
		}
		ok := false
		for _, e := range theirs {
			if shared[e.Conversation] {
				ok = true
				break
			}
		}
		if !ok {
			refused = append(refused, t)
		}
	}
	return refused, nil
}
