package edge

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/parleyhq/parley/protocol"
)

// metrics are the edge's Prometheus series. Per-type counters are resolved once so the per
// frame path does no label lookup.
type metrics struct {
	connections prometheus.Gauge
	handshakes  *prometheus.CounterVec
	framesIn    map[protocol.Type]prometheus.Counter
	framesOut   map[protocol.Type]prometheus.Counter
	errors      *prometheus.CounterVec
	drops       *prometheus.CounterVec
	closes      *prometheus.CounterVec
	queueDepth  prometheus.Histogram
	writeTime   prometheus.Histogram
	batchSize   prometheus.Histogram
	natsMsgs    prometheus.Counter
	workers     *prometheus.GaugeVec
	// Rebalancing (rebalance.go).
	rebalanceHints prometheus.Counter
	rebalancePeers prometheus.Gauge
}

const otherType = protocol.Type("other")

// handshakeResults are the values of parley_edge_handshakes_total's result label.
var handshakeResults = []string{"ok", "bad_request", "unauthorized", "forbidden", "forbidden_origin",
	"revoked", "draining", "overloaded", "limited_ip", "limited_user", "rate_limited_ip", "rate_limited_user",
	"upgrade_failed", "hello_failed"}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	in := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "parley_edge_frames_in_total", Help: "Client frames read, by type (other: unknown types).",
	}, []string{"type"})
	out := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "parley_edge_frames_out_total", Help: "Frames written to clients, by type.",
	}, []string{"type"})
	m := &metrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "parley_edge_connections", Help: "Open WebSocket connections.",
		}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_edge_handshakes_total", Help: "WebSocket handshakes, by result.",
		}, []string{"result"}),
		framesIn:  map[protocol.Type]prometheus.Counter{},
		framesOut: map[protocol.Type]prometheus.Counter{},
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_edge_errors_total", Help: "Error frames sent, by code.",
		}, []string{"code"}),
		drops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_edge_drops_total", Help: "Frames not delivered to a connection, by reason.",
		}, []string{"reason"}),
		closes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_edge_closes_total", Help: "Connections closed by the server, by close code (dead: no pong for two heartbeats; 4009 also counts writes that timed out).",
		}, []string{"code"}),
		queueDepth: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "parley_edge_queue_depth", Help: "Frames in a connection's queue when one is added.",
			Buckets: []float64{0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512},
		}),
		writeTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "parley_edge_write_seconds", Help: "Time to write one batch of frames to a connection.",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .05, .25, 1, 5},
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "parley_edge_write_batch_frames", Help: "Frames written to a connection in one batch.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
		}),
		natsMsgs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_edge_routed_messages_total", Help: "Frames received from NATS user subjects for local connections.",
		}),
		workers: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "parley_edge_workers",
			Help: "Pooled worker goroutines, busy or waiting for work, by pool (read: the event-driven reader; write: connections' writers).",
		}, []string{"pool"}),
		rebalanceHints: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_edge_rebalance_hints_total",
			Help: "Connections asked to reconnect elsewhere (reconnect reason rebalance, then close 1001) because this edge held more than its share.",
		}),
		rebalancePeers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "parley_edge_rebalance_edges",
			Help: "Edges with a live connection count in the rebalance bucket, this one included, at the last look (0: not rebalancing).",
		}),
	}
	types := append(append([]protocol.Type{}, protocol.ClientTypes...), otherType)
	for _, t := range types {
		m.framesIn[t] = in.WithLabelValues(string(t))
	}
	for _, t := range []protocol.Type{protocol.TypeHello, protocol.TypeAccepted, protocol.TypeMessage,
		protocol.TypeReceipt, protocol.TypeSyncResult, protocol.TypePresence, protocol.TypeTyping,
		protocol.TypePong, protocol.TypeOK, protocol.TypeError, protocol.TypeReconnect, otherType} {
		m.framesOut[t] = out.WithLabelValues(string(t))
	}
	// Every series of the closes and handshakes counters exists from the start, at 0, so a
	// rate() over it or an alert on it works before the first event.
	for _, code := range closeCodes {
		m.closes.WithLabelValues(closeLabel(code))
	}
	for _, l := range []string{"dead", "other"} {
		m.closes.WithLabelValues(l)
	}
	for _, r := range handshakeResults {
		m.handshakes.WithLabelValues(r)
	}
	for _, c := range []prometheus.Collector{m.connections, m.handshakes, in, out, m.errors, m.drops,
		m.closes, m.queueDepth, m.writeTime, m.batchSize, m.natsMsgs, m.workers, m.rebalanceHints, m.rebalancePeers} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) in(t protocol.Type) {
	if c, ok := m.framesIn[t]; ok {
		c.Inc()
		return
	}
	m.framesIn[otherType].Inc()
}

func (m *metrics) out(t protocol.Type) {
	if c, ok := m.framesOut[t]; ok {
		c.Inc()
		return
	}
	m.framesOut[otherType].Inc()
}
