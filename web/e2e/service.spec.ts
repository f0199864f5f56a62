// The whole flow against a real `piecework serve` (protocol v2) serving the pages at `/`.
// Until the v2 service with web/SERVICE-NEEDS.md exists (phase 2) these tests skip, saying why;
// everything they need from anvil and the contract alone is covered by the other files now.
import AxeBuilder from "@axe-core/playwright";
import type { Browser, BrowserContext, Page } from "@playwright/test";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type Address, erc20Abi } from "viem";
import { ZERO_ADDRESS, getChannel } from "../src/sdk/index.ts";
import { type Chain, DEV, ROOT, timeTravel } from "../test/support/chain.ts";
import { type ServiceAvailability, expect, startService, test } from "./fixtures.ts";
import { type TestWallet, installWallet } from "./wallet.ts";

let availability: ServiceAvailability = { service: null, reason: "not started" };

test.beforeAll(async ({ chain, site }) => {
  // The static copy of the pages (another origin) may call the payer-side endpoints.
  availability = await startService(chain, { corsOrigins: site.url });
  // The list reporter does not print skip reasons: say it once here.
  if (availability.service === null) console.log(`service.spec.ts skipped: ${availability.reason}`);
});
test.afterAll(() => availability.service?.stop());
test.beforeEach(() => {
  test.skip(availability.service === null, availability.reason);
});

async function actor(browser: Browser, chain: Chain, account: Address): Promise<{ context: BrowserContext; page: Page; wallet: TestWallet }> {
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
  const wallet = await installWallet(context, { rpcUrl: chain.url, account, chainId: chain.chainId, realChainId: chain.chainId });
  return { context, page: await context.newPage(), wallet };
}

async function confirmed(page: Page) {
  await expect(page.getByTestId("txs").locator("li").first()).toHaveAttribute("data-status", "confirmed");
}

async function open(page: Page, symbol: string, amount: string) {
  await page.getByLabel("Token").selectOption({ label: symbol });
  await page.getByLabel(/^Deposit/).fill(amount);
  await page.getByRole("button", { name: /^(Open channel|Open with permit)/ }).click();
  await confirmed(page);
}

async function expectAccessible(page: Page, name: string) {
  const { violations } = await new AxeBuilder({ page }).withTags(["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]).analyze();
  const bad = violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  expect(bad.map((v) => `${name}: ${v.id} (${v.impact}) ${v.help} — ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`)).toEqual([]);
}

/**
 * Screenshots of the pages in use: the README's (docs/img) under `npm run screenshots`
 * (PIECEWORK_SCREENSHOTS=docs), else next to the test results, so a test run leaves the
 * checkout clean.
 */
const SHOTS = process.env.PIECEWORK_SCREENSHOTS === "docs" ? join(ROOT, "docs/img") : join(ROOT, "web/test-results/screenshots");
async function shoot(page: Page, file: string) {
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: join(SHOTS, file), fullPage: true, animations: "disabled" });
}

/** The dashboard's "Export all receipts (CSV)" as rows of cells (the file quotes every cell). */
async function exportCsv(page: Page): Promise<string[][]> {
  const [download] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: "Export all receipts (CSV)" }).click()]);
  const text = readFileSync((await download.path())!, "utf8");
  return text.trim().split(/\r?\n/).map((line) => line.split(",").map((cell) => cell.replace(/^"|"$/g, "")));
}

async function balance(chain: Chain, token: Address, owner: Address): Promise<bigint> {
  if (token === ZERO_ADDRESS) return chain.public.getBalance({ address: owner });
  return chain.public.readContract({ address: token, abi: erc20Abi, functionName: "balanceOf", args: [owner] });
}

