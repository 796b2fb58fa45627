// Parley's browser chat demo: one page on @parley/client (clients/ts). Sign in as any user
// through the development token endpoint, start direct conversations, chat. It shows what
// the SDK gives an app: the conversation list with unread counts (REST inbox), messages with
// delivered and read receipts, typing, presence, a banner while it reconnects, and the
// outbox (messages queued while offline), kept in IndexedDB so that a reload loses none.
//
// ?api=http://127.0.0.1:8080 points it at a parleyd on another origin (that parleyd must list
// this page's origin in --allowed-origins); by default it talks to the origin it came from
// (parleyd --dev serves it at /demo/).
import { Client, IndexedDBStore, NotConnectedError, type ConnState, type InboxEntry, type Message, type PresenceState, type Receipt } from "@parley/client";

const params = new URLSearchParams(location.search);
const apiBase = (params.get("api") || location.origin).replace(/\/+$/, "");
const wsUrl = apiBase.replace(/^http/, "ws") + "/v1/ws";

// ---- the page's elements

function el<T extends HTMLElement = HTMLElement>(id: string): T {
  const e = document.getElementById(id);
  if (!e) throw new Error(`demo: #${id} is missing from index.html`);
  return e as T;
}

const ui = {
  banner: el("banner"),
  signin: el<HTMLFormElement>("signin"),
  signinUser: el<HTMLInputElement>("signin-user"),
  signinGo: el<HTMLButtonElement>("signin-go"),
  signinError: el("signin-error"),
  signinApi: el("signin-api"),
  app: el("app"),
  meName: el("me-name"),
  meDevice: el("me-device"),
  signout: el<HTMLButtonElement>("signout"),
  newchat: el<HTMLFormElement>("newchat"),
  newchatUser: el<HTMLInputElement>("newchat-user"),
  newchatError: el("newchat-error"),
  convs: el("convs"),
  chatTitle: el("chat-title"),
  chatPresence: el("chat-presence"),
  msgs: el("msgs"),
  typing: el("typing"),
  composer: el<HTMLFormElement>("composer"),
  composerText: el<HTMLInputElement>("composer-text"),
  composerSend: el<HTMLButtonElement>("composer-send"),
  sendError: el("send-error"),
};

function node(tag: string, cls: string, text = ""): HTMLElement {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text) e.textContent = text;
  return e;
}

// ---- what the page knows

/** A conversation of the list: the REST inbox's entry, and what arrived since it was read. */
interface Conv {
  entry: InboxEntry;
}

/** A message of this user not yet shown with its seq: queued in the outbox, or accepted. */
interface Local {
  clientMsgId: string;
  conversation: string;
  body: string;
  status: "queued" | "sent" | "failed";
  error?: string;
}

/** What the page records for the tests and benchmarks (window.parleyDemo). */
interface Surfaced {
  conversation: string;
  seq: number;
  sender: string;
  client_msg_id: string;
  body: string;
  at: number;
}

interface Session {
  user: string;
  device: string;
  client: Client;
  store: IndexedDBStore;
  release: () => void;
}

let session: Session | undefined;
let state: ConnState | "signed-out" = "signed-out";
const convs = new Map<string, Conv>();
const messages = new Map<string, Map<number, Message>>(); // per conversation, by seq
const locals = new Map<string, Local>(); // by client_msg_id
const delivered = new Map<string, Map<string, number>>(); // conversation -> user -> seq
const read = new Map<string, Map<string, number>>(); // conversation -> user -> seq
const typing = new Map<string, Map<string, number>>(); // conversation -> user -> until (ms)
const presence = new Map<string, PresenceState>();
let current: string | undefined;

const metrics = {
  /** performance.now() when Client.connect was called, and when it resolved. */
  connectCalledAt: 0,
  connectedAt: 0,
  /** performance.now() of the first message surfaced after connect() was called. */
  firstMessageAt: 0,
  /** performance.now() when the browser said it was online again, and the first message after. */
  onlineAt: 0,
  firstMessageAfterOnlineAt: 0,
};
const surfaced: Surfaced[] = [];
const states: string[] = [];

// ---- signing in

const USER_KEY = "parley-demo:user";
const DEVICE_KEY = "parley-demo:device";

