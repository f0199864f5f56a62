// Package data produced by a build step: the one place that writes it into the Python packages.
//
// `pip install .` must work without Node, so what the installed package needs from a build
// (today: the contracts' ABI and bytecode; later: the web app's static bundle) is committed
// under the package and refreshed here. `npm run build` runs this after `hardhat build`.
//
//   node scripts/package_data.js           write every product (prints the files it changed)
//   node scripts/package_data.js --check   write nothing; exit 1 if a committed copy is stale
//
// CI (CI=true) always checks: a build there that changed a committed copy means the commit
// carries a stale one. tests/test_packaging.py compares the copies with artifacts/ and with the
// Solidity sources on disk, so a stale copy also fails `pytest`.
//
// A product is { dir, files() }: `dir` (relative to the repo) belongs wholly to the product —
// files in it that `files()` no longer returns are removed — and `files()` returns a Map of
// file name -> exact content. Add one entry to PRODUCTS and one glob to pyproject.toml's
// [tool.setuptools.package-data] for a new kind of package data.
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

// The contracts the installed `piecework` deploys or talks to: PaymentChannels, and
// TestStablecoin for `piecework deploy --stablecoin` (the local demo's 6-decimal permit token).
const CONTRACTS = [
  { name: "PaymentChannels", source: "contracts/PaymentChannels.sol" },
  { name: "TestStablecoin", source: "contracts/test/mocks/Tokens.sol" },
];

// api/web: the pages `piecework serve` answers at `/`, copied from web/dist (written by
// `npm run build:web`, which runs this script with `--only api/web` after bundling). Without a
// web/dist (a contracts-only build) the committed copy is left as it is.
const PRODUCTS = [
  { dir: "channel/contracts", files: contractFiles },
  { dir: "api/web", files: webFiles, optional: () => !existsSync(join(ROOT, "web/dist/index.html")) },
];

// Every file under `dir`, as paths relative to it ("assets/client-X.js").
function listTree(dir, prefix = "") {
  const out = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const name = prefix + entry.name;
    if (entry.isDirectory()) out.push(...listTree(join(dir, entry.name), `${name}/`));
    else out.push(name);
  }
  return out;
}

function webFiles() {
  const dist = join(ROOT, "web/dist");
  const files = new Map();
  for (const name of listTree(dist)) {
    // build-report.json is a build diagnostic, not part of the site.
    if (name === "build-report.json") continue;
    files.set(name, readFileSync(join(dist, name), "utf8"));
  }
  return files;
}

function readJson(path) {
  return JSON.parse(readFileSync(path, "utf8"));
}

function sha256(text) {
  return createHash("sha256").update(text, "utf8").digest("hex");
}

// Source names of `start` and everything it imports, from the ASTs in the build output.
function sourceClosure(output, start) {
  const seen = new Set();
  const todo = [start];
  while (todo.length > 0) {
    const name = todo.pop();
    if (seen.has(name)) continue;
    const unit = output.sources[name];
    if (unit === undefined) throw new Error(`build output lacks source ${name}`);
    seen.add(name);
    for (const node of unit.ast.nodes) {
      if (node.nodeType === "ImportDirective") todo.push(node.absolutePath);
    }
  }
  return [...seen].sort();
}

function contractFiles() {
  const files = new Map();
  for (const { name, source } of CONTRACTS) {
    const artifactPath = join(ROOT, "artifacts", source, `${name}.json`);
    if (!existsSync(artifactPath)) {
      throw new Error(`${relative(ROOT, artifactPath)} is missing: run \`hardhat build\` first`);
    }
    const artifact = readJson(artifactPath);
    const buildInfo = join(ROOT, "artifacts", "build-info", artifact.buildInfoId);
    const input = readJson(`${buildInfo}.json`);
    const output = readJson(`${buildInfo}.output.json`).output;
    const { optimizer, evmVersion, viaIR } = input.input.settings;
    const sources = {};
    for (const sourceName of sourceClosure(output, artifact.inputSourceName)) {
      sources[sourceName] = sha256(input.input.sources[sourceName].content);
    }
    // Only what identifies the code: a change elsewhere in the compile job (another
    // contract, Hardhat's build id) leaves this file byte for byte unchanged.
    const packaged = {
      contractName: artifact.contractName,
      sourceName: artifact.sourceName,
      compiler: { version: input.solcLongVersion, optimizer, evmVersion, viaIR },
      sources,
      abi: artifact.abi,
      bytecode: artifact.bytecode,
      deployedBytecode: artifact.deployedBytecode,
    };
    files.set(`${name}.json`, JSON.stringify(packaged, null, 1) + "\n");
  }
  return files;
}

function main() {
  const check = process.argv.includes("--check") || process.env.CI === "true";
  const problems = [];
  const only = process.argv.includes("--only") ? process.argv[process.argv.indexOf("--only") + 1] : null;
  for (const product of PRODUCTS) {
    if (only !== null && product.dir !== only) continue;
    if (product.optional?.()) continue;
    const dir = join(ROOT, product.dir);
    const wanted = product.files();
    const present = existsSync(dir) ? listTree(dir) : [];
    for (const [file, content] of wanted) {
      const path = join(dir, file);
      const current = existsSync(path) ? readFileSync(path, "utf8") : null;
      if (current === content) continue;
      if (check) {
        problems.push(`${product.dir}/${file} is ${current === null ? "missing" : "stale"}`);
      } else {
        mkdirSync(dirname(path), { recursive: true });
        writeFileSync(path, content);
        console.log(`package data: wrote ${product.dir}/${file} (commit it)`);
      }
    }
    for (const file of present.filter((f) => !wanted.has(f))) {
      if (check) {
        problems.push(`${product.dir}/${file} is no longer produced`);
      } else {
        rmSync(join(dir, file));
        console.log(`package data: removed ${product.dir}/${file} (commit it)`);
      }
    }
  }
  if (problems.length > 0) {
    console.error(
      `package data out of date:\n  ${problems.join("\n  ")}\n` +
        "run `npm run build` and `npm run build:web` (or `node scripts/package_data.js`) and commit the result",
    );
    process.exit(1);
  }
}

main();
