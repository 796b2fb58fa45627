package httpapi

import (
	"errors"
	"net/http"
	"slices"
	"strconv"
	"unicode"
	"unicode/utf8"

	"github.com/parleyhq/parley/delivery/ingest"
	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/chat"
	"github.com/parleyhq/parley/protocol"
	"github.com/parleyhq/parley/protocol/rest"
)

// Edits, deletions, reactions and membership changes are events appended to the conversation
// through the same pipeline as messages: the handlers check that the change is allowed and
// makes sense now, publish the event, and answer 202 once it is durable. The event gets its
// seq, reaches members live, and takes effect when the delivery worker sequences it (a
// membership change that no longer applies by then, say the user was added twice at once, is
// dropped there). A change that would do nothing (a reaction that is already there, a message
// already deleted) is answered 204 without publishing anything.

// MaxEmojiBytes bounds a reaction.
const MaxEmojiBytes = 64

// eventID is the client_msg_id of an event: the Idempotency-Key header when given (a UUID),
// else fallback.
func eventID(r *http.Request, fallback func() chat.ClientMsgID) (chat.ClientMsgID, error) {
	key := r.Header.Get("Idempotency-Key")
	if key == "" {
		return fallback(), nil
	}
	id, err := chat.ParseClientMsgID(key)
	if err != nil {
		return chat.ClientMsgID{}, errorf(http.StatusBadRequest, protocol.CodeBadRequest, "Idempotency-Key must be a UUID")
	}
	return id, nil
}

func randomID() chat.ClientMsgID { return chat.NewClientMsgID() }

// derivedID is a name-based id, so repeating a request without a key repeats its event id.
func derivedID(parts ...string) func() chat.ClientMsgID {
	return func() chat.ClientMsgID { return chat.DerivedClientMsgID(parts...) }
}

// publishEvent makes an event durable and answers 202.
func (a *API) publishEvent(w http.ResponseWriter, r *http.Request, id auth.Identity, ev ingest.Entry) error {
	now := a.now()
	device := id.Device
	if device == "" {
		device = "rest"
	}
	ev.Conversation, ev.Sender, ev.SenderDevice, ev.AcceptedAt = convOf(r), id.User, device, now
	if err := a.pub.Publish(r.Context(), ev); err != nil {
		return &apiError{status: http.StatusServiceUnavailable, code: protocol.CodeUnavailable,
			msg: "change not accepted; retry (with the same Idempotency-Key if you gave one)", retryAfter: 1}
	}
	writeJSON(w, http.StatusAccepted, rest.Accepted{Conversation: ev.Conversation.String(),
		ClientMsgID: ev.ClientMsgID.String(), Kind: string(ev.Kind), AcceptedAt: now.UnixMilli()})
	return nil
}

// target reads the text message {seq} with its latest state, as the caller may see it.
func (a *API) target(r *http.Request) (chat.Message, error) {
	seq, err := strconv.ParseInt(r.PathValue("seq"), 10, 64)
	if err != nil || seq < 1 {
		return chat.Message{}, errorf(http.StatusBadRequest, protocol.CodeBadRequest, "seq must be a positive integer")
	}
	page, err := a.store.After(r.Context(), convOf(r), memberOf(r).Window(), seq-1, 1)
	if err != nil {
		return chat.Message{}, err
	}
	if len(page) == 0 || page[0].Seq != seq {
		return chat.Message{}, errorf(http.StatusNotFound, protocol.CodeNotFound, "no message %d", seq)
	}
	if page[0].Kind != chat.MessageText {
		return chat.Message{}, errorf(http.StatusConflict, protocol.CodeConflict, "seq %d is a %s event, not a message", seq, page[0].Kind)
	}
	return page[0], nil
}

type editRequest struct {
	Body string `json:"body"`
}

func (a *API) editMessage(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	var req editRequest
	if err := decodeJSON(r, int64(a.cfg.MaxBodyBytes)+1024, &req); err != nil {
		return err
	}
	if req.Body == "" {
		return errorf(http.StatusBadRequest, protocol.CodeBadRequest, "body is empty (delete the message instead)")
	}
	if len(req.Body) > a.cfg.MaxBodyBytes {
		return errorf(http.StatusRequestEntityTooLarge, protocol.CodeBodyTooLarge, "body over %d bytes", a.cfg.MaxBodyBytes)
	}
	m, err := a.target(r)
	if err != nil {
		return err
	}
	switch {
	case m.Sender != id.User:
		return errorf(http.StatusForbidden, protocol.CodeForbidden, "only the sender may edit a message")
	case m.Deleted:
		return errorf(http.StatusConflict, protocol.CodeConflict, "the message was deleted")
	}
	cmid, err := eventID(r, randomID)
	if err != nil {
		return err
	}
	return a.publishEvent(w, r, id, ingest.Entry{Kind: chat.MessageEdit, TargetSeq: m.Seq, Body: req.Body, ClientMsgID: cmid})
}

