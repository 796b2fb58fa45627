// Package presence keeps who is online in Redis: each edge registers its device sessions,
// renews them with batched heartbeats, and publishes online/offline transitions on NATS for
// the edges whose clients watch those users. Presence is soft state (DESIGN.md promise 5): a
// Redis that restarts empty is rebuilt by the next heartbeats, and while Redis is down
// presence answers "unknown" without getting in the way of messaging.
package presence
