package delivery

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/parleyhq/parley/delivery/ingest"
)

// Dead letters: an accepted message that can never be sequenced (a malformed record, a
// conversation this keyspace does not have) is not dropped. It is moved to the dead-letter
// stream with the reason, counted, and kept until an operator replays it (`parleyd dlq replay`)
// once the cause is fixed, or deletes it.

// Headers of a dead letter.
const (
	HeaderReason          = "Parley-Dead-Reason"
	HeaderOriginalSubject = "Parley-Original-Subject"
)

// DeadLetterStream is the name of the dead-letter stream of an ingest stream.
func DeadLetterStream(c ingest.Config) string { return c.WithDefaults().Stream + "_DEAD" }

func deadLetterSubject(c ingest.Config) string { return "parley.dead." + c.WithDefaults().Stream }

// EnsureDeadLetters creates the dead-letter stream (file storage, kept until deleted).
func EnsureDeadLetters(ctx context.Context, js jetstream.JetStream, c ingest.Config) error {
	c = c.WithDefaults()
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        DeadLetterStream(c),
		Description: "Parley: accepted sends that could not be sequenced, with the reason",
		Subjects:    []string{deadLetterSubject(c)},
		Storage:     jetstream.FileStorage,
		Replicas:    c.Replicas,
		Retention:   jetstream.LimitsPolicy,
	})
	if err != nil {
		return fmt.Errorf("dead-letter stream: %w", err)
	}
	return nil
}

// deadLetter moves msg to the dead-letter stream, then terminates it in the ingest stream.
// If the dead-letter publish fails, the error is returned and the message is left as it is:
// the worker retries (it is never dropped).
func (w *Worker) deadLetter(ctx context.Context, msg jetstream.Msg, reason error) error {
	dl := nats.NewMsg(deadLetterSubject(w.cfg.Ingest))
	dl.Data = msg.Data()
	dl.Header.Set(HeaderReason, reason.Error())
	dl.Header.Set(HeaderOriginalSubject, msg.Subject())
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Ingest.PublishTimeout)
	defer cancel()
	if _, err := w.js.PublishMsg(ctx, dl); err != nil {
		return fmt.Errorf("dead-letter publish: %w", err)
	}
	w.logger.Error("message moved to the dead-letter stream", "stream", DeadLetterStream(w.cfg.Ingest), "reason", reason)
	w.metrics.outcomes.WithLabelValues("dead_letter").Inc()
	_ = msg.Term()
	return nil
}

// DeadLetter is one dead letter, for `parleyd dlq list`.
type DeadLetter struct {
	ID      uint64 // its sequence in the dead-letter stream
	Time    time.Time
	Reason  string
	Subject string
	Data    []byte
}

// ListDeadLetters returns up to limit dead letters, oldest first (none when the stream does
// not exist yet).
func ListDeadLetters(ctx context.Context, js jetstream.JetStream, c ingest.Config, limit int) ([]DeadLetter, error) {
	st, err := js.Stream(ctx, DeadLetterStream(c))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("dead-letter stream: %w", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, err
	}
	var out []DeadLetter
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && seq > 0 && len(out) < limit; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // deleted after a replay
		}
		if err != nil {
			return nil, err
		}
		out = append(out, DeadLetter{ID: seq, Time: m.Time, Reason: m.Header.Get(HeaderReason),
			Subject: m.Header.Get(HeaderOriginalSubject), Data: m.Data})
	}
	return out, nil
}

// ReplayDeadLetter publishes dead letter id back to the ingest partition it came from and
// deletes it from the dead-letter stream. The send is deduplicated by its client_msg_id as
// any resend, so replaying twice cannot create a second message.
func ReplayDeadLetter(ctx context.Context, js jetstream.JetStream, c ingest.Config, id uint64) error {
	st, err := js.Stream(ctx, DeadLetterStream(c))
	if err != nil {
		return fmt.Errorf("dead-letter stream: %w", err)
	}
	m, err := st.GetMsg(ctx, id)
	if err != nil {
		return fmt.Errorf("dead letter %d: %w", id, err)
	}
	subject := m.Header.Get(HeaderOriginalSubject)
	if subject == "" {
		return fmt.Errorf("dead letter %d has no original subject", id)
	}
	out := nats.NewMsg(subject)
	out.Data = m.Data
	// A fresh Nats-Msg-Id: the original may still be inside the duplicate window.
	out.Header.Set(jetstream.MsgIDHeader, "replay/"+DeadLetterStream(c)+"/"+strconv.FormatUint(id, 10))
	if _, err := js.PublishMsg(ctx, out); err != nil {
		return fmt.Errorf("replay dead letter %d: %w", id, err)
	}
	if err := st.DeleteMsg(ctx, id); err != nil {
		return fmt.Errorf("replayed dead letter %d but could not delete it (replaying again is harmless): %w", id, err)
	}
	return nil
}

// EnsureStreams creates (or updates) every stream of the pipeline: the ingest stream, the
// sequenced log and the dead letters. Any process may call it; all roles do at start.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := ingest.EnsureStream(ctx, js, cfg.Ingest); err != nil {
		return err
	}
	if err := EnsureLog(ctx, js, cfg.Ingest, cfg.Log); err != nil {
		return err
	}
	return EnsureDeadLetters(ctx, js, cfg.Ingest)
}

// StreamNames are the streams EnsureStreams creates (tests delete them).
func StreamNames(cfg Config) []string {
	c := cfg.Ingest.WithDefaults()
	return []string{c.Stream, LogStream(c), DeadLetterStream(c)}
}
