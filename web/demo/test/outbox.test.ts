// The outbox in IndexedDB: a reload, even one while the page is offline, keeps the messages
// not yet accepted, and they are delivered once.
import { test } from "node:test";
import assert from "node:assert/strict";

import { screenshot, until, users, withWorld } from "./harness.js";
import { banner, connected, notOnceInOrder, open, pendingShown, send, shown, signIn, startChat, submitMany, surfaced } from "./demo.js";

test("a reload in the middle of sending, and one while offline, keep the queued messages: each is delivered once, in order", { timeout: 240_000 }, async () => {
  await withWorld("outbox", async (w) => {
    const [alice, bob] = users();
    const a = await w.open();
    const b = await w.open();
    await signIn(a.page, alice);
    await signIn(b.page, bob);
    const conv = await startChat(a.page, bob);
    await send(a.page, "hello");
    assert.ok(await until(20_000, async () => (await b.page.locator(`#convs .conv[data-conversation="${conv}"]`).count()) === 1));
    await open(b.page, conv);
    assert.ok(await until(20_000, async () => (await shown(b.page)).length === 1));
    const device = await a.page.evaluate(() => window.parleyDemo.device());

    // 1. Online: 40 messages at once, and a reload while the first are accepted and the rest
    // are still in the outbox (some sent and not yet answered).
    const burst = Array.from({ length: 40 }, (_, i) => `burst ${i + 1}`);
    await submitMany(a.page, burst);
    assert.ok(
      await until(20_000, async () => {
        const sequenced = (await shown(a.page)).map((m) => m.body);
        const seen = new Set([...sequenced, ...(await pendingShown(a.page)).map((m) => m.body)]);
        // every one is in the outbox (IndexedDB) or sequenced, and the first is sequenced
        return burst.every((x) => seen.has(x)) && sequenced.includes(burst[0]!);
      }),
      "the 40 messages never all reached the outbox, or the first was never sequenced",
    );
    const before = await a.page.evaluate(() => window.parleyDemo.pending().length);
    console.log(`reload with ${before} of 40 messages in the outbox`);
    assert.ok(before > 0 && before < 40, `${before} of 40 still queued at the reload: not in the middle of sending`);
    await a.page.reload();
    await connected(a.page);
    assert.equal(await a.page.evaluate(() => window.parleyDemo.device()), device, "the reload got another device (and another IndexedDB record)");
    assert.ok(await until(60_000, async () => (await shown(b.page)).length >= 41), `bob: ${(await shown(b.page)).length} of 41`);

    // 2. Offline: five messages queued, the page reloaded while offline (it fails to load:
    // only IndexedDB holds them now), then online again.
    await a.context.setOffline(true);
    assert.ok(await until(30_000, async () => (await banner(a.page)) !== null && (await a.page.evaluate(() => window.parleyDemo.state())) !== "connected"), "alice's page never noticed it was offline");
    const offline = Array.from({ length: 5 }, (_, i) => `written offline ${i + 1}`);
    for (const body of offline) await send(a.page, body);
    assert.ok(await until(10_000, async () => (await pendingShown(a.page)).length === 5), `alice's queued: ${JSON.stringify(await pendingShown(a.page))}`);
    assert.deepEqual(await pendingShown(a.page), offline.map((body) => ({ body, status: "queued" })));
    assert.match((await banner(a.page)) ?? "", /5 messages queued/);
    await a.page.screenshot({ path: screenshot("demo-offline.png") });
    const url = a.page.url();
    await a.page.reload().then(
      () => assert.fail("the page loaded while offline"),
      () => {}, // net::ERR_INTERNET_DISCONNECTED: the page is gone
    );
    await a.context.setOffline(false);
    await a.page.goto(url);
    await connected(a.page);
    assert.equal(await a.page.evaluate(() => window.parleyDemo.device()), device);

    const all = ["hello", ...burst, ...offline];
    assert.ok(await until(60_000, async () => (await shown(b.page)).length >= all.length), `bob: ${(await shown(b.page)).length} of ${all.length}`);
    assert.ok(await until(20_000, async () => (await pendingShown(a.page)).length === 0 && (await shown(a.page)).length === all.length), `alice: ${JSON.stringify(await pendingShown(a.page))} still queued`);
    await new Promise((r) => setTimeout(r, 5000)); // a duplicate (a late sync, a second client) would be here by now
    const got = await shown(b.page);
    assert.equal(notOnceInOrder(got.map((m) => m.seq), all.length), "", "what bob's page shows");
    assert.deepEqual(got.map((m) => m.body), all, "bob's messages, in the order alice sent them");
    assert.equal(notOnceInOrder((await surfaced(b.page, conv)).map((m) => m.seq), all.length), "", "what the SDK surfaced to bob's page");
    assert.deepEqual((await shown(a.page)).map((m) => m.body), all, "alice's page after the reloads");
  });
});
