package presence

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	online        prometheus.Gauge
	batch         prometheus.Histogram
	heartbeat     prometheus.Histogram
	transitions   *prometheus.CounterVec
	published     prometheus.Counter
	publishErrors prometheus.Counter
	errors        prometheus.Counter
	dropped       prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		online: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "parley_presence_online_users", Help: "Users online (all edges; read from Redis every 10s).",
		}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "parley_presence_heartbeat_batch_sessions", Help: "Sessions renewed per heartbeat round trip.",
			Buckets: []float64{1, 10, 100, 250, 500, 1000, 2500, 5000},
		}),
		heartbeat: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "parley_presence_heartbeat_seconds", Help: "Time of one heartbeat round trip (a pipelined batch).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_presence_transitions_total", Help: "Online/offline transitions this process detected and published, by new state.",
		}, []string{"state"}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_presence_events_published_total", Help: "Presence events published on NATS.",
		}),
		publishErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_presence_publish_errors_total", Help: "Presence events that could not be published.",
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_presence_redis_errors_total", Help: "Presence operations that failed (Redis down, timeout, or breaker open).",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_presence_ops_dropped_total", Help: "Connects/disconnects not queued because the queue was full (the next heartbeat repairs).",
		}),
	}
	for _, c := range []prometheus.Collector{m.online, m.batch, m.heartbeat, m.transitions, m.published, m.publishErrors, m.errors, m.dropped} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
