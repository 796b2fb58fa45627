// The wire contract of docs/protocol.md (Go: package protocol): frame types, error and close
// codes, limits, and the codec. Frames keep the wire's field names (snake_case), so what the
// app sees is what docs/protocol.md and the golden frames in protocol/testdata show.

/** The protocol version this package implements. */
export const VERSION = 1;
/** The WebSocket subprotocol a client must offer. */
export const SUBPROTOCOL = "parley.v1.json";
/** Marks a token carried as a second subprotocol value (browsers cannot set Authorization). */
export const TOKEN_SUBPROTOCOL_PREFIX = "parley.token.";
/** The WebSocket endpoint. */
export const PATH = "/v1/ws";

/** Field limits the server checks on client frames (protocol/codec.go). */
export const MAX_ID_BYTES = 64;
export const MAX_USER_ID_BYTES = 128;
export const MAX_USERS_PER_CALL = 100;
export const MAX_CURSORS = 1000;
export const MAX_SYNC_LIMIT = 1000;
export const MAX_TOKEN_BYTES = 8192;

/** Frame types a client may send. */
export const CLIENT_TYPES = ["send", "ack", "read", "sync", "presence.subscribe", "presence.unsubscribe", "typing", "ping", "auth.refresh"] as const;
/** Frame types the server sends. */
export const SERVER_TYPES = ["hello", "accepted", "message", "receipt", "sync.result", "presence", "presence.resync", "typing", "pong", "ok", "error", "reconnect"] as const;
export type ClientType = (typeof CLIENT_TYPES)[number];
export type ServerType = (typeof SERVER_TYPES)[number];
export type FrameType = ClientType | ServerType;

/** Error codes (docs/protocol.md, section 5). */
export const CODES = ["bad_request", "unknown_type", "unsupported", "unauthorized", "token_expired", "token_revoked", "forbidden", "not_found", "conflict", "body_too_large", "rate_limited", "too_many_subscriptions", "unavailable", "internal"] as const;
export type Code = (typeof CODES)[number];

/** Whether a request that failed with code may be sent again unchanged. */
export function retryable(code: string): boolean {
  return code === "rate_limited" || code === "unavailable" || code === "internal";
}

/** WebSocket close codes Parley uses (docs/protocol.md, section 4). */
export const Close = {
  Normal: 1000,
  GoingAway: 1001,
  ProtocolError: 1002,
  UnsupportedData: 1003,
  InvalidPayload: 1007,
  PolicyViolation: 1008,
  MessageTooBig: 1009,
  InternalError: 1011,
  TokenExpired: 4001,
  TokenRevoked: 4003,
  RateLimited: 4008,
  SlowConsumer: 4009,
  Replaced: 4010,
} as const;

/** A sequenced message (or event entry) of a conversation, as pushed and synced. */
export interface Message {
  conversation: string;
  seq: number;
  sender: string;
  sender_device?: string;
  client_msg_id: string;
  /** text, edit, delete, reaction, reaction_removed, member_added, member_removed, member_left */
  kind: string;
  body?: string;
  target_seq?: number;
  /** The member a membership event is about. */
  user?: string;
  ts: number;
  /** Latest state of a text message in sync and history reads (never in live frames). */
  edited_seq?: number;
  deleted?: boolean;
  reactions?: Reaction[];
}

export interface Reaction {
  emoji: string;
  users: string[];
}

/** One conversation of a sync.result page. */
export interface Conversation {
  conversation: string;
  last_seq: number;
  read_seq: number;
  unread: number;
  /** The other member of a direct conversation. */
  peer?: string;
}

/** A device's position in one conversation (sync). */
export interface Cursor {
  conversation: string;
  seq: number;
}

/** One user's presence: online, offline (with last_seen when known) or unknown. */
export interface PresenceState {
  user: string;
  state: string;
  last_seen?: number;
}

/** The limits announced in hello. */
export interface Limits {
  max_frame_bytes: number;
  max_body_bytes: number;
  frames_per_second: number;
  frame_burst: number;
  max_subscriptions: number;
}

/** The envelope of every frame: the union of all frame types' fields (Go: protocol.Frame). */
export interface Frame {
  type: string;
  id?: string;
  conversation?: string;
  client_msg_id?: string;
  body?: string;
  seq?: number;
  sender?: string;
  sender_device?: string;
  user?: string;
  ts?: number;
  kind?: string;
  target_seq?: number;
  users?: string[];
  presence?: PresenceState[];
  since?: string;
  page?: string;
  cursors?: Cursor[];
  limit?: number;
  messages?: Message[];
  conversations?: Conversation[];
  more?: boolean;
  token?: string;
  session?: string;
  device?: string;
  version?: number;
  heartbeat_ms?: number;
  expires_at?: number;
  limits?: Limits;
  code?: string;
  message?: string;
  retryable?: boolean;
  retry_after_ms?: number;
  after_ms?: number;
  reason?: string;
}