/**
 * claimDevice picks this tab's device id: the browser's id with a slot number, the first
 * slot no other tab of the same user holds (a Web Lock held as long as the page lives). A
 * reload gets its slot back, and with it its IndexedDB record: cursors and the outbox. Two
 * tabs never share a record, which two clients saving in turn would corrupt.
 */
async function claimDevice(user: string): Promise<{ device: string; release: () => void }> {
  let base = localStorage.getItem(DEVICE_KEY);
  if (!base) {
    base = "web-" + Array.from(crypto.getRandomValues(new Uint8Array(4)), (b) => b.toString(16).padStart(2, "0")).join("");
    localStorage.setItem(DEVICE_KEY, base);
  }
  for (let slot = 1; slot <= 16; slot++) {
    const device = `${base}-${slot}`;
    // The page being replaced by a reload still holds slot 1 for a moment: wait for it.
    const release = await new Promise<(() => void) | null>((resolve) => {
      navigator.locks
        .request(`parley-demo:${user}:${device}`, { signal: AbortSignal.timeout(slot === 1 ? 3000 : 300) }, () => new Promise<void>((done) => resolve(done)))
        .catch(() => resolve(null));
    });
    if (release) return { device, release };
  }
  throw new Error("16 tabs of this user are open already");
}

/** devToken asks parleyd's development endpoint for a token (loopback only, --dev only). */
async function devToken(user: string, device: string, signal?: AbortSignal): Promise<{ token: string; expiresAt: number }> {
  const init: RequestInit = { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ user, device }) };
  if (signal) init.signal = signal;
  let resp: Response;
  try {
    resp = await fetch(`${apiBase}/dev/token`, init);
  } catch (e) {
    throw new Error(`cannot reach ${apiBase} (${(e as Error).message}): is parleyd running with --dev, and does --allowed-origins list ${location.origin}?`);
  }
  const text = await resp.text();
  if (resp.status !== 200) {
    let msg = text.slice(0, 300);
    try {
      msg = (JSON.parse(text) as { message?: string }).message ?? msg;
    } catch {
      // not the API's Error body
    }
    throw new Error(resp.status === 404 ? `${apiBase} has no /dev/token: run parleyd with --dev (make run)` : `${msg} (HTTP ${resp.status})`);
  }
  const body = JSON.parse(text) as { token: string; expires_at: string };
  return { token: body.token, expiresAt: Date.parse(body.expires_at) };
}

// signedIn counts sign-ins and sign-outs: a sign-in still connecting when the user signs out
// gives its client up.
let signedIn = 0;

async function signIn(user: string): Promise<void> {
  const epoch = ++signedIn;
  ui.signinError.textContent = "";
  ui.signinGo.disabled = true;
  let claimed: { device: string; release: () => void } | undefined;
  try {
    claimed = await claimDevice(user);
    const { device } = claimed;
    let tok = await devToken(user, device); // a bad name or an unreachable API shows here
    let life = tok.expiresAt - Date.now();
    // The SDK asks for a token at every (re)connection, every REST call and every refresh,
    // which it makes when a fifth of the connection's token's life is left and retries every
    // 5 s until it gets a token that expires later: so the cached one is replaced once less
    // than 30% of its life is left.
    const token = async (signal?: AbortSignal) => {
      if (tok.expiresAt - Date.now() < 0.3 * life) {
        tok = await devToken(user, device, signal);
        life = tok.expiresAt - Date.now();
      }
      return tok.token;
    };
    const store = new IndexedDBStore({ database: "parley-demo", key: `${user}/${device}` });
    for (const p of Object.values((await store.load()).outbox)) locals.set(p.client_msg_id, { clientMsgId: p.client_msg_id, conversation: p.conversation, body: p.body, status: "queued" });
    localStorage.setItem(USER_KEY, user);
    ui.signin.hidden = true;
    ui.app.hidden = false;
    ui.meName.textContent = user;
    ui.meDevice.textContent = device;
    state = "connecting";
    renderBanner();
    const client = await connectRetrying({ user, device, token, store }, () => epoch !== signedIn);
    if (!client) {
      await store.close();
      return; // signed out meanwhile (the finally below releases the device)
    }
    session = { user, device, client, store, release: claimed.release };
    claimed = undefined;
    wire(client);
    ui.composerText.disabled = ui.composerSend.disabled = current === undefined;
    await refreshInbox();
    const open = current ?? params.get("open") ?? undefined;
    if (open && convs.has(open)) await openConversation(open);
  } catch (e) {
    ui.signin.hidden = false;
    ui.app.hidden = true;
    state = "signed-out";
    renderBanner();
    ui.signinError.textContent = (e as Error).message;
  } finally {
    claimed?.release(); // not signed in after all
    ui.signinGo.disabled = false;
  }
}

