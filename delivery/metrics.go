package delivery

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	outcomes        *prometheus.CounterVec
	sequencing      prometheus.Histogram
	endToEnd        prometheus.Histogram
	fenced          prometheus.Counter
	fanout          prometheus.Counter
	fanoutErrors    prometheus.Counter
	pending         *prometheus.GaugeVec
	owned           *prometheus.GaugeVec
	redelivered     prometheus.Counter
	batchSize       prometheus.Histogram
	acquireTimeouts prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	lat := []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	m := &metrics{
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_delivery_messages_total",
			Help: "Ingest messages handled, by outcome (sequenced, duplicate, rejected, retry, dead_letter, redelivered_done: a delivery of a message this worker had finished).",
		}, []string{"outcome"}),
		sequencing: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "parley_delivery_sequencing_seconds", Help: "Time to sequence and store one message.", Buckets: lat,
		}),
		endToEnd: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "parley_delivery_accepted_to_pushed_seconds", Help: "From the edge's accept to the live fan-out publish.", Buckets: lat,
		}),
		fenced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_delivery_fenced_total", Help: "Appends refused because the seq was taken (a stale worker reloaded).",
		}),
		fanout: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_delivery_fanout_publishes_total", Help: "Live fan-out publishes to user subjects.",
		}),
		fanoutErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_delivery_fanout_errors_total", Help: "Live fan-outs that failed (the members sync instead).",
		}),
	}
	m.pending = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "parley_delivery_partition_pending",
		Help: "Messages of a partition not yet delivered to a worker (consumer lag), by partition; refreshed every 5s.",
	}, []string{"partition"})
	m.owned = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "parley_delivery_partition_owned",
		Help: "1 for each partition this process is the pinned sequencer of, else 0 (a partition gets a pinned sequencer with its first message); refreshed every 5s.",
	}, []string{"partition"})
	m.redelivered = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "parley_delivery_redeliveries_total", Help: "Ingest messages received again (after a failover or an ack wait).",
	})
	m.batchSize = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "parley_delivery_batch_messages", Help: "Messages a partition's worker took at once (grows with the backlog).",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000},
	})
	m.acquireTimeouts = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "parley_delivery_takeover_timeouts_total",
		Help: "Partitions taken over without every message of the previous owner back in hand (order of those messages not guaranteed).",
	})
	for _, c := range []prometheus.Collector{m.outcomes, m.sequencing, m.endToEnd, m.fenced, m.fanout, m.fanoutErrors, m.pending, m.owned, m.redelivered, m.batchSize, m.acquireTimeouts} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