/** A frame that is not what the protocol says: code is the protocol's error code. */
export class ProtocolError extends Error {
  override name = "ProtocolError";
  constructor(
    readonly code: Code,
    message: string,
  ) {
    super(`${code}: ${message}`);
  }
}

// The codec is driven by one description per struct, in the Go structs' field order, with
// Go's omitempty: re-encoding a decoded frame gives the same JSON as the Go codec (the golden
// frames check it), and decoding checks every known field's JSON type.
type Kind = "s" | "i" | "b" | "ss" | { o: Spec } | { a: Spec };
type Spec = ReadonlyArray<readonly [name: string, kind: Kind, omitempty: boolean]>;

const reactionSpec: Spec = [
  ["emoji", "s", false],
  ["users", "ss", false],
];
const messageSpec: Spec = [
  ["conversation", "s", false],
  ["seq", "i", false],
  ["sender", "s", false],
  ["sender_device", "s", true],
  ["client_msg_id", "s", false],
  ["kind", "s", false],
  ["body", "s", true],
  ["target_seq", "i", true],
  ["user", "s", true],
  ["ts", "i", false],
  ["edited_seq", "i", true],
  ["deleted", "b", true],
  ["reactions", { a: reactionSpec }, true],
];
const conversationSpec: Spec = [
  ["conversation", "s", false],
  ["last_seq", "i", false],
  ["read_seq", "i", false],
  ["unread", "i", false],
  ["peer", "s", true],
];
const cursorSpec: Spec = [
  ["conversation", "s", false],
  ["seq", "i", false],
];
const presenceSpec: Spec = [
  ["user", "s", false],
  ["state", "s", false],
  ["last_seen", "i", true],
];
const limitsSpec: Spec = [
  ["max_frame_bytes", "i", false],
  ["max_body_bytes", "i", false],
  ["frames_per_second", "i", false],
  ["frame_burst", "i", false],
  ["max_subscriptions", "i", false],
];
const frameSpec: Spec = [
  ["type", "s", false],
  ["id", "s", true],
  ["conversation", "s", true],
  ["client_msg_id", "s", true],
  ["body", "s", true],
  ["seq", "i", true],
  ["sender", "s", true],
  ["sender_device", "s", true],
  ["user", "s", true],
  ["ts", "i", true],
  ["kind", "s", true],
  ["target_seq", "i", true],
  ["users", "ss", true],
  ["presence", { a: presenceSpec }, true],
  ["since", "s", true],
  ["page", "s", true],
  ["cursors", { a: cursorSpec }, true],
  ["limit", "i", true],
  ["messages", { a: messageSpec }, true],
  ["conversations", { a: conversationSpec }, true],
  ["more", "b", true],
  ["token", "s", true],
  ["session", "s", true],
  ["device", "s", true],
  ["version", "i", true],
  ["heartbeat_ms", "i", true],
  ["expires_at", "i", true],
  ["limits", { o: limitsSpec }, true],
  ["code", "s", true],
  ["message", "s", true],
  ["retryable", "b", true],
  ["retry_after_ms", "i", true],
  ["after_ms", "i", true],
  ["reason", "s", true],
];

const want: Record<string, string> = { s: "a string", i: "an integer", b: "a boolean", ss: "an array of strings" };

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

// decodeValue checks v against kind and returns it typed; path names the field for errors.
function decodeValue(v: unknown, kind: Kind, path: string, strictCase: boolean): unknown {
  const bad = (w: string) => new ProtocolError("bad_request", `field ${path} has the wrong type (want ${w})`);
  if (kind === "s") {
    if (typeof v !== "string") throw bad(want.s!);
    return v;
  }
  if (kind === "i") {
    if (typeof v !== "number" || !Number.isInteger(v)) throw bad(want.i!);
    return v;
  }
  if (kind === "b") {
    if (typeof v !== "boolean") throw bad(want.b!);
    return v;
  }
  if (kind === "ss") {
    if (!Array.isArray(v) || v.some((s) => typeof s !== "string")) throw bad(want.ss!);
    return v.slice();
  }
  if ("a" in kind) {
    if (!Array.isArray(v)) throw bad("an array");
    return v.map((e, i) => decodeObject(e, kind.a, `${path}/${i}`, strictCase));
  }
  return decodeObject(v, kind.o, path, strictCase);
}

