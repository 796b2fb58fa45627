// The client against scripted servers (ws's WebSocketServer speaking the protocol), for the
// cases a real parleyd does not produce on demand: ported from the Go SDK's unit tests
// (close_test, since_test, syncpage_test, liveness_test, presence_test), plus the event API.
import { afterEach, test } from "node:test";
import assert from "node:assert/strict";

import WebSocket, { WebSocketServer } from "ws";

import { Client, ClosedError, MemoryStore, MAX_CURSORS, decodeFrame, encodeFrame, type ClientEvent, type ConnectOptions, type Frame } from "../src/index.js";
import { closeAll, freePort, track, until } from "./harness.js";

afterEach(closeAll);

interface Fake {
  url: string;
  connections: number;
  conns: Conn[];
  close(): Promise<void>;
}

type Conn = { send(f: Frame): void; ws: WebSocket; n: number };

// fake starts a WebSocket server that says hello on every connection and hands each client
// frame to onFrame.
async function fake(onFrame: (c: Conn, f: Frame) => void, onOpen?: (c: Conn) => void): Promise<Fake> {
  const port = await freePort();
  const wss = new WebSocketServer({ host: "127.0.0.1", port, handleProtocols: (p) => (p.has("parley.v1.json") ? "parley.v1.json" : false) });
  await new Promise<void>((r) => wss.once("listening", () => r()));
  let closing: Promise<void> | undefined;
  const f: Fake = {
    url: `ws://127.0.0.1:${port}/v1/ws`,
    connections: 0,
    conns: [],
    close: () =>
      (closing ??= new Promise<void>((r) => {
        for (const c of wss.clients) c.terminate();
        wss.close(() => r());
      })),
  };
  track(f);
  wss.on("connection", (ws) => {
    const c: Conn = { ws, n: f.connections++, send: (fr) => ws.readyState === ws.OPEN && ws.send(encodeFrame(fr)) };
    f.conns.push(c);
    c.send({ type: "hello", session: "s", user: "me", device: "d", version: 1 });
    ws.on("message", (data) => onFrame(c, decodeFrame(String(data))));
    onOpen?.(c);
  });
  return f;
}

async function connect(url: string, extra: Partial<ConnectOptions> = {}): Promise<Client> {
  return track(await Client.connect({ url, token: "t", device: "d", WebSocket: WebSocket as unknown as ConnectOptions["WebSocket"], backoff: { minMs: 10, maxMs: 50 }, ...extra }));
}

const conv = (i: number) => `00000000-0000-4000-8000-${String(i).padStart(12, "0")}`;

// Closing a client while a message waits for the app (the iterator is full) keeps the stored
// cursor at the last message the app was given: the next client on the store is given the
// rest (Go: TestCloseKeepsTheCursorAtWhatTheAppGot, the fix of commit 33bc01f).
test("close keeps the stored cursor at the last message the app was given", { timeout: 60_000 }, async () => {
  const pushes = 300;
  let pushed = 0;
  const srv = await fake((c, f) => {
    if (f.type !== "sync") return;
    c.send({ type: "sync.result", id: f.id!, since: "done" });
    for (let seq = 1; seq <= pushes; seq++) {
      c.send({ type: "message", conversation: conv(1), seq, sender: "bob", client_msg_id: conv(seq), kind: "text", body: "hi", ts: 1 });
      pushed = seq;
    }
  });
  const store = new MemoryStore();
  const c = await connect(srv.url, { store, autoAck: false });
  const it = c.events(); // the app reads nothing until the iterator is full and a message waits behind it
  assert.ok(await until(10_000, () => pushed === pushes), "the server did not push everything");
  await new Promise((r) => setTimeout(r, 300)); // the pushes reach the blocked hand-over
  await c.close();
  let got = 0;
  for await (const e of it) {
    if (e.type !== "message") continue;
    assert.equal(e.message.seq, got + 1, `seq ${e.message.seq} after ${got}`);
    got = e.message.seq;
  }
  assert.ok(got > 0 && got < pushes, `the app got ${got} of ${pushes}: want the iterator full, the rest waiting`);
  const st = await store.load();
  assert.equal(st.cursors[conv(1)], got, `stored cursor ${st.cursors[conv(1)]} after close; the app was given up to ${got}: the next client would skip the rest`);
  await srv.close();
});

