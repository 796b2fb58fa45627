// The test harness: a real parleyd process on the local stack (Redis, NATS, Cassandra as
// deploy/local/env.sh finds them), isolated as clients/gotest isolates its servers (its own
// ingest stream, subject prefix, revocation bucket and HS256 secret), with tokens minted by
// `parleyd token`. PARLEY_TS_PARLEYD names a built parleyd (make ts-test builds one);
// without it the harness builds one with go build.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, existsSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import { connect as natsConnect } from "nats";
import WebSocket from "ws";

import { Client, type ClientEvent, type ConnectOptions, type ConnState, type Message } from "../src/index.js";

const run = promisify(execFile);

/** The repository's root (this file runs from clients/ts/build/test). */
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../../../..");

let built: Promise<string> | undefined;

/** parleyd returns the path of a parleyd binary, building it once if PARLEY_TS_PARLEYD is unset. */
export function parleyd(): Promise<string> {
  built ??= (async () => {
    const given = process.env.PARLEY_TS_PARLEYD;
    if (given) {
      if (!existsSync(given)) throw new Error(`PARLEY_TS_PARLEYD=${given}: no such file`);
      return given;
    }
    const bin = join(mkdtempSync(join(tmpdir(), "parleyd-ts-")), "parleyd");
    await run("go", ["build", "-o", bin, "./cmd/parleyd"], { cwd: repoRoot });
    return bin;
  })();
  return built;
}

// Ports come from PARLEY_TS_PORTS (lo-hi), default 20000-20999.
function portRange(): [number, number] {
  const v = process.env.PARLEY_TS_PORTS ?? "20000-20999";
  const m = /^(\d+)-(\d+)$/.exec(v);
  if (!m) throw new Error(`PARLEY_TS_PORTS=${v}: want lo-hi`);
  return [Number(m[1]), Number(m[2])];
}

const taken = new Set<number>();

/** freePort returns a loopback port of the range that is free now. */
export async function freePort(): Promise<number> {
  const [lo, hi] = portRange();
  for (let i = 0; i < 200; i++) {
    const port = lo + Math.floor(Math.random() * (hi - lo + 1));
    if (taken.has(port)) continue;
    const ok = await new Promise<boolean>((res) => {
      const s = createServer();
      s.once("error", () => res(false));
      s.listen(port, "127.0.0.1", () => s.close(() => res(true)));
    });
    if (ok) {
      taken.add(port);
      return port;
    }
  }
  throw new Error("no free port in " + portRange().join("-"));
}

/** id is a fresh name for a test's users and streams: letters, digits, underscores. */
export function id(name: string): string {
  return `ts_${name.replace(/[^A-Za-z0-9_]+/g, "_").slice(0, 20)}_${randomBytes(4).toString("hex")}`;
}

/** until polls cond every 50 ms until it holds or timeoutMs passes, and says which. */
export async function until(timeoutMs: number, cond: () => boolean | Promise<boolean>): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A parleyd process with every role; restart keeps its addresses, stream and secret. */
export class Server {
  readonly name: string;
  readonly secret = randomBytes(24).toString("hex");
  public!: string;
  admin!: string;
  private proc: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  output = "";

  constructor(name: string, private readonly extraEnv: Record<string, string> = {}) {
    this.name = id(name);
  }

  get url(): string {
    return `ws://${this.public}/v1/ws`;
  }

  env(): NodeJS.ProcessEnv {
    const stream = `T_${this.name}`;
    return {
      ...process.env,
      PARLEY_AUTH_HS256_SECRET: this.secret,
      PARLEY_LOG_LEVEL: "warn",
      PARLEY_LISTEN_ADDR: this.public,
      PARLEY_ADMIN_ADDR: this.admin,
      PARLEY_EDGE_DRAIN_WINDOW: "100ms",
      PARLEY_EDGE_DRAIN_DELAY: "0",
      PARLEY_EDGE_REBALANCE: "false",
      PARLEY_CASSANDRA_KEYSPACE: process.env.PARLEY_TEST_KEYSPACE || "parley_test",
      PARLEY_CASSANDRA_CONSISTENCY: "ONE",
      PARLEY_DELIVERY_STREAM: stream,
      PARLEY_DELIVERY_SUBJECT_PREFIX: `test.${this.name}.`,
      PARLEY_REVOCATION_BUCKET: `${stream}_REV`,
      PARLEY_ADMIN_TOKEN: randomBytes(24).toString("hex"),
      ...this.extraEnv,
    };
  }

