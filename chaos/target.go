package chaos

import (
	"context"
)

// Kind is a kind of process of a deployment.
type Kind string

// The kinds of process the nemesis hits.
const (
	KindEdge      Kind = "edge"
	KindDelivery  Kind = "delivery"
	KindAPI       Kind = "api"
	KindNATS      Kind = "nats"
	KindCassandra Kind = "cassandra"
	KindRedis     Kind = "redis"
)

// Kinds lists every kind, in report order.
var Kinds = []Kind{KindEdge, KindDelivery, KindAPI, KindNATS, KindCassandra, KindRedis}

// Process is one process of the deployment under test that the nemesis may signal.
type Process interface {
	// Name is unique within the target, e.g. "edge-1" or "cassandra".
	Name() string
	Kind() Kind
	// PID is the process's id, 0 while it is not running.
	PID() int
	// Kill sends SIGKILL and returns once the process is gone.
	Kill() error
	// Stop sends SIGSTOP; Cont sends SIGCONT.
	Stop() error
	Cont() error
	// Restart starts the process again after Kill and returns once it is ready.
	Restart(ctx context.Context) error
}

// Target is a deployment the suite runs against: where the clients connect, and the
// processes the nemesis may hit. LocalTarget runs one on this machine; a multi-node
// cluster can provide its own.
type Target interface {
	// Edges are the WebSocket URLs the clients connect to; API is the REST base URL.
	Edges() []string
	API() string
	// Processes lists every process the nemesis may hit.
	Processes() []Process
	// Victim chooses the process of kind whose fault hurts most (the delivery worker that
	// owns the most partitions, say).
	Victim(ctx context.Context, kind Kind) (Process, error)
	// Healthy returns nil when every process runs and reports itself ready, else what is not.
	Healthy(ctx context.Context) error
}

// MetricsTarget is a Target that can say where its delivery workers' metrics are, so the
// suite can wait, before the final reads, until the pipeline has worked off its backlog (a
// projection still behind is late, not lost).
type MetricsTarget interface {
	Target
	// DeliveryMetrics are the /metrics URLs of the delivery workers.
	DeliveryMetrics() []string
}
