// @parley/client: Parley's TypeScript client, for browsers and Node 20 (docs in README.md).
export { Client, apiFromWS } from "./client.js";
export type { ClientEvent, ConnState, ConnectOptions, EventOf, EventType, Listener, Receipt, Typing, WebSocketConstructor, WebSocketLike } from "./client.js";
export { ClosedError, HandshakeError, NotConnectedError, ServerError, TokenRevokedError, isTokenRevoked } from "./errors.js";
export * from "./protocol.js";
export { APIError, REST } from "./rest.js";
export type { Accepted, CallOptions, CreateConversation, Inbox, InboxEntry, Messages, RESTOptions, RestConversation, RestMessage, RestPresence, TokenSource } from "./rest.js";
export { IndexedDBStore, MemoryStore, cloneState, emptyState } from "./store.js";
export type { IndexedDBStoreOptions, Pending, State, Store } from "./store.js";
export { DEFAULT_BACKOFF, backoffDelay } from "./backoff.js";
export type { Backoff } from "./backoff.js";
export { Tracker } from "./tracker.js";
export { newUUID } from "./uuid.js";
export type { Logger } from "./util.js";
