// The client against scripted servers (ws's WebSocketServer speaking the protocol), for the
// cases a real parleyd does not produce on demand: ported from the Go SDK's unit tests
// (close_test, since_test, syncpage_test, liveness_test, presence_test), plus the event API.
import { test } from "node:test";
import assert from "node:assert/strict";

import WebSocket, { WebSocketServer } from "ws";

import { Client, ClosedError, MemoryStore, MAX_CURSORS, decodeFrame, encodeFrame, type ClientEvent, type ConnectOptions, type Frame } from "../src/index.js";
import { freePort, until } from "./harness.js";

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
  const f: Fake = {
    url: `ws://127.0.0.1:${port}/v1/ws`,
    connections: 0,
    conns: [],
    close: () =>
      new Promise<void>((r) => {
        for (const c of wss.clients) c.terminate();
        wss.close(() => r());
      }),
  };
  wss.on("connection", (ws) => {
    const c: Conn = { ws, n: f.connections++, send: (fr) => ws.readyState === ws.OPEN && ws.send(encodeFrame(fr)) };
    f.conns.push(c);
    c.send({ type: "hello", session: "s", user: "me", device: "d", version: 1 });
    ws.on("message", (data) => onFrame(c, decodeFrame(String(data))));
    onOpen?.(c);
  });
  return f;
}

function connect(url: string, extra: Partial<ConnectOptions> = {}): Promise<Client> {
  return Client.connect({ url, token: "t", device: "d", WebSocket: WebSocket as unknown as ConnectOptions["WebSocket"], backoff: { minMs: 10, maxMs: 50 }, ...extra });
}

const conv = (i: number) => `00000000-0000-4000-8000-${String(i).padStart(12, "0")}`;

// Closing a client while a message waits for the app (the iterator is full) keeps the stored
// cursor at the last message the app was given: the next client on the store is given the
// rest (Go: TestCloseKeepsTheCursorAtWhatTheAppGot, the fix of commit 33bc01f).
test("close keeps the stored cursor at the last message the app was given", async () => {
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
test("a refused since-token is dropped once, and forgotten in the store", async () => {
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
test("a catch-up of 1,500 conversations leaves out passed cursors and gets every message once", async () => {
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
test("a frozen server is pinged, then given up", async () => {
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
test("presence.resync: a fresh snapshot of the watched users, 100 a frame", async () => {
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

test("events: on returns an unsubscribe, events() iterates in order and ends on abort or close; a message waits for a consumer", async () => {
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

test("connect's signal: aborting closes the client; an aborted signal rejects connect", async () => {
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

test("bad input is refused at the call with a clear error", async () => {
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