// A refused since-token is retried from an empty since once per sync, not again and again;
// the next connection no longer sends it (Go: TestRefusedSinceIsDroppedOnce).
test("a refused since-token is dropped once, and forgotten in the store", { timeout: 60_000 }, async () => {
  const syncs: string[][] = [];
  const srv = await fake(
    (c, f) => {
      if (f.type !== "sync") return;
      syncs[c.n]!.push(f.since ?? "");
      c.send({ type: "error", id: f.id!, code: "bad_request", message: "since is not a token this server issued to you" });
    },
    (c) => void (syncs[c.n] = []),
  );
  const store = new MemoryStore();
  await store.save({ since: "old", cursors: { [conv(3)]: 3 }, outbox: {} });
  const logs: string[] = [];
  const logger = { warn: (m: string, ...a: unknown[]) => void logs.push([m, ...a.map((x) => (x instanceof Error ? x.message : String(x)))].join(" ")) };
  const c = await connect(srv.url, { store, logger });
  assert.ok(await until(10_000, () => syncs.length >= 3 && syncs[1]!.length > 0), `syncs ${JSON.stringify(syncs)}`);
  await c.close();
  assert.deepEqual(syncs[0], ["old", ""]);
  assert.deepEqual(syncs[1], [""]);
  const st = await store.load();
  assert.equal(st.since, "");
  assert.equal(st.cursors[conv(3)], 3);
  const out = logs.join("\n");
  assert.ok(out.includes("after the since-token or page token was refused") && out.includes("bad_request"), `logs do not show the refusal:\n${out}`);
  await srv.close();
});

// A new device catching up on more conversations than a sync may carry cursors for pages
// through with the page tokens and leaves out the cursors of conversations the catch-up has
// passed (Go: TestCatchUpLeavesOutPassedCursors).
test("a catch-up of 1,500 conversations leaves out passed cursors and gets every message once", { timeout: 60_000 }, async () => {
  const convs = 1500;
  const perPage = 100;
  let maxCursors = 0;
  const srv = await fake((c, f) => {
    if (f.type === "ping") return c.send({ type: "pong", id: f.id! });
    if (f.type !== "sync") return;
    const cursors = f.cursors ?? [];
    maxCursors = Math.max(maxCursors, cursors.length);
    if (cursors.length > MAX_CURSORS) return c.send({ type: "error", id: f.id!, code: "bad_request", message: `${cursors.length} cursors` });
    const from = f.page ? Number(f.page.slice(1)) : 0;
    const held = new Map(cursors.map((x) => [x.conversation, x.seq]));
    const res: Frame = { type: "sync.result", id: f.id!, since: "done", conversations: [], messages: [] };
    for (let i = from; i < Math.min(from + perPage, convs); i++) {
      res.conversations!.push({ conversation: conv(i), last_seq: 1, read_seq: 0, unread: 1 });
      if ((held.get(conv(i)) ?? 0) < 1) res.messages!.push({ conversation: conv(i), seq: 1, sender: "bob", client_msg_id: conv(i), kind: "text", body: "hi", ts: 1 });
    }
    if (from + perPage < convs) Object.assign(res, { more: true, page: `p${from + perPage}`, since: "" });
    c.send(res);
  });
  const c = await connect(srv.url, { autoAck: false });
  const got = new Map<string, number>();
  let connected = false;
  c.on("message", (e) => void got.set(e.message.conversation, (got.get(e.message.conversation) ?? 0) + 1));
  c.on("state", (e) => void (connected ||= e.state === "connected"));
  assert.ok(await until(20_000, () => connected && got.size === convs), `messages of ${got.size} of ${convs} conversations; the largest sync had ${maxCursors} cursors`);
  await c.close();
  for (const [k, n] of got) assert.equal(n, 1, `${k}: ${n} messages`);
  assert.ok(maxCursors <= MAX_CURSORS, `a sync with ${maxCursors} cursors`);
  await srv.close();
});

