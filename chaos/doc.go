// Package chaos is Parley's fault-injection suite. It drives a running deployment from
// outside, like the load test: Go SDK clients (several users, two devices each, direct and
// group conversations) send messages at a bounded rate and record a history of what they
// did and saw, while a nemesis SIGKILLs and restarts, or SIGSTOPs and resumes, each kind of
// process (edge, delivery, api, nats-server, Cassandra, Redis) on a schedule. Once every
// fault has healed, every conversation is read back through sync and through the REST
// history API, and a checker (pure logic, Check) looks for the defects the promises of
// DESIGN.md section 1 rule out: lost, duplicated, reordered, phantom, gap, divergent,
// sender FIFO, refused and undelivered messages.
//
// The processes are reached through the Target interface, so the suite runs against the
// local processes of one machine (LocalTarget: parleyd processes it starts, and the stack
// that deploy/local/stack.sh runs) or, later, against a multi-node cluster.
//
// docs/reliability.md says how to run it and how to read its output; cmd/parley-chaos is
// the command.
package chaos