// connectRetrying calls Client.connect until the first connection is up: Client.connect
// rejects when it fails (the server down, the network gone), and only after that does the
// client repair every disconnect by itself.
async function connectRetrying(o: { user: string; device: string; token: (s?: AbortSignal) => Promise<string>; store: IndexedDBStore }, abandoned: () => boolean): Promise<Client | undefined> {
  for (let attempt = 0; !abandoned(); attempt++) {
    metrics.connectCalledAt = performance.now();
    metrics.firstMessageAt = 0;
    try {
      const c = await Client.connect({
        url: wsUrl,
        apiUrl: apiBase,
        token: o.token,
        device: o.device,
        store: o.store,
        logger: console,
        // Back within 5 s of the network's return, whatever the outage's length.
        backoff: { minMs: 250, maxMs: 5000 },
        // A browser shows the page no WebSocket ping: a network gone quiet is noticed by the
        // client's own pings, within 8 s here.
        liveness: { pingAfterMs: 2500, deadAfterMs: 8000 },
      });
      metrics.connectedAt = performance.now();
      if (!abandoned()) return c;
      await c.close();
      return undefined;
    } catch (e) {
      const wait = Math.min(5000, 250 * 2 ** attempt) * (0.5 + Math.random() / 2);
      console.warn(`demo: connect failed (${(e as Error).message}); again in ${Math.round(wait)} ms`);
      if (!abandoned()) renderBanner(`Cannot connect: ${(e as Error).message}. Trying again…`);
      await new Promise((r) => setTimeout(r, wait));
    }
  }
  return undefined;
}

async function signOut(): Promise<void> {
  signedIn++;
  const s = session;
  session = undefined;
  localStorage.removeItem(USER_KEY);
  if (s) {
    await s.client.close();
    await s.store.close();
    s.release();
  }
  for (const m of [convs, messages, locals, delivered, read, typing, presence, watched]) m.clear();
  current = undefined;
  state = "signed-out";
  clearView();
  ui.convs.replaceChildren();
  ui.app.hidden = true;
  ui.signin.hidden = false;
  renderBanner();
}

// ---- the client's events

function wire(c: Client): void {
  c.on("state", (e) => {
    state = e.state;
    states.push(e.state);
    renderBanner();
    if (e.state === "connected") {
      watched.clear(); // presence subscriptions end with the connection
      void refreshInbox().then(watchPresence);
      if (current) scheduleRead(current);
    }
  });
  c.on("message", (e) => onMessage(e.message));
  c.on("accepted", (e) => {
    const l = locals.get(e.clientMsgId);
    if (l) {
      l.status = "sent";
      renderLocal(l);
    }
    renderBanner();
  });
  c.on("sendFailed", (e) => {
    const l = locals.get(e.clientMsgId);
    if (l) {
      l.status = "failed";
      l.error = e.error.message;
      renderLocal(l);
    }
    renderBanner();
  });
  c.on("receipt", (e) => onReceipt(e.receipt));
  c.on("typing", (e) => {
    if (e.typing.user === session?.user) return;
    let t = typing.get(e.typing.conversation);
    if (!t) typing.set(e.typing.conversation, (t = new Map()));
    t.set(e.typing.user, Date.now() + 5000);
    renderTyping();
    setTimeout(renderTyping, 5100);
  });
  c.on("presence", (e) => {
    for (const p of e.presence) presence.set(p.user, p);
    renderList();
    renderHead();
  });
  state = c.state;
}

