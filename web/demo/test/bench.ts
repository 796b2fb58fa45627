// The demo's browser benchmark (not a test: it asserts nothing about speed). In chromium
// against a parleyd in development mode on the local stack, per run:
//
//   - catch-up after a reload: Bob's page is closed, twenty senders post N messages to a new
//     group with him over the REST API (each sender has its own rate limit), then his page is
//     opened again (its cursors and device from IndexedDB). Measured: the time from
//     Client.connect() to the first message surfaced, and messages surfaced per second, from
//     the first to the N-th (sync pages of 500; the group is not open, so each message is
//     handed to the page's listener and kept, not drawn).
//   - reconnect in the page: Bob opens the group (its latest 500 messages drawn), his browser goes
//     offline (context.setOffline) until his client notices, N more messages are posted, the
//     network comes back. Measured: the time from the browser's online event to the first
//     message surfaced (the client's backoff included), and messages surfaced per second,
//     each drawn in the open conversation.
//
// Bounded: PARLEY_DEMO_BENCH_RUNS runs (default 5) of PARLEY_DEMO_BENCH_MESSAGES messages
// (default 1000), every wait with a deadline. Prints each run and the medians.
//
//   make demo-build && cd web/demo && PARLEY_DEMO_PARLEYD=../../bin/parleyd npm run bench
import { randomBytes, randomUUID } from "node:crypto";

import { Server, launch, openDemo, until } from "./harness.js";
import { connected, signIn } from "./demo.js";

const runs = Number(process.env.PARLEY_DEMO_BENCH_RUNS ?? 5);
const n = Number(process.env.PARLEY_DEMO_BENCH_MESSAGES ?? 1000);
const senders = 20;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

async function must(what: string, ms: number, cond: () => Promise<boolean>): Promise<void> {
  if (!(await until(ms, cond))) throw new Error(`bench: ${what} not within ${ms} ms`);
}

const server = new Server("bench");
await server.start();
const browser = await launch();
try {
  const u = randomBytes(3).toString("hex");
  const bob = `bob_${u}`;
  const others = Array.from({ length: senders }, (_, i) => `sender${i}_${u}`);
  const b = await openDemo(browser, server.demo);
  await signIn(b.page, bob);

  // post sends count messages to conv, spread over the senders (each has its own REST rate
  // limit), and waits until the conversation's last_seq says they are all stored.
  const lastSeq = async (conv: string) => (await server.api<{ last_seq: number }>(others[0]!, "GET", `/v1/conversations/${conv}`)).last_seq;
  const post = async (conv: string, count: number) => {
    const base = await lastSeq(conv);
    await Promise.all(
      others.map(async (s, i) => {
        for (let k = i; k < count; k += senders) await server.api(s, "POST", `/v1/conversations/${conv}/messages`, { body: `m${k}` }, { "Idempotency-Key": randomUUID() });
      }),
    );
    await must("the messages stored", 120_000, async () => (await lastSeq(conv)) >= base + count);
  };
  const surfacedIn = (conv: string) => b.page.evaluate((c) => window.parleyDemo.surfaced.filter((m) => m.conversation === c).map((m) => m.at), conv);

  const firstMs: number[] = [];
  const allMs: number[] = [];
  const rates: number[] = [];
  const onlineMs: number[] = [];
  const drawnRates: number[] = [];
  for (let r = 1; r <= runs; r++) {
    // 1. catch-up after a reload
    const url = b.page.url();
    await b.page.goto("about:blank"); // the page and its client are gone
    const conv = (await server.api<{ id: string }>(others[0]!, "POST", "/v1/conversations", { kind: "group", title: `bench ${r}`, members: [bob, ...others.slice(1)] })).id;
    await post(conv, n);
    await b.page.goto(url);
    await connected(b.page, 60_000);
    const total = await lastSeq(conv);
    await must(`${total} messages surfaced`, 300_000, async () => (await surfacedIn(conv)).length >= total);
    const m = await b.page.evaluate(() => ({ ...window.parleyDemo.metrics }));
    const at = await surfacedIn(conv);
    const first = m.firstMessageAt! - m.connectCalledAt!;
    const rate = ((at.length - 1) * 1000) / (at[at.length - 1]! - at[0]!);
    const all = at[at.length - 1]! - m.connectCalledAt!;
    firstMs.push(first);
    allMs.push(all);
    rates.push(rate);

    // 2. reconnect in the page, the conversation open
    await b.page.click(`#convs .conv[data-conversation="${conv}"]`);
    await must("the conversation drawn", 60_000, async () => (await b.page.locator("#msgs .msg[data-seq]").count()) >= Math.min(total, 500));
    await b.context.setOffline(true);
    await must("the client noticing it is offline", 30_000, async () => (await b.page.evaluate(() => window.parleyDemo.state())) !== "connected");
    await post(conv, n);
    const total2 = await lastSeq(conv);
    await b.context.setOffline(false);
    await must("the messages after the reconnect", 300_000, async () => (await surfacedIn(conv)).length >= total2 && (await b.page.locator(`#msgs .msg[data-seq="${total2}"]`).count()) === 1);
    const m2 = await b.page.evaluate(() => ({ ...window.parleyDemo.metrics }));
    const back = m2.firstMessageAfterOnlineAt! - m2.onlineAt!;
    const at2 = (await surfacedIn(conv)).slice(at.length);
    const drawn = ((at2.length - 1) * 1000) / (at2[at2.length - 1]! - at2[0]!);
    onlineMs.push(back);
    drawnRates.push(drawn);
    console.log(
      `run ${r}: reload: connect() to first message ${first.toFixed(0)} ms, to the last ${all.toFixed(0)} ms, ${rate.toFixed(0)} messages/s (${at.length}); ` +
        `in-page reconnect: online to first message ${back.toFixed(0)} ms, ${drawn.toFixed(0)} messages/s drawn (${at2.length})`,
    );
  }
  console.log(
    `medians of ${runs} runs, ${n} messages each: reload: connect() to first message ${median(firstMs).toFixed(0)} ms, to the last ${median(allMs).toFixed(0)} ms, ${median(rates).toFixed(0)} messages/s; ` +
      `in-page reconnect: online to first message ${median(onlineMs).toFixed(0)} ms, ${median(drawnRates).toFixed(0)} messages/s drawn`,
  );
} finally {
  await browser.close();
  await server.stop();
}