test("client pays three requested tasks with zero wallet prompts; the dashboard sees them live; claim, cooperative close, settle; balances reconcile", async ({ browser, chain }) => {
  const service = availability.service!;
  const client = await actor(browser, chain, DEV.client);
  const freelancer = await actor(browser, chain, DEV.freelancer);
  const bystander = await actor(browser, chain, DEV.bystander);
  const start = {
    clientUsd: await balance(chain, chain.stablecoin, DEV.client),
    freelancerUsd: await balance(chain, chain.stablecoin, DEV.freelancer),
  };

  await client.page.goto(`${service.url}/`);
  await client.page.getByRole("button", { name: "Connect Piecework Test Wallet" }).click();
  await open(client.page, "ETH", "0.05");
  await open(client.page, "TUSD", "25");
  await expect(client.page.getByTestId("channel")).toHaveCount(2);
  const afterOpen = client.wallet.requests.length;
  expect(client.wallet.prompts()).toEqual({ eth_requestAccounts: 1, eth_sendTransaction: 2, eth_signTypedData_v4: 1 });
  const [ethId, usdId] = (await client.page.getByTestId("channel").evaluateAll((els) => els.map((e) => e.getAttribute("data-channel-id")!))) as `0x${string}`[];

  // The freelancer asks for three tasks from the dashboard.
  await freelancer.page.goto(`${service.url}/dashboard.html`);
  await freelancer.page.getByRole("textbox", { name: "Operator token" }).fill(service.operatorToken);
  await freelancer.page.getByRole("button", { name: "Open the dashboard" }).click();
  await expect(freelancer.page.getByTestId("live")).toContainText("live");
  await expect(freelancer.page.getByTestId("channels").locator("tbody tr")).toHaveCount(2);
  const tasks = [
    { channel: ethId!, id: "logo-1", amount: "0.001", description: "Logo sketch" },
    { channel: ethId!, id: "logo-2", amount: "0.002", description: "Logo, final colours" },
    { channel: usdId!, id: "copy-1", amount: "1.5", description: "Landing page copy" },
  ];
  for (const t of tasks) {
    await freelancer.page.getByLabel("Channel", { exact: true }).selectOption(t.channel);
    await freelancer.page.getByLabel("Task id").fill(t.id);
    await freelancer.page.getByLabel(/^Amount/).fill(t.amount);
    await freelancer.page.getByLabel("Description").fill(t.description);
    await freelancer.page.getByRole("button", { name: "Request payment" }).click();
    await expect(freelancer.page.getByText(`Asked the client to pay "${t.id}".`)).toBeVisible();
  }

  // The client sees and pays them: no wallet request at all beyond reads.
  await client.page.getByRole("button", { name: "Refresh" }).click();
  const eth = client.page.locator(`[data-channel-id="${ethId}"]`);
  const usd = client.page.locator(`[data-channel-id="${usdId}"]`);
  await expect(eth.getByTestId("tasks").locator("li")).toHaveCount(2);
  await expect(eth.getByText("Logo, final colours")).toBeVisible();
  await eth.getByRole("button", { name: /^Pay all 2 tasks/ }).click();
  await usd.locator('[data-task-id="copy-1"]').getByRole("button", { name: "Pay" }).click();
  await expect(eth.getByTestId("paid")).toHaveText("0.003 ETH");
  await expect(usd.getByTestId("paid")).toHaveText("1.5 TUSD");
  await expect(eth.getByTestId("receipts").locator("tbody tr")).toHaveCount(2);
  expect(client.wallet.prompts(afterOpen)).toEqual({});

  // The dashboard showed each payment without a reload.
  await expect(freelancer.page.getByTestId("payments").locator("li")).toHaveCount(3);
  await expect(freelancer.page.locator(`tr[data-channel-id="${ethId}"] [data-testid="accepted"]`)).toHaveText("0.003 ETH");
  await expect(freelancer.page.getByTestId("watchtower-wallet")).toContainText("ETH");
  await expectAccessible(freelancer.page, "dashboard (live)");
  await expectAccessible(client.page, "client (paid)");
  await shoot(client.page, "client.png");

  // A rejected wallet request changes nothing and says so; then the freelancer confirms.

  // One claimMany for both channels, gas estimate first.
  await freelancer.page.getByRole("button", { name: "Connect Piecework Test Wallet" }).click();
  for (const id of [ethId, usdId]) await freelancer.page.getByRole("checkbox", { name: `select channel ${id} for claiming` }).check();
  await freelancer.page.getByRole("button", { name: "Estimate gas for claiming 2 selected" }).click();
  await expect(freelancer.page.getByTestId("gas-estimate")).toContainText("gas");
  freelancer.wallet.rejectNext("eth_sendTransaction");
  await freelancer.page.getByRole("button", { name: "Claim 2 in one transaction" }).click();
  await expect(freelancer.page.getByTestId("error")).toHaveText("You rejected the request in your wallet; nothing was sent.");
  expect((await getChannel(chain.public, { contract: chain.contract, channelId: ethId! })).claimed).toBe(0n);
  await freelancer.page.getByRole("button", { name: "Estimate gas for claiming 2 selected" }).click();
  await freelancer.page.getByRole("button", { name: "Claim 2 in one transaction" }).click();
  await confirmed(freelancer.page);
  // Two claimMany prompts, the first rejected: one transaction reached the chain.
  expect(freelancer.wallet.prompts()).toEqual({ eth_requestAccounts: 1, eth_sendTransaction: 2 });
  expect((await getChannel(chain.public, { contract: chain.contract, channelId: ethId! })).claimed).toBe(3n * 10n ** 15n);
  expect((await getChannel(chain.public, { contract: chain.contract, channelId: usdId! })).claimed).toBe(1_500_000n);

  // The client closes the ETH channel cooperatively and starts closing the other.
  await eth.getByRole("button", { name: "Close now with the freelancer's consent" }).click();
  await expect(eth.getByTestId("status")).toHaveText("closed");
  await usd.getByRole("button", { name: "Start closing without the freelancer" }).click();
  await expect(usd.getByTestId("status")).toHaveText("closing");

  // The dashboard learns both from the service's watcher, live: the watchtower lists the
  // closing channel, and the CSV names the claim transaction of every receipt.
  await expect(freelancer.page.getByTestId("watchtower")).toContainText("1 channel(s) closing");
  await expect(freelancer.page.locator(`tr[data-channel-id="${usdId}"]`)).toContainText("closing");
  const claimTx = await freelancer.page.getByTestId("txs").locator('li[data-status="confirmed"]').first().getAttribute("data-hash");
  expect(claimTx).toMatch(/^0x[0-9a-f]{64}$/);
  let rows: string[][] = [];
  await expect.poll(async () => (rows = await exportCsv(freelancer.page)).slice(1).filter((r) => r[7] !== "").length, { timeout: 15_000 }).toBe(3);
  expect(rows[0]).toEqual(["channel_id", "time", "task_id", "task_hash", "amount", "cumulative_amount", "receipt_signature", "claim_transaction"]);
  expect(rows.slice(1).map((r) => [r[0], r[2], r[4], r[5]]).sort()).toEqual(
    [[ethId, "logo-1", "1000000000000000", "1000000000000000"], [ethId, "logo-2", "2000000000000000", "3000000000000000"], [usdId, "copy-1", "1500000", "1500000"]].sort(),
  );
  for (const r of rows.slice(1)) {
    expect(r[1]).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d/);
    expect(r[6]).toMatch(/^0x[0-9a-f]{130}$/);
    expect(r[7]).toBe(claimTx);
  }
  await expectAccessible(freelancer.page, "dashboard (closing)");
  await shoot(freelancer.page, "dashboard.png");

  // After the challenge period anyone settles it from the settle page.
  await timeTravel(chain, 3600);
  await bystander.page.goto(`${service.url}/settle.html?channel=${usdId}`);
  await bystander.page.getByRole("button", { name: "Connect Piecework Test Wallet" }).click();
  await bystander.page.getByRole("button", { name: "Look up" }).click();
  await expect(bystander.page.getByTestId("status")).toHaveText("closing");
  await expectAccessible(bystander.page, "settle (ready)");
  await shoot(bystander.page, "settle.png");
  await bystander.page.getByRole("button", { name: "Settle now" }).click();
  await confirmed(bystander.page);
  await expect(bystander.page.getByTestId("status")).toHaveText("closed");
  await expect(bystander.page.getByText("0x000000…000000")).toHaveCount(0);
  await expectAccessible(bystander.page, "settle (settled)");

  // Balances reconcile to the unit (token balances: no gas in them).
  expect(await balance(chain, chain.stablecoin, DEV.freelancer)).toBe(start.freelancerUsd + 1_500_000n);
  expect(await balance(chain, chain.stablecoin, DEV.client)).toBe(start.clientUsd - 1_500_000n);
  expect((await getChannel(chain.public, { contract: chain.contract, channelId: usdId! })).status).toBe("closed");
  for (const a of [client, freelancer, bystander]) await a.context.close();
});

