// Every golden frame of protocol/testdata decodes and re-encodes to the same JSON (as the Go
// protocol package's TestGoldenFrames checks for Go), client frames pass the client-side
// validation, and every frame of invalid.json is refused with its code.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";

import { CLIENT_TYPES, SERVER_TYPES, ProtocolError, decodeClientFrame, decodeFrame, encodeFrame, validateClientFrame } from "../src/index.js";
import { repoRoot } from "./harness.js";

const dir = join(repoRoot, "protocol", "testdata");
const files = readdirSync(dir).filter((f) => f.endsWith(".json") && f !== "invalid.json");

test("there are golden frames of every type", () => {
  const seen = new Set<string>();
  for (const f of files) seen.add((JSON.parse(readFileSync(join(dir, f), "utf8")) as { type: string }).type);
  for (const t of [...CLIENT_TYPES, ...SERVER_TYPES]) assert.ok(seen.has(t), `no golden frame of type ${t} in ${dir}`);
});

for (const name of files) {
  test(`golden frame ${name} round-trips`, () => {
    const text = readFileSync(join(dir, name), "utf8");
    const f = name.startsWith("client.") ? decodeClientFrame(text) : decodeFrame(text);
    if (name.startsWith("client.")) {
      assert.ok((CLIENT_TYPES as readonly string[]).includes(f.type), `client golden frame of type ${f.type}`);
      validateClientFrame(f);
    }
    assert.deepEqual(JSON.parse(encodeFrame(f)), JSON.parse(text), "the round trip changed the frame");
  });
}

test("invalid.json: every frame is refused with its code", () => {
  const cases = JSON.parse(readFileSync(join(dir, "invalid.json"), "utf8")) as { name: string; frame: string; code: string }[];
  assert.ok(cases.length >= 10, `only ${cases.length} invalid cases`);
  for (const c of cases) {
    assert.throws(
      () => decodeClientFrame(c.frame),
      (e: unknown) => e instanceof ProtocolError && e.code === c.code,
      `${c.name}: ${c.frame} should be refused with ${c.code}`,
    );
  }
});

test("strict decoding says what is wrong and where", () => {
  const conv = "7d1f3a52-5b0e-4c1a-9a57-2f1e0c6b9d10";
  const cases: [string, string][] = [
    ['{"type":"send","id":"r1","type":"ping"}', 'duplicate key "type"'],
    [`{"type":"sync","cursors":[{"conversation":"${conv}","seq":1,"seq":2}]}`, 'duplicate key "seq" in /cursors/0'],
    ['{"type":"send","TYPE":"ping"}', 'key "TYPE": keys are case-sensitive (the field is "type")'],
    [`{"type":"sync","cursors":[{"conversation":"${conv}","SEQ":1}]}`, 'key "SEQ": keys are case-sensitive (the field is "seq") in /cursors/0'],
    [`{"type":"ack","conversation":"${conv}","seq":"42"}`, "field /seq has the wrong type (want an integer)"],
    ['{"type":"ping","id":"r1"', "invalid JSON at byte"],
  ];
  for (const [frame, want] of cases) {
    assert.throws(() => decodeClientFrame(frame), (e: unknown) => e instanceof ProtocolError && e.code === "bad_request" && e.message.includes(want), `${frame} should say ${want}`);
  }
});

test("server frames: a field of the wrong type is refused, unknown fields are dropped", () => {
  assert.throws(() => decodeFrame('{"type":"message","seq":"1"}'), ProtocolError);
  assert.throws(() => decodeFrame('{"type":"sync.result","messages":[{"seq":1.5}]}'), ProtocolError);
  assert.throws(() => decodeFrame("[]"), ProtocolError);
  const f = decodeFrame('{"type":"pong","id":"r1","future":{"x":1}}');
  assert.deepEqual(f, { type: "pong", id: "r1" });
});