function onMessage(m: Message): void {
  const now = performance.now();
  if (!metrics.firstMessageAt) metrics.firstMessageAt = now;
  if (metrics.onlineAt && !metrics.firstMessageAfterOnlineAt) metrics.firstMessageAfterOnlineAt = now;
  surfaced.push({ conversation: m.conversation, seq: m.seq, sender: m.sender, client_msg_id: m.client_msg_id, body: m.body ?? "", at: now });
  addMessage(m);
  if (m.sender !== session?.user) {
    // Their message is their read receipt up to its seq (docs/protocol.md), and they stopped typing.
    bump(read, m.conversation, m.sender, m.seq);
    typing.get(m.conversation)?.delete(m.sender);
    if (m.conversation === current) renderTyping();
  }
  const conv = convs.get(m.conversation);
  if (!conv) scheduleInbox(0); // a conversation someone else started
  else {
    if (m.kind === "text" && m.seq > conv.entry.last_seq) {
      conv.entry.last_preview = (m.body ?? "").slice(0, 100);
      conv.entry.last_sender = m.sender;
      conv.entry.last_at = m.ts;
    }
    scheduleInbox(1000);
    scheduleList();
  }
  if (m.conversation === current) scheduleRead(m.conversation);
}

function onReceipt(r: Receipt): void {
  if (r.kind === "read") {
    bump(read, r.conversation, r.user, r.seq);
    bump(delivered, r.conversation, r.user, r.seq);
  } else if (r.kind === "delivered") {
    bump(delivered, r.conversation, r.user, r.seq);
  }
  if (r.conversation === current) renderStatuses();
}

function bump(m: Map<string, Map<string, number>>, conv: string, user: string, seq: number): void {
  let byUser = m.get(conv);
  if (!byUser) m.set(conv, (byUser = new Map()));
  if (seq > (byUser.get(user) ?? 0)) byUser.set(user, seq);
}

function addMessage(m: Message): void {
  let byseq = messages.get(m.conversation);
  if (!byseq) messages.set(m.conversation, (byseq = new Map()));
  if (byseq.has(m.seq)) return; // from the history page already
  byseq.set(m.seq, m);
  if (m.kind === "edit" || m.kind === "delete") {
    const target = m.target_seq ? byseq.get(m.target_seq) : undefined;
    if (target) {
      if (m.kind === "edit") {
        target.body = m.body ?? "";
        target.edited_seq = m.seq;
      } else {
        target.deleted = true;
        delete target.body;
      }
      if (m.conversation === current) renderMessage(target);
    }
    return;
  }
  const l = locals.get(m.client_msg_id);
  if (l && m.sender === session?.user) {
    locals.delete(m.client_msg_id);
    document.getElementById(`local-${l.clientMsgId}`)?.remove();
  }
  if (m.conversation === current) renderMessage(m);
}

// ---- inbox, presence, reads

let inboxTimer: ReturnType<typeof setTimeout> | undefined;

function scheduleInbox(ms: number): void {
  if (inboxTimer !== undefined) return;
  inboxTimer = setTimeout(() => {
    inboxTimer = undefined;
    void refreshInbox().then(watchPresence);
  }, ms);
}

/** refreshInbox reads the conversation list (its first 100 entries) from the REST inbox. */
async function refreshInbox(): Promise<void> {
  const s = session;
  if (!s) return;
  try {
    const inbox = await s.client.rest.inbox({ limit: 100 });
    if (session !== s) return;
    for (const entry of inbox.conversations) convs.set(entry.id, { entry });
    renderList();
    renderHead();
  } catch (e) {
    console.warn("demo: inbox", e);
  }
}

const watched = new Set<string>(); // users subscribed to on this connection

/** watchPresence subscribes to the peers of the direct conversations (again after a reconnect). */
async function watchPresence(): Promise<void> {
  const s = session;
  if (!s || s.client.state !== "connected") return;
  const peers = [...convs.values()].map((c) => c.entry.peer).filter((p): p is string => !!p && !watched.has(p));
  if (!peers.length) return;
  try {
    for (const p of await s.client.subscribePresence(peers.slice(0, 100))) presence.set(p.user, p);
    for (const p of peers.slice(0, 100)) watched.add(p);
    renderList();
    renderHead();
  } catch (e) {
    if (!(e instanceof NotConnectedError)) console.warn("demo: presence", e);
  }
}

let readTimer: ReturnType<typeof setTimeout> | undefined;

