/** Logger is what the client logs to: console fits. Only warn is required. */
export interface Logger {
  warn(message: string, ...args: unknown[]): void;
  debug?(message: string, ...args: unknown[]): void;
}

export const silentLogger: Logger = { warn() {} };

/** sleep resolves after ms, or at once (false) when signal aborts first. */
export function sleep(ms: number, signal?: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve(false);
    const done = (ok: boolean) => {
      clearTimeout(t);
      signal?.removeEventListener("abort", onAbort);
      resolve(ok);
    };
    const onAbort = () => done(false);
    const t = setTimeout(() => done(true), Math.max(0, ms));
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** A promise with its resolve function outside (Promise.withResolvers is newer than Node 20). */
export interface Deferred<T> {
  promise: Promise<T>;
  resolve(v: T): void;
  reject(e: unknown): void;
}

export function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** A wake-up signal: wait() resolves at the next kick (or at once if one came meanwhile). */
export class Kick {
  private waiter: Deferred<void> | undefined;
  private kicked = false;

  kick(): void {
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w.resolve();
    } else {
      this.kicked = true;
    }
  }

  /** wait resolves at the next kick, after ms, or when signal aborts. */
  wait(ms: number, signal: AbortSignal): Promise<void> {
    if (this.kicked || signal.aborted) {
      this.kicked = false;
      return Promise.resolve();
    }
    const w = deferred<void>();
    this.waiter = w;
    const done = () => {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      if (this.waiter === w) this.waiter = undefined;
      w.resolve();
    };
    const t = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    void w.promise.then(done);
    return w.promise;
  }
}
