// The client: a connection to Parley that survives disconnects (Go: clients/go/parley,
// client.go). It reconnects with backoff and the server's hints, resumes with sync, resends
// its outbox with the same ids, and hands every message to the app once, in seq order per
// conversation.
import { DEFAULT_BACKOFF, backoffDelay, type Backoff } from "./backoff.js";
import { ClosedError, HandshakeError, NotConnectedError, ServerError, TokenRevokedError } from "./errors.js";
import {
  Close,
  MAX_USERS_PER_CALL,
  SUBPROTOCOL,
  TOKEN_SUBPROTOCOL_PREFIX,
  decodeFrame,
  encodeFrame,
  validateClientFrame,
  ProtocolError,
  type Frame,
  type Message,
  type PresenceState,
} from "./protocol.js";
import { REST, type TokenSource } from "./rest.js";
import { MemoryStore, cloneState, type Pending, type State, type Store } from "./store.js";
import { Tracker } from "./tracker.js";
import { Kick, deferred, silentLogger, sleep, type Deferred, type Logger } from "./util.js";
import { newUUID } from "./uuid.js";

/** The connection's state. */
export type ConnState = "connecting" | "connected" | "disconnected";

/** A receipt: a member received (delivered) or read a conversation up to seq. */
export interface Receipt {
  conversation: string;
  seq: number;
  user: string;
  kind: string;
  ts: number;
}

/** A member is typing in a conversation (show it for about 5 s unless renewed). */
export interface Typing {
  conversation: string;
  user: string;
  ts: number;
}

/** What the client tells the app, in order (on() listeners and events() iterators). */
export type ClientEvent =
  /** A message (or event entry) of a conversation: once per client, in seq order per conversation. */
  | { type: "message"; message: Message }
  /** The message sent with clientMsgId is durable on the server. */
  | { type: "accepted"; clientMsgId: string }
  /** The message with clientMsgId was refused for good (error says why); it left the outbox. */
  | { type: "sendFailed"; clientMsgId: string; error: ServerError }
  | { type: "receipt"; receipt: Receipt }
  | { type: "typing"; typing: Typing }
  /** Presence states: an update, or a fresh snapshot after presence.resync. */
  | { type: "presence"; presence: PresenceState[] }
  /** The connection's new state (error: why the client stopped, when it did). */
  | { type: "state"; state: ConnState; error?: Error };

export type EventType = ClientEvent["type"];
export type EventOf<T extends EventType> = Extract<ClientEvent, { type: T }>;
/** A listener; one that returns a promise holds the next event back until it settles. */
export type Listener<T extends EventType> = (e: EventOf<T>) => void | Promise<void>;

/** The part of the WebSocket API the client uses (browsers' WebSocket, ws in Node). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: string, listener: (ev: any) => void): void;
}
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** Options of Client.connect. */
export interface ConnectOptions {
  /** The edge's WebSocket URL, ws://host:port/v1/ws (wss:// behind TLS). */
  url: string;
  /** A JWT, or a function returning one: called at every (re)connection and refresh. */
  token: string | TokenSource;
  /** This device's id, sent as ?device= (needed when the token names no device). */
  device?: string;
  /** The REST API's base URL (default: the WebSocket URL's host over http/https). */
  apiUrl?: string;
  /** Where cursors and the outbox are kept (default a MemoryStore). */
  store?: Store;
  /** Acknowledge delivered messages automatically (default true: senders get delivered receipts). */
  autoAck?: boolean;
  /** The WebSocket constructor (default globalThis.WebSocket; in Node 20 pass ws's). */
  WebSocket?: WebSocketConstructor;
  /** Reconnect backoff: exponential from minMs, capped at maxMs, full jitter (default 250 ms, 30 s). */
  backoff?: Partial<Backoff>;
  /** Ping a silent server after pingAfterMs, give it up after deadAfterMs (default 5 s, 15 s). */
  liveness?: { pingAfterMs?: number; deadAfterMs?: number };
  /** Aborting closes the client (and rejects a connect still under way). */
  signal?: AbortSignal;
  /** Where warnings go (default: nowhere). console fits. */
  logger?: Logger;
  /** The fetch of the REST client (default globalThis.fetch). */
  fetch?: typeof fetch;
  /** Events an events() iterator holds before delivery waits for the app (default 256). */
  eventBuffer?: number;
}

interface Options {
  url: string;
  token: TokenSource;
  device: string;
  store: Store;
  autoAck: boolean;
  WebSocket: WebSocketConstructor;
  backoff: Backoff;
  pingAfterMs: number;
  deadAfterMs: number;
  logger: Logger;
  eventBuffer: number;
}

type Reply = Deferred<Frame>;

// Session is one connection: its socket, hello, the requests waiting for replies, and the
// presence subscriptions made on it. end() closes it once; ended resolves then, with the
// server's reconnect hint and close code.
class Session {
  readonly replies = new Map<string, Reply>();
  readonly watching = new Set<string>();
  readonly life = new AbortController();
  readonly ended = deferred<{ hintMs: number; code: number }>();
  hello: Frame = { type: "" };
  hintMs = 0;
  code = 0;
  lastRead = Date.now();
  handler: ((f: Frame) => void) | undefined;
  queued: Frame[] = [];

  constructor(readonly sock: WebSocketLike) {}

  get done(): boolean {
    return this.life.signal.aborted;
  }

  write(f: Frame): void {
    if (this.done || this.sock.readyState !== 1) throw new NotConnectedError();
    this.sock.send(encodeFrame(f));
  }