function decodeObject(v: unknown, spec: Spec, path: string, strictCase: boolean): Record<string, unknown> {
  if (!isObject(v)) throw new ProtocolError("bad_request", path ? `field ${path} has the wrong type (want an object)` : "a frame is a JSON object");
  const out: Record<string, unknown> = {};
  if (strictCase) {
    for (const key of Object.keys(v)) {
      if (spec.some(([n]) => n === key)) continue;
      const variant = spec.find(([n]) => n.toLowerCase() === key.toLowerCase());
      if (variant) {
        throw new ProtocolError("bad_request", `key "${key}": keys are case-sensitive (the field is "${variant[0]}")${path ? " in " + path : ""}`);
      }
    }
  }
  for (const [name, kind, omitempty] of spec) {
    const x = v[name];
    if (x === undefined || x === null) {
      if (!omitempty) out[name] = zero(kind);
      continue;
    }
    out[name] = decodeValue(x, kind, `${path}/${name}`, strictCase);
  }
  return out;
}

function zero(kind: Kind): unknown {
  switch (kind) {
    case "s":
      return "";
    case "i":
      return 0;
    case "b":
      return false;
    case "ss":
      return [];
  }
  return "a" in kind ? [] : {};
}

function encodeObject(v: Record<string, unknown>, spec: Spec): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, kind, omitempty] of spec) {
    let x = v[name];
    if (omitempty && (x === undefined || x === null || x === "" || x === 0 || x === false || (Array.isArray(x) && x.length === 0))) continue;
    if (x === undefined || x === null) x = zero(kind);
    if (typeof kind === "object" && "a" in kind) {
      out[name] = (x as Record<string, unknown>[]).map((e) => encodeObject(e, kind.a));
    } else if (typeof kind === "object") {
      out[name] = encodeObject(x as Record<string, unknown>, kind.o);
    } else {
      out[name] = x;
    }
  }
  return out;
}

/**
 * decodeFrame parses a frame from the server. Every known field must have its JSON type
 * (else a ProtocolError with code bad_request); unknown fields are dropped (forward
 * compatibility), and nested messages, conversations, cursors and presence states get their
 * required fields (zero when absent).
 */
export function decodeFrame(text: string): Frame {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new ProtocolError("bad_request", `invalid JSON: ${(e as Error).message}`);
  }
  const f = decodeObject(v, frameSpec, "", false) as unknown as Frame;
  if (!f.type) throw new ProtocolError("bad_request", "missing type");
  return f;
}

/** encodeFrame returns the JSON text of f, with the Go codec's field order and omissions. */
export function encodeFrame(f: Frame): string {
  return JSON.stringify(encodeObject(f as unknown as Record<string, unknown>, frameSpec));
}

/**
 * decodeClientFrame reads a client frame by the server's rules (docs/protocol.md, "Strict
 * JSON"): no duplicate key in any object, no key that differs from a field's name only in
 * case, every field of its JSON type, and the fields its type requires (validateClientFrame).
 */
export function decodeClientFrame(text: string): Frame {
  const v = parseStrict(text);
  const f = decodeObject(v, frameSpec, "", true) as unknown as Frame;
  validateClientFrame(f);
  return f;
}

const uuidRE = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

/** validUUID reports whether s is a UUID in canonical form (either case). */
export function validUUID(s: string): boolean {
  return uuidRE.test(s);
}

const encoder = new TextEncoder();
function bytes(s: string): number {
  return encoder.encode(s).length;
}

function needUUID(field: string, v: string | undefined): void {
  if (!v) throw new ProtocolError("bad_request", `${field} is missing`);
  if (!validUUID(v)) throw new ProtocolError("bad_request", `${field} is not a UUID`);
}

/**
 * validateClientFrame checks that a client frame's fields fit its type, as the server does
 * (Go: Frame.Validate); it throws a ProtocolError naming what is wrong. The client runs it on
 * the frames the app's calls build, so bad input fails at the call, not at the server.
 */
