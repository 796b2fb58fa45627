// Revoked tokens stop the client instead of looping (the Go SDK's rules): a handshake refused
// with 401 token_revoked (seen by ws in Node, and, in a browser that shows no status, learnt
// from the REST API), and close 4003 followed by a token source with nothing newer.
import { afterEach, test } from "node:test";
import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { Duplex } from "node:stream";

import WebSocket, { WebSocketServer } from "ws";

import { Client, HandshakeError, TokenRevokedError, encodeFrame, decodeFrame, isTokenRevoked, type ClientEvent, type ConnectOptions } from "../src/index.js";
import { closeAll, freePort, track, until } from "./harness.js";

afterEach(closeAll);

// BrowserLikeWS is ws with only the browser's WebSocket API: no handshake status, no pings.
class BrowserLikeWS {
  private readonly ws: WebSocket;
  constructor(url: string, protocols?: string | string[]) {
    this.ws = new WebSocket(url, protocols);
    this.ws.on("error", () => {}); // a browser reports it as an event too
  }
  get readyState(): number {
    return this.ws.readyState;
  }
  send(d: string): void {
    this.ws.send(d);
  }
  close(code?: number, reason?: string): void {
    this.ws.close(code, reason);
  }
  addEventListener(t: string, l: (ev: unknown) => void): void {
    this.ws.addEventListener(t as "message", l as () => void);
  }
}

