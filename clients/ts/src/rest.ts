// The typed client of the history REST API (docs/openapi.yaml). The bodies' types come from
// src/openapi.ts, generated from the spec by openapi-typescript (npm run gen:openapi; a test
// fails when the committed file and the spec disagree).
import type { components, operations } from "./openapi.js";
import { newUUID } from "./uuid.js";

type Schemas = components["schemas"];
/** A conversation with its current members. */
export type RestConversation = Schemas["Conversation"];
/** A page of the inbox; next is the cursor of the next page (absent on the last). */
export type Inbox = Schemas["Inbox"];
/** One conversation of the inbox. */
export type InboxEntry = Schemas["Inbox"]["conversations"][number];
/** A message in its latest state, as history reads return it. */
export type RestMessage = Schemas["Message"];
/** A page of messages; next continues in the same direction. */
export type Messages = Schemas["Messages"];
/** A change that was made durable and will be sequenced. */
export type Accepted = Schemas["Accepted"];
/** The body of createConversation. */
export type CreateConversation = Schemas["CreateConversation"];
/** One user's presence as the REST API answers it. */
export type RestPresence = operations["getPresence"]["responses"]["200"]["content"]["application/json"]["presence"][number];

/** TokenSource returns a JWT for the user; called for every request and (re)connection. */
export type TokenSource = (signal?: AbortSignal) => string | Promise<string>;

/** APIError is an error answer of the REST API, with the server's stable code. */
export class APIError extends Error {
  override name = "APIError";
  constructor(
    /** The HTTP status. */
    readonly status: number,
    /** The error code (docs/protocol.md, section 5); "" when the body named none. */
    readonly code: string,
    message: string,
    readonly retryable: boolean,
    /** Retry-After in milliseconds (0 if absent). */
    readonly retryAfterMs: number,
  ) {
    super(`parley api: HTTP ${status} ${code}: ${message}`);
  }
}

/** Options of a REST client. */
export interface RESTOptions {
  /** The API's base URL, e.g. http://127.0.0.1:8080 (no trailing slash needed). */
  baseUrl: string;
  token: TokenSource;
  /** The fetch function (default globalThis.fetch). */
  fetch?: typeof fetch;
}

/** Per-call options: an AbortSignal to cancel the request. */
export interface CallOptions {
  signal?: AbortSignal;
}

const enc = encodeURIComponent;

/** REST is a typed client of the history REST API, authenticated like the socket. */
export class REST {
  private readonly base: string;
  private readonly token: TokenSource;
  private readonly fetchFn: typeof fetch;

  constructor(opts: RESTOptions) {
    this.base = opts.baseUrl.replace(/\/+$/, "");
    this.token = opts.token;
    const f = opts.fetch ?? globalThis.fetch;
    if (!f) throw new Error("parley: no fetch here (pass options.fetch)");
    this.fetchFn = f.bind(globalThis);
  }

  /** request makes one call and returns the decoded JSON answer (undefined for 204). */
  async request<T>(method: string, path: string, opts: { body?: unknown; headers?: Record<string, string>; signal?: AbortSignal | undefined } = {}): Promise<T> {
    const tok = await this.token(opts.signal);
    const headers: Record<string, string> = { Authorization: `Bearer ${tok}`, ...opts.headers };
    if (opts.body !== undefined) headers["Content-Type"] = "application/json";
    const init: RequestInit = { method, headers };
    if (opts.body !== undefined) init.body = JSON.stringify(opts.body);
    if (opts.signal) init.signal = opts.signal;
    const resp = await this.fetchFn(this.base + path, init);
    const text = await resp.text();
    if (resp.status >= 300) {
      let code = "";
      let message = text.slice(0, 200);
      let retry = false;
      try {
        const e = JSON.parse(text) as { code?: unknown; message?: unknown; retryable?: unknown };
        if (typeof e.code === "string") code = e.code;
        if (typeof e.message === "string") message = e.message;
        retry = e.retryable === true;
      } catch {
        // not the Error body: keep the text
      }
      const ra = Number.parseInt(resp.headers.get("Retry-After") ?? "", 10);
      throw new APIError(resp.status, code, message, retry, Number.isFinite(ra) ? ra * 1000 : 0);
    }
    if (resp.status === 204 || text === "") return undefined as T;
    return JSON.parse(text) as T;
  }

  /** createDirect creates (or returns) the direct conversation with user. */
  createDirect(withUser: string, o: CallOptions = {}): Promise<RestConversation> {
    const body: CreateConversation = { kind: "direct", with: withUser };
    return this.request("POST", "/v1/conversations", { body, signal: o.signal });
  }