  end(code = 0): void {
    if (this.done) return;
    if (code && !this.code) this.code = code;
    this.life.abort();
    const s = this.sock as WebSocketLike & { terminate?: () => void };
    try {
      if (typeof s.terminate === "function") s.terminate(); // ws: no closing handshake with a dead peer
      else s.close(1000);
    } catch {
      // already closed
    }
    for (const r of this.replies.values()) r.reject(new NotConnectedError());
    this.replies.clear();
    this.ended.resolve({ hintMs: this.hintMs, code: this.code });
  }
}

/**
 * Client is a connection to Parley that survives disconnects: it reconnects with backoff,
 * resumes with sync, resends its outbox, and delivers every message to the app once, in seq
 * order per conversation. Create it with Client.connect.
 */
export class Client {
  /** The typed REST client, authenticated like the socket. */
  readonly rest: REST;
  private readonly o: Options;
  private readonly life = new AbortController(); // aborted by close
  private readonly closedPromise = new Promise<void>((resolve) => this.life.signal.addEventListener("abort", () => resolve(), { once: true }));
  private st: State;
  private readonly track: Tracker;
  private outSeq = 0;
  private sess: Session | undefined;
  private tok = "";
  private revokedTok = "";
  private stopErr: Error | undefined;
  private nextId = 0;
  private readonly sentAt = new Map<string, number>(); // outbox entries in flight on this connection
  private retryAt = new Map<string, number>(); // per conversation: no send before (after a retryable refusal)
  private readonly acks = new Map<string, number>(); // per conversation: > 0 to ack at the next flush, < 0 due now
  private readonly unsaved = new Set<string>(); // outbox entries not yet durable in the store: not sent yet
  private readonly kick = new Kick();
  private syncing = false;
  private resyncTo = false;
  private resyncTimer: ReturnType<typeof setTimeout> | undefined;
  private resyncWaitMs = 0;
  private loopDone: Promise<void> = Promise.resolve();
  private readonly tasks = new Set<Promise<unknown>>();
  private _state: ConnState = "connecting";

  // Delivery: offers run one at a time (deliverTail), events are handed over one at a time
  // in order (dispatchTail).
  private deliverTail: Promise<void> = Promise.resolve();
  private dispatchTail: Promise<unknown> = Promise.resolve();
  private readonly listeners = new Map<EventType, Set<Listener<any>>>();
  private readonly iterators = new Set<EventQueue>();
  private consumersChanged = deferred<void>();

  // Saves run one at a time; a save not yet started takes every change made before it starts.
  private saveTail: Promise<void> = Promise.resolve();
  private saveQueued: Promise<void> | undefined;

  private constructor(o: Options, st: State, rest: REST) {
    this.o = o;
    this.st = st;
    this.rest = rest;
    this.track = new Tracker(st.cursors);
    for (const p of Object.values(st.outbox)) this.outSeq = Math.max(this.outSeq, p.seq);
  }

  /**
   * connect loads the store, connects, and resolves once the first connection is up (hello
   * received), like the Go SDK's Dial; it rejects if that first connection fails (a bad URL
   * or token, the server down). After that every disconnect is repaired in the background.
   * The first sync runs at once: the state event "connected" says it is done.
   */
  static async connect(opts: ConnectOptions): Promise<Client> {
    if (!opts || typeof opts.url !== "string" || !/^wss?:\/\//.test(opts.url)) throw new TypeError("parley: connect: url must be a ws:// or wss:// URL");
    if (!opts.token) throw new TypeError("parley: connect: token is required");
    const WS = opts.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS) throw new TypeError("parley: connect: no WebSocket here (Node 20 has none): pass options.WebSocket, e.g. ws's");
    const tok = opts.token;
    const token: TokenSource = typeof tok === "string" ? () => tok : tok;
    const b = { ...DEFAULT_BACKOFF, ...opts.backoff };
    if (!(b.minMs > 0) || !(b.maxMs >= b.minMs)) throw new TypeError("parley: connect: backoff needs 0 < minMs <= maxMs");
    const pingAfterMs = opts.liveness?.pingAfterMs ?? 5000;
    const deadAfterMs = opts.liveness?.deadAfterMs ?? 15000;
    if (!(pingAfterMs > 0) || !(deadAfterMs > pingAfterMs)) throw new TypeError("parley: connect: liveness needs 0 < pingAfterMs < deadAfterMs");
    const o: Options = {
      url: opts.url,
      token,
      device: opts.device ?? "",
      store: opts.store ?? new MemoryStore(),
      autoAck: opts.autoAck ?? true,
      WebSocket: WS,
      backoff: b,
      pingAfterMs,
      deadAfterMs,
      logger: opts.logger ?? silentLogger,
      eventBuffer: Math.max(1, opts.eventBuffer ?? 256),
    };
    opts.signal?.throwIfAborted();
    let st: State;
    try {
      st = cloneState(await o.store.load());
    } catch (e) {
      throw new Error(`parley: load state: ${(e as Error).message}`, { cause: e });
    }
    const restOpts: ConstructorParameters<typeof REST>[0] = { baseUrl: opts.apiUrl ?? apiFromWS(opts.url), token };
    if (opts.fetch) restOpts.fetch = opts.fetch;
    const c = new Client(o, st, new REST(restOpts));
    const onAbort = () => void c.close();
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    c.life.signal.addEventListener("abort", () => opts.signal?.removeEventListener("abort", onAbort), { once: true });
    let first: Session;
    try {
      first = await c.open();
    } catch (e) {
      await c.close();
      if (opts.signal?.aborted) throw opts.signal.reason;
      throw e;
    }
    c.loopDone = c.loop(first);
    return c;
  }

