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
// Lock order, outermost first:
//
//  1. Conn.rmu, the reader's lock: held by the worker (or reader goroutine) for a whole turn
//     on a connection, and so while each frame's handler runs. Handlers of one connection
//     therefore run one at a time and in order, which the protocol relies on (a send's
//     accepted comes before a later frame's reply). A handler may wait up to handlerTimeout
//     (5 s: a durable publish, a store read); meanwhile that connection reads nothing more
//     and its worker is busy, while every other connection is unaffected (workers are pooled,
//     not shared per connection).
//  2. Server.mu (the registry, per-IP counts, watchers, user subscriptions).
//  3. Conn.mu (the outbound queue and the writer's state). Neither Server.mu nor Conn.mu is
//     held while writing to a socket.
//  4. batchConn.mu, a leaf: it serialises whole-frame writes to the socket (the writer's
//     batches and gorilla's pong and close replies), so it is held during a socket write,
//     bounded by the write deadline; nothing else is locked while it is held.
package edge
