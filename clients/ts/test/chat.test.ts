// The SDK against a real parleyd on the local stack, as an app uses it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { MemoryStore, type Client } from "../src/index.js";
import { FileStore } from "../src/node.js";
import { Collector, Server, dial, id, notInOrder, until } from "./harness.js";

async function withServer(name: string, fn: (s: Server) => Promise<void>): Promise<void> {
  const s = new Server(name);
  try {
    await s.start();
    await fn(s);
  } catch (e) {
    console.error(`parleyd's output:\n${s.output}`);
    throw e;
  } finally {
    await s.stop();
  }
}

function users(name: string): [string, string] {
  const u = id(name);
  return [`${u}_alice`, `${u}_bob`];
}

test("two users chat: every message accepted once, surfaced to both once and in order", async () => {
  await withServer("chat", async (s) => {
    const [alice, bob] = users("chat");
    const ca = await dial(s, alice);
    const cb = await dial(s, bob);
    const ka = new Collector(ca);
    const kb = new Collector(cb);
    const conv = await ca.rest.createDirect(bob);
    const sent: string[] = [];
    for (let i = 0; i < 5; i++) sent.push(await ca.send(conv.id, `hi ${i}`));
    assert.ok(
      await until(20_000, () => ka.messages.length >= 5 && kb.messages.length >= 5 && ka.accepted.size === 5),
      `alice ${ka.messages.length} messages ${ka.accepted.size} accepted, bob ${kb.messages.length}`,
    );
    await new Promise((r) => setTimeout(r, 300)); // a duplicate would arrive by now
    await ca.close();
    await cb.close();
    assert.equal(notInOrder(ka.seqs(conv.id), 5), "");
    assert.equal(notInOrder(kb.seqs(conv.id), 5), "");
    assert.deepEqual(
      kb.messages.map((m) => m.body),
      sent.map((_, i) => `hi ${i}`),
    );
    assert.deepEqual(
      kb.messages.map((m) => m.client_msg_id),
      sent,
    );
    assert.equal(kb.messages[0]!.sender, alice);
    for (const [, n] of ka.accepted) assert.equal(n, 1);
    assert.deepEqual(ca.pending(), []);
  });
});

test("a device offline for 200 messages catches up once and in order", async () => {
  await withServer("offline", async (s) => {
    const [alice, bob] = users("offline");
    const store = new MemoryStore();
    const ca = await dial(s, alice);
    const ka = new Collector(ca);
    let cb: Client = await dial(s, bob, "d1", { store });
    const kb = new Collector(cb);
    const conv = await ca.rest.createDirect(bob);
    await ca.send(conv.id, "before");
    assert.ok(await until(20_000, () => kb.messages.length === 1), "bob did not get the first message");
    await cb.close();
    for (let i = 0; i < 200; i++) await ca.send(conv.id, `m${i}`);
    assert.ok(await until(60_000, () => ka.accepted.size === 201), `alice: ${ka.accepted.size} accepted`);
    cb = await dial(s, bob, "d1", { store });
    const kb2 = new Collector(cb);
    assert.ok(await until(60_000, () => kb2.messages.length >= 200), `bob after reconnecting: ${kb2.messages.length} of 200`);
    await new Promise((r) => setTimeout(r, 500)); // a duplicate would arrive by now
    await cb.close();
    await ca.close();
    assert.equal(notInOrder(kb2.seqs(conv.id), 200, 2), "", "bob's catch-up");
    kb2.messages.forEach((m, i) => assert.equal(m.body, `m${i}`));
    assert.equal((await store.load()).cursors[conv.id], 201);
  });
});

