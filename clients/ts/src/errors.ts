import { APIError } from "./rest.js";

/** ServerError is an error frame from the server, with its stable code. */
export class ServerError extends Error {
  override name = "ServerError";
  constructor(
    readonly code: string,
    message: string,
    readonly retryable: boolean,
    /** The server's retry_after_ms (0 if none). */
    readonly retryAfterMs = 0,
  ) {
    super(`parley: ${code}: ${message}`);
  }
}

/** ClosedError answers calls on a closed client. */
export class ClosedError extends Error {
  override name = "ClosedError";
  constructor() {
    super("parley: client closed");
  }
}

/**
 * NotConnectedError answers requests (markRead, typing, subscribePresence, ...) made while
 * the client is reconnecting, or whose connection dropped before the answer; send never
 * rejects with it (the outbox waits).
 */
export class NotConnectedError extends Error {
  override name = "NotConnectedError";
  constructor() {
    super("parley: not connected (reconnecting)");
  }
}

/**
 * TokenRevokedError says the server refused the client's token as revoked (a logout, a lost
 * device: close 4003, or a handshake refused with 401 token_revoked) and the token source had
 * no token the server accepts. The client then stops reconnecting: its last state event
 * (disconnected) carries this error, and so do send and every request from then on. Sign the
 * user in again and connect a new client with the same store.
 */
export class TokenRevokedError extends Error {
  override name = "TokenRevokedError";
  constructor(detail = "", options?: { cause?: unknown }) {
    super(`parley: token revoked: sign in again${detail ? ` (${detail})` : ""}`, options);
  }
}

/**
 * HandshakeError is a refused WebSocket handshake: the HTTP status, the server's error code
 * and Retry-After, when the WebSocket implementation shows them (ws in Node does; a browser
 * shows none: status 0).
 */
export class HandshakeError extends Error {
  override name = "HandshakeError";
  constructor(
    readonly status: number,
    readonly code: string,
    readonly retryAfterMs: number,
    detail = "",
  ) {
    super(status ? `parley: handshake refused: HTTP ${status}${code ? " " + code : ""}` : `parley: handshake failed${detail ? ": " + detail : ""}`);
  }
}

/** isTokenRevoked reports whether err says the token was revoked (client or REST errors). */
export function isTokenRevoked(err: unknown): boolean {
  return err instanceof TokenRevokedError || (err instanceof APIError && err.code === "token_revoked") || (err instanceof HandshakeError && err.code === "token_revoked");
}
