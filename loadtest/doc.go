// Package loadtest drives a Parley deployment from outside, through the protocol, the way
// users' devices do, and measures what it held. Every run is bounded in connections and time
// and stops by itself; targets outside the loopback range are refused unless allowed.
//
// Today it has the edge scenarios: idle (many authenticated idle connections: server memory
// per connection, handshakes per second) and broadcast (frames published for live delivery to
// many connections: latency and loss). The chat, presence and reconnect scenarios come with the
// delivery, presence and SDK work.
package loadtest