test("the client page served by the service: strict headers, time to interactive", async ({ browser, chain }) => {
  const service = availability.service!;
  const client = await actor(browser, chain, DEV.client2);
  const response = await client.page.goto(`${service.url}/`);
  const headers = response!.headers();
  expect(headers["content-security-policy"]).toContain("frame-ancestors 'none'");
  expect(headers["content-security-policy"]).toContain("script-src 'self'");
  expect(headers["x-content-type-options"]).toBe("nosniff");
  await expect(client.page.getByRole("button", { name: "Connect Piecework Test Wallet" })).toBeEnabled();
  const interactive = await client.page.evaluate(() => performance.now());
  // Again, warm (the browser revalidates the HTML, assets come from its cache).
  await client.page.reload();
  await expect(client.page.getByRole("button", { name: "Connect Piecework Test Wallet" })).toBeEnabled();
  const warm = await client.page.evaluate(() => performance.now());
  const metrics = { measuredAt: new Date().toISOString(), served: "piecework serve", timeToInteractiveMs: Math.round(interactive), warmReloadMs: Math.round(warm) };
  mkdirSync(join(ROOT, "web/test-results"), { recursive: true });
  writeFileSync(join(ROOT, "web/test-results/metrics-service.json"), JSON.stringify(metrics, null, 2));
  console.log(`client page from piecework serve: interactive after ${metrics.timeToInteractiveMs} ms (warm reload ${metrics.warmReloadMs} ms)`);
  await client.context.close();
});

