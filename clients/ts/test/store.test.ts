// The stores: memory, a JSON file written atomically (Node), IndexedDB (fake-indexeddb, an
// implementation of the IndexedDB API in memory; the browser tests use the real one).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { IDBFactory } from "fake-indexeddb";

import { IndexedDBStore, MemoryStore, type State, type Store } from "../src/index.js";
import { FileStore } from "../src/node.js";

const state = (n: number): State => ({
  since: `since-${n}`,
  cursors: { "00000000-0000-4000-8000-000000000001": n },
  outbox: { id1: { client_msg_id: "id1", conversation: "00000000-0000-4000-8000-000000000001", body: `b${n}`, seq: n } },
});

async function roundTrip(s: Store, again: () => Store): Promise<void> {
  assert.deepEqual(await s.load(), { since: "", cursors: {}, outbox: {} }, "a first start is an empty state");
  const st = state(1);
  await s.save(st);
  st.cursors["x"] = 9; // the store keeps a copy, not the caller's object
  assert.deepEqual(await s.load(), state(1));
  await s.save(state(2));
  assert.deepEqual(await again().load(), state(2), "a new store on the same place reads the last save");
}

test("MemoryStore keeps a copy of the state", async () => {
  const m = new MemoryStore();
  await roundTrip(m, () => m);
});

test("FileStore: atomic replacement, the Go SDK's format, no temporary file left, a corrupt file is an error", async () => {
  const dir = mkdtempSync(join(tmpdir(), "parley-store-"));
  const path = join(dir, "state.json");
  await roundTrip(new FileStore(path), () => new FileStore(path));
  assert.deepEqual(readdirSync(dir), ["state.json"]);
  const onDisk = JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;
  assert.deepEqual(Object.keys(onDisk).sort(), ["cursors", "outbox", "since"]);
  // Saves in a row (as a client makes them) each leave a whole file.
  await Promise.all(Array.from({ length: 20 }, (_, i) => new FileStore(path).save(state(i))));
  const last = JSON.parse(readFileSync(path, "utf8")) as State;
  assert.match(last.since, /^since-\d+$/);
  assert.deepEqual(readdirSync(dir), ["state.json"]);
  writeFileSync(path, "{not json");
  await assert.rejects(new FileStore(path).load(), /parley: store .*state\.json/);
  await assert.rejects(new FileStore(join(dir, "missing", "state.json")).save(state(1)), /ENOENT/);
});

test("IndexedDBStore keeps the state per key", async () => {
  const idb = new IDBFactory();
  const s = new IndexedDBStore({ indexedDB: idb, key: "alice/d1" });
  await roundTrip(s, () => new IndexedDBStore({ indexedDB: idb, key: "alice/d1" }));
  const other = new IndexedDBStore({ indexedDB: idb, key: "bob/d1" });
  assert.deepEqual((await other.load()).cursors, {}, "another key is another state");
  await s.close();
  await other.close();
  assert.throws(() => new IndexedDBStore({ indexedDB: undefined }), /no IndexedDB here/);
});