// refusing serves HTTP on a port: every WebSocket handshake is refused with 401 token_revoked
// (and a JSON body, as parleyd does); GET /v1/presence answers restCode's 401 (or 400 when
// restCode is "").
async function refusing(restCode: string): Promise<{ ws: string; api: string; probes: () => number }> {
  let probes = 0;
  const port = await freePort();
  const srv = createServer((req: IncomingMessage, res: ServerResponse) => {
    if (req.url?.startsWith("/v1/presence")) probes++;
    res.writeHead(restCode ? 401 : 400, { "Content-Type": "application/json" });
    res.end(JSON.stringify({ code: restCode || "bad_request", message: "x", retryable: false }));
  });
  srv.on("upgrade", (_req: IncomingMessage, sock: Duplex) => {
    const body = JSON.stringify({ code: "token_revoked", message: "token revoked: sign in again", retryable: false });
    sock.end(`HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
  });
  await new Promise<void>((r) => srv.listen(port, "127.0.0.1", () => r()));
  track({ close: () => new Promise<void>((r) => srv.close(() => r())) });
  return { ws: `ws://127.0.0.1:${port}/v1/ws`, api: `http://127.0.0.1:${port}`, probes: () => probes };
}

const WS = WebSocket as unknown as ConnectOptions["WebSocket"];
const Browser = BrowserLikeWS as unknown as ConnectOptions["WebSocket"];

test("a handshake refused with 401 token_revoked rejects connect with TokenRevokedError (ws shows the status)", { timeout: 30_000 }, async () => {
  const s = await refusing("");
  await assert.rejects(Client.connect({ url: s.ws, token: "t", device: "d", WebSocket: WS }), (e: unknown) => e instanceof TokenRevokedError && isTokenRevoked(e));
  assert.equal(s.probes(), 0, "ws showed the status: no need to ask the REST API");
});

test("a browser's failed handshake: the REST API says whether the token is revoked", { timeout: 30_000 }, async () => {
  const revoked = await refusing("token_revoked");
  await assert.rejects(Client.connect({ url: revoked.ws, token: "t", device: "d", WebSocket: Browser }), TokenRevokedError);
  assert.equal(revoked.probes(), 1);
  const fine = await refusing(""); // the API takes the token: the handshake failed for another reason
  await assert.rejects(Client.connect({ url: fine.ws, token: "t", device: "d", WebSocket: Browser }), (e: unknown) => e instanceof HandshakeError && e.status === 0);
});

test("close 4003 and a token source with nothing newer: the client stops, with TokenRevokedError", { timeout: 30_000 }, async () => {
  const port = await freePort();
  const wss = new WebSocketServer({ host: "127.0.0.1", port, handleProtocols: () => "parley.v1.json" });
  track({ close: () => new Promise<void>((r) => wss.close(() => r())) });
  let connections = 0;
  wss.on("connection", (ws) => {
    connections++;
    ws.send(encodeFrame({ type: "hello", session: "s", user: "me", device: "d", version: 1 }));
    ws.on("message", (data) => {
      const f = decodeFrame(String(data));
      if (f.type !== "sync") return;
      ws.send(encodeFrame({ type: "sync.result", id: f.id!, since: "t" }));
      setTimeout(() => {
        ws.send(encodeFrame({ type: "error", code: "token_revoked", message: "token revoked: sign in again" }));
        ws.close(4003, "token revoked");
      }, 100);
    });
  });
  let asked = 0;
  const c = track(await Client.connect({ url: `ws://127.0.0.1:${port}/v1/ws`, token: () => (asked++, "the-same-token"), device: "d", WebSocket: WS, backoff: { minMs: 10, maxMs: 50 } }));
  const states: ClientEvent[] = [];
  c.on("state", (e) => void states.push(e));
  assert.ok(await until(10_000, () => states.some((e) => e.type === "state" && e.error)), `states ${JSON.stringify(states)}`);
  const last = states[states.length - 1] as Extract<ClientEvent, { type: "state" }>;
  assert.equal(last.state, "disconnected");
  assert.ok(last.error instanceof TokenRevokedError, `last state's error ${last.error}`);
  assert.equal(connections, 1, "the revoked token was not sent again");
  assert.ok(asked >= 2, "the token source was asked for a new token");
  await assert.rejects(c.send("00000000-0000-4000-8000-000000000001", "x"), TokenRevokedError);
  await assert.rejects(c.typing("00000000-0000-4000-8000-000000000001"), TokenRevokedError);
});

// A handshake refused with Retry-After (an edge at its limit, draining, or a handshake rate)
// is not tried again before that delay, whatever the backoff says.
test("reconnect: a handshake refused with 503 and Retry-After waits that long", { timeout: 30_000 }, async () => {
  const port = await freePort();
  const wss = new WebSocketServer({ noServer: true, handleProtocols: () => "parley.v1.json" });
  const attempts: number[] = [];
  const srv = createServer((_req, res) => void res.writeHead(404).end());
  srv.on("upgrade", (req: IncomingMessage, sock: Duplex, head: Buffer) => {
    attempts.push(Date.now());
    if (attempts.length === 2) {
      const body = JSON.stringify({ code: "unavailable", message: "draining", retryable: true });
      sock.end(`HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
      return;
    }
    wss.handleUpgrade(req, sock, head, (ws) => {
      ws.send(encodeFrame({ type: "hello", session: "s", user: "me", device: "d", version: 1 }));
      ws.on("message", (data) => {
        const f = decodeFrame(String(data));
        if (f.type === "sync") ws.send(encodeFrame({ type: "sync.result", id: f.id!, since: "t" }));
      });
      if (attempts.length === 1) setTimeout(() => ws.close(1011), 100); // the first connection drops
    });
  });
  await new Promise<void>((r) => srv.listen(port, "127.0.0.1", () => r()));
  track({ close: () => new Promise<void>((r) => { srv.closeAllConnections(); srv.close(() => r()); }) });
  const c = track(await Client.connect({ url: `ws://127.0.0.1:${port}/v1/ws`, token: "t", device: "d", WebSocket: WS, backoff: { minMs: 1, maxMs: 5 } }));
  assert.ok(await until(10_000, () => attempts.length >= 3 && c.state === "connected"), `attempts ${attempts.length}, state ${c.state}`);
  assert.ok(attempts[2]! - attempts[1]! >= 1000, `tried again ${attempts[2]! - attempts[1]!} ms after a refusal with Retry-After: 1`);
  for (const ws of wss.clients) ws.terminate();
});
