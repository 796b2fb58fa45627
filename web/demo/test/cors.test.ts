// The demo served from another origin than the API (a developer's dev server): it signs in,
// lists, sends and receives through CORS and the WebSocket's origin check, once parleyd's
// --allowed-origins lists that origin; from an origin it does not list, it gets nowhere.
import { test } from "node:test";
import assert from "node:assert/strict";

import { distDir, serveStatic, until, users, withWorld } from "./harness.js";
import { notOnceInOrder, open, send, shown, signIn, startChat, unread } from "./demo.js";

test("the demo on another origin works through CORS when --allowed-origins lists it, and not otherwise", { timeout: 180_000 }, async () => {
  const listed = await serveStatic(distDir);
  const unlisted = await serveStatic(distDir);
  try {
    await withWorld(
      "cors",
      async (w) => {
        const [alice, bob] = users();
        const api = encodeURIComponent(w.server.base);
        const a = await w.open(`${listed.origin}/?api=${api}`);
        const b = await w.open(); // Bob on parleyd's own /demo/
        await signIn(a.page, alice);
        await signIn(b.page, bob);
        assert.equal(new URL(a.page.url()).origin, listed.origin);

        const conv = await startChat(a.page, bob);
        await send(a.page, "from another origin");
        assert.ok(await until(20_000, async () => (await unread(b.page, conv)) === "1"), "bob never listed alice's message as unread");
        await open(b.page, conv);
        await send(b.page, "got it");
        assert.ok(await until(20_000, async () => (await shown(a.page)).length === 2), `alice: ${JSON.stringify(await shown(a.page))}`);
        assert.deepEqual(
          (await shown(a.page)).map((m) => [m.seq, m.body, m.sender]),
          [
            [1, "from another origin", alice],
            [2, "got it", bob],
          ],
        );
        assert.equal(notOnceInOrder((await shown(b.page)).map((m) => m.seq), 2), "");

        // An origin parleyd does not list: the browser refuses the sign-in's token request
        // (no CORS answer), and the page says so instead of signing in.
        const c = await w.open(`${unlisted.origin}/?api=${api}`);
        await c.page.fill("#signin-user", `${alice}_2`);
        await c.page.click("#signin-go");
        await c.page.locator("#signin-error", { hasText: "cannot reach" }).waitFor({ timeout: 10_000 });
        assert.match((await c.page.locator("#signin-error").textContent()) ?? "", new RegExp(`--allowed-origins list ${unlisted.origin.replace(/[.:/]/g, "\\$&")}`));
        assert.equal(await c.page.locator("#app").isVisible(), false);
      },
      { allowedOrigins: [listed.origin] },
    );
  } finally {
    await listed.close();
    await unlisted.close();
  }
});

