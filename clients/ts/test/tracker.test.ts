// Pure logic: the seq tracker (ported with the Go SDK's FuzzTracker and its cases), the
// backoff and the client message ids.
import { test } from "node:test";
import assert from "node:assert/strict";

import { Tracker, backoffDelay, newUUID, type Message } from "../src/index.js";

const msg = (conversation: string, seq: number): Message => ({ conversation, seq, sender: "", client_msg_id: "", kind: "text", ts: 0 });

// mulberry32: a small seeded PRNG, so a failing seed can be replayed.
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// Whatever order, duplication and loss the live feed has, as long as a sync eventually
// supplies what was missed, the app sees seqs 1..n of each conversation once and in order.
test("tracker: shuffled, duplicated and lost live feeds plus syncs deliver 1..n once, in order", () => {
  for (let seed = 1; seed <= 300; seed++) {
    const r = prng(seed);
    const n = (seed * 7919) % 200;
    const int = (k: number) => Math.floor(r() * k);
    const convs = ["a", "b", "c"];
    const total = n + 1;
    const tr = new Tracker();
    const got = new Map<string, number[]>();
    const deliver = (ready: Message[]) => {
      for (const m of ready) got.set(m.conversation, [...(got.get(m.conversation) ?? []), m.seq]);
    };
    const live: Message[] = [];
    for (const c of convs) {
      for (let s = 1; s <= total; s++) {
        if (int(10) === 0) continue; // lost
        live.push(msg(c, s));
        if (int(8) === 0) live.push(msg(c, s)); // duplicated
      }
    }
    for (let i = 0; i < live.length; i++) {
      const j = i + int(4); // local reordering
      if (j < live.length) [live[i], live[j]] = [live[j]!, live[i]!];
    }
    for (const m of live) {
      deliver(tr.offer(m).ready);
      if (int(20) === 0) {
        // a sync in the middle returns a prefix of what was missed
        for (const c of tr.cursors()) {
          const upto = c.seq + int(5);
          for (let s = c.seq + 1; s <= Math.min(upto, total); s++) deliver(tr.offer(msg(c.conversation, s)).ready);
        }
      }
    }
    const start = tr.now();
    for (const c of convs) for (let s = (tr.cursor.get(c) ?? 0) + 1; s <= total; s++) deliver(tr.offer(msg(c, s)).ready);
    deliver(tr.settle(start, new Map(convs.map((c) => [c, total]))));
    for (const c of convs) {
      assert.deepEqual(
        got.get(c),
        Array.from({ length: total }, (_, i) => i + 1),
        `seed ${seed}: conversation ${c}`,
      );
    }
    assert.equal(tr.pending.size, 0, `seed ${seed}: messages still held`);
  }
});

// A member added later first receives a message far past seq 1; the sync that follows returns
// nothing earlier (they may not see it), so the held message is released.
test("tracker: a late joiner's first message is released by a sync that covers it", () => {
  const tr = new Tracker();
  const first = tr.offer(msg("g", 41));
  assert.deepEqual([first.ready.length, first.gap], [0, true]);
  const start = tr.now();
  const ready = [...tr.offer(msg("g", 41)).ready, ...tr.settle(start, new Map([["g", 41]]))];
  assert.deepEqual(
    ready.map((m) => m.seq),
    [41],
  );
  assert.equal(tr.cursor.get("g"), 41);
  // A message that arrives after a sync started is not settled by it.
  tr.offer(msg("g", 44));
  assert.deepEqual(tr.settle(start, new Map([["g", 44]])), []);
});

// A message pushed live before the server stored it arrives past a gap; a sync that does not
// cover it must not take the gap for seqs the member may not see.
test("tracker: a gap the sync did not cover stays open", () => {
  const tr = new Tracker({ c: 10 });
  tr.offer(msg("c", 15));
  let start = tr.now();
  const ready: Message[] = [];
  for (let s = 11; s <= 12; s++) ready.push(...tr.offer(msg("c", s)).ready);
  ready.push(...tr.settle(start, new Map([["c", 12]])));
  assert.deepEqual(
    ready.map((m) => m.seq),
    [11, 12],
  );
  assert.equal(tr.cursor.get("c"), 12);
  assert.equal(tr.gap("c"), true);
  start = tr.now();
  for (let s = 13; s <= 15; s++) ready.push(...tr.offer(msg("c", s)).ready);
  ready.push(...tr.settle(start, new Map([["c", 15]])));
  assert.deepEqual(
    ready.map((m) => m.seq),
    [11, 12, 13, 14, 15],
  );
  assert.equal(tr.gap("c"), false);
});

test("backoff: full jitter up to min * 2^attempt, capped at max", () => {
  const b = { minMs: 250, maxMs: 30_000 };
  assert.equal(backoffDelay(b, 0, () => 0), 0);
  assert.equal(backoffDelay(b, 0, () => 0.999999), 250);
  assert.equal(backoffDelay(b, 3, () => 0.999999), 2000);
  assert.equal(backoffDelay(b, 10, () => 0.999999), 30_000);
  assert.equal(backoffDelay(b, 1000, () => 0.999999), 30_000);
  const r = prng(7);
  const seen = new Set<number>();
  for (let i = 0; i < 1000; i++) {
    const d = backoffDelay(b, 2, r);
    assert.ok(d >= 0 && d <= 1000, `delay ${d} out of [0, 1000]`);
    seen.add(Math.floor(d / 100));
  }
  assert.equal(seen.size, 11, "the delays spread over the whole window");
});

test("client message ids are UUIDv7 carrying the current time", () => {
  const before = Date.now();
  const id = newUUID();
  const after = Date.now();
  assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  const ms = Number.parseInt(id.replace(/-/g, "").slice(0, 12), 16);
  assert.ok(ms >= before && ms <= after, `${id} carries ${ms}; want ${before}..${after}`);
  assert.notEqual(newUUID(), id);
});
