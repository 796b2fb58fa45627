// Package edge is Parley's WebSocket gateway: GET /v1/ws on gorilla/websocket. It
// authenticates each connection at the handshake, enforces the limits announced in hello,
// reads and validates client frames, routes them to the handlers of the other parts, and pushes
// server frames through one bounded queue per connection. It never touches Cassandra.
//
// Idle connections are cheap by construction: one reader goroutine per connection, started
// after the handshake so net/http's request state is freed; a writer goroutine exists only
// while frames are queued; there
// is no per-connection timer (one sweeper visits every connection once per heartbeat interval
// to ping it, close it if silent, and close it when its token expires); the write buffer
// comes from a pool and is held only during a write.
//
// Lock order: Server.mu before conn.mu; neither is held while writing to a socket.
package edge