func (a *API) deleteMessage(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	m, err := a.target(r)
	if err != nil {
		return err
	}
	if m.Sender != id.User && !memberOf(r).CanAdmin() {
		return errorf(http.StatusForbidden, protocol.CodeForbidden, "only the sender or a group admin may delete a message")
	}
	if m.Deleted {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	cmid, err := eventID(r, derivedID("delete", convOf(r).String(), string(id.User), strconv.FormatInt(m.Seq, 10)))
	if err != nil {
		return err
	}
	return a.publishEvent(w, r, id, ingest.Entry{Kind: chat.MessageDelete, TargetSeq: m.Seq, ClientMsgID: cmid})
}

// validEmoji accepts 1 to MaxEmojiBytes bytes of UTF-8 without spaces or control characters
// (any short token works; clients decide what they render).
func validEmoji(s string) bool {
	if s == "" || len(s) > MaxEmojiBytes || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return false
		}
	}
	return true
}

func (a *API) react(add bool) handler {
	kind := chat.MessageReactionRemoved
	if add {
		kind = chat.MessageReaction
	}
	return func(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
		emoji := r.PathValue("emoji")
		if !validEmoji(emoji) {
			return errorf(http.StatusBadRequest, protocol.CodeBadRequest, "emoji must be 1 to %d bytes of UTF-8 without spaces", MaxEmojiBytes)
		}
		m, err := a.target(r)
		if err != nil {
			return err
		}
		if m.Deleted {
			return errorf(http.StatusConflict, protocol.CodeConflict, "the message was deleted")
		}
		if hasReacted(m, id.User, emoji) == add {
			w.WriteHeader(http.StatusNoContent) // already so
			return nil
		}
		cmid, err := eventID(r, randomID)
		if err != nil {
			return err
		}
		return a.publishEvent(w, r, id, ingest.Entry{Kind: kind, TargetSeq: m.Seq, Body: emoji, ClientMsgID: cmid})
	}
}

func hasReacted(m chat.Message, user chat.UserID, emoji string) bool {
	for _, re := range m.Reactions {
		if re.Emoji == emoji {
			for _, u := range re.Users {
				if u == user {
					return true
				}
			}
		}
	}
	return false
}

type addMemberRequest struct {
	User string `json:"user"`
}

// group checks that the conversation is a group (direct conversations keep their two members).
func (a *API) group(r *http.Request) error {
	c, err := a.store.Conversation(r.Context(), convOf(r))
	if err != nil {
		return err
	}
	if c.Kind != chat.KindGroup {
		return errorf(http.StatusConflict, protocol.CodeConflict, "a direct conversation's members cannot change")
	}
	return nil
}

func (a *API) addMember(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	var req addMemberRequest
	if err := decodeJSON(r, 1024, &req); err != nil {
		return err
	}
	user, err := chat.ParseUserID(req.User)
	if err != nil {
		return errorf(http.StatusBadRequest, protocol.CodeBadRequest, "user: %v", err)
	}
	if err := a.group(r); err != nil {
		return err
	}
	if !memberOf(r).CanAdmin() {
		return errorf(http.StatusForbidden, protocol.CodeForbidden, "only the owner or an admin may add members")
	}
	active, err := a.store.ActiveMembers(r.Context(), convOf(r))
	if err != nil {
		return err
	}
	if slices.Contains(active, user) {
		return errorf(http.StatusConflict, protocol.CodeConflict, "%s is already a member", user)
	}
	if len(active) >= a.store.MaxMembers() {
		return errorf(http.StatusConflict, protocol.CodeConflict, "the group has the maximum of %d members", a.store.MaxMembers())
	}
	cmid, err := eventID(r, randomID)
	if err != nil {
		return err
	}
	return a.publishEvent(w, r, id, ingest.Entry{Kind: chat.MessageMemberAdded, TargetUser: user, ClientMsgID: cmid})
}

func (a *API) removeMember(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	user, err := chat.ParseUserID(r.PathValue("user"))
	if err != nil {
		return errorf(http.StatusBadRequest, protocol.CodeBadRequest, "user: %v", err)
	}
	if user == id.User {
		return a.leave(w, r, id)
	}
	if err := a.group(r); err != nil {
		return err
	}
	if !memberOf(r).CanAdmin() {
		return errorf(http.StatusForbidden, protocol.CodeForbidden, "only the owner or an admin may remove members")
	}
	target, err := a.store.Member(r.Context(), convOf(r), user)
	if err != nil && !errors.Is(err, chat.ErrNotFound) {
		return err
	}
	if err != nil || !target.Active() {
		return errorf(http.StatusNotFound, protocol.CodeNotFound, "%s is not a member", user)
	}
	if target.Role == chat.RoleOwner {
		return errorf(http.StatusForbidden, protocol.CodeForbidden, "the owner cannot be removed (the owner may leave)")
	}
	cmid, err := eventID(r, randomID)
	if err != nil {
		return err
	}
	return a.publishEvent(w, r, id, ingest.Entry{Kind: chat.MessageMemberRemoved, TargetUser: user, ClientMsgID: cmid})
}

func (a *API) leave(w http.ResponseWriter, r *http.Request, id auth.Identity) error {
	if err := a.group(r); err != nil {
		return err
	}
	cmid, err := eventID(r, randomID)
	if err != nil {
		return err
	}
	return a.publishEvent(w, r, id, ingest.Entry{Kind: chat.MessageMemberLeft, TargetUser: id.User, ClientMsgID: cmid})
}
