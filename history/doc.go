// Package history owns conversations, their members and their message logs in Cassandra
// (tables of internal/schema's migrations). Messages are partitioned by (conversation, bucket
// = seq / BucketSize) and clustered by seq descending, so the latest page and paging in either
// direction read bounded partitions. Rows are immutable and inserted with IF NOT EXISTS: the
// delivery sequencer relies on that conditional insert to fence a stale sequencer out.
//
// Statements use bound values only, reads are marked idempotent (the driver may retry them),
// and timeouts and consistency come from the session (internal/backend).
package history