// scheduleRead marks the open conversation read up to its last message, at most every 300 ms.
function scheduleRead(conv: string): void {
  if (readTimer !== undefined) return;
  readTimer = setTimeout(() => {
    readTimer = undefined;
    const s = session;
    const c = convs.get(conv);
    if (!s || conv !== current || document.visibilityState !== "visible") return;
    const last = Math.max(c?.entry.last_seq ?? 0, ...(messages.get(conv)?.keys() ?? []));
    if (!last || (c && c.entry.read_seq >= last && unread(c) === 0)) return;
    s.client
      .markRead(conv, last)
      .then((seq) => {
        if (c && seq > c.entry.read_seq) c.entry.read_seq = seq;
        if (c) c.entry.unread = 0;
        renderList();
      })
      .catch((e: unknown) => {
        if (!(e instanceof NotConnectedError)) console.warn("demo: read", e);
      });
  }, 300);
}

/**
 * unread is the inbox's count plus the other members' texts that arrived after the inbox was
 * read (past its last_seq), and none for what this user has read since.
 */
function unread(c: Conv): number {
  let n = c.entry.unread;
  for (const [seq, m] of messages.get(c.entry.id) ?? []) {
    if (seq > c.entry.last_seq && seq > c.entry.read_seq && m.kind === "text" && m.sender !== session?.user) n++;
  }
  return n;
}

// ---- conversations

async function openConversation(id: string): Promise<void> {
  const s = session;
  if (!s) return;
  current = id;
  const url = new URL(location.href);
  url.searchParams.set("open", id);
  history.replaceState(null, "", url);
  clearView();
  ui.composerText.disabled = ui.composerSend.disabled = false;
  renderList();
  renderHead();
  renderTyping();
  try {
    // The latest page of history: what this device saw before it was (re)loaded. Messages
    // the client surfaces from now on are added by seq, each once.
    const page = await s.client.rest.messages(id, { limit: 100 });
    if (current !== id || session !== s) return;
    for (const m of page.messages) {
      let byseq = messages.get(id);
      if (!byseq) messages.set(id, (byseq = new Map()));
      if (!byseq.has(m.seq)) byseq.set(m.seq, m as Message);
      if (m.sender === s.user) locals.delete(m.client_msg_id); // accepted before the page was reloaded
    }
  } catch (e) {
    console.warn("demo: history", e);
  }
  renderMessages();
  scheduleRead(id);
}

async function startChat(other: string): Promise<void> {
  const s = session;
  if (!s) return;
  ui.newchatError.textContent = "";
  try {
    const c = await s.client.rest.createDirect(other);
    ui.newchatUser.value = "";
    await refreshInbox();
    void watchPresence();
    await openConversation(c.id);
  } catch (e) {
    ui.newchatError.textContent = (e as Error).message;
  }
}

async function send(text: string): Promise<void> {
  const s = session;
  const conv = current;
  if (!s || !conv || !text.trim()) return;
  ui.sendError.textContent = "";
  try {
    // Resolves once the message is in the outbox and IndexedDB; the client sends it now or
    // after the next reconnect, with the same id until the server accepts it.
    const id = await s.client.send(conv, text);
    if (!locals.has(id) && !surfaced.some((m) => m.client_msg_id === id)) {
      const l: Local = { clientMsgId: id, conversation: conv, body: text, status: "queued" };
      locals.set(id, l);
      renderLocal(l);
    }
    renderBanner();
  } catch (e) {
    ui.sendError.textContent = (e as Error).message;
  }
}

let typingSent = 0;

function onTypingInput(): void {
  const s = session;
  if (!s || !current || s.client.state !== "connected" || Date.now() - typingSent < 3000) return;
  typingSent = Date.now();
  s.client.typing(current).catch(() => {}); // ephemeral: a lost one matters to no one
}

// ---- rendering

function renderBanner(text?: string): void {
  const b = ui.banner;
  const queued = session ? session.client.pending().length : [...locals.values()].filter((l) => l.status === "queued").length;
  const q = queued ? ` ${queued} message${queued === 1 ? "" : "s"} queued: sent once connected.` : "";
  b.classList.toggle("offline", !navigator.onLine);
  if (text) {
    b.textContent = text + q;
    b.hidden = false;
  } else if (state === "connected" || state === "signed-out") {
    b.hidden = true;
    b.textContent = "";
  } else {
    const verb = states.includes("connected") ? "Reconnecting…" : "Connecting…";
    b.textContent = (navigator.onLine ? verb : "Offline: reconnecting once the network is back.") + q;
    b.hidden = false;
  }
  b.dataset.state = state;
}