  /** The connection's state: "connected" once the first sync after a (re)connect is done. */
  get state(): ConnState {
    return this._state;
  }

  /** Whether close was called (or the connect signal aborted). */
  get closed(): boolean {
    return this.life.signal.aborted;
  }

  /**
   * send queues a message for conversation and resolves with its client_msg_id once the
   * message is in the outbox and the store. It is sent now if connected, and resent with the
   * same id after any disconnect until the server accepts it ("accepted") or refuses it for
   * good ("sendFailed"). Within a conversation messages are sent, and sequenced, in send
   * order.
   */
  async send(conversation: string, body: string): Promise<string> {
    if (this.closed) throw new ClosedError();
    if (this.stopErr) throw this.stopErr;
    const id = newUUID();
    validateClientFrame({ type: "send", conversation, client_msg_id: id, body });
    const max = this.sess?.hello.limits?.max_body_bytes ?? 0;
    if (max > 0 && new TextEncoder().encode(body).length > max) throw new ProtocolError("bad_request", `body is over max_body_bytes (${max})`);
    this.outSeq++;
    this.st.outbox[id] = { client_msg_id: id, conversation, body, seq: this.outSeq };
    this.unsaved.add(id);
    try {
      await this.persist();
    } catch (e) {
      delete this.st.outbox[id];
      throw new Error(`parley: persist outbox: ${(e as Error).message}`, { cause: e });
    } finally {
      this.unsaved.delete(id);
    }
    this.kick.kick();
    return id;
  }

  /** pending returns the outbox (messages not yet accepted), in send order. */
  pending(): Pending[] {
    return ordered(this.st).map((p) => ({ ...p }));
  }

  /** markRead tells the server the user has read conversation up to seq; resolves with the read position. */
  async markRead(conversation: string, seq: number, opts: { signal?: AbortSignal } = {}): Promise<number> {
    const f = await this.request({ type: "read", conversation, seq }, opts.signal);
    return f.seq ?? 0;
  }

  /** typing tells the other members' devices the user is typing (renew every few seconds). */
  async typing(conversation: string, opts: { signal?: AbortSignal } = {}): Promise<void> {
    await this.request({ type: "typing", conversation }, opts.signal);
  }

  /**
   * subscribePresence watches users' presence (at most 100 a call): it resolves with their
   * current states, and changes arrive as "presence" events. Subscriptions end with the
   * connection: subscribe again on the state event "connected". When the server says updates
   * were lost (presence.resync), the client subscribes again to the users watched on the
   * connection and delivers the fresh snapshot as a "presence" event.
   */
  async subscribePresence(users: string[], opts: { signal?: AbortSignal } = {}): Promise<PresenceState[]> {
    const { reply, sess } = await this.requestOn({ type: "presence.subscribe", users: [...users] }, opts.signal);
    if (this.sess === sess) for (const u of users) sess.watching.add(u);
    return reply.presence ?? [];
  }

  /** unsubscribePresence stops watching users. */
  async unsubscribePresence(users: string[], opts: { signal?: AbortSignal } = {}): Promise<void> {
    const { sess } = await this.requestOn({ type: "presence.unsubscribe", users: [...users] }, opts.signal);
    for (const u of users) sess.watching.delete(u);
  }

  /** on adds a listener of one kind of event and returns the function that removes it. */
  on<T extends EventType>(type: T, fn: Listener<T>): () => void {
    let set = this.listeners.get(type);
    if (!set) {
      set = new Set();
      this.listeners.set(type, set);
    }
    set.add(fn);
    this.consumersChange();
    return () => this.off(type, fn);
  }

  /** off removes a listener added by on. */
  off<T extends EventType>(type: T, fn: Listener<T>): void {
    this.listeners.get(type)?.delete(fn);
  }

  /**
   * events returns an async iterator of every event from now on, in order. It ends when the
   * client closes (after the events it holds) or when signal aborts or the loop breaks (then
   * the events it holds are dropped). Delivery waits while an iterator holds eventBuffer
   * events: read it continuously.
   */
  events(signal?: AbortSignal): AsyncIterableIterator<ClientEvent> {
    const q = new EventQueue(this.o.eventBuffer, () => {
      this.iterators.delete(q);
      this.consumersChange();
    });
    if (this.closed) q.end();
    else this.iterators.add(q);
    if (signal) {
      if (signal.aborted) q.stop();
      else signal.addEventListener("abort", () => q.stop(), { once: true });
    }
    this.consumersChange();
    return q;
  }

  /**
   * close stops the client: the socket is closed, every timer it set is cleared, and the last
   * save is done when the promise resolves. Iterators end once they have yielded what they
   * hold. The outbox and cursors stay in the store.
   */
  async close(): Promise<void> {
    if (!this.closed) {
      this.life.abort();
      this.sess?.end();
      clearTimeout(this.resyncTimer);
      this.consumersChange();
      for (const q of this.iterators) q.end();
    }
    await this.loopDone;
    while (this.tasks.size) await Promise.allSettled([...this.tasks]);
    await this.dispatchTail;
    await this.deliverTail;
    await this.saveTail;
  }

  // ---- requests

