// Package ingest is the publishing side of the delivery pipeline: the ingest stream's
// configuration, the record a send becomes, and the publish that makes it durable. It is its
// own package so the edge can publish without depending on the stores the workers use.
package ingest

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/parleyhq/parley/internal/chat"
)

// Entry is an accepted entry of a conversation as it travels through the ingest stream: a
// text message (a send), or an event (an edit, a deletion, a reaction, a membership change).
type Entry struct {
	Conversation chat.ConversationID `json:"-"`
	Sender       chat.UserID         `json:"sender"`
	SenderDevice chat.DeviceID       `json:"sender_device"`
	ClientMsgID  chat.ClientMsgID    `json:"-"`
	Body         string              `json:"body"`
	// Kind is what to append: text (the zero value means text) or an event; TargetSeq and
	// TargetUser are the message or member the event is about (see chat.MessageKind).
	Kind       chat.MessageKind `json:"-"`
	TargetSeq  int64            `json:"-"`
	TargetUser chat.UserID      `json:"-"`
	// AcceptedAt is when the edge published it (Unix milliseconds in the record).
	AcceptedAt time.Time `json:"-"`
}

// record is the JSON body of an ingest message.
type record struct {
	Conversation string `json:"conversation"`
	ClientMsgID  string `json:"client_msg_id"`
	Sender       string `json:"sender"`
	SenderDevice string `json:"sender_device,omitempty"`
	Body         string `json:"body"`
	Kind         string `json:"kind,omitempty"`
	TargetSeq    int64  `json:"target_seq,omitempty"`
	TargetUser   string `json:"target_user,omitempty"`
	AcceptedMS   int64  `json:"accepted_ms"`
}

func encodeEntry(s Entry) ([]byte, error) {
	return json.Marshal(record{
		Conversation: s.Conversation.String(), ClientMsgID: hex.EncodeToString(s.ClientMsgID[:]),
		Sender: string(s.Sender), SenderDevice: string(s.SenderDevice), Body: s.Body,
		Kind: string(s.Kind), TargetSeq: s.TargetSeq, TargetUser: string(s.TargetUser),
		AcceptedMS: s.AcceptedAt.UnixMilli(),
	})
}

// ErrPoison marks an ingest message that can never be processed (it is terminated, not retried).
var ErrPoison = errors.New("malformed ingest record")

// Decode parses an ingest message body; ErrPoison (wrapped) when it can never be processed.
func Decode(data []byte) (Entry, error) {
	var r record
	if err := json.Unmarshal(data, &r); err != nil {
		return Entry{}, fmt.Errorf("%w: %v", ErrPoison, err)
	}
	conv, err := chat.ParseConversationID(r.Conversation)
	if err != nil {
		return Entry{}, fmt.Errorf("%w: %v", ErrPoison, err)
	}
	var cmid chat.ClientMsgID
	if b, err := hex.DecodeString(r.ClientMsgID); err != nil || len(b) != 16 {
		return Entry{}, fmt.Errorf("%w: client_msg_id", ErrPoison)
	} else {
		copy(cmid[:], b)
	}
	if _, err := chat.ParseUserID(r.Sender); err != nil {
		return Entry{}, fmt.Errorf("%w: %v", ErrPoison, err)
	}
	kind := chat.MessageKind(r.Kind)
	if kind == "" {
		kind = chat.MessageText
	}
	switch {
	case !kind.Known():
		return Entry{}, fmt.Errorf("%w: unknown kind %q", ErrPoison, r.Kind)
	case kind.TargetsMessage() && r.TargetSeq < 1:
		return Entry{}, fmt.Errorf("%w: %s without target_seq", ErrPoison, kind)
	case kind.Membership():
		if _, err := chat.ParseUserID(r.TargetUser); err != nil {
			return Entry{}, fmt.Errorf("%w: %s target_user: %v", ErrPoison, kind, err)
		}
	}
	return Entry{Conversation: conv, Sender: chat.UserID(r.Sender), SenderDevice: chat.DeviceID(r.SenderDevice),
		ClientMsgID: cmid, Body: r.Body, Kind: kind, TargetSeq: r.TargetSeq, TargetUser: chat.UserID(r.TargetUser),
		AcceptedAt: time.UnixMilli(r.AcceptedMS)}, nil
}

// Partition is the partition of a conversation: FNV-1a of its id, modulo n.
func Partition(id chat.ConversationID, n int) int {
	h := fnv.New32a()
	_, _ = h.Write(id[:])
	return int(h.Sum32() % uint32(n))
}

// Ingest publishes sends into the ingest stream.
type Ingest struct {
	js  jetstream.JetStream
	cfg Config
}

// New returns an Ingest; EnsureStream must have succeeded once (any process may do it).
func New(js jetstream.JetStream, cfg Config) (*Ingest, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Ingest{js: js, cfg: cfg.WithDefaults()}, nil
}

// EnsureStream creates the ingest stream, or updates the settings that may change.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg = cfg.WithDefaults()
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        cfg.Stream,
		Description: "Parley: accepted sends, before sequencing",
		Subjects:    []string{cfg.SubjectPrefix + "*"},
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		Retention:   jetstream.WorkQueuePolicy,
		Duplicates:  cfg.DuplicateWindow,
		Discard:     jetstream.DiscardNew,
		MaxMsgSize:  1 << 20,
	})
	if err != nil {
		return fmt.Errorf("ingest stream %s: %w", cfg.Stream, err)
	}
	return nil
}

// publishRetryWait is the pause between two tries of a publish that found no responder.
const publishRetryWait = 200 * time.Millisecond

// Publish appends a send to its partition and returns once the stream has stored it (the
// PubAck). The Nats-Msg-Id makes a retry within the duplicate window a no-op for the stream.
func (in *Ingest) Publish(ctx context.Context, s Entry) error {
	data, err := encodeEntry(s)
	if err != nil {
		return err
	}
	m := nats.NewMsg(in.cfg.SubjectPrefix + strconv.Itoa(Partition(s.Conversation, in.cfg.Partitions)))
	m.Data = data
	m.Header.Set(jetstream.MsgIDHeader, s.Conversation.String()+"/"+string(s.Sender)+"/"+hex.EncodeToString(s.ClientMsgID[:]))
	ctx, cancel := context.WithTimeout(ctx, in.cfg.PublishTimeout)
	defer cancel()
	// While a replicated stream elects a new leader (its leader's server died) a publish
	// finds no responder; nats.go tries again on exactly that, so keep trying for the whole
	// publish timeout instead of failing the send after two quick tries. A retry is harmless:
	// the Nats-Msg-Id makes a second copy a no-op.
	retries := max(2, int(in.cfg.PublishTimeout/publishRetryWait))
	if _, err := in.js.PublishMsg(ctx, m, jetstream.WithRetryWait(publishRetryWait), jetstream.WithRetryAttempts(retries)); err != nil {
		return fmt.Errorf("ingest publish: %w", err)
	}
	return nil
}
