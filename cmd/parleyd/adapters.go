package main

import (
	"context"
	"errors"

	"github.com/parleyhq/parley/edge"
	"github.com/parleyhq/parley/history"
	"github.com/parleyhq/parley/inbox"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/presence"
	"github.com/parleyhq/parley/protocol"
)

// inboxAdapter serves the edge's sync and read frames from the inbox and history stores, and
// maps their errors to protocol codes (one table: toProtocolError).
type inboxAdapter struct {
	inbox   *inbox.Inbox
	history *history.Store
}

var (
	_ edge.Syncer = inboxAdapter{}
	_ edge.Reader = inboxAdapter{}
	_ edge.Acker  = inboxAdapter{}
)

func toProtocolError(err error) *protocol.Error {
	switch {
	case errors.Is(err, history.ErrNotFound):
		return protocol.Errorf(protocol.CodeNotFound, "no such conversation")
	case errors.Is(err, inbox.ErrInvalid), errors.Is(err, history.ErrInvalid):
		return protocol.Errorf(protocol.CodeBadRequest, "%v", err)
	}
	return protocol.Errorf(protocol.CodeUnavailable, "storage unavailable; retry")
}

func (a inboxAdapter) Sync(ctx context.Context, user chat.UserID, f protocol.Frame) (protocol.Frame, *protocol.Error) {
	req := inbox.SyncRequest{Since: f.Since, Limit: f.Limit, Cursors: map[chat.ConversationID]int64{}}
	for _, c := range f.Cursors {
		id, err := chat.ParseConversationID(c.Conversation)
		if err != nil {
			return protocol.Frame{}, protocol.Errorf(protocol.CodeBadRequest, "cursor conversation is not a UUID")
		}
		req.Cursors[id] = c.Seq
	}
	res, err := a.inbox.Sync(ctx, user, req)
	if err != nil {
		return protocol.Frame{}, toProtocolError(err)
	}
	out := protocol.Frame{Since: res.Since, More: res.More,
		Conversations: make([]protocol.Conversation, 0, len(res.Conversations)),
		Messages:      make([]protocol.Message, 0, len(res.Messages))}
	for _, e := range res.Conversations {
		out.Conversations = append(out.Conversations, protocol.Conversation{Conversation: e.Conversation.String(),
			LastSeq: e.LastSeq, ReadSeq: e.ReadSeq, Unread: e.Unread()})
	}
	for _, m := range res.Messages {
		out.Messages = append(out.Messages, history.WireMessage(m))
	}
	return out, nil
}

func (a inboxAdapter) Ack(ctx context.Context, user chat.UserID, device chat.DeviceID, conv chat.ConversationID, seq int64) (edge.Position, *protocol.Error) {
	delivered, moved, err := a.inbox.Ack(ctx, user, device, conv, seq)
	if err != nil {
		return edge.Position{}, toProtocolError(err)
	}
	res := edge.Position{Seq: delivered, Moved: moved}
	if moved {
		res.Notify = a.activeMembers(ctx, conv, user)
	}
	return res, nil
}

// activeMembers lists the current members but except (best effort: on error, nobody; the
// receipts are then skipped and sync repairs).
func (a inboxAdapter) activeMembers(ctx context.Context, conv chat.ConversationID, except chat.UserID) []chat.UserID {
	members, err := a.history.Members(ctx, conv)
	if err != nil {
		return nil
	}
	var out []chat.UserID
	for _, m := range members {
		if m.Active() && m.User != except {
			out = append(out, m.User)
		}
	}
	return out
}

func (a inboxAdapter) MarkRead(ctx context.Context, user chat.UserID, conv chat.ConversationID, seq int64) (edge.Position, *protocol.Error) {
	read, moved, err := a.inbox.MarkRead(ctx, user, conv, seq)
	if err != nil {
		return edge.Position{}, toProtocolError(err)
	}
	res := edge.Position{Seq: read, Moved: moved}
	if moved {
		// The reader's own other devices learn the new position too.
		res.Notify = append(a.activeMembers(ctx, conv, user), user)
	}
	return res, nil
}

// watchPolicy is the default presence policy: a user may watch the users they share a
// conversation with (one inbox read for the watcher, one per target), or anyone.
type watchPolicy struct {
	inbox  *inbox.Inbox
	anyone bool
}

var (
	_ edge.WatchPolicy = watchPolicy{}
	_ edge.Presence    = (*presence.Presence)(nil)
)

func (p watchPolicy) Refused(ctx context.Context, watcher chat.UserID, targets []chat.UserID) ([]chat.UserID, error) {
	if p.anyone {
		return nil, nil
	}
	mine, err := p.inbox.List(ctx, watcher)
	if err != nil {
		return nil, err
	}
	shared := make(map[chat.ConversationID]bool, len(mine))
	for _, e := range mine {
		shared[e.Conversation] = true
	}
	var refused []chat.UserID
	for _, t := range targets {
		if t == watcher {
			continue
		}
		theirs, err := p.inbox.List(ctx, t)
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

// membersAdapter lists a conversation's current members for typing.
type membersAdapter struct{ history *history.Store }

var _ edge.MemberLister = membersAdapter{}

func (a membersAdapter) ActiveMembers(ctx context.Context, conv chat.ConversationID) ([]chat.UserID, error) {
	ms, err := a.history.Members(ctx, conv)
	if err != nil {
		return nil, err
	}
	var out []chat.UserID
	for _, m := range ms {
		if m.Active() {
			out = append(out, m.User)
		}
	}
	return out, nil
}