  private async request(f: Frame, signal?: AbortSignal): Promise<Frame> {
    return (await this.requestOn(f, signal)).reply;
  }

  // requestOn sends f with a fresh id on the current connection and waits for the frame
  // answering it (an error frame rejects with a ServerError).
  private async requestOn(f: Frame, signal?: AbortSignal, timeoutMs = 0): Promise<{ reply: Frame; sess: Session }> {
    validateClientFrame(f);
    const sess = this.sess;
    if (!sess || sess.done) {
      if (this.closed) throw new ClosedError();
      if (this.stopErr) throw this.stopErr;
      throw new NotConnectedError();
    }
    signal?.throwIfAborted();
    const id = `c${++this.nextId}`;
    const r: Reply = deferred<Frame>();
    sess.replies.set(id, r);
    const onAbort = () => r.reject(signal?.reason ?? new DOMException("aborted", "AbortError"));
    signal?.addEventListener("abort", onAbort, { once: true });
    const t = timeoutMs > 0 ? setTimeout(() => r.reject(new Error(`parley: no answer to ${f.type} in ${timeoutMs} ms`)), timeoutMs) : undefined;
    try {
      sess.write({ ...f, id });
      const reply = await r.promise;
      if (reply.type === "error") throw new ServerError(reply.code ?? "", reply.message ?? "", reply.retryable ?? false, reply.retry_after_ms ?? 0);
      return { reply, sess };
    } catch (e) {
      if (e instanceof NotConnectedError && this.closed) throw new ClosedError();
      throw e;
    } finally {
      sess.replies.delete(id);
      signal?.removeEventListener("abort", onAbort);
      clearTimeout(t);
    }
  }

  // ---- connections

  // open fetches a token, dials and waits for hello.
  private async open(): Promise<Session> {
    let tok: string;
    try {
      tok = await this.o.token(this.life.signal);
    } catch (e) {
      throw new Error(`parley: token: ${(e as Error).message}`, { cause: e });
    }
    if (this.revokedTok && tok === this.revokedTok) throw new TokenRevokedError("the token source returned the revoked token again");
    this.tok = tok;
    let url = this.o.url;
    if (this.o.device) url += (url.includes("?") ? "&" : "?") + "device=" + encodeURIComponent(this.o.device);
    const sock = new this.o.WebSocket(url, [SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX + tok]);
    const sess = new Session(sock);
    const hello = deferred<Frame>();
    let refused: HandshakeError | undefined;
    const ev = sock as WebSocketLike & { on?: (ev: string, fn: (...a: any[]) => void) => void };
    if (typeof ev.on === "function") {
      // ws (Node) shows a refused handshake's status, Retry-After and body; browsers do not.
      ev.on("unexpected-response", (req: { destroy(): void }, res: AsyncIterable<Uint8Array> & { statusCode?: number; headers: Record<string, string | string[] | undefined> }) => {
        const ra = Number.parseInt(String(res.headers["retry-after"] ?? ""), 10);
        void (async () => {
          let body = "";
          try {
            for await (const chunk of res) {
              body += new TextDecoder().decode(chunk);
              if (body.length > 1024) break;
            }
          } catch {
            // keep what was read
          }
          let code = "";
          try {
            const b = JSON.parse(body) as { code?: unknown };
            if (typeof b.code === "string") code = b.code;
          } catch {
            // no Error body
          }
          refused = new HandshakeError(res.statusCode ?? 0, code, Number.isFinite(ra) ? ra * 1000 : 0);
          req.destroy();
          hello.reject(refused);
          sess.end();
        })();
      });
      ev.on("ping", () => {
        sess.lastRead = Date.now();
      });
    }
    sock.addEventListener("message", (e: { data: unknown }) => {
      if (sess.done) return;
      sess.lastRead = Date.now();
      if (typeof e.data !== "string") {
        this.o.logger.warn("parley: a binary frame from the server; ignored");
        return;
      }
      let f: Frame;
      try {
        f = decodeFrame(e.data);
      } catch (err) {
        this.o.logger.warn("parley: a frame from the server that does not decode; ignored", err);
        return;
      }
      if (!sess.hello.type) {
        if (f.type !== "hello") {
          hello.reject(new Error(`parley: no hello: the first frame is ${f.type}`));
          sess.end();
          return;
        }
        sess.hello = f;
        hello.resolve(f);
        return;
      }
      if (f.type === "reconnect") sess.hintMs = f.after_ms ?? 0;
      if (sess.handler) sess.handler(f);
      else sess.queued.push(f);
    });
    sock.addEventListener("close", (e: { code?: number }) => {
      if (!sess.code) sess.code = e.code ?? 0;
      hello.reject(refused ?? new HandshakeError(0, "", 0, `closed with ${e.code ?? 0} before hello`));
      sess.end();
    });
    sock.addEventListener("error", () => {
      // the close event follows with the code
    });
    const timeout = setTimeout(() => {
      hello.reject(new Error("parley: no hello within 10 s"));
      sess.end();
    }, 10_000);
    const onClose = () => {
      hello.reject(new ClosedError());
      sess.end();
    };
    this.life.signal.addEventListener("abort", onClose, { once: true });
    try {
      await hello.promise;
    } catch (e) {
      if (e instanceof HandshakeError && e.code === "token_revoked") {
        this.revokedTok = tok;
        throw new TokenRevokedError("handshake refused with 401 token_revoked", { cause: e });
      }
      throw e;
    } finally {
      clearTimeout(timeout);
      this.life.signal.removeEventListener("abort", onClose);
    }
    return sess;
  }

