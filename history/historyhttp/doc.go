// Package historyhttp is the history REST API (served by the api role): create and read
// conversations, page through their messages, and post messages through the same delivery
// pipeline as WebSocket sends. It authenticates with the same JWT as the WebSocket, answers a
// non-member exactly as it answers for a conversation that does not exist (404), and maps
// every error to one table of statuses and stable codes (docs/openapi.yaml).
package historyhttp
