package delivery

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/parleyhq/parley/delivery/ingest"
	"github.com/parleyhq/parley/internal/chat"
)

// The sequenced log is the truth of every conversation: a JetStream stream in which each
// entry is one message or event with its seq, on the subject of its conversation
// (<prefix><partition>.<conversation>). Only a sequencer that knows the conversation's last
// entry can append to it (Nats-Expected-Last-Subject-Sequence), so a stale or restarted
// sequencer fails to append instead of giving a seq to a second message. Cassandra (history,
// inbox) is a projection of the log, written idempotently by the projector and repaired from
// the log by the reconciler; live fan-out reads the log too.

// Headers of a log entry.
const (
	// HeaderSeq is the entry's seq in its conversation.
	HeaderSeq = "Parley-Seq"
)

// LogConfig configures the sequenced log. Zero values take the defaults.
type LogConfig struct {
	// MaxAge is how long entries are kept. It bounds the longest Cassandra outage (or loss
	// window) the log can repair: the projection must catch up within it. Default 7 days.
	MaxAge time.Duration
	// MaxMiB bounds the log's size in MiB; when it is full, appends fail (and wait in the
	// ingest stream) rather than drop entries the projection may still need. JetStream
	// reserves it against the server's storage limit when the stream is made. 0 (the
	// default): no bound but MaxAge and the server's.
	MaxMiB int
	// DuplicateWindow is how long the log remembers an entry's id
	// (conversation/sender/client_msg_id) and refuses a second copy. Within it, a send whose
	// client_msg_id is a fresh UUIDv7 needs no Cassandra read to be deduplicated. Default 10m.
	DuplicateWindow time.Duration
}

// Defaults of the log.
const (
	DefaultLogMaxAge          = 7 * 24 * time.Hour
	DefaultLogDuplicateWindow = 10 * time.Minute
)

func (c LogConfig) withDefaults() LogConfig {
	if c.MaxAge == 0 {
		c.MaxAge = DefaultLogMaxAge
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = DefaultLogDuplicateWindow
	}
	return c
}

// Validate reports the first invalid setting.
func (c LogConfig) Validate() error {
	c = c.withDefaults()
	switch {
	case c.MaxAge < time.Hour:
		return fmt.Errorf("log max age %v: at least 1h (it bounds the outage the projection can repair)", c.MaxAge)
	case c.MaxMiB < 0:
		return fmt.Errorf("log max size %d MiB: 0 (no bound) or more", c.MaxMiB)
	case c.DuplicateWindow < time.Minute || c.DuplicateWindow > c.MaxAge:
		return fmt.Errorf("log duplicate window %v: from 1m to the max age (%v)", c.DuplicateWindow, c.MaxAge)
	}
	return nil
}

// LogStream is the name of the log stream of an ingest stream (each ingest stream, like each
// test's, has its own log).
func LogStream(c ingest.Config) string { return c.WithDefaults().Stream + "_LOG" }

// logPrefix is the subject prefix of the log of an ingest stream.
func logPrefix(c ingest.Config) string { return "parley.log." + c.WithDefaults().Stream + "." }

// logSubject is the subject of a conversation's entries.
func logSubject(c ingest.Config, p int, conv chat.ConversationID) string {
	return logPrefix(c) + strconv.Itoa(p) + "." + conv.String()
}

// partitionFilter matches every entry of a partition.
func partitionFilter(c ingest.Config, p int) string { return logPrefix(c) + strconv.Itoa(p) + ".*" }

// EnsureLog creates the log stream, or updates the settings that may change.
func EnsureLog(ctx context.Context, js jetstream.JetStream, c ingest.Config, lc LogConfig) error {
	if err := lc.Validate(); err != nil {
		return err
	}
	c, lc = c.WithDefaults(), lc.withDefaults()
	maxBytes := int64(lc.MaxMiB) << 20
	if maxBytes == 0 {
		maxBytes = -1
	}
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        LogStream(c),
		Description: "Parley: the sequenced log of every conversation (the truth; Cassandra is its projection)",
		Subjects:    []string{logPrefix(c) + "*.*"},
		Storage:     jetstream.FileStorage,
		Replicas:    c.Replicas,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      lc.MaxAge,
		MaxBytes:    maxBytes,
		Discard:     jetstream.DiscardNew,
		Duplicates:  lc.DuplicateWindow,
		MaxMsgSize:  1 << 20,
		AllowDirect: true,
	})
	if err != nil {
		return fmt.Errorf("log stream %s: %w", LogStream(c), err)
	}
	return nil
}

// logRecord is the JSON body of a log entry.
type logRecord struct {
	Conversation string `json:"conversation"`
	Seq          int64  `json:"seq"`
	Kind         string `json:"kind"`
	Sender       string `json:"sender"`
	SenderDevice string `json:"sender_device,omitempty"`
	ClientMsgID  string `json:"client_msg_id"`
	Body         string `json:"body,omitempty"`
	TargetSeq    int64  `json:"target_seq,omitempty"`
	TargetUser   string `json:"target_user,omitempty"`
	CreatedMS    int64  `json:"created_ms"`
	AcceptedMS   int64  `json:"accepted_ms"`
}

// logEntry is a decoded log entry: the message, when the edge accepted it, and where it is in
// the stream.
type logEntry struct {
	m          chat.Message
	acceptedAt time.Time
	streamSeq  uint64
}