  // loop runs connections one after another until close, or until the server has refused two
  // tokens in a row as revoked (the revoked one, then the next one the token source gave).
  private async loop(first: Session): Promise<void> {
    let sess: Session | undefined = first;
    let attempt = 0;
    let revoked = 0; // tokens refused as revoked in a row
    for (;;) {
      let hint = 0;
      if (sess) {
        attempt = 0;
        revoked = 0;
        const r = await this.session(sess);
        if (this.closed) return;
        hint = r.hintMs;
        if (r.code === Close.TokenRevoked) {
          // Ask the token source for another, not before a second has passed: a revocation
          // by user or device also covers tokens issued in its own second.
          this.o.logger.warn("parley: token revoked (close 4003); asking the token source for a new one");
          revoked = 1;
          this.revokedTok = this.tok;
          hint = Math.max(hint, 1000);
        }
        this.setState("disconnected");
      }
      const wait = hint || backoffDelay(this.o.backoff, attempt);
      if (!(await sleep(wait, this.life.signal))) return;
      this.setState("connecting");
      try {
        sess = await this.open();
      } catch (e) {
        sess = undefined;
        if (this.closed) return;
        attempt++;
        this.o.logger.warn(`parley: connect (attempt ${attempt})`, e);
        if (e instanceof TokenRevokedError) {
          if (++revoked >= 2) {
            this.stop(e);
            return;
          }
          continue; // the token source is asked again after the backoff
        }
        if (e instanceof HandshakeError && e.retryAfterMs > 0) {
          if (!(await sleep(e.retryAfterMs, this.life.signal))) return;
        }
      }
    }
  }

  // stop ends the reconnecting for good: sends and requests answer err from now on, and the
  // app is told with a last "disconnected" state that carries err.
  private stop(err: Error): void {
    this.stopErr = err;
    this.o.logger.warn("parley: not reconnecting", err);
    this.setState("disconnected", err);
  }

  private setState(state: ConnState, error?: Error): void {
    this._state = state;
    void this.emit(error ? { type: "state", state, error } : { type: "state", state });
  }

  // session serves one connection: it handles frames, syncs, sends the outbox, and resolves
  // when the socket is gone (with the server's reconnect delay and close code).
  private async session(sess: Session): Promise<{ hintMs: number; code: number }> {
    this.sess = sess;
    this.sentAt.clear();
    this.retryAt = new Map();
    sess.handler = (f) => this.handle(sess, f);
    for (const f of sess.queued.splice(0)) sess.handler(f);
    const signal = sess.life.signal;
    this.spawn(
      (async () => {
        try {
          await this.sync(sess);
        } catch (e) {
          this.o.logger.warn("parley: sync", e);
          sess.end();
          return;
        }
        if (sess.done) return;
        this.setState("connected");
        await this.sender(sess);
      })(),
    );
    if (sess.hello.expires_at) this.spawn(this.refresher(sess, sess.hello.expires_at));
    const liveness = setInterval(() => this.liveness(sess), Math.max(this.o.pingAfterMs / 5, 100));
    const ackTick = setInterval(() => {
      for (const [conv, seq] of this.acks) if (seq > 0) this.acks.set(conv, -seq); // due: sent by nextFrame
      this.kick.kick();
    }, 500);
    signal.addEventListener(
      "abort",
      () => {
        clearInterval(liveness);
        clearInterval(ackTick);
      },
      { once: true },
    );
    const r = await sess.ended.promise;
    if (this.sess === sess) this.sess = undefined;
    return r;
  }

  private spawn(p: Promise<unknown>): void {
    const t = p.catch((e: unknown) => this.o.logger.warn("parley: background task", e));
    this.tasks.add(t);
    void t.finally(() => this.tasks.delete(t));
  }

  // liveness pings a silent server and gives the connection up when it stays silent for
  // deadAfterMs (a frozen or cut-off edge keeps the TCP connection open; only silence tells).
  private pinged = 0;
  private pings = 0;
  private liveness(sess: Session): void {
    if (sess.done) return;
    const silent = Date.now() - sess.lastRead;
    if (silent >= this.o.deadAfterMs) {
      this.o.logger.warn(`parley: the server is silent (${silent} ms); reconnecting`);
      sess.end();
    } else if (silent >= this.o.pingAfterMs && Date.now() - this.pinged >= this.o.pingAfterMs) {
      this.pinged = Date.now();
      try {
        sess.write({ type: "ping", id: `l:${++this.pings}` });
      } catch {
        sess.end();
      }
    }
  }

  // refresher replaces the connection's token before it expires (auth.refresh) at 80% of its
  // remaining life; a failed refresh is retried every 5 s until the token expires (the server
  // then closes the connection and the reconnect fetches a token).
  private async refresher(sess: Session, expiresMs: number): Promise<void> {
    let wait = ((expiresMs - Date.now()) * 4) / 5;
    for (;;) {
      if (!(await sleep(wait, sess.life.signal))) return;
      let err: unknown;
      try {
        const tok = await this.o.token(sess.life.signal);
        const { reply } = await this.requestOn({ type: "auth.refresh", token: tok }, sess.life.signal, 10_000);
        if ((reply.expires_at ?? 0) > expiresMs) {
          expiresMs = reply.expires_at!;
          wait = ((expiresMs - Date.now()) * 4) / 5;
          continue;
        }
      } catch (e) {
        err = e;
      }
      if (sess.done) return;
      this.o.logger.warn("parley: token refresh", err);
      if (expiresMs - Date.now() < 5000) return;
      wait = 5000;
    }
  }

