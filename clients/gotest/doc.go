// Package gotest runs the Go SDK (clients/go/parley) against a real parleyd, as an app would
// use it: two users chatting, an offline catch-up, a server killed mid-burst, a file outbox
// resent after a restart, a token refreshed over the live connection, a revoked token. It has
// no code of its own; the tests are in its _test.go files.
//
// It lives in the root module, not in the SDK's: these tests build parleyd, mint tokens with
// internal/auth, use the local stack through internal/teststack and check for leaked
// goroutines with goleak. Requiring the root module from clients/go, even for tests only,
// would put the server's whole dependency graph (gocql, nats.go, go-redis, prometheus, goleak)
// back into the SDK module's graph, which is what making the SDK its own module removes. The
// SDK module keeps its unit tests, which need nothing but the SDK and the protocol.
package gotest
