/** Reconnect backoff: exponential from minMs, capped at maxMs, with full jitter. */
export interface Backoff {
  minMs: number;
  maxMs: number;
}

/** The default backoff (the Go SDK's): 250 ms doubling up to 30 s. */
export const DEFAULT_BACKOFF: Backoff = { minMs: 250, maxMs: 30_000 };

/**
 * backoffDelay is the wait before reconnect attempt number attempt (0 first): a uniformly
 * random duration in [0, min(maxMs, minMs * 2^attempt)] (full jitter, so clients that lost
 * the same server do not come back in step). random is for tests.
 */
export function backoffDelay(b: Backoff, attempt: number, random: () => number = Math.random): number {
  let ceil = b.minMs * 2 ** Math.min(attempt, 20);
  if (!(ceil > 0) || ceil > b.maxMs) ceil = b.maxMs;
  return Math.floor(random() * (ceil + 1));
}