  // sender sends the outbox and the acknowledgements on one connection, within three
  // quarters of the frame rate the server announced. One message per conversation is in
  // flight at a time, so a conversation's messages are accepted, and sequenced, in send
  // order; an unanswered one is resent (same client_msg_id) after 5 s, a refused-but-retryable
  // one after the server's retry delay.
  private async sender(sess: Session): Promise<void> {
    const fps = sess.hello.limits?.frames_per_second || 20;
    const gap = 1000 / Math.max(1, Math.floor((fps * 3) / 4));
    const signal = sess.life.signal;
    while (!sess.done) {
      const f = this.nextFrame();
      if (f) {
        try {
          sess.write(f);
        } catch {
          return;
        }
        if (!(await sleep(gap, signal))) return;
        continue;
      }
      await this.kick.wait(250, signal);
    }
  }

  // nextFrame picks the next frame to send: a due acknowledgement, else the oldest sendable
  // outbox message of a conversation with nothing in flight.
  private nextFrame(): Frame | undefined {
    for (const [conv, seq] of this.acks) {
      if (seq < 0) {
        this.acks.delete(conv);
        // Acks carry an id, so an error (a store outage) names the ack that failed.
        return { type: "ack", id: `a:${-seq}:${conv}`, conversation: conv, seq: -seq };
      }
    }
    const now = Date.now();
    const busy = new Set<string>();
    for (const p of ordered(this.st)) {
      if (busy.has(p.conversation)) continue;
      busy.add(p.conversation); // later messages of this conversation wait for this one
      if (this.unsaved.has(p.client_msg_id)) continue;
      const at = this.sentAt.get(p.client_msg_id);
      if (at !== undefined && now - at < 5000) continue;
      if (now < (this.retryAt.get(p.conversation) ?? 0)) continue;
      this.sentAt.set(p.client_msg_id, now);
      return { type: "send", id: `s:${p.client_msg_id}`, conversation: p.conversation, client_msg_id: p.client_msg_id, body: p.body };
    }
    return undefined;
  }

  // handle processes one frame from the server.
  private handle(sess: Session, f: Frame): void {
    if (f.type === "message") {
      void this.offer(sess, [frameMessage(f)], false, 0, new Map());
    } else if (f.type === "accepted") {
      this.settleSend(f.client_msg_id ?? "", undefined);
    } else if (f.type === "error" && f.id?.startsWith("s:")) {
      const id = f.id.slice(2);
      if (f.retryable) {
        this.sentAt.delete(id);
        const p = this.st.outbox[id];
        if (p) this.retryAt.set(p.conversation, Date.now() + Math.max(f.retry_after_ms ?? 0, 1000));
        return;
      }
      this.settleSend(id, new ServerError(f.code ?? "", f.message ?? "", false));
    } else if (f.type === "error" && f.id?.startsWith("a:")) {
      // A failed ack is due again at the next flush (unless a later one is queued).
      const rest = f.id.slice(2);
      const i = rest.indexOf(":");
      const seq = Number(rest.slice(0, i));
      const conv = rest.slice(i + 1);
      if (f.retryable && Number.isInteger(seq)) {
        const cur = this.acks.get(conv) ?? 0;
        if (seq > cur && seq > -cur) this.acks.set(conv, seq);
      }
    } else if (f.id) {
      const r = sess.replies.get(f.id);
      sess.replies.delete(f.id);
      r?.resolve(f);
    } else if (f.type === "presence.resync") {
      this.spawn(this.resubscribe(sess));
    } else if (f.type === "receipt") {
      void this.emit({ type: "receipt", receipt: { conversation: f.conversation ?? "", seq: f.seq ?? 0, user: f.user ?? "", kind: f.kind ?? "", ts: f.ts ?? 0 } });
    } else if (f.type === "presence") {
      void this.emit({ type: "presence", presence: f.presence ?? [] });
    } else if (f.type === "typing") {
      void this.emit({ type: "typing", typing: { conversation: f.conversation ?? "", user: f.user ?? "", ts: f.ts ?? 0 } });
    }
  }

  // resubscribe answers presence.resync: it subscribes again to the users watched on the
  // connection, at most 100 a frame, and delivers each fresh snapshot as a presence event.
  private async resubscribe(sess: Session): Promise<void> {
    if (this.sess !== sess) return;
    const users = [...sess.watching].sort();
    while (users.length) {
      const batch = users.splice(0, MAX_USERS_PER_CALL);
      let reply: Frame;
      try {
        const r = await this.requestOn({ type: "presence.subscribe", users: batch }, sess.life.signal, 30_000);
        if (r.sess !== sess) return;
        reply = r.reply;
      } catch (e) {
        this.o.logger.warn("parley: presence snapshot after presence.resync", e);
        return; // a new connection starts without subscriptions: the app subscribes again
      }
      void this.emit({ type: "presence", presence: reply.presence ?? [] });
    }
  }

  // settleSend removes an answered message from the outbox and tells the app.
  private settleSend(id: string, err: ServerError | undefined): void {
    const had = id in this.st.outbox;
    delete this.st.outbox[id];
    this.sentAt.delete(id);
    this.persist().catch((e: unknown) => this.o.logger.warn("parley: persist outbox", e));
    this.kick.kick();
    if (!had) return; // a duplicate answer
    void this.emit(err ? { type: "sendFailed", clientMsgId: id, error: err } : { type: "accepted", clientMsgId: id });
  }

