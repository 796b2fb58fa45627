// Node-only parts of @parley/client (import "@parley/client/node"): they use node:fs, which
// a browser bundle must not pull in.
import { open, readFile, rename, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { randomBytes } from "node:crypto";

import { cloneState, emptyState, type State, type Store } from "./store.js";

/**
 * FileStore keeps the state in one JSON file (the Go SDK's FileStore format), replaced
 * atomically on every save: written to a temporary file in the same folder, synced, renamed
 * over the file. So a crash or kill at any moment leaves the old state or the new one, never
 * a torn file, and a restart loses neither the outbox nor the cursors.
 */
export class FileStore implements Store {
  constructor(readonly path: string) {}

  /** load reads the file; a missing file is an empty state. */
  async load(): Promise<State> {
    let text: string;
    try {
      text = await readFile(this.path, "utf8");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return emptyState();
      throw e;
    }
    try {
      return cloneState(JSON.parse(text) as State);
    } catch (e) {
      throw new Error(`parley: store ${this.path}: ${(e as Error).message}`);
    }
  }

  /** save writes the state to a temporary file, syncs it and renames it over the file. */
  async save(s: State): Promise<void> {
    const tmp = join(dirname(this.path), `${basename(this.path)}.${randomBytes(6).toString("hex")}.tmp`);
    const fh = await open(tmp, "w", 0o600);
    try {
      try {
        await fh.writeFile(JSON.stringify(s));
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, this.path);
    } catch (e) {
      await rm(tmp, { force: true });
      throw e;
    }
  }
}
