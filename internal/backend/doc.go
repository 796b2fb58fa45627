// Package backend opens Parley's connections to the services it runs on: Redis (go-redis v9),
// NATS with JetStream (nats.go) and Cassandra (the Apache gocql driver). Each has a Config with
// documented defaults and a Validate method, deadlines on every call, reconnect settings that
// recover from a restart of the service without restarting Parley, Prometheus metrics on an
// injected registerer, and a Ping used by the readiness endpoint.
//
// The packages that own the data (presence, delivery, history, inbox) receive the opened
// clients; they never dial on their own.
package backend