  // offer runs messages through the tracker and hands what is ready to the app, in order,
  // one offer at a time. With settle (the last page of a sync that started at clock start
  // and covered reached), gaps the sync proved invisible are settled. A gap left open starts
  // a sync: at once after a live message, after a pause after a sync (the server had not
  // stored the missing seqs yet).
  private offer(sess: Session, msgs: Message[], settle: boolean, start: number, reached: Map<string, number>): Promise<void> {
    const run = async () => {
      let ready: Message[] = [];
      let gap = false;
      for (const m of msgs) {
        const r = this.track.offer(m);
        ready.push(...r.ready);
        gap ||= r.gap;
      }
      if (settle) {
        ready.push(...this.track.settle(start, reached));
        gap = false;
        for (const m of msgs) gap ||= this.track.gap(m.conversation);
        for (const conv of [...this.track.pending.keys()]) gap ||= this.track.gap(conv);
      }
      for (let i = 0; i < ready.length; i++) {
        if (!(await this.emit({ type: "message", message: ready[i]! }))) {
          // The client is closing: the cursors stay at what the app was given, so the next
          // client on the store is given the rest.
          ready = ready.slice(0, i);
          break;
        }
      }
      for (const m of ready) this.st.cursors[m.conversation] = Math.max(this.st.cursors[m.conversation] ?? 0, m.seq);
      if (ready.length) this.persist().catch((e: unknown) => this.o.logger.warn("parley: persist cursors", e));
      if (this.o.autoAck) {
        for (const m of ready) {
          // acknowledged by the sender's next flush (at most every 500 ms)
          const cur = this.acks.get(m.conversation) ?? 0;
          if (m.seq > cur && m.seq > -cur) this.acks.set(m.conversation, m.seq);
        }
      }
      if (gap && !settle) this.startSync(sess);
      else if (gap) this.resyncLater(sess);
      else if (settle) this.resyncWaitMs = 0;
    };
    const p = this.deliverTail.then(run).catch((e: unknown) => this.o.logger.warn("parley: deliver", e));
    this.deliverTail = p;
    return p;
  }

  // resyncLater syncs again after a pause while a gap stays open after a sync (one pending
  // at a time; the pause doubles from 250 ms up to 5 s while the gap stays).
  private resyncLater(sess: Session): void {
    if (this.resyncTimer !== undefined || this.closed) return;
    this.resyncWaitMs = Math.min(Math.max(this.resyncWaitMs * 2, 250), 5000);
    this.resyncTimer = setTimeout(() => {
      this.resyncTimer = undefined;
      if (this.sess === sess && !this.closed) this.startSync(sess);
    }, this.resyncWaitMs);
  }

  // startSync fetches a gap in the background (once at a time; again if asked meanwhile).
  private startSync(sess: Session): void {
    if (this.syncing) {
      this.resyncTo = true;
      return;
    }
    this.spawn(this.sync(sess).catch((e: unknown) => this.o.logger.warn("parley: gap sync", e)));
  }

  // sync pages through sync.result until the server has nothing more (each page asks with
  // the page token of the one before), feeding the messages to the tracker, then stores the
  // new since-token. A since-token or page token the server refuses (bad_request) is dropped
  // and the sync starts a new catch-up from an empty since, once; if that is refused too,
  // sync rejects with the refusal.
  private async sync(sess: Session): Promise<void> {
    if (this.syncing) {
      this.resyncTo = true;
      return;
    }
    this.syncing = true;
    try {
      // reached gathers the conversations' last_seq over the pages: each page carries the
      // conversations it reaches, each once in a catch-up. page is the next page's token.
      let reached = new Map<string, number>();
      let refused = false; // the server refused the since-token or page token; since then, from ""
      let page = "";
      for (let round = 0; ; round++) {
        await this.deliverTail; // the tracker as of every offer so far
        const start = this.track.now();
        let cursors = this.track.cursors();
        if (page) {
          // The catch-up has passed the conversations it returned (the page token holds the
          // one in progress): leaving their cursors out keeps a device that catches up on
          // many conversations under the cursor limit.
          cursors = cursors.filter((c) => !reached.has(c.conversation));
        }
        const since = this.st.since;
        const req: Frame = { type: "sync", cursors, limit: 500 };
        if (since) req.since = since;
        if (page) req.page = page;
        let res: Frame;
        try {
          res = (await this.requestOn(req, sess.life.signal, 30_000)).reply;
        } catch (e) {
          if (e instanceof ServerError && e.code === "bad_request" && (since || page) && !refused) {
            // The server refuses the since-token (signed with a key it no longer has): asking
            // again with it would be refused for ever. Sync from an empty since instead, once;
            // the cursors keep it incremental. Forgotten in the store too.
            this.o.logger.warn("parley: since-token or page token refused; syncing from an empty since", e);
            refused = true;
            page = "";
            reached = new Map();
            if (this.st.since === since) this.st.since = "";
            this.persist().catch((err: unknown) => this.o.logger.warn("parley: persist since", err));
            continue;
          }
          if (refused) throw new Error(`parley: sync from an empty since after the since-token or page token was refused: ${(e as Error).message}`, { cause: e });
          throw e;
        }
        for (const p of res.conversations ?? []) reached.set(p.conversation, Math.max(reached.get(p.conversation) ?? 0, p.last_seq));
        await this.offer(sess, res.messages ?? [], !res.more, start, reached);
        if (!res.more) {
          this.st.since = res.since ?? "";
          await this.persist();
          return;
        }
        if (!res.page) throw new Error("parley: sync.result with more and no page token");
        page = res.page;
        if (round > 10000) throw new Error("parley: sync did not end");
      }
    } finally {
      this.syncing = false;
      const again = this.resyncTo;
      this.resyncTo = false;
      if (again && !this.closed && !sess.done) this.startSync(sess);
    }
  }