function convName(c: Conv): string {
  return c.entry.peer ?? c.entry.title ?? c.entry.id.slice(0, 8);
}

let listFrame = 0;

// scheduleList renders the list once before the next frame, however many messages arrive
// before it (a catch-up surfaces hundreds at once).
function scheduleList(): void {
  if (listFrame) return;
  listFrame = requestAnimationFrame(() => {
    listFrame = 0;
    renderList();
  });
}

function renderList(): void {
  const list = [...convs.values()].sort((a, b) => b.entry.last_at - a.entry.last_at);
  const items = list.map((c) => {
    const li = node("li", "conv" + (c.entry.id === current ? " current" : ""));
    li.dataset.conversation = c.entry.id;
    const name = node("span", "conv-name");
    if (c.entry.peer) {
      const p = presence.get(c.entry.peer);
      const dot = node("span", "dot" + (p?.state === "online" ? " online" : ""));
      dot.title = p?.state ?? "unknown";
      name.append(dot);
    }
    name.append(convName(c));
    const n = c.entry.id === current ? 0 : unread(c);
    const badge = node("span", "unread", n ? String(n) : "");
    const preview = node("span", "conv-preview", c.entry.last_preview ? `${c.entry.last_sender === session?.user ? "You: " : ""}${c.entry.last_preview}` : "no messages yet");
    li.append(name, badge, preview);
    li.addEventListener("click", () => void openConversation(c.entry.id));
    return li;
  });
  ui.convs.replaceChildren(...items);
}

function renderHead(): void {
  const c = current ? convs.get(current) : undefined;
  ui.chatTitle.textContent = c ? convName(c) : current ? "…" : "No conversation open";
  const p = c?.entry.peer ? presence.get(c.entry.peer) : undefined;
  ui.chatPresence.textContent = !p ? "" : p.state === "online" ? "online" : p.state === "offline" ? `offline${p.last_seen ? ", last seen " + new Date(p.last_seen).toLocaleTimeString() : ""}` : p.state;
  ui.chatPresence.dataset.state = p?.state ?? "";
}

function renderTyping(): void {
  const t = current ? typing.get(current) : undefined;
  const now = Date.now();
  const who = t ? [...t].filter(([, until]) => until > now).map(([u]) => u) : [];
  ui.typing.textContent = who.length ? `${who.join(", ")} ${who.length === 1 ? "is" : "are"} typing…` : "";
}

/**
 * SHOWN is how many of the open conversation's latest messages the view holds: the cost of
 * the page's style and layout grows with its elements, and a catch-up of thousands would
 * slow every later message down.
 */
const SHOWN = 500;

let shownCount = 0; // sequenced messages in the view

function clearView(): void {
  ui.msgs.replaceChildren();
  shownCount = 0;
}

function renderMessages(): void {
  clearView();
  const byseq = current ? messages.get(current) : undefined;
  if (byseq) for (const seq of [...byseq.keys()].sort((a, b) => a - b).slice(-SHOWN)) renderMessage(byseq.get(seq)!);
  for (const l of locals.values()) if (l.conversation === current) renderLocal(l);
  renderStatuses();
  atBottom = true;
  scheduleScroll();
}

// The view follows new messages while it is at the bottom (once a frame: no layout per message).
let atBottom = true;
let scrollFrame = 0;

function scheduleScroll(): void {
  if (scrollFrame || !atBottom) return;
  scrollFrame = requestAnimationFrame(() => {
    scrollFrame = 0;
    ui.msgs.scrollTop = ui.msgs.scrollHeight;
  });
}

