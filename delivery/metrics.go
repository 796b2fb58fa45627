package delivery

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	outcomes          *prometheus.CounterVec
	sequencing        prometheus.Histogram
	endToEnd          prometheus.Histogram
	fenced            prometheus.Counter
	fanout            prometheus.Counter
	fanoutErrors      prometheus.Counter
	fanoutSkipped     prometheus.Counter
	repeats           prometheus.Counter
	fanoutUnprojected prometheus.Counter
	fanoutRepaid      prometheus.Counter
	pending           *prometheus.GaugeVec
	projectionPending *prometheus.GaugeVec
	owned             *prometheus.GaugeVec
	redelivered       *prometheus.CounterVec
	redeliveredDone   *prometheus.CounterVec
	batchSize         prometheus.Histogram
	acquireTimeouts   *prometheus.CounterVec
	handovers         *prometheus.CounterVec
	liveWorkers       prometheus.Gauge
	projected         *prometheus.CounterVec
	projectionLag     prometheus.Histogram
	reconcilerRuns    prometheus.Counter
	reconcilerRepairs *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	lat := []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	m := &metrics{
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_delivery_messages_total",
			Help: "Ingest messages handled by the sequencer, by outcome (sequenced, duplicate, rejected, retry, dead_letter, dedupe_by_log: a fresh UUIDv7 send deduplicated by the log alone while Cassandra could not answer).",
		}, []string{"outcome"}),
		sequencing: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "parley_delivery_sequencing_seconds", Help: "Time from taking a batch to appending one of its messages to the log.", Buckets: lat,
		}),
		endToEnd: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "parley_delivery_accepted_to_pushed_seconds", Help: "From the edge's accept to the live fan-out publish.", Buckets: lat,
		}),
		fenced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_delivery_fenced_total", Help: "Log appends refused because the conversation's log moved on (a stale sequencer reloaded instead of renumbering).",
		}),
		fanout: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_delivery_fanout_publishes_total", Help: "Live fan-out publishes to user subjects.",
		}),
		fanoutErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "parley_delivery_fanout_errors_total", Help: "Live fan-outs that failed (the members sync instead).",
		}),
	}
	m.fanoutSkipped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "parley_delivery_fanout_skipped_total", Help: "Log entries not pushed live because no member list could be read (the members sync instead).",
	})
	m.repeats = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "parley_delivery_fanout_repeats_total", Help: "Log entries pushed live again (the fan-out was taken over while they were in flight).",
	})
	m.fanoutUnprojected = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "parley_delivery_fanout_unprojected_total", Help: "Log entries pushed live before the projector wrote them (it made no progress: Cassandra down or slow).",
	})
	m.fanoutRepaid = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "parley_delivery_fanout_repaid_total", Help: "Pushes repeated once the projector wrote an entry pushed before it (one per conversation: the last such entry), so a device that synced meanwhile learns of it.",
	})
	m.projectionPending = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "parley_delivery_projection_pending",
		Help: "Log entries of a partition not yet written to Cassandra (projection lag), by partition; refreshed every 5s.",
	}, []string{"partition"})
	m.projected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "parley_delivery_projected_total", Help: "Log entries written to Cassandra by the projector, by outcome (projected, retry, undecodable).",
	}, []string{"outcome"})
	m.projectionLag = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "parley_delivery_projection_lag_seconds", Help: "From the edge's accept to the entry being in Cassandra.", Buckets: lat,
	})
	m.reconcilerRuns = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "parley_delivery_reconciler_runs_total", Help: "Reconciler passes this process completed (it holds the lease); a pass that stops is resumed and counted once, at its end.",
	})
	m.reconcilerRepairs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "parley_delivery_reconciler_repairs_total",
		Help: "What the reconciler repaired from the log, by kind (message: missing from Cassandra; divergent: another message at its seq; inbox: a row without its conversation's last entry). Alert on any.",
	}, []string{"what"})
	m.pending = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "parley_delivery_partition_pending",
		Help: "Messages of a partition not yet delivered to a worker (consumer lag), by partition; refreshed every 5s.",
	}, []string{"partition"})
	m.owned = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "parley_delivery_partition_owned",
		Help: "1 for each partition this process is the pinned sequencer of, else 0 (a partition gets a pinned sequencer with its first message); set when the pin comes or goes, checked against the consumer every 5s.",
	}, []string{"partition"})
	m.redelivered = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "parley_delivery_redeliveries_total", Help: "Messages a stage received again (after a failover or an ack wait), by stage.",
	}, []string{"stage"})
	m.redeliveredDone = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "parley_delivery_redelivered_done_total", Help: "Deliveries of a message this worker had finished already (acked again, not processed twice), by stage.",
	}, []string{"stage"})
	m.batchSize = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "parley_delivery_batch_messages", Help: "Messages a partition's worker took at once (grows with the backlog).",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000},
	})
	m.acquireTimeouts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "parley_delivery_takeover_timeouts_total",
		Help: "Partitions taken over without every message of the previous owner back in hand (order of those messages not guaranteed), by stage.",
	}, []string{"stage"})
	m.handovers = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "parley_delivery_handovers_total",
		Help: "Partitions this process handed over to another worker because it held more than its fair share (a worker joined), by stage.",
	}, []string{"stage"})
	m.liveWorkers = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "parley_delivery_workers",
		Help: "Delivery workers this process counts as alive (their heartbeats in the workers bucket), itself included; each holds at most ceil(partitions / workers) of each stage.",
	})
	for _, c := range []prometheus.Collector{m.handovers, m.liveWorkers, m.outcomes, m.sequencing, m.endToEnd, m.fenced, m.fanout, m.fanoutErrors, m.fanoutSkipped,
		m.repeats, m.fanoutUnprojected, m.fanoutRepaid, m.pending, m.projectionPending, m.owned, m.redelivered, m.redeliveredDone, m.batchSize, m.acquireTimeouts,
		m.projected, m.projectionLag, m.reconcilerRuns, m.reconcilerRepairs} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
