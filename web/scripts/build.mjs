// Builds the three pages into web/dist as plain static files (no CDN, no run-time fetch of
// code): esbuild bundles TypeScript/JSX with Preact, shared code goes into hashed chunks, and
// the build fails when the client page's JavaScript exceeds its gzip budget.
import { build } from "esbuild";
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const WEB = join(dirname(fileURLToPath(import.meta.url)), "..");
const DIST = join(WEB, "dist");
const BUDGET_GZ = 300 * 1024; // the client page's JavaScript, gzipped (issue #12)
const PAGES = {
  client: { html: "index.html", title: "Pay your freelancer — Piecework" },
  dashboard: { html: "dashboard.html", title: "Freelancer dashboard — Piecework" },
  settle: { html: "settle.html", title: "Settle a channel — Piecework" },
};

rmSync(DIST, { recursive: true, force: true });
mkdirSync(join(DIST, "assets"), { recursive: true });

const result = await build({
  entryPoints: Object.fromEntries(Object.keys(PAGES).map((p) => [p, join(WEB, `src/pages/${p}.tsx`)])),
  outdir: join(DIST, "assets"),
  bundle: true,
  splitting: true,
  format: "esm",
  target: "es2022",
  minify: true,
  sourcemap: false,
  legalComments: "none",
  jsx: "automatic",
  jsxImportSource: "preact",
  entryNames: "[name]-[hash]",
  chunkNames: "chunk-[hash]",
  metafile: true,
  logLevel: "warning",
});

const css = readFileSync(join(WEB, "src/pages/style.css"));
copyFileSync(join(WEB, "src/pages/style.css"), join(DIST, "assets/style.css"));

const outputs = result.metafile.outputs;
/** An entry's own file plus every chunk it imports statically: what its page downloads. */
function closure(file, seen = new Set()) {
  if (seen.has(file)) return seen;
  seen.add(file);
  for (const imp of outputs[file].imports) if (imp.kind === "import-statement") closure(imp.path, seen);
  return seen;
}

const report = {};
for (const [page, { html, title }] of Object.entries(PAGES)) {
  const entry = Object.keys(outputs).find((f) => outputs[f].entryPoint?.endsWith(`src/pages/${page}.tsx`));
  const files = [...closure(entry)];
  const bytes = files.reduce((n, f) => n + readFileSync(f).length, 0);
  const gzip = files.reduce((n, f) => n + gzipSync(readFileSync(f), { level: 9 }).length, 0);
  report[page] = { files: files.map((f) => relative(DIST, f)), bytes, gzip };
  const src = `./${relative(DIST, entry)}`;
  // script-src 'self': the page holds the voucher signer's key, so no inline or foreign script
  // may run. connect-src allows a service on another origin (?service=).
  writeFileSync(
    join(DIST, html),
    `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self' https: http://127.0.0.1:* http://localhost:*; object-src 'none'; base-uri 'none'; form-action 'none'">
<meta name="referrer" content="no-referrer">
<title>${title}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="./assets/style.css">
<script type="module" src="${src}"></script>
</head>
<body>
<nav aria-label="Pages"><a href="./index.html">Client</a> <a href="./dashboard.html">Freelancer</a> <a href="./settle.html">Settle</a></nav>
<div id="app"></div>
</body>
</html>
`,
  );
}
writeFileSync(join(DIST, "build-report.json"), JSON.stringify({ budgetGzip: BUDGET_GZ, css: css.length, pages: report }, null, 2));
for (const [page, r] of Object.entries(report)) {
  console.log(`${page.padEnd(10)} ${(r.bytes / 1024).toFixed(1).padStart(7)} kB  ${(r.gzip / 1024).toFixed(1).padStart(6)} kB gzip  (${r.files.length} files)`);
}
if (report.client.gzip > BUDGET_GZ) {
  console.error(`build:web: the client page's JavaScript is ${report.client.gzip} B gzipped, over the ${BUDGET_GZ} B budget`);
  process.exit(1);
}

// The same files as package data of the service (api/web, shipped in the wheel): see
// scripts/package_data.js. Under CI=true this checks the committed copy instead of writing it.
execFileSync(process.execPath, [join(WEB, "../scripts/package_data.js"), "--only", "api/web"], { stdio: "inherit" });
