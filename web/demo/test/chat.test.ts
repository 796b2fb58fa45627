// The demo in a real browser (Debian's chromium through playwright-core) against a real
// parleyd in development mode on the local stack, as two people would use it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";

import { screenshot, until, users, withWorld } from "./harness.js";
import { banner, connected, notOnceInOrder, open, pendingShown, send, shown, signIn, startChat, surfaced, unread } from "./demo.js";

test("two people chat in two browsers: unread counts, receipts, typing, presence, each message once and in order", { timeout: 180_000 }, async () => {
  await withWorld("chat", async (w) => {
    const [alice, bob] = users();
    const a = await w.open();
    const b = await w.open();
    await signIn(a.page, alice);
    await signIn(b.page, bob);

    const conv = await startChat(a.page, bob);
    for (const text of ["Hi Bob!", "Are you there?", "Lunch at noon?"]) await send(a.page, text);

    // Bob has not opened it: the list shows the conversation with three unread.
    assert.ok(await until(20_000, async () => (await b.page.locator(`#convs .conv[data-conversation="${conv}"]`).count()) === 1 && (await unread(b.page, conv)) === "3"), `bob's list: ${await b.page.locator("#convs").innerText()}`);
    // Alice's messages are delivered to Bob's device (it acknowledged them), not read yet.
    assert.ok(await until(20_000, async () => (await shown(a.page)).every((m) => m.status === "delivered")), `alice's statuses: ${JSON.stringify(await shown(a.page))}`);
    assert.equal(await a.page.locator("#chat-presence").textContent(), "online");

    await open(b.page, conv);
    assert.ok(await until(20_000, async () => (await shown(b.page)).length === 3), `bob's page: ${JSON.stringify(await shown(b.page))}`);
    assert.deepEqual(
      (await shown(b.page)).map((m) => [m.seq, m.body, m.sender]),
      [
        [1, "Hi Bob!", alice],
        [2, "Are you there?", alice],
        [3, "Lunch at noon?", alice],
      ],
    );
    assert.equal(await unread(b.page, conv), ""); // open: read
    assert.ok(await until(20_000, async () => (await shown(a.page)).every((m) => m.status === "read")), `alice's statuses: ${JSON.stringify(await shown(a.page))}`);

    // Bob types: Alice sees it; then he answers.
    await b.page.type("#composer-text", "Sure", { delay: 30 });
    await a.page.locator("#typing", { hasText: `${bob} is typing` }).waitFor({ timeout: 10_000 });
    await b.page.press("#composer-text", "Enter");
    assert.ok(await until(20_000, async () => (await shown(a.page)).length === 4), `alice's page: ${JSON.stringify(await shown(a.page))}`);
    assert.deepEqual((await shown(a.page))[3], { seq: 4, body: "Sure", sender: bob, status: "" });
    assert.equal(await a.page.locator("#typing").textContent(), ""); // his message ends his typing
    assert.equal(await unread(a.page, conv), "");

    // Carol, on another client (the REST API), starts a conversation with Alice: it shows up
    // in Alice's list with its unread count.
    const carol = alice.replace("alice", "carol");
    const cc = await w.server.api<{ id: string }>(carol, "POST", "/v1/conversations", { kind: "direct", with: alice });
    for (const text of ["Hello Alice, it's Carol", "Call me when you can"]) await w.server.api(carol, "POST", `/v1/conversations/${cc.id}/messages`, { body: text }, { "Idempotency-Key": randomUUID() });
    assert.ok(await until(20_000, async () => (await a.page.locator(`#convs .conv[data-conversation="${cc.id}"]`).count()) === 1 && (await unread(a.page, cc.id)) === "2"), `alice's list: ${await a.page.locator("#convs").innerText()}`);

    await a.page.screenshot({ path: screenshot("demo-chat.png") });

    await new Promise((r) => setTimeout(r, 500)); // a duplicate would be here by now
    for (const [who, p] of [
      ["alice", a],
      ["bob", b],
    ] as const) {
      assert.equal(notOnceInOrder((await surfaced(p.page, conv)).map((m) => m.seq), 4), "", `${who}: what the SDK surfaced`);
      assert.equal(notOnceInOrder((await shown(p.page)).map((m) => m.seq), 4), "", `${who}: what the page shows`);
      assert.deepEqual(await pendingShown(p.page), [], `${who}: left pending`);
    }

    // Bob closes his browser: Alice sees him go offline (after the server's grace period).
    await b.context.close();
    await a.page.locator("#chat-presence", { hasText: "offline" }).waitFor({ timeout: 30_000 });

    // Alice signs out and in again: the same device (its lock was released), the same list.
    const device = await a.page.evaluate(() => window.parleyDemo.device());
    await a.page.click("#signout");
    await a.page.locator("#signin").waitFor();
    assert.equal(await a.page.locator("#convs .conv").count(), 0);
    await signIn(a.page, alice);
    assert.equal(await a.page.evaluate(() => window.parleyDemo.device()), device);
    assert.ok(await until(20_000, async () => (await a.page.locator("#convs .conv").count()) === 2 && (await unread(a.page, cc.id)) === "2"), `alice's list: ${await a.page.locator("#convs").innerText()}`);
  });
});

test("a browser offline while the other sends 50 messages shows each once and in order when it is back", { timeout: 240_000 }, async () => {
  await withWorld("offline", async (w) => {
    const [alice, bob] = users();
    const a = await w.open();
    const b = await w.open();
    await signIn(a.page, alice);
    await signIn(b.page, bob);
    const conv = await startChat(a.page, bob);
    await send(a.page, "before");
    assert.ok(await until(20_000, async () => (await b.page.locator(`#convs .conv[data-conversation="${conv}"]`).count()) === 1));
    await open(b.page, conv);
    assert.ok(await until(20_000, async () => (await shown(b.page)).length === 1));

    await b.context.setOffline(true);
    // The client notices the network is gone (its pings go unanswered) and says so.
    assert.ok(await until(30_000, async () => (await banner(b.page)) !== null && (await b.page.evaluate(() => window.parleyDemo.state())) !== "connected"), `bob's banner: ${await banner(b.page)}`);
    assert.match((await banner(b.page)) ?? "", /Offline/);

    const bodies = Array.from({ length: 50 }, (_, i) => `offline message ${i + 1}`);
    for (const body of bodies) await send(a.page, body);
    assert.ok(await until(60_000, async () => (await shown(a.page)).length === 51 && (await pendingShown(a.page)).length === 0), `alice: ${(await shown(a.page)).length} shown, ${(await pendingShown(a.page)).length} pending`);
    assert.equal((await surfaced(b.page, conv)).length, 1, "bob received messages while offline");

    await b.context.setOffline(false);
    await connected(b.page, 30_000);
    assert.ok(await until(60_000, async () => (await shown(b.page)).length >= 51), `bob after coming back: ${(await shown(b.page)).length} of 51`);
    await new Promise((r) => setTimeout(r, 5000)); // a duplicate (a late sync, a second client) would be here by now
    const got = await shown(b.page);
    assert.equal(notOnceInOrder(got.map((m) => m.seq), 51), "", "what bob's page shows");
    assert.deepEqual(got.slice(1).map((m) => m.body), bodies);
    assert.equal(notOnceInOrder((await surfaced(b.page, conv)).map((m) => m.seq), 51), "", "what the SDK surfaced to bob's page");
    assert.equal(await banner(b.page), null);
    assert.equal(await unread(b.page, conv), "");
  });
});
