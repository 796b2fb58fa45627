// Package delivery is the pipeline between an accepted send and every device that must see
// it. The edge publishes each send to the JetStream ingest stream (Ingest) and answers
// "accepted" only on the stream's acknowledgement, so an accepted message is durable. Workers
// consume the stream by partition (hash of the conversation); for each partition exactly one
// worker across all processes is active at a time (a JetStream consumer with the pinned-client
// priority policy), and it gives each message its conversation's next seq, stores it through
// history (a conditional insert that fences a stale worker out), acknowledges the stream, and
// publishes the sequenced message on every member's user subject for live delivery.
//
// docs/delivery.md has the exact order of steps and what happens on a crash between any two.
package delivery
