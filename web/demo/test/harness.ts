// The browser tests' harness: a real parleyd in development mode on the local stack (Redis,
// NATS, Cassandra as deploy/local/env.sh finds them), isolated as clients/ts/test/harness.ts
// isolates its servers (its own ingest stream, subject prefix, revocation bucket and HS256
// secret), serving the demo's build at /demo/; Debian's chromium driven by playwright-core
// with deploy/local/browser.sh's flags; and a tiny static server for a demo on another origin.
//
// PARLEY_DEMO_PARLEYD names a built parleyd (make browser-test builds one); without it the
// harness builds one with go build. PARLEY_DEMO_PORTS (lo-hi, default 22000-22999) is where
// its ports come from. PARLEY_CHROMIUM names the browser (default /usr/bin/chromium).
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, statSync } from "node:fs";
import { createServer as createHTTPServer, type Server as HTTPServer } from "node:http";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, extname, join, normalize, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import { connect as natsConnect } from "nats";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";

const run = promisify(execFile);

/** The repository's root (this file runs from web/demo/build/test). */
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../../../..");
/** The demo's build (make demo-build, npm run build). */
export const distDir = join(repoRoot, "web/demo/dist");

let built: Promise<string> | undefined;

/** parleyd returns the path of a parleyd binary, building it once if PARLEY_DEMO_PARLEYD is unset. */
export function parleyd(): Promise<string> {
  built ??= (async () => {
    const given = process.env.PARLEY_DEMO_PARLEYD;
    if (given) {
      if (!existsSync(given)) throw new Error(`PARLEY_DEMO_PARLEYD=${given}: no such file`);
      return given;
    }
    const bin = join(mkdtempSync(join(tmpdir(), "parleyd-demo-")), "parleyd");
    await run("go", ["build", "-o", bin, "./cmd/parleyd"], { cwd: repoRoot });
    return bin;
  })();
  return built;
}

function portRange(): [number, number] {
  const v = process.env.PARLEY_DEMO_PORTS ?? "22000-22999";
  const m = /^(\d+)-(\d+)$/.exec(v);
  if (!m) throw new Error(`PARLEY_DEMO_PORTS=${v}: want lo-hi`);
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
  return `web_${name.replace(/[^A-Za-z0-9_]+/g, "_").slice(0, 16)}_${randomBytes(4).toString("hex")}`;
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

/** Options of a Server. */
export interface ServerOptions {
  /** Origins besides its own that may open the WebSocket and get CORS (--allowed-origins). */
  allowedOrigins?: string[];
  /** More PARLEY_* variables. */
  env?: Record<string, string>;
}

/** A parleyd process with every role in development mode, serving the demo at /demo/. */
export class Server {
  readonly name: string;
  readonly secret = randomBytes(32).toString("hex");
  public!: string;
  admin!: string;
  private proc: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  output = "";

  constructor(name: string, private readonly opts: ServerOptions = {}) {
    this.name = id(name);
  }

  /** base is the API's URL, http://127.0.0.1:PORT. */
  get base(): string {
    return `http://${this.public}`;
  }

  /** demo is the demo's URL as parleyd serves it. */
  get demo(): string {
    return `${this.base}/demo/`;
  }

  env(): NodeJS.ProcessEnv {
    const stream = `T_${this.name}`;
    const env: NodeJS.ProcessEnv = {
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
      PARLEY_DEV: "true",
      PARLEY_DEV_DEMO_DIR: distDir,
      ...this.opts.env,
    };
    if (this.opts.allowedOrigins?.length) env.PARLEY_ALLOWED_ORIGINS = this.opts.allowedOrigins.join(",");
    return env;
  }

  /** start runs parleyd and waits until /readyz answers 200. */
  async start(): Promise<void> {
    if (!existsSync(join(distDir, "index.html"))) throw new Error(`${distDir}/index.html is missing: build the demo first (make demo-build)`);
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

  /** token mints a token for user with the development endpoint, as the demo does. */
  async token(user: string, device = "node"): Promise<string> {
    const r = await fetch(`${this.base}/dev/token`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ user, device }) });
    if (r.status !== 200) throw new Error(`POST /dev/token: HTTP ${r.status}: ${await r.text()}`);
    return ((await r.json()) as { token: string }).token;
  }

  /** api makes one REST call as user and returns the decoded answer. */
  async api<T>(user: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<T> {
    const h: Record<string, string> = { Authorization: `Bearer ${await this.token(user)}`, ...headers };
    if (body !== undefined) h["Content-Type"] = "application/json";
    const init: RequestInit = { method, headers: h };
    if (body !== undefined) init.body = JSON.stringify(body);
    const r = await fetch(this.base + path, init);
    const text = await r.text();
    if (r.status >= 300) throw new Error(`${method} ${path}: HTTP ${r.status}: ${text}`);
    return (text ? JSON.parse(text) : undefined) as T;
  }

  /** stop kills parleyd and deletes its streams and buckets from the shared NATS. */
  async stop(): Promise<void> {
    const p = this.proc;
    if (p && p.exitCode === null && p.signalCode === null) {
      p.kill("SIGKILL");
      await this.exited;
    }
    this.proc = undefined;
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

const types: Record<string, string> = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".map": "application/json" };

/**
 * serveStatic serves dir's files on a loopback port of the range (the demo on an origin of
 * its own, as a developer's dev server would) and returns its origin and a function to stop it.
 */
export async function serveStatic(dir: string): Promise<{ origin: string; close: () => Promise<void> }> {
  const port = await freePort();
  const root = resolve(dir);
  const srv: HTTPServer = createHTTPServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname);
    const file = normalize(join(root, path.endsWith("/") ? path + "index.html" : path));
    if (!file.startsWith(root + sep) || !existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404).end("not found");
      return;
    }
    res.writeHead(200, { "Content-Type": types[extname(file)] ?? "application/octet-stream", "Cache-Control": "no-cache" });
    res.end(readFileSync(file));
  });
  await new Promise<void>((res) => srv.listen(port, "127.0.0.1", () => res()));
  return {
    origin: `http://127.0.0.1:${port}`,
    close: () => new Promise<void>((res) => srv.close(() => res())),
  };
}

