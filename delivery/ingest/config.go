package ingest

import (
	"fmt"
	"time"
)

// Config describes the ingest stream. Zero values take the defaults. Every process that
// publishes or consumes must use the same values.
type Config struct {
	// Stream is the JetStream stream name. Default "PARLEY_INGEST".
	Stream string
	// SubjectPrefix + partition number is a partition's subject. Default "parley.ingest.".
	SubjectPrefix string
	// Partitions splits conversations over this many ordered consumers. Default 64. It is
	// part of the data layout of an existing stream: changing it reorders in-flight messages.
	Partitions int
	// Replicas of the stream (1 for one NATS server, 3 in production). Default 1.
	Replicas int
	// DuplicateWindow is JetStream's dedupe window for Nats-Msg-Id. Default 2m. Sends retried
	// after it are still deduplicated, by the client_msg_id map in Cassandra.
	DuplicateWindow time.Duration
	// PublishTimeout bounds waiting for the stream's acknowledgement. Default 5s.
	PublishTimeout time.Duration
}

// Defaults.
const (
	DefaultStream          = "PARLEY_INGEST"
	DefaultSubjectPrefix   = "parley.ingest."
	DefaultPartitions      = 64
	DefaultDuplicateWindow = 2 * time.Minute
	DefaultPublishTimeout  = 5 * time.Second
)

// WithDefaults returns c with its zero values replaced by the defaults.
func (c Config) WithDefaults() Config {
	if c.Stream == "" {
		c.Stream = DefaultStream
	}
	if c.SubjectPrefix == "" {
		c.SubjectPrefix = DefaultSubjectPrefix
	}
	if c.Partitions == 0 {
		c.Partitions = DefaultPartitions
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = DefaultDuplicateWindow
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = DefaultPublishTimeout
	}
	return c
}

// Validate reports the first invalid setting.
func (c Config) Validate() error {
	c = c.WithDefaults()
	switch {
	case c.Partitions < 1 || c.Partitions > 1024:
		return fmt.Errorf("ingest partitions %d out of range [1, 1024]", c.Partitions)
	case c.Replicas < 1 || c.Replicas > 5:
		return fmt.Errorf("ingest stream replicas %d out of range [1, 5]", c.Replicas)
	case c.DuplicateWindow < 100*time.Millisecond:
		return fmt.Errorf("ingest duplicate window %v: at least 100ms", c.DuplicateWindow)
	case c.PublishTimeout <= 0:
		return fmt.Errorf("ingest publish timeout must be positive")
	}
	return nil
}