// A server that says hello and then freezes is pinged, then given up: the client connects
// again (Go: TestFrozenServerIsGivenUp).
test("a frozen server is pinged, then given up", { timeout: 60_000 }, async () => {
  let pings = 0;
  const srv = await fake((_c, f) => void (f.type === "ping" && pings++));
  const c = await connect(srv.url, { liveness: { pingAfterMs: 200, deadAfterMs: 800 } });
  assert.ok(await until(10_000, () => srv.connections >= 2), `the client stayed on the frozen connection (${srv.connections} connections, ${pings} pings)`);
  assert.ok(pings > 0, "the client gave the connection up without pinging first");
  await c.close();
  await srv.close();
});

// After presence.resync the client takes a fresh snapshot of every user it watches, at most
// 100 a frame, and delivers it as a presence event; unsubscribed users are left out (Go:
// TestPresenceResyncTakesAFreshSnapshot).
test("presence.resync: a fresh snapshot of the watched users, 100 a frame", { timeout: 60_000 }, async () => {
  let offline = false;
  const asked: number[] = [];
  const srv = await fake((c, f) => {
    if (f.type === "sync") c.send({ type: "sync.result", id: f.id!, since: "t" });
    if (f.type === "presence.unsubscribe") c.send({ type: "ok", id: f.id! });
    if (f.type === "presence.subscribe") {
      if (offline) asked.push(f.users!.length);
      c.send({ type: "presence", id: f.id!, presence: f.users!.map((user) => ({ user, state: offline ? "offline" : "online" })) });
    }
  });
  const c = await connect(srv.url);
  const users = Array.from({ length: 250 }, (_, i) => `u${String(i).padStart(3, "0")}`);
  const states = new Map<string, string>();
  c.on("presence", (e) => {
    for (const p of e.presence) states.set(p.user, p.state);
  });
  for (let i = 0; i < users.length; i += 100) {
    const snap = await c.subscribePresence(users.slice(i, i + 100));
    for (const p of snap) states.set(p.user, p.state);
  }
  await c.unsubscribePresence(users.slice(0, 10));
  assert.equal([...states.values()].filter((s) => s === "online").length, 250);
  offline = true;
  for (const k of srv.conns) k.send({ type: "presence.resync" }); // the server lost updates
  assert.ok(await until(5000, () => [...states.entries()].filter(([u, s]) => s === "offline" && u >= "u010").length === 240), "the snapshot did not arrive");
  assert.deepEqual(asked, [100, 100, 40]);
  for (const u of users.slice(0, 10)) assert.equal(states.get(u), "online", `${u} was unsubscribed, yet in the snapshot`);
  await c.close();
  await srv.close();
});