  /** createGroup creates a group owned by the caller with the other members. */
  createGroup(title: string, members: string[], o: CallOptions = {}): Promise<RestConversation> {
    const body: CreateConversation = { kind: "group", title, members };
    return this.request("POST", "/v1/conversations", { body, signal: o.signal });
  }

  /** conversation returns a conversation with its current members. */
  conversation(id: string, o: CallOptions = {}): Promise<RestConversation> {
    return this.request("GET", `/v1/conversations/${enc(id)}`, o);
  }

  /** inbox returns a page of the caller's conversations, most recently active first. */
  inbox(q: { cursor?: string; limit?: number } = {}, o: CallOptions = {}): Promise<Inbox> {
    return this.request("GET", `/v1/conversations${query(q)}`, o);
  }

  /**
   * messages returns a page of a conversation's messages, each in its latest state: without
   * before or after the latest, newest first; before=SEQ newest first before SEQ;
   * after=SEQ oldest first after SEQ; cursor continues a page's next.
   */
  messages(conversation: string, q: { before?: number; after?: number; cursor?: string; limit?: number } = {}, o: CallOptions = {}): Promise<Messages> {
    return this.request("GET", `/v1/conversations/${enc(conversation)}/messages${query(q)}`, o);
  }

  /** postMessage sends a text message over HTTP (idempotent by idempotencyKey, a UUID). */
  postMessage(conversation: string, body: string, idempotencyKey: string = newUUID(), o: CallOptions = {}): Promise<Accepted> {
    return this.request("POST", `/v1/conversations/${enc(conversation)}/messages`, { body: { body }, headers: { "Idempotency-Key": idempotencyKey }, signal: o.signal });
  }

  /** markRead moves the caller's read position forward and returns it. */
  async markRead(conversation: string, seq: number, o: CallOptions = {}): Promise<number> {
    const r = await this.request<{ read_seq: number }>("POST", `/v1/conversations/${enc(conversation)}/read`, { body: { seq }, signal: o.signal });
    return r.read_seq;
  }

  /** edit replaces the text of one of the caller's messages (an edit event). */
  edit(conversation: string, seq: number, body: string, o: CallOptions = {}): Promise<Accepted> {
    return this.request("PATCH", msgPath(conversation, seq), { body: { body }, headers: { "Idempotency-Key": newUUID() }, signal: o.signal });
  }

  /** delete deletes a message (the caller's own; group admins any). */
  async delete(conversation: string, seq: number, o: CallOptions = {}): Promise<void> {
    await this.request("DELETE", msgPath(conversation, seq), o);
  }

  /** react adds the caller's reaction to a message. */
  async react(conversation: string, seq: number, emoji: string, o: CallOptions = {}): Promise<void> {
    await this.request("PUT", `${msgPath(conversation, seq)}/reactions/${enc(emoji)}`, o);
  }

  /** unreact removes the caller's reaction from a message. */
  async unreact(conversation: string, seq: number, emoji: string, o: CallOptions = {}): Promise<void> {
    await this.request("DELETE", `${msgPath(conversation, seq)}/reactions/${enc(emoji)}`, o);
  }

  /** addMember adds a member to a group (owner or admin). */
  addMember(conversation: string, user: string, o: CallOptions = {}): Promise<Accepted> {
    return this.request("POST", `/v1/conversations/${enc(conversation)}/members`, { body: { user }, headers: { "Idempotency-Key": newUUID() }, signal: o.signal });
  }

  /** removeMember removes a member from a group (owner or admin). */
  removeMember(conversation: string, user: string, o: CallOptions = {}): Promise<Accepted> {
    return this.request("DELETE", `/v1/conversations/${enc(conversation)}/members/${enc(user)}`, { headers: { "Idempotency-Key": newUUID() }, signal: o.signal });
  }

  /** leave leaves a group. */
  leave(conversation: string, o: CallOptions = {}): Promise<Accepted> {
    return this.request("POST", `/v1/conversations/${enc(conversation)}/leave`, { headers: { "Idempotency-Key": newUUID() }, signal: o.signal });
  }

  /** presence returns the states of up to 100 users, in the order asked. */
  async presence(users: string[], o: CallOptions = {}): Promise<RestPresence[]> {
    const q = users.map((u) => `user=${enc(u)}`).join("&");
    const r = await this.request<{ presence: RestPresence[] }>("GET", `/v1/presence?${q}`, o);
    return r.presence;
  }
}

function msgPath(conversation: string, seq: number): string {
  return `/v1/conversations/${enc(conversation)}/messages/${seq}`;
}

function query(q: Record<string, string | number | undefined>): string {
  const parts: string[] = [];
  for (const [k, v] of Object.entries(q)) {
    if (v !== undefined && v !== "") parts.push(`${enc(k)}=${enc(String(v))}`);
  }
  return parts.length ? `?${parts.join("&")}` : "";
}
