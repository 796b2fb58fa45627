// Driving the demo's page as a person would: through its form fields and buttons, reading
// what it shows. window.parleyDemo (src/main.ts) adds what the SDK surfaced, for the
// exactly-once checks that the DOM alone could hide.
import type { Page } from "playwright-core";

/** A message as the page shows it. */
export interface Shown {
  seq: number;
  body: string;
  sender: string;
  status: string;
}

/** A message as the SDK surfaced it to the page. */
export interface Surfaced {
  conversation: string;
  seq: number;
  sender: string;
  client_msg_id: string;
  body: string;
  /** performance.now() when the page's listener got it. */
  at: number;
}

type Demo = {
  surfaced: Surfaced[];
  states: string[];
  metrics: Record<string, number>;
  pending: () => unknown[];
  state: () => string;
  user: () => string | undefined;
  device: () => string | undefined;
};
declare global {
  interface Window {
    parleyDemo: Demo;
  }
}

/** signIn signs in as user with the form and waits until the client is connected. */
export async function signIn(page: Page, user: string): Promise<void> {
  await page.fill("#signin-user", user);
  await page.click("#signin-go");
  await connected(page);
}

/** connected waits until the page's client has connected and synced. */
export async function connected(page: Page, timeout = 30_000): Promise<void> {
  await page.waitForFunction(() => window.parleyDemo?.state() === "connected", null, { timeout });
}

/** startChat starts the direct conversation with other and returns its id. */
export async function startChat(page: Page, other: string): Promise<string> {
  await page.fill("#newchat-user", other);
  await page.click("#newchat-go");
  const li = page.locator(`#convs .conv.current`, { hasText: other });
  await li.waitFor();
  return (await li.getAttribute("data-conversation"))!;
}

/** open opens the conversation from the list. */
export async function open(page: Page, conversation: string): Promise<void> {
  await page.click(`#convs .conv[data-conversation="${conversation}"]`);
  await page.locator(`#convs .conv.current[data-conversation="${conversation}"]`).waitFor();
}

/** send types text in the composer and sends it (Enter). */
export async function send(page: Page, text: string): Promise<void> {
  await page.fill("#composer-text", text);
  await page.press("#composer-text", "Enter");
}

/**
 * submitMany sends the bodies from the composer at once, faster than a person types: the
 * page's outbox then holds most of them while the first are on their way.
 */
export async function submitMany(page: Page, bodies: string[]): Promise<void> {
  await page.evaluate((bodies) => {
    const input = document.getElementById("composer-text") as HTMLInputElement;
    const form = document.getElementById("composer") as HTMLFormElement;
    for (const b of bodies) {
      input.value = b;
      form.requestSubmit();
    }
  }, bodies);
}

/** shown returns the open conversation's sequenced messages, in the order the page shows them. */
export function shown(page: Page): Promise<Shown[]> {
  return page.$$eval("#msgs .msg[data-seq]", (els) =>
    els.map((e) => {
      const h = e as HTMLElement;
      return { seq: Number(h.dataset.seq), body: h.querySelector(".msg-body")?.textContent ?? "", sender: h.dataset.sender ?? "", status: h.dataset.status ?? "" };
    }),
  );
}

/** pendingShown returns the bodies and statuses of the messages shown as not yet sequenced. */
export function pendingShown(page: Page): Promise<{ body: string; status: string }[]> {
  return page.$$eval("#msgs .msg.pending", (els) => els.map((e) => ({ body: e.querySelector(".msg-body")?.textContent ?? "", status: (e as HTMLElement).dataset.status ?? "" })));
}

/** surfaced returns what the SDK surfaced to the page in conversation, in order. */
export function surfaced(page: Page, conversation: string): Promise<Surfaced[]> {
  return page.evaluate((c) => window.parleyDemo.surfaced.filter((m) => m.conversation === c), conversation);
}

/** unread returns the unread badge of the conversation in the list ("" when none). */
export async function unread(page: Page, conversation: string): Promise<string> {
  return (await page.locator(`#convs .conv[data-conversation="${conversation}"] .unread`).textContent()) ?? "";
}

/** banner returns the banner's text, or null while it is hidden. */
export async function banner(page: Page): Promise<string | null> {
  const b = page.locator("#banner");
  return (await b.isVisible()) ? await b.textContent() : null;
}

/** notOnceInOrder says what is wrong if seqs are not from..from+n-1, each once in order ("" if they are). */
export function notOnceInOrder(seqs: number[], n: number, from = 1): string {
  if (seqs.length !== n) return `${seqs.length} messages; want ${n} (${seqs.join(",")})`;
  for (let i = 0; i < n; i++) if (seqs[i] !== from + i) return `seqs ${seqs.join(",")}; want ${from}..${from + n - 1}, once and in order`;
  return "";
}
