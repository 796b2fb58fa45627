// Package edge is Parley's WebSocket gateway: GET /v1/ws on gorilla/websocket. It
// authenticates each connection at the handshake, enforces the limits announced in hello,
// reads and validates client frames, routes them to the handlers of the other parts, and pushes
// server frames through one bounded queue per connection. It never touches Cassandra.
//
// Idle connections are cheap by construction: on Linux an idle connection has no goroutine
// (one epoll instance watches every socket and pooled workers read the frames that arrive;
// elsewhere, or with Config.GoroutineReads, one reader goroutine per connection); reading
// starts after the handshake so net/http's request state is freed; a writer exists only while
// frames are queued; there is no per-connection timer (one sweeper visits every connection
// once per heartbeat interval to ping it, close it if silent, and close it when its token
// expires); read-ahead and write buffers come from pools and are held only while in use.
//
// Lock order: Server.mu before conn.mu; neither is held while writing to a socket.
package edge