let flags: Promise<string[]> | undefined;

/** chromiumFlags are deploy/local/browser.sh's flags (headless, no sandbox, nothing reaching out). */
export function chromiumFlags(): Promise<string[]> {
  flags ??= run(join(repoRoot, "deploy/local/browser.sh"), ["flags"]).then(({ stdout }) => stdout.split("\n").filter(Boolean));
  return flags;
}

/** launch starts Debian's chromium through playwright-core with browser.sh's flags. */
export async function launch(): Promise<Browser> {
  const executablePath = process.env.PARLEY_CHROMIUM || "/usr/bin/chromium";
  if (!existsSync(executablePath)) throw new Error(`${executablePath} is missing: run make browser-deps (deploy/local/browser.sh deps)`);
  return chromium.launch({ executablePath, args: await chromiumFlags(), timeout: 60_000 });
}

/** A page of the demo and what its console said (shown when a test fails). */
export interface DemoPage {
  context: BrowserContext;
  page: Page;
  log: string[];
}

/** openDemo opens url in a fresh context (its own storage, as another browser would be). */
export async function openDemo(browser: Browser, url: string): Promise<DemoPage> {
  const context = await browser.newContext({ viewport: { width: 1100, height: 700 } });
  const page = await context.newPage();
  const log: string[] = [];
  page.on("console", (m) => log.push(`[${m.type()}] ${m.text()}`));
  page.on("pageerror", (e) => log.push(`[pageerror] ${e.message}`));
  await page.goto(url);
  return { context, page, log };
}

/** A test's world: a parleyd, a browser, and the pages it opened (their logs shown on failure). */
export interface World {
  server: Server;
  browser: Browser;
  pages: DemoPage[];
  open(url?: string): Promise<DemoPage>;
}

export async function withWorld(name: string, fn: (w: World) => Promise<void>, opts: ServerOptions = {}): Promise<void> {
  const server = new Server(name, opts);
  let browser: Browser | undefined;
  const pages: DemoPage[] = [];
  try {
    await server.start();
    browser = await launch();
    const b = browser;
    await fn({
      server,
      browser: b,
      pages,
      async open(url = server.demo) {
        const p = await openDemo(b, url);
        pages.push(p);
        return p;
      },
    });
  } catch (e) {
    for (const [i, p] of pages.entries()) console.error(`page ${i} console:\n${p.log.slice(-60).join("\n")}`);
    console.error(`parleyd's output:\n${server.output}`);
    throw e;
  } finally {
    await browser?.close();
    await server.stop();
  }
}

/** users returns fresh names for alice and bob (the keyspace is shared by every run). */
export function users(): [string, string] {
  const u = randomBytes(3).toString("hex");
  return [`alice_${u}`, `bob_${u}`];
}

/**
 * screenshot returns the path to save a screenshot at: in the state directory, so that a run
 * leaves the tree clean; PARLEY_DEMO_SCREENSHOTS=docs/screenshots refreshes the ones README.md
 * shows.
 */
export function screenshot(name: string): string {
  const dir = resolve(repoRoot, process.env.PARLEY_DEMO_SCREENSHOTS || join(process.env.PARLEY_STATE_DIR || join(repoRoot, ".parley"), "screenshots"));
  mkdirSync(dir, { recursive: true });
  return join(dir, name);
}