// renderMessage puts a sequenced message in its place (by seq, before the local ones).
function renderMessage(m: Message): void {
  if (m.kind === "edit" || m.kind === "delete") return;
  const id = `msg-${m.seq}`;
  const mine = m.sender === session?.user;
  const li = node("li", m.kind === "text" ? "msg" + (mine ? " mine" : "") : "msg system");
  li.id = id;
  li.dataset.seq = String(m.seq);
  li.dataset.sender = m.sender;
  li.dataset.clientMsgId = m.client_msg_id;
  if (m.kind === "text") {
    const body = node("span", "msg-body", m.deleted ? "(deleted)" : (m.body ?? ""));
    const meta = node("span", "msg-meta", (mine ? "" : m.sender + " · ") + new Date(m.ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) + (m.edited_seq ? " · edited" : ""));
    if (mine) meta.append(" ", node("span", "msg-status"));
    li.append(body, meta);
  } else {
    li.textContent = m.kind === "member_added" || m.kind === "member_removed" || m.kind === "member_left" ? `${m.user ?? m.sender}: ${m.kind.replace("member_", "")}` : `${m.sender} ${m.kind}${m.target_seq ? " #" + m.target_seq : ""}`;
  }
  const old = document.getElementById(id);
  if (old) {
    old.replaceWith(li);
  } else {
    // Usually the last one: walk back from the end to the first with a lower seq.
    let after: Element | null = ui.msgs.lastElementChild;
    while (after && (!(after as HTMLElement).dataset.seq || Number((after as HTMLElement).dataset.seq) > m.seq)) after = after.previousElementSibling;
    if (!after && shownCount >= SHOWN) return; // older than every message in the view
    if (after) after.after(li);
    else ui.msgs.prepend(li);
    if (++shownCount > SHOWN) {
      ui.msgs.querySelector(".msg[data-seq]")?.remove(); // the oldest leaves the view
      shownCount--;
    }
    scheduleScroll();
  }
  if (mine) renderStatus(li, m.seq);
}

function renderLocal(l: Local): void {
  if (l.conversation !== current) return;
  const id = `local-${l.clientMsgId}`;
  const li = node("li", `msg mine pending${l.status === "failed" ? " failed" : ""}`);
  li.id = id;
  li.dataset.clientMsgId = l.clientMsgId;
  li.dataset.status = l.status;
  const label = l.status === "queued" ? "queued" : l.status === "sent" ? "✓ sent" : `not sent: ${l.error ?? ""}`;
  li.append(node("span", "msg-body", l.body), node("span", "msg-meta", label));
  const old = document.getElementById(id);
  if (old) old.replaceWith(li);
  else ui.msgs.append(li);
  scheduleScroll();
}

// The status of this user's message at seq: read by someone, delivered to someone, or sent.
function renderStatus(li: HTMLElement, seq: number): void {
  const st = li.querySelector<HTMLElement>(".msg-status");
  if (!st || !current) return;
  const others = (m: Map<string, Map<string, number>>) => [...(m.get(current!) ?? [])].some(([u, s]) => u !== session?.user && s >= seq);
  const status = others(read) ? "read" : others(delivered) ? "delivered" : "sent";
  if (st.dataset.status === status) return;
  st.dataset.status = status;
  st.className = "msg-status " + status;
  st.textContent = status === "read" ? "✓✓ read" : status === "delivered" ? "✓✓ delivered" : "✓ sent";
  li.dataset.status = status;
}

function renderStatuses(): void {
  for (const li of ui.msgs.querySelectorAll<HTMLElement>(".msg.mine[data-seq]")) renderStatus(li, Number(li.dataset.seq));
}

// ---- start

ui.signinApi.textContent = apiBase;
ui.signin.addEventListener("submit", (e) => {
  e.preventDefault();
  void signIn(ui.signinUser.value.trim());
});
ui.signout.addEventListener("click", () => void signOut());
ui.newchat.addEventListener("submit", (e) => {
  e.preventDefault();
  void startChat(ui.newchatUser.value.trim());
});
ui.composer.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = ui.composerText.value;
  ui.composerText.value = "";
  void send(text);
});
ui.composerText.addEventListener("input", onTypingInput);
ui.msgs.addEventListener("scroll", () => {
  atBottom = ui.msgs.scrollHeight - ui.msgs.scrollTop - ui.msgs.clientHeight < 40;
});
window.addEventListener("online", () => {
  metrics.onlineAt = performance.now();
  metrics.firstMessageAfterOnlineAt = 0;
  renderBanner();
});
window.addEventListener("offline", () => renderBanner());
setInterval(renderTyping, 1000);

// What the tests and benchmarks read (web/demo/test); nothing of the page depends on it.
Object.assign(window, {
  parleyDemo: {
    surfaced,
    states,
    metrics,
    pending: () => session?.client.pending() ?? [],
    state: () => state,
    user: () => session?.user,
    device: () => session?.device,
  },
});

const remembered = params.get("user") ?? localStorage.getItem(USER_KEY);
if (remembered) void signIn(remembered);
else {
  ui.signin.hidden = false;
  ui.signinUser.focus();
}
