/**
 * Fixtures of the browser suite: a real anvil with the contracts (one per worker, reverted to
 * the deployed state after every test), the built
 * pages served over HTTP, a test wallet per browser context, and, when the v2 payee service is
 * available (phase 2), a real `piecework serve` serving the pages at `/`.
 */
import { test as base, expect } from "@playwright/test";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, statSync } from "node:fs";
import { type Server, createServer } from "node:http";
import { tmpdir } from "node:os";
import { extname, join, normalize, sep } from "node:path";
import { type Chain, DEV, DEV_KEYS, ROOT, freePort, startChain } from "../test/support/chain.ts";
import { type TestWallet, installWallet } from "./wallet.ts";

export { expect };
export const DIST = join(ROOT, "web/dist");

const TYPES: Record<string, string> = { ".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css", ".json": "application/json", ".png": "image/png", ".svg": "image/svg+xml" };

/** Serves web/dist as plain static files (what `npm run build:web` promises works anywhere). */
export async function serveStatic(): Promise<{ url: string; close: () => Promise<void> }> {
  const server: Server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname);
    const file = normalize(join(DIST, path === "/" ? "index.html" : path));
    if (!file.startsWith(DIST + sep) || !existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found");
      return;
    }
    res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream" }).end(readFileSync(file));
  });
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${port}`, close: () => new Promise((r) => server.close(() => r())) };
}

export type Service = { url: string; operatorToken: string; stop: () => void };
export type ServiceAvailability = { service: Service | null; reason: string };

const PIECEWORK = join(ROOT, ".venv/bin/piecework");
export const OPERATOR_TOKEN = "test-operator-token-not-secret";

/**
 * Starts `piecework serve` against `chain` when it speaks protocol v2 with what the pages need
 * (web/SERVICE-NEEDS.md); otherwise says why not, so service tests skip with that reason.
 */
export async function startService(chain: Chain, options: { corsOrigins?: string } = {}): Promise<ServiceAvailability> {
  if (!existsSync(PIECEWORK)) return { service: null, reason: "no .venv/bin/piecework (run make setup)" };
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "piecework-web-"));
  const child: ChildProcess = spawn(PIECEWORK, ["serve", "--host", "127.0.0.1", "--port", String(port)], {
    env: {
      ...process.env,
      PIECEWORK_RPC_URL: chain.url,
      PIECEWORK_CONTRACT_ADDRESS: chain.contract,
      PIECEWORK_PRIVATE_KEY: DEV_KEYS.freelancer,
      PIECEWORK_OPERATOR_TOKEN: OPERATOR_TOKEN,
      PIECEWORK_DATABASE_URL: `sqlite:///${join(dir, "piecework.db")}`,
      PIECEWORK_ACCEPTED_TOKENS: `ETH:1,${chain.stablecoin}:1000000`,
      PIECEWORK_MIN_CHALLENGE_PERIOD: "3600",
      PIECEWORK_CLAIM_MAX_AGE_SECONDS: "0",
      PIECEWORK_PUBLIC_RPC_URL: chain.url,
      PIECEWORK_CORS_ORIGINS: options.corsOrigins ?? "",
    },
    stdio: ["ignore", "ignore", "pipe"],
    detached: true,
  });
  let stderr = "";
  child.stderr?.on("data", (d) => (stderr = (stderr + String(d)).slice(-2000)));
  const stop = () => {
    if (child.exitCode !== null || !child.pid) return;
    try {
      process.kill(-child.pid, "SIGKILL");
    } catch {
      // already gone (a test stopped it, then afterAll)
    }
  };
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline && child.exitCode === null) {
    try {
      const info = (await (await fetch(`${url}/v1/info`)).json()) as { version?: string };
      if (info.version !== "2") {
        stop();
        return { service: null, reason: `waiting for the v2 payee service (phase 2): piecework serve speaks protocol version ${info.version ?? "?"}` };
      }
      const page = await fetch(`${url}/`);
      const events = await fetch(`${url}/v1/events`, { headers: { authorization: `Bearer ${OPERATOR_TOKEN}` }, signal: AbortSignal.timeout(2000) }).catch(() => null);
      if (!page.ok || !(page.headers.get("content-type") ?? "").includes("text/html") || !events?.ok) {
        stop();
        return { service: null, reason: "waiting for phase 2: piecework serve speaks v2 but lacks what web/SERVICE-NEEDS.md asks for (the pages at /, GET /v1/events)" };
      }
      void events.body?.cancel();
      return { service: { url, operatorToken: OPERATOR_TOKEN, stop }, reason: "" };
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  stop();
  return { service: null, reason: `waiting for the v2 payee service (phase 2): piecework serve did not start (${stderr.trim().split("\n").at(-1) ?? "no output"})` };
}

type WorkerFixtures = { chain: Chain; site: { url: string } };
type TestFixtures = { wallet: TestWallet; walletAccount: string; walletChainId: number | null; isolatedChain: void };

export const test = base.extend<TestFixtures, WorkerFixtures>({
  chain: [
    async ({}, use) => {
      const chain = await startChain();
      await use(chain);
      chain.stop();
    },
    { scope: "worker" },
  ],
  site: [
    async ({}, use) => {
      const site = await serveStatic();
      await use(site);
      await site.close();
    },
    { scope: "worker" },
  ],
  // Every test starts from the freshly deployed state: snapshot before, revert after.
  isolatedChain: [
    async ({ chain }, use) => {
      const id = await chain.test.snapshot();
      await use();
      await chain.test.revert({ id });
    },
    { auto: true },
  ],
  walletAccount: [DEV.client, { option: true }],
  walletChainId: [null, { option: true }],
  wallet: async ({ context, chain, walletAccount, walletChainId }, use) => {
    await use(await installWallet(context, { rpcUrl: chain.url, account: walletAccount, chainId: walletChainId ?? chain.chainId, realChainId: chain.chainId }));
  },
});

/** The client page with the channel terms in its link, for when no service runs. */
export function clientUrl(site: { url: string }, chain: Chain, extra = ""): string {
  // A closed port stands for the freelancer's service being down.
  return `${site.url}/index.html?service=http://127.0.0.1:9&chain=${chain.chainId}&contract=${chain.contract}&payee=${DEV.freelancer}&token=${chain.stablecoin}${extra}`;
}
