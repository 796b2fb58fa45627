// The demo's build: src/main.ts and the SDK's source (clients/ts/src, through tsconfig.json's
// paths) bundled by esbuild into dist/app.js, with index.html and style.css beside it. Every
// path in index.html is relative, so dist works wherever it is served (/demo/ on parleyd).
import { copyFileSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "dist");
rmSync(dist, { recursive: true, force: true });
mkdirSync(dist, { recursive: true });
const r = await esbuild.build({
  entryPoints: [join(here, "src/main.ts")],
  outfile: join(dist, "app.js"),
  tsconfig: join(here, "tsconfig.json"),
  bundle: true,
  format: "esm",
  platform: "browser",
  target: ["es2022", "chrome111", "firefox111", "safari16.4"],
  minify: true,
  sourcemap: "linked",
  metafile: true,
  logLevel: "warning",
});
for (const f of ["index.html", "style.css"]) copyFileSync(join(here, f), join(dist, f));
const out = r.metafile.outputs[Object.keys(r.metafile.outputs).find((k) => k.endsWith("app.js"))];
console.log(`demo-build: web/demo/dist (app.js ${out.bytes} bytes, ${Object.keys(out.inputs).length} modules)`);