test("events: on returns an unsubscribe, events() iterates in order and ends on abort or close; a message waits for a consumer", { timeout: 60_000 }, async () => {
  let push: ((f: Frame) => void) | undefined;
  const srv = await fake(
    (c, f) => {
      if (f.type === "sync") c.send({ type: "sync.result", id: f.id!, since: "t" });
    },
    (c) => void (push = c.send),
  );
  const c = await connect(srv.url, { autoAck: false });
  await until(2000, () => push !== undefined);
  const m = (seq: number): Frame => ({ type: "message", conversation: conv(1), seq, sender: "bob", client_msg_id: conv(seq), kind: "text", body: `m${seq}`, ts: 1 });
  push!(m(1));
  push!(m(2));
  await new Promise((r) => setTimeout(r, 200)); // no consumer yet: they wait
  const seen: number[] = [];
  const off = c.on("message", (e) => void seen.push(e.message.seq));
  assert.ok(await until(2000, () => seen.length === 2), `seen ${seen.join(",")}`);
  const ac = new AbortController();
  const it = c.events(ac.signal);
  push!(m(3));
  const first = await it.next();
  assert.equal((first.value as ClientEvent).type, "message");
  off();
  push!(m(4));
  const second = await it.next();
  assert.deepEqual([(second.value as Extract<ClientEvent, { type: "message" }>).message.seq], [4]);
  assert.deepEqual(seen, [1, 2, 3], "the listener was removed before seq 4");
  ac.abort();
  assert.equal((await it.next()).done, true, "the iterator ended on abort");
  const it2 = c.events();
  await c.close();
  assert.equal((await it2.next()).done, true, "the iterator ended on close");
  await assert.rejects(c.send(conv(1), "x"), ClosedError);
  await srv.close();
});

test("connect's signal: aborting closes the client; an aborted signal rejects connect", { timeout: 60_000 }, async () => {
  const srv = await fake((c, f) => {
    if (f.type === "sync") c.send({ type: "sync.result", id: f.id!, since: "t" });
  });
  const ac = new AbortController();
  const c = await connect(srv.url, { signal: ac.signal });
  assert.ok(await until(2000, () => c.state === "connected"));
  ac.abort();
  assert.ok(await until(2000, () => c.closed));
  await assert.rejects(c.markRead(conv(1), 1), ClosedError);
  await c.close();
  await assert.rejects(connect(srv.url, { signal: AbortSignal.abort() }));
  await srv.close();
});

