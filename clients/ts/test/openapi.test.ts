// The committed src/openapi.ts is what openapi-typescript generates from docs/openapi.yaml:
// a change to the spec without `npm run gen:openapi` fails here.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

import { repoRoot } from "./harness.js";

test("src/openapi.ts is generated from docs/openapi.yaml", async () => {
  const ts = join(repoRoot, "clients", "ts");
  const out = join(mkdtempSync(join(tmpdir(), "parley-openapi-")), "openapi.ts");
  await promisify(execFile)(join(ts, "node_modules", ".bin", "openapi-typescript"), [join(repoRoot, "docs", "openapi.yaml"), "-o", out], { cwd: ts });
  const committed = readFileSync(join(ts, "src", "openapi.ts"), "utf8");
  assert.ok(readFileSync(out, "utf8") === committed, "clients/ts/src/openapi.ts differs from what docs/openapi.yaml generates: run `npm run gen:openapi` in clients/ts and commit it");
});