// Last: it stops the service.
test("a reload and a second tab keep everything; the service down shows a clear message and nothing is lost", async ({ browser, chain, site }) => {
  const service = availability.service!;
  const client = await actor(browser, chain, DEV.client2);
  // The page from a host the client trusts (the static copy), the service on another origin:
  // every payer-side call crosses origins (PIECEWORK_CORS_ORIGINS), and the page still loads
  // when the service is down.
  const page = `${site.url}/index.html?service=${encodeURIComponent(service.url)}`;
  await client.page.goto(page);
  await client.page.getByRole("button", { name: "Connect Piecework Test Wallet" }).click();
  await open(client.page, "ETH", "0.02");
  await expect(client.page.getByTestId("channel")).toHaveCount(1);
  const [id] = (await client.page.getByTestId("channel").evaluateAll((els) => els.map((e) => e.getAttribute("data-channel-id")!))) as `0x${string}`[];
  const operator = { authorization: `Bearer ${service.operatorToken}`, "content-type": "application/json" };
  for (const [taskId, amount] of [["a", "1000"], ["b", "2000"]]) {
    const r = await fetch(`${service.url}/v1/channels/${id}/tasks`, { method: "POST", headers: operator, body: JSON.stringify({ task_id: taskId, amount, description: `task ${taskId}` }) });
    expect(r.status).toBe(201);
  }
  // The client comes back to the tab: the new requests show without pressing Refresh.
  await client.page.evaluate(() => document.dispatchEvent(new Event("visibilitychange")));
  const card = client.page.locator(`[data-channel-id="${id}"]`);
  await card.locator('[data-task-id="a"]').getByRole("button", { name: "Pay" }).click();
  await expect(card.getByTestId("receipts").locator("tbody tr")).toHaveCount(1);

  // A second tab pays the other task; the first tab learns of it.
  const second = await client.context.newPage();
  await second.goto(page);
  const card2 = second.locator(`[data-channel-id="${id}"]`);
  await card2.locator('[data-task-id="b"]').getByRole("button", { name: "Pay" }).click();
  await expect(card2.getByTestId("receipts").locator("tbody tr")).toHaveCount(2);
  await expect(card.getByTestId("receipts").locator("tbody tr")).toHaveCount(2);

  await client.page.reload();
  await expect(card.getByTestId("receipts").locator("tbody tr")).toHaveCount(2);
  await expect(card.getByTestId("paid")).toHaveText("0.000000000000003 ETH");

  // The service goes away: the page says so, keeps the receipts, and can still close on chain.
  service.stop();
  await client.page.reload();
  await expect(client.page.getByTestId("service-error")).toContainText("is not answering");
  await expect(card.getByTestId("receipts").locator("tbody tr")).toHaveCount(2);
  await card.getByRole("button", { name: "Start closing without the freelancer" }).click();
  await expect(card.getByTestId("status")).toHaveText("closing");
  await client.context.close();
});
