// Package httpapi is Parley's REST API (served by the api role): conversations (create, read,
// members, leave), their messages (page both ways, post, edit, delete, react, all through the
// same delivery pipeline as WebSocket sends), the caller's inbox and read position, and
// presence. It authenticates with the same JWT as the WebSocket, answers a non-member exactly
// as it answers for a conversation that does not exist (404), maps domain errors through the
// one table of internal/wire, and limits each user's request rate (docs/openapi.yaml).
//
// Files by resource: conversations.go, messages.go, events.go (edits, reactions, members),
// inbox.go, presence.go; api.go holds the routes, the authentication middleware and the
// strict decoding of bodies, errors.go the error answers, limits.go the per-user rate limit,
// public.go the public listener's CORS and its JSON answers for requests no route takes,
// dev.go development mode's routes (a token endpoint for loopback clients and the browser
// demo's static files; parleyd mounts them only with --dev).
package httpapi
