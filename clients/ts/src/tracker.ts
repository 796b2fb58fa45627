import type { Cursor, Message } from "./protocol.js";

interface Held {
  m: Message;
  at: number;
}

/**
 * Tracker is the client's seq/dedupe state machine (Go: tracker in state.go): per
 * conversation, the seq up to which messages were handed to the app (the cursor), and
 * messages received ahead of a gap. Offering a message returns what may now be delivered, in
 * seq order, each seq once; a message past a gap is held and reported, so the caller fetches
 * the gap (sync) first.
 */
export class Tracker {
  readonly cursor = new Map<string, number>();
  readonly pending = new Map<string, Map<number, Held>>();
  private clock = 0; // counts offers: the "time" a message was held

  constructor(cursors?: Record<string, number>) {
    for (const [c, s] of Object.entries(cursors ?? {})) this.cursor.set(c, s);
  }

  /**
   * offer takes one received message (live or synced) and returns the messages now ready,
   * and whether a gap is open in its conversation (a message is held waiting for earlier
   * ones).
   */
  offer(m: Message): { ready: Message[]; gap: boolean } {
    this.clock++;
    const conv = m.conversation;
    let cur = this.cursor.get(conv) ?? 0;
    if (m.seq <= cur) return { ready: [], gap: this.gap(conv) }; // a duplicate: already delivered
    if (m.seq > cur + 1) {
      let p = this.pending.get(conv);
      if (!p) {
        p = new Map();
        this.pending.set(conv, p);
      }
      if (!p.has(m.seq)) p.set(m.seq, { m, at: this.clock });
      return { ready: [], gap: true };
    }
    const ready = [m];
    cur = m.seq;
    const p = this.pending.get(conv);
    if (p) {
      for (let next = p.get(cur + 1); next; next = p.get(cur + 1)) {
        p.delete(cur + 1);
        ready.push(next.m);
        cur++;
      }
    }
    this.cursor.set(conv, cur);
    return { ready, gap: this.gap(conv) };
  }

  /** now is the clock: a sync that starts at now answers for every message held at or before it. */
  now(): number {
    return this.clock;
  }

  /**
   * settle is called when a sync that started at clock value start has completed. reached
   * is, per conversation, the last seq the sync's answer covered (its conversations'
   * last_seq). A gap still open before a message held before start, with that message's seq
   * covered, is seqs the member may not see (they joined later): the cursor moves past it
   * and the held messages are released. A gap the sync did not cover (the server had not
   * stored those seqs yet) stays open.
   */
  settle(start: number, reached: Map<string, number>): Message[] {
    const ready: Message[] = [];
    for (const [conv, p] of [...this.pending]) {
      let first = -1;
      for (const [s, h] of p) {
        if (h.at <= start && (first < 0 || s < first)) first = s;
      }
      if (first < 0 || (reached.get(conv) ?? 0) < first) continue;
      for (const s of [...p.keys()]) {
        if (s < first) p.delete(s);
      }
      const h = p.get(first)!;
      p.delete(first);
      this.cursor.set(conv, first - 1);
      ready.push(...this.offer(h.m).ready);
    }
    return ready;
  }

  /** gap reports whether messages of conv are held behind a missing seq; drops empty holds. */
  gap(conv: string): boolean {
    const p = this.pending.get(conv);
    if (!p || p.size === 0) {
      this.pending.delete(conv);
      return false;
    }
    return true;
  }

  /** cursors returns every conversation's cursor, in conversation order. */
  cursors(): Cursor[] {
    return [...this.cursor]
      .map(([conversation, seq]) => ({ conversation, seq }))
      .sort((a, b) => (a.conversation < b.conversation ? -1 : a.conversation > b.conversation ? 1 : 0));
  }
}
