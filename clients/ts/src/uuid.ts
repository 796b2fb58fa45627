/**
 * newUUID returns a time-ordered UUID (version 7, RFC 9562: 48 bits of Unix milliseconds,
 * then random bits). Client message ids are v7 so that, while the server's store is down, it
 * can tell a fresh send from a late resend by the id alone (docs/delivery.md, step 6).
 */
export function newUUID(now: number = Date.now()): string {
  const b = new Uint8Array(16);
  globalThis.crypto.getRandomValues(b);
  let ms = now;
  for (let i = 5; i >= 0; i--) {
    b[i] = ms % 256;
    ms = Math.floor(ms / 256);
  }
  b[6] = (b[6]! & 0x0f) | 0x70;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