test("parleyd SIGKILLed in the middle of a burst: every accepted message reaches the other device once, in order", async () => {
  await withServer("kill", async (s) => {
    const [alice, bob] = users("kill");
    const ca = await dial(s, alice);
    const cb = await dial(s, bob);
    const ka = new Collector(ca);
    const kb = new Collector(cb);
    const conv = await ca.rest.createDirect(bob);
    const total = 100;
    const sent: string[] = [];
    for (let i = 0; i < total; i++) {
      sent.push(await ca.send(conv.id, `b${i}`));
      if (i === total / 2) {
        // Some of the burst is accepted, some in flight, the rest queued.
        await until(10_000, () => ka.accepted.size >= 10);
        await s.kill();
        await s.start();
      }
    }
    assert.ok(await until(90_000, () => ka.accepted.size === total), `accepted ${ka.accepted.size} of ${total}`);
    assert.ok(await until(60_000, () => kb.messages.length >= total), `bob surfaced ${kb.messages.length} of ${total}`);
    await new Promise((r) => setTimeout(r, 500)); // a duplicate would arrive by now
    await ca.close();
    await cb.close();
    assert.ok(kb.states.includes("disconnected"), `bob's states ${kb.states.join(",")}: the kill did not reach him`);
    assert.equal(notInOrder(kb.seqs(conv.id), total), "", "bob's messages");
    assert.deepEqual(
      kb.messages.map((m) => m.client_msg_id),
      sent,
      "bob's messages in send order",
    );
    for (const [cid, n] of ka.accepted) assert.equal(n, 1, `${cid} accepted ${n} times`);
    assert.deepEqual(ka.failed, []);
  });
});

test("the outbox survives a restart: a new client on the same file sends what the old one could not, once", async () => {
  await withServer("outbox", async (s) => {
    const [alice, bob] = users("outbox");
    const path = join(mkdtempSync(join(tmpdir(), "parley-ts-")), "state.json");
    const ca = await dial(s, alice, "d1", { store: new FileStore(path) });
    const ka = new Collector(ca);
    const cb = await dial(s, bob);
    const kb = new Collector(cb);
    const conv = await ca.rest.createDirect(bob);
    await ca.send(conv.id, "o0");
    assert.ok(await until(20_000, () => ka.accepted.size === 1 && kb.messages.length === 1), "the first message");
    await s.kill();
    for (let i = 1; i <= 20; i++) await ca.send(conv.id, `o${i}`);
    await ca.close(); // the "process" ends with 20 unsent messages
    assert.equal(ka.accepted.size, 1, "accepted with the server down");
    const saved = JSON.parse(readFileSync(path, "utf8")) as { outbox: Record<string, unknown> };
    assert.equal(Object.keys(saved.outbox).length, 20, "the file's outbox");
    await s.start();
    const ca2 = await dial(s, alice, "d1", { store: new FileStore(path) });
    const ka2 = new Collector(ca2);
    assert.deepEqual(
      ca2.pending().map((p) => p.body),
      Array.from({ length: 20 }, (_, i) => `o${i + 1}`),
    );
    assert.ok(await until(60_000, () => ka2.accepted.size === 20), `after the restart: ${ka2.accepted.size} of 20 accepted`);
    assert.ok(await until(60_000, () => kb.messages.length >= 21), `bob: ${kb.messages.length} of 21`);
    await new Promise((r) => setTimeout(r, 500)); // a duplicate would arrive by now
    await ca2.close();
    await cb.close();
    assert.equal(notInOrder(kb.seqs(conv.id), 21), "", "bob's messages");
    assert.deepEqual(
      kb.messages.map((m) => m.body),
      Array.from({ length: 21 }, (_, i) => `o${i}`),
    );
    const page = await ca2.rest.messages(conv.id, { after: 0, limit: 100 });
    assert.deepEqual(
      page.messages.map((m) => m.body),
      Array.from({ length: 21 }, (_, i) => `o${i}`),
      "the history: each message once, in send order",
    );
    const st = await new FileStore(path).load();
    assert.deepEqual(st.outbox, {}, "the outbox after everything was accepted");
    assert.equal(st.cursors[conv.id], 21, "alice's cursor");
  });
});