func encodeLogEntry(m chat.Message, acceptedAt time.Time) ([]byte, error) {
	return json.Marshal(logRecord{
		Conversation: m.Conversation.String(), Seq: m.Seq, Kind: string(m.Kind), Sender: string(m.Sender),
		SenderDevice: string(m.SenderDevice), ClientMsgID: m.ClientMsgID.String(), Body: m.Body,
		TargetSeq: m.TargetSeq, TargetUser: string(m.TargetUser), CreatedMS: m.CreatedAt.UnixMilli(),
		AcceptedMS: acceptedAt.UnixMilli(),
	})
}

func decodeLogEntry(data []byte, streamSeq uint64) (logEntry, error) {
	var r logRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return logEntry{}, fmt.Errorf("log entry %d: %w", streamSeq, err)
	}
	conv, err := chat.ParseConversationID(r.Conversation)
	if err != nil {
		return logEntry{}, fmt.Errorf("log entry %d: %w", streamSeq, err)
	}
	cmid, err := chat.ParseClientMsgID(r.ClientMsgID)
	if err != nil {
		return logEntry{}, fmt.Errorf("log entry %d: %w", streamSeq, err)
	}
	if r.Seq < 1 {
		return logEntry{}, fmt.Errorf("log entry %d: seq %d", streamSeq, r.Seq)
	}
	return logEntry{
		m: chat.Message{Conversation: conv, Seq: r.Seq, Kind: chat.MessageKind(r.Kind), Sender: chat.UserID(r.Sender),
			SenderDevice: chat.DeviceID(r.SenderDevice), ClientMsgID: cmid, Body: r.Body, TargetSeq: r.TargetSeq,
			TargetUser: chat.UserID(r.TargetUser), CreatedAt: time.UnixMilli(r.CreatedMS).UTC()},
		acceptedAt: time.UnixMilli(r.AcceptedMS),
		streamSeq:  streamSeq,
	}, nil
}

// entryID is the log's dedupe id of an entry: one per conversation, sender and client_msg_id.
func entryID(conv chat.ConversationID, sender chat.UserID, id chat.ClientMsgID) string {
	return conv.String() + "/" + string(sender) + "/" + hex.EncodeToString(id[:])
}

// errFenced: the append was refused because the conversation's log moved on since this
// sequencer read its last entry (another sequencer appended). The caller reloads.
var errFenced = errors.New("log moved on (another sequencer appended)")

// seqLog reads and appends the log of one ingest stream.
type seqLog struct {
	js     jetstream.JetStream
	ingest ingest.Config
	// stream is the log stream, looked up once (for direct gets).
	stream jetstream.Stream
}

func (l *seqLog) open(ctx context.Context) error {
	st, err := l.js.Stream(ctx, LogStream(l.ingest))
	if err != nil {
		return fmt.Errorf("log stream %s: %w", LogStream(l.ingest), err)
	}
	l.stream = st
	return nil
}

// head returns the conversation's last entry in the log; found is false when the log holds
// none (a conversation with no entry yet, or whose entries have all aged out).
func (l *seqLog) head(ctx context.Context, p int, conv chat.ConversationID) (e logEntry, found bool, err error) {
	raw, err := l.stream.GetLastMsgForSubject(ctx, logSubject(l.ingest, p, conv))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return logEntry{}, false, nil
	}
	if err != nil {
		return logEntry{}, false, fmt.Errorf("log head of %s: %w", conv, err)
	}
	e, err = decodeLogEntry(raw.Data, raw.Sequence)
	return e, err == nil, err
}

// at returns the entry at a stream seq.
func (l *seqLog) at(ctx context.Context, streamSeq uint64) (logEntry, error) {
	raw, err := l.stream.GetMsg(ctx, streamSeq)
	if err != nil {
		return logEntry{}, fmt.Errorf("log entry %d: %w", streamSeq, err)
	}
	return decodeLogEntry(raw.Data, raw.Sequence)
}

// after returns the conversation's entries with a stream seq above from, in order.
func (l *seqLog) after(ctx context.Context, p int, conv chat.ConversationID, from uint64) ([]logEntry, error) {
	subj := logSubject(l.ingest, p, conv)
	var out []logEntry
	for next := from + 1; ; {
		raw, err := l.stream.GetMsg(ctx, next, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("log of %s after %d: %w", conv, next, err)
		}
		e, err := decodeLogEntry(raw.Data, raw.Sequence)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
		next = raw.Sequence + 1
	}
}

// appendEntry appends m (with its seq set) to its conversation's log if the conversation's
// last entry is still at stream seq expected (0: the log holds none). It returns the new
// entry's stream seq, or, when the log already holds an entry with m's id (within the
// duplicate window), that entry (dup). errFenced when the log moved on.
func (l *seqLog) appendEntry(ctx context.Context, p int, m chat.Message, acceptedAt time.Time, expected uint64) (streamSeq uint64, dup *logEntry, err error) {
	data, err := encodeLogEntry(m, acceptedAt)
	if err != nil {
		return 0, nil, err
	}
	msg := nats.NewMsg(logSubject(l.ingest, p, m.Conversation))
	msg.Data = data
	msg.Header.Set(HeaderSeq, strconv.FormatInt(m.Seq, 10))
	msg.Header.Set(jetstream.MsgIDHeader, entryID(m.Conversation, m.Sender, m.ClientMsgID))
	msg.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(expected, 10))
	ack, err := l.js.PublishMsg(ctx, msg)
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			return 0, nil, errFenced
		}
		return 0, nil, fmt.Errorf("log append: %w", err)
	}
	if ack.Duplicate {
		e, err := l.at(ctx, ack.Sequence)
		if err != nil {
			return 0, nil, err
		}
		return ack.Sequence, &e, nil
	}
	return ack.Sequence, nil, nil
}
