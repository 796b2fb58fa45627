// Package parley is the Go client of Parley: a WebSocket connection that survives
// disconnects, and a typed client of the history REST API.
//
// Guarantees, and their limits:
//   - Every message of the user's conversations reaches Events() once, in seq order within
//     its conversation, across disconnects: live messages that skip a seq are held until the
//     gap is fetched with sync; a reconnect syncs from the last delivered seq. Across process
//     restarts this holds with a persistent Store (FileStore), except that a message being
//     delivered when the process dies may be delivered again (the cursor is saved right
//     after the app receives the event).
//   - Send puts the message in the outbox (and the Store) before returning and resends it
//     with the same client_msg_id until the server accepts it: the server keeps one message
//     per client_msg_id, so retries never duplicate. A message refused for good (not a
//     member, too large) leaves the outbox with EventSendFailed.
//   - Presence subscriptions and typing are live only: subscribe again after a reconnect. When
//     the server lost presence updates (presence.resync), the client takes a fresh snapshot of
//     the users it watches and delivers it as EventPresence.
//
// It is in its own module, github.com/parleyhq/parley/clients/go, which requires only the
// protocol module (github.com/parleyhq/parley/protocol) and gorilla/websocket: an app that
// imports it gets none of the server's dependencies.
package parley