  // ---- persistence

  private persist(): Promise<void> {
    if (this.saveQueued) return this.saveQueued;
    const p = this.saveTail.then(() => {
      this.saveQueued = undefined;
      return this.o.store.save(cloneState(this.st));
    });
    this.saveQueued = p;
    this.saveTail = p.catch(() => {});
    return p;
  }

  // ---- events

  private consumersChange(): void {
    const d = this.consumersChanged;
    this.consumersChanged = deferred<void>();
    d.resolve();
  }

  // emit hands an event to the app, in order after every event emitted before it: it
  // resolves true once every listener of its type has run (and the promises they returned
  // settled) and every iterator holds it, false if the client closed first. A message waits
  // for a consumer (a listener of messages, or an iterator): none is ever dropped.
  private emit(e: ClientEvent): Promise<boolean> {
    const p = this.dispatchTail.then(() => this.handOver(e)).catch((err: unknown) => {
      this.o.logger.warn("parley: event hand-over", err);
      return false;
    });
    this.dispatchTail = p;
    return p;
  }

  private async handOver(e: ClientEvent): Promise<boolean> {
    for (;;) {
      if (this.closed) return false;
      const waitFor: Promise<void>[] = [];
      if (e.type === "message" && !this.iterators.size && !this.listeners.get("message")?.size) waitFor.push(this.consumersChanged.promise);
      for (const q of this.iterators) if (q.full()) waitFor.push(q.space());
      if (!waitFor.length) break;
      waitFor.push(this.consumersChanged.promise);
      await Promise.race(waitFor);
    }
    for (const q of this.iterators) q.push(e);
    for (const fn of [...(this.listeners.get(e.type) ?? [])]) {
      try {
        const r = (fn as Listener<typeof e.type>)(e as never);
        // A listener may close the client and wait for it: closing stops the wait.
        if (r && typeof (r as Promise<void>).then === "function") await Promise.race([r, this.closedPromise]);
      } catch (err) {
        this.o.logger.warn(`parley: a ${e.type} listener threw`, err);
      }
    }
    return true;
  }
}

// EventQueue is one events() iterator: a bounded buffer the client pushes into while it has
// room, read by the app.
class EventQueue implements AsyncIterableIterator<ClientEvent> {
  private readonly buf: ClientEvent[] = [];
  private reader: Deferred<IteratorResult<ClientEvent>> | undefined;
  private roomy: Deferred<void> | undefined;
  private ended = false;

  constructor(
    private readonly cap: number,
    private readonly onStop: () => void,
  ) {}

  full(): boolean {
    return this.buf.length >= this.cap && !this.ended;
  }

  space(): Promise<void> {
    this.roomy ??= deferred<void>();
    return this.roomy.promise;
  }

  push(e: ClientEvent): void {
    if (this.ended) return;
    if (this.reader) {
      const r = this.reader;
      this.reader = undefined;
      r.resolve({ value: e, done: false });
    } else {
      this.buf.push(e);
    }
  }

  // end: no more events; what is held is still yielded.
  end(): void {
    this.ended = true;
    if (this.reader && !this.buf.length) {
      this.reader.resolve({ value: undefined, done: true });
      this.reader = undefined;
    }
    this.roomy?.resolve();
  }

  // stop: the app is done; what is held is dropped.
  stop(): void {
    this.buf.length = 0;
    this.end();
    this.onStop();
  }

  next(): Promise<IteratorResult<ClientEvent>> {
    const e = this.buf.shift();
    if (e) {
      if (this.roomy) {
        this.roomy.resolve();
        this.roomy = undefined;
      }
      return Promise.resolve({ value: e, done: false });
    }
    if (this.ended) return Promise.resolve({ value: undefined, done: true });
    this.reader = deferred();
    return this.reader.promise;
  }

  return(): Promise<IteratorResult<ClientEvent>> {
    this.stop();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<ClientEvent> {
    return this;
  }
}

function ordered(st: State): Pending[] {
  return Object.values(st.outbox).sort((a, b) => a.seq - b.seq);
}

function frameMessage(f: Frame): Message {
  const m: Message = { conversation: f.conversation ?? "", seq: f.seq ?? 0, sender: f.sender ?? "", client_msg_id: f.client_msg_id ?? "", kind: f.kind ?? "", ts: f.ts ?? 0 };
  if (f.sender_device) m.sender_device = f.sender_device;
  if (f.body) m.body = f.body;
  if (f.target_seq) m.target_seq = f.target_seq;
  if (f.user) m.user = f.user;
  return m;
}

/** apiFromWS turns ws://host/v1/ws into http://host (wss into https). */
export function apiFromWS(u: string): string {
  const secure = u.startsWith("wss://");
  const rest = u.slice(secure ? 6 : 5);
  return (secure ? "https://" : "http://") + rest.split("/")[0]!.split("?")[0];
}
