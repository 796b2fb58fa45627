package delivery

import (
	"fmt"
	"time"

	"github.com/parleyhq/parley/delivery/ingest"
)

// Config configures the workers. Zero values take the defaults.
type Config struct {
	// Ingest describes the stream the workers consume.
	Ingest ingest.Config
	// Log configures the sequenced log (its name and subjects follow Ingest's).
	Log LogConfig
	// AckWait is how long a message may go without word from its worker before it is
	// redelivered. A worker reports progress every AckWait/3 while it processes a message, so
	// this bounds how long a message waits after its worker died, not how long processing may
	// take. With PinnedTTL it sets the failover time: a worker that takes over a partition
	// waits for the dead owner's unfinished messages, which come back AckWait after the owner
	// last reported progress. Default 3s.
	AckWait time.Duration
	// MaxDeliver bounds deliveries of one message. Transient failures are retried inside the
	// worker, so deliveries count only failovers and workers that died holding the message.
	// Default 200.
	MaxDeliver int
	// RetryDelays are the waits before a worker retries a conversation's messages whose
	// processing failed for a transient reason (Cassandra unavailable): the n-th failure waits
	// RetryDelays[n], the last value repeating. Default 100ms, 500ms, 1s, 2s, 5s, 10s, 20s.
	RetryDelays []time.Duration
	// PinnedTTL is how long a silent worker keeps its partitions before another takes over
	// (a live worker renews its pull requests every PinnedTTL/2). A worker that stops
	// gracefully unpins its partitions at once. It is also how long a worker counts as alive
	// without a heartbeat (it writes one every PinnedTTL/3 and is gone after two missed).
	// Default 3s.
	PinnedTTL time.Duration
	// HandoverSpacing is the time between two partitions handed over by a worker that holds
	// more of a stage's partitions than its fair share, ceil(partitions / live workers), as
	// when a worker joins: one partition at a time, so the joining worker takes its share
	// without a stall and without churn. Default 250ms.
	HandoverSpacing time.Duration
	// Batch is how many messages of a partition a worker takes at once (the consumer's
	// MaxAckPending): under load a conversation's waiting messages are stored together. 1
	// sequences strictly one message at a time. Default 32.
	Batch int
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Defaults.
const (
	DefaultAckWait         = 3 * time.Second
	DefaultMaxDeliver      = 200
	DefaultPinnedTTL       = 3 * time.Second
	DefaultHandoverSpacing = 250 * time.Millisecond
	DefaultBatch           = 32
)

func (c Config) withDefaults() Config {
	c.Ingest = c.Ingest.WithDefaults()
	c.Log = c.Log.withDefaults()
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = DefaultMaxDeliver
	}
	if c.RetryDelays == nil {
		c.RetryDelays = []time.Duration{100 * time.Millisecond, 500 * time.Millisecond, time.Second,
			2 * time.Second, 5 * time.Second, 10 * time.Second, 20 * time.Second}
	}
	if c.PinnedTTL == 0 {
		c.PinnedTTL = DefaultPinnedTTL
	}
	if c.HandoverSpacing == 0 {
		c.HandoverSpacing = DefaultHandoverSpacing
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Batch == 0 {
		c.Batch = DefaultBatch
	}
	return c
}

// Validate reports the first invalid setting.
func (c Config) Validate() error {
	if err := c.Ingest.Validate(); err != nil {
		return err
	}
	if err := c.Log.Validate(); err != nil {
		return err
	}
	c = c.withDefaults()
	switch {
	case c.AckWait < time.Second:
		return fmt.Errorf("delivery ack wait %v: at least 1s", c.AckWait)
	case c.MaxDeliver < 2:
		return fmt.Errorf("delivery max deliver %d: at least 2", c.MaxDeliver)
	case c.PinnedTTL < time.Second:
		return fmt.Errorf("delivery pinned TTL %v: at least 1s", c.PinnedTTL)
	case c.HandoverSpacing < 10*time.Millisecond:
		return fmt.Errorf("delivery handover spacing %v: at least 10ms", c.HandoverSpacing)
	case c.Batch < 1 || c.Batch > 1000:
		return fmt.Errorf("delivery batch %d: 1 to 1000", c.Batch)
	}
	for _, d := range c.RetryDelays {
		if d <= 0 || d > c.AckWait*10 {
			return fmt.Errorf("delivery retry delay %v must be positive and at most 10 x ack wait", d)
		}
	}
	return nil
}

// retryDelay is the wait before the n-th retry (n from 1).
func (c Config) retryDelay(n uint64) time.Duration {
	i := int(min(n, uint64(len(c.RetryDelays)))) - 1
	if i < 0 {
		return c.RetryDelays[0]
	}
	return c.RetryDelays[i]
}
