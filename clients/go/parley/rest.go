package parley

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/parleyhq/parley/protocol"
	"github.com/parleyhq/parley/protocol/rest"
)

// REST is a typed client of the history REST API (docs/openapi.yaml).
type REST struct {
	base  string
	http  *http.Client
	token TokenSource
}

// APIError is an error answer of the REST API, with the server's stable code.
type APIError struct {
	Status     int
	Code       protocol.Code
	Message    string
	Retryable  bool
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	return fmt.Sprintf("parley api: HTTP %d %s: %s", e.Status, e.Code, e.Message)
}

// Is makes an answer 401 token_revoked match ErrTokenRevoked.
func (e *APIError) Is(target error) bool {
	return target == ErrTokenRevoked && e.Code == protocol.CodeTokenRevoked
}

// The REST bodies are protocol/rest's, shared with the server.
type (
	// Conversation is a conversation with its current members.
	Conversation = rest.Conversation
	// Member is a current member and their role.
	Member = rest.Member
	// InboxEntry is one conversation of the inbox.
	InboxEntry = rest.InboxEntry
	// Inbox is a page of the inbox; Next is the cursor of the next page ("" on the last).
	Inbox = rest.Inbox
	// Accepted answers a change that was made durable and will be sequenced.
	Accepted = rest.Accepted
)

func (r *REST) do(ctx context.Context, method, path string, hdr map[string]string, body, out any) error {
	tok, err := r.token(ctx)
	if err != nil {
		return fmt.Errorf("parley api: token: %w", err)
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, r.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := r.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		e := &APIError{Status: resp.StatusCode}
		var eb struct {
			Code      protocol.Code `json:"code"`
			Message   string        `json:"message"`
			Retryable bool          `json:"retryable"`
		}
		if json.Unmarshal(data, &eb) == nil {
			e.Code, e.Message, e.Retryable = eb.Code, eb.Message, eb.Retryable
		}
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
			e.RetryAfter = time.Duration(s) * time.Second
		}
		return e
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	return json.Unmarshal(data, out)
}

// CreateDirect creates (or returns) the direct conversation with user.
func (r *REST) CreateDirect(ctx context.Context, with string) (Conversation, error) {
	var c Conversation
	err := r.do(ctx, http.MethodPost, "/v1/conversations", nil, map[string]any{"kind": "direct", "with": with}, &c)
	return c, err
}

// CreateGroup creates a group owned by the caller with the other members.
func (r *REST) CreateGroup(ctx context.Context, title string, members ...string) (Conversation, error) {
	var c Conversation
	err := r.do(ctx, http.MethodPost, "/v1/conversations", nil, map[string]any{"kind": "group", "title": title, "members": members}, &c)
	return c, err
}

// Conversation returns a conversation with its current members.
func (r *REST) Conversation(ctx context.Context, id string) (Conversation, error) {
	var c Conversation
	err := r.do(ctx, http.MethodGet, "/v1/conversations/"+url.PathEscape(id), nil, nil, &c)
	return c, err
}

// Inbox returns a page of the caller's conversations, most recently active first (cursor ""
// for the first page).
func (r *REST) Inbox(ctx context.Context, cursor string, limit int) (Inbox, error) {
	q := url.Values{}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var in Inbox
	err := r.do(ctx, http.MethodGet, "/v1/conversations?"+q.Encode(), nil, nil, &in)
	return in, err
}

// Messages returns up to limit messages before seq, newest first (before 0: the latest
// messages), each in its latest state. Page backwards with the smallest seq you got.
func (r *REST) Messages(ctx context.Context, conversation string, before int64, limit int) ([]protocol.Message, error) {
	q := url.Values{}
	if before > 0 {
		q.Set("before", strconv.FormatInt(before, 10))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out struct {
		Messages []protocol.Message `json:"messages"`
	}
	err := r.do(ctx, http.MethodGet, "/v1/conversations/"+url.PathEscape(conversation)+"/messages?"+q.Encode(), nil, nil, &out)
	return out.Messages, err
}

// MessagesAfter returns up to limit messages after seq, oldest first (after 0: from the first).
func (r *REST) MessagesAfter(ctx context.Context, conversation string, after int64, limit int) ([]protocol.Message, error) {
	q := url.Values{"after": {strconv.FormatInt(after, 10)}}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out struct {
		Messages []protocol.Message `json:"messages"`
	}
	err := r.do(ctx, http.MethodGet, "/v1/conversations/"+url.PathEscape(conversation)+"/messages?"+q.Encode(), nil, nil, &out)
	return out.Messages, err
}

// Presence returns the states of up to 100 users, in the order asked: online, offline (with
// LastSeen when known) or unknown while the server's presence store is unavailable.
func (r *REST) Presence(ctx context.Context, users ...string) ([]protocol.PresenceState, error) {
	q := url.Values{"user": users}
	var out struct {
		Presence []protocol.PresenceState `json:"presence"`
	}
	err := r.do(ctx, http.MethodGet, "/v1/presence?"+q.Encode(), nil, nil, &out)
	return out.Presence, err
}

func (r *REST) msgPath(conversation string, seq int64) string {
	return "/v1/conversations/" + url.PathEscape(conversation) + "/messages/" + strconv.FormatInt(seq, 10)
}

// Edit replaces the text of one of the caller's messages (an edit event).
func (r *REST) Edit(ctx context.Context, conversation string, seq int64, body string) (Accepted, error) {
	var a Accepted
	err := r.do(ctx, http.MethodPatch, r.msgPath(conversation, seq), map[string]string{"Idempotency-Key": newUUID()}, map[string]string{"body": body}, &a)
	return a, err
}

// Delete deletes a message (the caller's own; group admins any).
func (r *REST) Delete(ctx context.Context, conversation string, seq int64) error {
	return r.do(ctx, http.MethodDelete, r.msgPath(conversation, seq), nil, nil, nil)
}

// React adds the caller's reaction to a message.
func (r *REST) React(ctx context.Context, conversation string, seq int64, emoji string) error {
	return r.do(ctx, http.MethodPut, r.msgPath(conversation, seq)+"/reactions/"+url.PathEscape(emoji), nil, nil, nil)
}

// Unreact removes the caller's reaction from a message.
func (r *REST) Unreact(ctx context.Context, conversation string, seq int64, emoji string) error {
	return r.do(ctx, http.MethodDelete, r.msgPath(conversation, seq)+"/reactions/"+url.PathEscape(emoji), nil, nil, nil)
}

// MarkRead moves the caller's read position in a conversation and returns it.
func (r *REST) MarkRead(ctx context.Context, conversation string, seq int64) (int64, error) {
	var out struct {
		ReadSeq int64 `json:"read_seq"`
	}
	err := r.do(ctx, http.MethodPost, "/v1/conversations/"+url.PathEscape(conversation)+"/read", nil, map[string]int64{"seq": seq}, &out)
	return out.ReadSeq, err
}
