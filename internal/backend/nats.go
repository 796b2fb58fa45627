package backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// NATSConfig configures the NATS connection. Zero values take the defaults below.
type NATSConfig struct {
	// URL is one or more comma-separated server URLs. Default "nats://127.0.0.1:14222".
	URL string
	// Name is the connection name shown in the server's monitoring. Default "parleyd".
	Name string
	// ConnectTimeout bounds one dial. Default 2s.
	ConnectTimeout time.Duration
	// ReconnectWait is the pause between reconnect attempts to the same server. Default 500ms.
	// Reconnects never give up: a NATS restart must not require restarting Parley.
	ReconnectWait time.Duration
	// RequestTimeout bounds JetStream API calls and publish acknowledgements. Default 5s.
	RequestTimeout time.Duration
}

// Defaults for NATSConfig.
const (
	DefaultNATSURL            = "nats://127.0.0.1:14222"
	DefaultNATSName           = "parleyd"
	DefaultNATSConnectTimeout = 2 * time.Second
	DefaultNATSReconnectWait  = 500 * time.Millisecond
	DefaultNATSRequestTimeout = 5 * time.Second
)

func (c NATSConfig) withDefaults() NATSConfig {
	if c.URL == "" {
		c.URL = DefaultNATSURL
	}
	if c.Name == "" {
		c.Name = DefaultNATSName
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultNATSConnectTimeout
	}
	if c.ReconnectWait == 0 {
		c.ReconnectWait = DefaultNATSReconnectWait
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultNATSRequestTimeout
	}
	return c
}

// Validate reports the first invalid setting.
func (c NATSConfig) Validate() error {
	c = c.withDefaults()
	u, err := url.Parse(c.URL)
	if err != nil || u.Host == "" {
		return fmt.Errorf("nats url %q: want nats://host:port", c.URL)
	}
	if c.ConnectTimeout < 0 || c.ReconnectWait < 0 || c.RequestTimeout < 0 {
		return errors.New("nats timeouts must not be negative")
	}
	return nil
}

// NATS is an open NATS connection with its JetStream context.
type NATS struct {
	Conn      *nats.Conn
	JetStream jetstream.JetStream
	// RequestTimeout is the configured deadline for JetStream calls made without one.
	RequestTimeout time.Duration
}

// OpenNATS connects to NATS, waiting until a server answers or ctx ends, and returns the
// connection with a JetStream context. After that first connect, the client reconnects forever.
func OpenNATS(ctx context.Context, cfg NATSConfig, reg prometheus.Registerer, logger *slog.Logger) (*NATS, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	m := newNATSMetrics()
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.Timeout(cfg.ConnectTimeout),
		nats.ReconnectWait(cfg.ReconnectWait),
		nats.MaxReconnects(-1),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			logger.Warn("nats disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			logger.Info("nats reconnected", "server", c.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			if errors.Is(err, nats.ErrSlowConsumer) {
				// A subscription's buffer overflowed and messages were dropped (live events
				// are at-most-once; clients repair with sync). Counted; logged at most every
				// 10 s, since a burst reports it for every subscription.
				n := m.slowEvents.Add(1)
				now := time.Now().UnixNano()
				if last := m.slowLogged.Load(); now-last < int64(10*time.Second) || !m.slowLogged.CompareAndSwap(last, now) {
					return
				}
				logger.Warn("nats slow consumer: messages dropped", "subject", subject, "slow_consumer_events_total", n)
				return
			}
			logger.Warn("nats async error", "subject", subject, "err", err)
		}),
	}
	var nc *nats.Conn
	err := waitUntil(ctx, logger, "nats", func(context.Context) error {
		var err error
		nc, err = nats.Connect(cfg.URL, opts...)
		return err
	})
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(cfg.RequestTimeout))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	n := &NATS{Conn: nc, JetStream: js, RequestTimeout: cfg.RequestTimeout}
	m.conn = nc
	if err := reg.Register(m); err != nil {
		nc.Close()
		return nil, fmt.Errorf("register nats metrics: %w", err)
	}
	if err := waitUntil(ctx, logger, "nats jetstream", n.Ping); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

// Ping reports whether the connection is up and JetStream answers an API request.
func (n *NATS) Ping(ctx context.Context) error {
	if s := n.Conn.Status(); s != nats.CONNECTED {
		return fmt.Errorf("nats connection %s", s)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, n.RequestTimeout)
		defer cancel()
	}
	if _, err := n.JetStream.AccountInfo(ctx); err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	return nil
}

// Close drains the connection: subscriptions stop, pending publishes are flushed, then it
// closes. Drain is bounded by the connection's drain timeout (30s by default).
func (n *NATS) Close() {
	if err := n.Conn.Drain(); err != nil {
		n.Conn.Close()
	}
}

// natsMetrics exports the connection's own counters at scrape time.
type natsMetrics struct {
	conn                                                     *nats.Conn
	inMsgs, outMsgs, inBytes, outBytes, reconnects, up, slow *prometheus.Desc
	slowEvents                                               atomic.Int64
	slowLogged                                               atomic.Int64 // when the last slow-consumer warning was logged, Unix nanoseconds
}

func newNATSMetrics() *natsMetrics {
	return &natsMetrics{
		inMsgs:     prometheus.NewDesc("parley_nats_received_messages_total", "Messages received from NATS.", nil, nil),
		outMsgs:    prometheus.NewDesc("parley_nats_sent_messages_total", "Messages sent to NATS.", nil, nil),
		inBytes:    prometheus.NewDesc("parley_nats_received_bytes_total", "Bytes received from NATS.", nil, nil),
		outBytes:   prometheus.NewDesc("parley_nats_sent_bytes_total", "Bytes sent to NATS.", nil, nil),
		reconnects: prometheus.NewDesc("parley_nats_reconnects_total", "Reconnections to NATS.", nil, nil),
		up:         prometheus.NewDesc("parley_nats_connected", "1 while the NATS connection is up, else 0.", nil, nil),
		slow: prometheus.NewDesc("parley_nats_slow_consumer_events_total",
			"Times a subscription's buffer overflowed and NATS messages were dropped (live events; sync repairs).", nil, nil),
	}
}

func (m *natsMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.inMsgs, m.outMsgs, m.inBytes, m.outBytes, m.reconnects, m.up, m.slow} {
		ch <- d
	}
}

func (m *natsMetrics) Collect(ch chan<- prometheus.Metric) {
	s := m.conn.Stats()
	up := 0.0
	if m.conn.IsConnected() {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(m.inMsgs, prometheus.CounterValue, float64(s.InMsgs))
	ch <- prometheus.MustNewConstMetric(m.outMsgs, prometheus.CounterValue, float64(s.OutMsgs))
	ch <- prometheus.MustNewConstMetric(m.inBytes, prometheus.CounterValue, float64(s.InBytes))
	ch <- prometheus.MustNewConstMetric(m.outBytes, prometheus.CounterValue, float64(s.OutBytes))
	ch <- prometheus.MustNewConstMetric(m.reconnects, prometheus.CounterValue, float64(s.Reconnects))
	ch <- prometheus.MustNewConstMetric(m.up, prometheus.GaugeValue, up)
	ch <- prometheus.MustNewConstMetric(m.slow, prometheus.CounterValue, float64(m.slowEvents.Load()))
}