export function validateClientFrame(f: Frame): void {
  if (f.id !== undefined && bytes(f.id) > MAX_ID_BYTES) {
    throw new ProtocolError("bad_request", `id is ${bytes(f.id)} bytes, at most ${MAX_ID_BYTES} allowed`);
  }
  switch (f.type) {
    case "":
    case undefined:
      throw new ProtocolError("bad_request", "missing type");
    case "send":
      needUUID("conversation", f.conversation);
      needUUID("client_msg_id", f.client_msg_id);
      if (!f.body) throw new ProtocolError("bad_request", "body is empty");
      return;
    case "ack":
    case "read":
      needUUID("conversation", f.conversation);
      if (!Number.isInteger(f.seq) || (f.seq ?? 0) < 1) throw new ProtocolError("bad_request", "seq must be at least 1");
      return;
    case "sync": {
      const cursors = f.cursors ?? [];
      if (cursors.length > MAX_CURSORS) throw new ProtocolError("bad_request", `${cursors.length} cursors, at most ${MAX_CURSORS} allowed`);
      for (const c of cursors) {
        needUUID("cursors[].conversation", c.conversation);
        if (c.seq < 0) throw new ProtocolError("bad_request", "cursor seq must not be negative");
      }
      const limit = f.limit ?? 0;
      if (limit < 0 || limit > MAX_SYNC_LIMIT) throw new ProtocolError("bad_request", `limit ${limit} out of range [0, ${MAX_SYNC_LIMIT}]`);
      return;
    }
    case "presence.subscribe":
    case "presence.unsubscribe": {
      const users = f.users ?? [];
      if (users.length === 0) throw new ProtocolError("bad_request", "users is empty");
      if (users.length > MAX_USERS_PER_CALL) throw new ProtocolError("bad_request", `${users.length} users, at most ${MAX_USERS_PER_CALL} per frame`);
      for (const u of users) {
        if (u === "" || bytes(u) > MAX_USER_ID_BYTES) throw new ProtocolError("bad_request", `user id must be 1 to ${MAX_USER_ID_BYTES} bytes`);
      }
      return;
    }
    case "typing":
      needUUID("conversation", f.conversation);
      return;
    case "ping":
      return;
    case "auth.refresh":
      if (!f.token) throw new ProtocolError("bad_request", "token is empty");
      if (bytes(f.token) > MAX_TOKEN_BYTES) throw new ProtocolError("bad_request", `token is longer than ${MAX_TOKEN_BYTES} bytes`);
      return;
  }
  throw new ProtocolError("unknown_type", `unknown frame type ${JSON.stringify(f.type.slice(0, 40))} (a client may send ${CLIENT_TYPES.join(", ")})`);
}

/**
 * parseStrict is JSON.parse that refuses a duplicate key in any object (JSON.parse keeps the
 * last one silently). Values are decoded by JSON.parse, token by token.
 */
export function parseStrict(text: string): unknown {
  let i = 0;
  const fail = (what: string): never => {
    throw new ProtocolError("bad_request", `invalid JSON at byte ${i}: ${what}`);
  };
  const ws = () => {
    while (i < text.length && " \t\n\r".includes(text[i]!)) i++;
  };
  const str = (): string => {
    const start = i++;
    while (i < text.length && text[i] !== '"') i += text[i] === "\\" ? 2 : 1;
    if (i >= text.length) fail("unterminated string");
    i++;
    return JSON.parse(text.slice(start, i)) as string;
  };
  const value = (path: string): unknown => {
    ws();
    const c = text[i];
    if (c === "{") {
      i++;
      const out: Record<string, unknown> = {};
      const seen = new Set<string>();
      ws();
      if (text[i] === "}") {
        i++;
        return out;
      }
      for (;;) {
        ws();
        if (text[i] !== '"') fail("want a key");
        const key = str();
        if (seen.has(key)) throw new ProtocolError("bad_request", `duplicate key ${JSON.stringify(key)}${path ? " in " + path : ""}`);
        seen.add(key);
        ws();
        if (text[i++] !== ":") fail("want ':'");
        out[key] = value(`${path}/${key}`);
        ws();
        const d = text[i++];
        if (d === "}") return out;
        if (d !== ",") fail("want ',' or '}'");
      }
    }
    if (c === "[") {
      i++;
      const out: unknown[] = [];
      ws();
      if (text[i] === "]") {
        i++;
        return out;
      }
      for (;;) {
        out.push(value(`${path}/${out.length}`));
        ws();
        const d = text[i++];
        if (d === "]") return out;
        if (d !== ",") fail("want ',' or ']'");
      }
    }
    if (c === '"') return str();
    const m = /^(?:-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null)/.exec(text.slice(i, i + 400));
    if (!m) return fail("want a value");
    i += m[0].length;
    return JSON.parse(m[0]);
  };
  const v = value("");
  ws();
  if (i < text.length) fail("data after the value");
  return v;
}