test("bad input is refused at the call with a clear error", { timeout: 60_000 }, async () => {
  const srv = await fake((c, f) => {
    if (f.type === "sync") c.send({ type: "sync.result", id: f.id!, since: "t" });
  });
  const c = await connect(srv.url);
  await assert.rejects(c.send("not-a-uuid", "x"), /conversation is not a UUID/);
  await assert.rejects(c.send(conv(1), ""), /body is empty/);
  await assert.rejects(c.markRead(conv(1), 0), /seq must be at least 1/);
  await assert.rejects(c.subscribePresence([]), /users is empty/);
  assert.deepEqual(c.pending(), []);
  await c.close();
  await assert.rejects(Client.connect({ url: "http://x", token: "t" }), /ws:\/\/ or wss:\/\//);
  await srv.close();
});

const text = (seq: number, c = conv(1)): Frame => ({ type: "message", conversation: c, seq, sender: "bob", client_msg_id: conv(1000 + seq), kind: "text", body: `m${seq}`, ts: 1 });

// A live message ahead of the cursor starts a sync at once; a sync that leaves the gap open
// (the server had not stored the missing seqs yet) is followed by another after a pause,
// until the gap is closed (docs/protocol.md, "Settling a gap").
test("gap fetch: a live message past a gap is held, synced at once, and synced again while the gap stays", { timeout: 60_000 }, async () => {
  const syncs: Frame[] = [];
  let stored = 1; // the server's store has seqs 1..stored
  const srv = await fake((c, f) => {
    if (f.type !== "sync") return;
    syncs.push(f);
    const cur = f.cursors?.find((x) => x.conversation === conv(1))?.seq ?? 0;
    const messages = [];
    for (let s = cur + 1; s <= stored; s++) messages.push(text(s));
    c.send({ type: "sync.result", id: f.id!, since: `t${syncs.length}`, conversations: stored > cur ? [{ conversation: conv(1), last_seq: stored, read_seq: 0, unread: 0 }] : [], messages: messages as never });
  });
  const c = await connect(srv.url, { autoAck: false });
  const seen: number[] = [];
  c.on("message", (e) => void seen.push(e.message.seq));
  assert.ok(await until(5000, () => seen.length === 1), "the first sync's message");
  const before = syncs.length;
  stored = 3;
  srv.conns[0]!.send(text(5)); // pushed live before the store had 4 and 5
  assert.ok(await until(5000, () => syncs.length > before), "no sync after a message past a gap");
  assert.ok(await until(5000, () => seen.length === 3), `seen ${seen.join(",")}: want 2 and 3 from the sync`);
  await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(seen, [1, 2, 3], "5 is held: the sync did not cover 4");
  const afterFirst = syncs.length;
  stored = 5;
  assert.ok(await until(10_000, () => seen.length === 5), `seen ${seen.join(",")}: the gap was never synced again`);
  assert.ok(syncs.length > afterFirst, "5 was released without a sync that covered 4");
  assert.deepEqual(seen, [1, 2, 3, 4, 5]);
});

// Acknowledgements are coalesced per conversation (one flush every 500 ms), carry ids, and
// one the server fails retryably is sent again at the next flush.
test("auto-ack: coalesced, and sent again after a retryable error", { timeout: 60_000 }, async () => {
  const acks: Frame[] = [];
  let failFirst = true;
  const srv = await fake((c, f) => {
    if (f.type === "sync") c.send({ type: "sync.result", id: f.id!, since: "t" });
    if (f.type === "ack") {
      acks.push(f);
      if (failFirst && f.seq === 50) {
        failFirst = false;
        c.send({ type: "error", id: f.id!, code: "unavailable", message: "store down", retryable: true });
      } else c.send({ type: "ok", id: f.id!, seq: f.seq! });
    }
  });
  const c = await connect(srv.url);
  c.on("message", () => {});
  await until(2000, () => c.state === "connected");
  for (let s = 1; s <= 50; s++) srv.conns[0]!.send(text(s));
  // The ack of 50 fails once (a store outage): it must be sent again at a later flush.
  assert.ok(await until(5000, () => acks.filter((a) => a.seq === 50).length >= 2), `acks ${acks.map((a) => a.seq).join(",")}: the failed ack of 50 was not sent again`);
  assert.ok(acks.length <= 5, `${acks.length} acks for 50 messages: not coalesced (${acks.map((a) => a.seq).join(",")})`);
  assert.ok(acks.every((a) => a.id === `a:${a.seq}:${conv(1)}`), "acks carry ids naming what they acknowledge");
});

// A send refused with a retryable error is sent again, with the same client_msg_id, after
// the server's retry_after_ms; one refused for good leaves the outbox with sendFailed.
test("send: a retryable refusal is retried with the same id after retry_after_ms; a final one fails", { timeout: 60_000 }, async () => {
  const sends: { id: string; at: number }[] = [];
  const srv = await fake((c, f) => {
    if (f.type === "sync") c.send({ type: "sync.result", id: f.id!, since: "t" });
    if (f.type !== "send") return;
    sends.push({ id: f.client_msg_id!, at: Date.now() });
    if (f.body === "never") return c.send({ type: "error", id: f.id!, code: "not_found", message: "no such conversation", retryable: false });
    if (sends.filter((s) => s.id === f.client_msg_id).length === 1) return c.send({ type: "error", id: f.id!, code: "rate_limited", message: "slow down", retryable: true, retry_after_ms: 1500 });
    c.send({ type: "accepted", id: f.id!, conversation: f.conversation!, client_msg_id: f.client_msg_id!, ts: 1 });
  });
  const c = await connect(srv.url);
  const events: ClientEvent[] = [];
  c.on("accepted", (e) => void events.push(e));
  c.on("sendFailed", (e) => void events.push(e));
  const id = await c.send(conv(1), "hello");
  assert.deepEqual(c.pending().map((p) => p.client_msg_id), [id]);
  assert.ok(await until(10_000, () => events.length === 1), "never accepted");
  assert.deepEqual(events[0], { type: "accepted", clientMsgId: id });
  assert.deepEqual(sends.map((s) => s.id), [id, id], "resent with the same id");
  assert.ok(sends[1]!.at - sends[0]!.at >= 1400, `resent after ${sends[1]!.at - sends[0]!.at} ms; the server asked for 1500`);
  const bad = await c.send(conv(2), "never");
  assert.ok(await until(5000, () => events.length === 2), "no sendFailed");
  const failed = events[1] as Extract<ClientEvent, { type: "sendFailed" }>;
  assert.equal(failed.type, "sendFailed");
  assert.equal(failed.clientMsgId, bad);
  assert.equal(failed.error.code, "not_found");
  assert.deepEqual(c.pending(), []);
});

// The server's reconnect hint (after_ms) is honoured before the next connection.
test("reconnect: the server's after_ms is waited before connecting again", { timeout: 60_000 }, async () => {
  const opened: number[] = [];
  const srv = await fake(
    (c, f) => {
      if (f.type !== "sync") return;
      c.send({ type: "sync.result", id: f.id!, since: "t" });
      if (c.n === 0) {
        c.send({ type: "reconnect", after_ms: 1200, reason: "draining" });
        setTimeout(() => c.ws.close(1001), 50);
      }
    },
    () => void opened.push(Date.now()),
  );
  const c = await connect(srv.url, { backoff: { minMs: 1, maxMs: 5 } });
  assert.ok(await until(10_000, () => opened.length >= 2), "no second connection");
  assert.ok(opened[1]! - opened[0]! >= 1200, `reconnected after ${opened[1]! - opened[0]!} ms; the hint said 1200`);
  assert.ok(await until(5000, () => c.state === "connected"));
});

// The token is replaced over the live connection at 80% of its life (auth.refresh).
test("token refresh: auth.refresh before expires_at, from the token source", { timeout: 60_000 }, async () => {
  const refreshes: string[] = [];
  const port = await freePort();
  const wss = new WebSocketServer({ host: "127.0.0.1", port, handleProtocols: () => "parley.v1.json" });
  track({ close: () => new Promise<void>((r) => wss.close(() => r())) });
  wss.on("connection", (ws) => {
    ws.send(encodeFrame({ type: "hello", session: "s", user: "me", device: "d", version: 1, expires_at: Date.now() + 1000 }));
    ws.on("message", (data) => {
      const f = decodeFrame(String(data));
      if (f.type === "sync") ws.send(encodeFrame({ type: "sync.result", id: f.id!, since: "t" }));
      if (f.type === "auth.refresh") {
        refreshes.push(f.token!);
        ws.send(encodeFrame({ type: "ok", id: f.id!, expires_at: Date.now() + 1000 }));
      }
    });
  });
  let n = 0;
  const c = await connect(`ws://127.0.0.1:${port}/v1/ws`, { token: () => `tok${n++}` });
  assert.ok(await until(5000, () => refreshes.length >= 2), `refreshes ${refreshes.join(",")}`);
  assert.deepEqual(refreshes.slice(0, 2), ["tok1", "tok2"], "each refresh asks the token source");
  assert.equal(c.state, "connected");
});

// A listener may close the client and wait for it (an app leaving a screen from a handler):
// close resolves, and the stored cursor is the last message the app was given.
test("a message listener that closes the client and awaits it does not deadlock", { timeout: 30_000 }, async () => {
  const srv = await fake((c, f) => {
    if (f.type !== "sync") return;
    c.send({ type: "sync.result", id: f.id!, since: "t" });
    for (let s = 1; s <= 20; s++) c.send(text(s));
  });
  const store = new MemoryStore();
  const c = await connect(srv.url, { store });
  const seen: number[] = [];
  let closed: Promise<void> | undefined;
  c.on("message", async (e) => {
    seen.push(e.message.seq);
    if (e.message.seq === 5) {
      closed = c.close();
      await closed;
    }
  });
  assert.ok(await until(5000, () => closed !== undefined));
  await closed;
  assert.deepEqual(seen, [1, 2, 3, 4, 5]);
  assert.equal((await store.load()).cursors[conv(1)], 5);
});