  /** start runs parleyd and waits until /readyz answers 200. */
  async start(): Promise<void> {
    if (!this.public) {
      this.public = `127.0.0.1:${await freePort()}`;
      this.admin = `127.0.0.1:${await freePort()}`;
    }
    const bin = await parleyd();
    const p = spawn(bin, ["run", "--roles=all"], { env: this.env(), stdio: ["ignore", "pipe", "pipe"] });
    this.proc = p;
    const keep = (b: Buffer) => {
      this.output = (this.output + b.toString()).slice(-20000);
    };
    p.stdout!.on("data", keep);
    p.stderr!.on("data", keep);
    this.exited = new Promise((res) => p.once("exit", () => res()));
    const ready = await until(60_000, async () => {
      if (p.exitCode !== null) return true;
      try {
        return (await fetch(`http://${this.admin}/readyz`)).status === 200;
      } catch {
        return false;
      }
    });
    if (!ready || p.exitCode !== null) throw new Error(`parleyd never ready (exit ${p.exitCode}):\n${this.output}`);
  }

  /** kill ends the process with SIGKILL: sockets cut, nothing said to the clients. */
  async kill(): Promise<void> {
    const p = this.proc;
    if (p && p.exitCode === null && p.signalCode === null) {
      p.kill("SIGKILL");
      await this.exited;
    }
    this.proc = undefined;
  }

  /** token mints a token with `parleyd token`. */
  async token(user: string, device: string): Promise<string> {
    const { stdout } = await run(await parleyd(), ["token", "--user", user, "--device", device, "--ttl", "1h"], { env: this.env() });
    return stdout.trim();
  }

  /** stop kills parleyd and deletes its streams and buckets from the shared NATS. */
  async stop(): Promise<void> {
    await this.kill();
    const nc = await natsConnect({ servers: process.env.PARLEY_NATS_URL || "nats://127.0.0.1:14222" });
    try {
      const jsm = await nc.jetstreamManager();
      const s = `T_${this.name}`;
      for (const name of [s, `${s}_LOG`, `${s}_DEAD`, `KV_${s}_WORKERS`, `KV_${s}_LEASES`, `KV_${s}_OWED`, `KV_${s}_REV`]) {
        try {
          await jsm.streams.delete(name);
        } catch {
          // not created by this run
        }
      }
    } finally {
      await nc.close();
    }
  }
}

/** Collector records a client's events, as an app would see them. */
export class Collector {
  readonly messages: Message[] = [];
  readonly accepted = new Map<string, number>();
  readonly failed: ClientEvent[] = [];
  readonly states: ConnState[] = [];

  constructor(readonly client: Client) {
    client.on("message", (e) => void this.messages.push(e.message));
    client.on("accepted", (e) => void this.accepted.set(e.clientMsgId, (this.accepted.get(e.clientMsgId) ?? 0) + 1));
    client.on("sendFailed", (e) => void this.failed.push(e));
    client.on("state", (e) => void this.states.push(e.state));
  }

  /** seqs returns the seqs of conversation's messages, in the order they were surfaced. */
  seqs(conversation: string): number[] {
    return this.messages.filter((m) => m.conversation === conversation).map((m) => m.seq);
  }
}

/** dial connects user's device to s with ws, a short backoff and extra options. */
export async function dial(s: Server, user: string, device = "d1", extra: Partial<ConnectOptions> = {}): Promise<Client> {
  return Client.connect({
    url: s.url,
    token: () => s.token(user, device),
    device,
    WebSocket: WebSocket as unknown as ConnectOptions["WebSocket"],
    backoff: { minMs: 50, maxMs: 1000 },
    ...extra,
  });
}

/** inOrder says what is wrong with seqs if they are not 1..n, each once (or "" if they are). */
export function notInOrder(seqs: number[], n: number, from = 1): string {
  if (seqs.length !== n) return `${seqs.length} messages; want ${n} (${seqs.join(",")})`;
  for (let i = 0; i < n; i++) if (seqs[i] !== from + i) return `seqs ${seqs.join(",")}; want ${from}..${from + n - 1}, once and in order`;
  return "";
}
