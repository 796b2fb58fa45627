/** A message in the outbox: sent (or to be sent) and not yet accepted. */
export interface Pending {
  client_msg_id: string;
  conversation: string;
  body: string;
  /** Orders the outbox: messages are (re)sent in the order send was called. */
  seq: number;
}

/**
 * State is what a client keeps between connections and, with a persistent Store, between
 * restarts: the since-token, the per-conversation cursors (the last seq handed to the app)
 * and the outbox. Its JSON is the Go SDK's FileStore format.
 */
export interface State {
  since: string;
  cursors: Record<string, number>;
  outbox: Record<string, Pending>;
}

/**
 * Store persists a client's State. save is called after every change with the whole state
 * (never twice at once by one client); it must make it durable before its promise resolves
 * if the state is to survive a restart. load's state may be empty (a first start).
 */
export interface Store {
  load(): Promise<State>;
  save(state: State): Promise<void>;
}

/** emptyState is the state of a first start. */
export function emptyState(): State {
  return { since: "", cursors: {}, outbox: {} };
}

/** cloneState returns a deep copy of s, with missing parts filled in. */
export function cloneState(s: Partial<State> | undefined | null): State {
  const out = emptyState();
  if (!s) return out;
  out.since = typeof s.since === "string" ? s.since : "";
  for (const [k, v] of Object.entries(s.cursors ?? {})) out.cursors[k] = v;
  for (const [k, v] of Object.entries(s.outbox ?? {})) out.outbox[k] = { ...v };
  return out;
}

/** MemoryStore keeps the state in memory: it survives reconnects, not the page or process. */
export class MemoryStore implements Store {
  private st = emptyState();

  async load(): Promise<State> {
    return cloneState(this.st);
  }

  async save(s: State): Promise<void> {
    this.st = cloneState(s);
  }
}

/** Options of an IndexedDBStore. */
export interface IndexedDBStoreOptions {
  /** The database's name (default "parley"). */
  database?: string;
  /** The record's key: one per signed-in user and device (default "state"). */
  key?: string;
  /** The IndexedDB factory (default globalThis.indexedDB). */
  indexedDB?: IDBFactory;
}

/**
 * IndexedDBStore keeps the state in the browser's IndexedDB, one record per key, replaced
 * whole by each save in a transaction that has completed (committed) when save resolves.
 */
export class IndexedDBStore implements Store {
  private readonly database: string;
  private readonly key: string;
  private readonly factory: IDBFactory;
  private db: Promise<IDBDatabase> | undefined;

  constructor(opts: IndexedDBStoreOptions = {}) {
    this.database = opts.database ?? "parley";
    this.key = opts.key ?? "state";
    const f = opts.indexedDB ?? (globalThis as { indexedDB?: IDBFactory }).indexedDB;
    if (!f) throw new Error("parley: IndexedDBStore: no IndexedDB here (pass options.indexedDB, or use another Store)");
    this.factory = f;
  }

  private open(): Promise<IDBDatabase> {
    this.db ??= new Promise<IDBDatabase>((resolve, reject) => {
      const req = this.factory.open(this.database, 1);
      req.onupgradeneeded = () => {
        if (!req.result.objectStoreNames.contains("state")) req.result.createObjectStore("state");
      };
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error ?? new Error("parley: IndexedDB open failed"));
      req.onblocked = () => reject(new Error(`parley: IndexedDB ${this.database} is blocked by another tab's older version`));
    }).catch((e: unknown) => {
      this.db = undefined; // try again on the next call
      throw e;
    });
    return this.db;
  }

  async load(): Promise<State> {
    const db = await this.open();
    return new Promise<State>((resolve, reject) => {
      const tx = db.transaction("state", "readonly");
      const req = tx.objectStore("state").get(this.key);
      req.onsuccess = () => resolve(cloneState(req.result as State | undefined));
      req.onerror = () => reject(req.error);
    });
  }

  async save(s: State): Promise<void> {
    const db = await this.open();
    return new Promise<void>((resolve, reject) => {
      const tx = db.transaction("state", "readwrite", { durability: "strict" });
      tx.objectStore("state").put(cloneState(s), this.key);
      tx.oncomplete = () => resolve();
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error ?? new Error("parley: IndexedDB transaction aborted"));
    });
  }

  /** close closes the database connection (a later call opens it again). */
  async close(): Promise<void> {
    const db = this.db;
    this.db = undefined;
    if (db) (await db).close();
  }
}
