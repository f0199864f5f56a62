// Every page: no serious or critical axe-core violation, a screenshot for the README, the
// client page's JavaScript within its gzip budget, no fetch beyond its own origin and the
// service, and its time to interactive on this machine.
import AxeBuilder from "@axe-core/playwright";
import type { Page } from "@playwright/test";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createWalletClient, http } from "viem";
import { foundry } from "viem/chains";
import { ZERO_ADDRESS, openChannel, startClose, waitForTransaction } from "../src/sdk/index.ts";
import { DEV, ROOT } from "../test/support/chain.ts";
import { DIST, clientUrl, expect, test } from "./fixtures.ts";

// The README's screenshots (docs/img) come from service.spec.ts, with the pages in use against
// the real service; these, of the pages without a service, stay with the test results.
const IMG = join(ROOT, "web/test-results/screenshots");
const METRICS = join(ROOT, "web/test-results/metrics.json");

async function expectAccessible(page: Page, name: string) {
  const { violations } = await new AxeBuilder({ page }).withTags(["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]).analyze();
  const bad = violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  expect(bad.map((v) => `${name}: ${v.id} (${v.impact}) ${v.help} — ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`)).toEqual([]);
}

async function shoot(page: Page, file: string) {
  mkdirSync(IMG, { recursive: true });
  await page.screenshot({ path: join(IMG, file), fullPage: true, animations: "disabled" });
}

test("client page: accessible, screenshot with two channels", async ({ page, chain, site, wallet }) => {
  void wallet;
  await page.goto(clientUrl(site, chain));
  await page.getByRole("button", { name: "Connect Piecework Test Wallet" }).click();
  for (const [symbol, amount] of [["ETH", "0.05"], ["TUSD", "25"]] as const) {
    await page.getByLabel("Token").selectOption({ label: symbol });
    await page.getByLabel(/^Deposit/).fill(amount);
    await page.getByRole("button", { name: /^(Open channel|Open with permit)/ }).click();
    await expect(page.getByTestId("txs").locator("li").first()).toHaveAttribute("data-status", "confirmed");
  }
  await page.getByTestId("channel").nth(1).getByRole("button", { name: "Start closing without the freelancer" }).click();
  await expect(page.getByTestId("channel").nth(1).getByTestId("status")).toHaveText("closing");
  await expectAccessible(page, "client");
  await shoot(page, "client.png");
});

test("dashboard page: accessible, screenshot", async ({ page, site, wallet }) => {
  void wallet;
  await page.goto(`${site.url}/dashboard.html?service=http://127.0.0.1:9`);
  await expectAccessible(page, "dashboard (token form)");
  await page.getByRole("textbox", { name: "Operator token" }).fill("not-a-real-token");
  await page.getByRole("button", { name: "Open the dashboard" }).click();
  await expect(page.getByTestId("error")).toContainText("is not answering");
  await expectAccessible(page, "dashboard (service down)");
  await shoot(page, "dashboard.png");
});

test("settle page: accessible, screenshot of a closing channel", async ({ page, chain, site, wallet }) => {
  void wallet;
  const client = createWalletClient({ account: DEV.client2, chain: foundry, transport: http(chain.url) });
  const opened = await openChannel(client, chain.public, { contract: chain.contract, payee: DEV.freelancer, token: ZERO_ADDRESS, amount: 10n ** 16n, challengePeriod: 3600n, voucherSigner: null });
  await waitForTransaction(chain.public, opened.hash);
  await waitForTransaction(chain.public, await startClose(client, chain.public, { contract: chain.contract, channelId: opened.channelId }));
  await page.goto(`${site.url}/settle.html?service=http://127.0.0.1:9&chain=${chain.chainId}&contract=${chain.contract}&channel=${opened.channelId}`);
  await page.getByRole("button", { name: "Connect Piecework Test Wallet" }).click();
  await page.getByRole("button", { name: "Look up" }).click();
  await expect(page.getByTestId("status")).toHaveText("closing");
  await expectAccessible(page, "settle");
  await shoot(page, "settle.png");
});

test("client page: JavaScript within 300 kB gzipped, nothing fetched from elsewhere, time to interactive", async ({ page, chain, site, wallet }) => {
  void wallet;
  const report = JSON.parse(readFileSync(join(DIST, "build-report.json"), "utf8")) as { budgetGzip: number; pages: Record<string, { files: string[]; gzip: number; bytes: number }> };
  expect(report.budgetGzip).toBe(300 * 1024);
  expect(report.pages.client!.gzip).toBeLessThanOrEqual(300 * 1024);

  const urls: string[] = [];
  page.on("request", (r) => urls.push(r.url()));
  await page.goto(clientUrl(site, chain));
  await expect(page.getByRole("button", { name: "Connect Piecework Test Wallet" })).toBeEnabled();
  const interactive = await page.evaluate(() => performance.now());
  // Every script the page ran is one the build report counted.
  const scripts = urls.filter((u) => u.endsWith(".js")).map((u) => new URL(u).pathname.slice(1));
  expect(scripts.sort()).toEqual([...report.pages.client!.files].sort());
  expect(urls.filter((u) => !u.startsWith(site.url) && !u.startsWith("http://127.0.0.1:9/"))).toEqual([]);

  await page.getByRole("button", { name: "Connect Piecework Test Wallet" }).click();
  await expect(page.getByTestId("balance-TUSD")).toBeVisible();
  // Time to interactive again on a warm reload with the wallet already connected (eth_accounts).
  await page.reload();
  await expect(page.getByTestId("balance-TUSD")).toBeVisible();
  const reconnected = await page.evaluate(() => performance.now());
  const metrics = {
    measuredAt: new Date().toISOString(),
    clientJsGzipBytes: report.pages.client!.gzip,
    clientJsBytes: report.pages.client!.bytes,
    timeToInteractiveMs: Math.round(interactive),
    reloadToBalancesShownMs: Math.round(reconnected),
  };
  mkdirSync(join(ROOT, "web/test-results"), { recursive: true });
  writeFileSync(METRICS, JSON.stringify(metrics, null, 2));
  console.log(`client page: ${(metrics.clientJsGzipBytes / 1024).toFixed(1)} kB gzip JS; interactive after ${metrics.timeToInteractiveMs} ms; balances after a reload ${metrics.reloadToBalancesShownMs} ms`);
});
