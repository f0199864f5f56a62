// The client page against anvil and the contract alone (no payee service needed): open an ETH
// and a permit stablecoin channel with a voucher signer generated in the page, count every
// wallet prompt, survive a reload, top up, start closing.
import type { Page } from "@playwright/test";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { privateKeyToAccount } from "viem/accounts";
import { ZERO_ADDRESS, getChannel } from "../src/sdk/index.ts";
import { DEV } from "../test/support/chain.ts";
import { clientUrl, expect, test } from "./fixtures.ts";
import { installWallet } from "./wallet.ts";

/** The voucher signer the page keeps in IndexedDB, read the way the page reads it. */
async function storedSigner(page: Page): Promise<{ address: string; privateKey: `0x${string}` }[]> {
  return page.evaluate(
    () =>
      new Promise((resolve, reject) => {
        const open = indexedDB.open("piecework");
        open.onerror = () => reject(open.error);
        open.onsuccess = () => {
          const get = open.result.transaction("signers").objectStore("signers").getAll();
          get.onsuccess = () => resolve(get.result);
          get.onerror = () => reject(get.error);
        };
      }),
  );
}

async function openChannel(page: Page, symbol: string, amount: string) {
  await page.getByLabel("Token").selectOption({ label: symbol });
  await page.getByLabel(/^Deposit/).fill(amount);
  await page.getByRole("button", { name: /^(Open channel|Open with permit)/ }).click();
  await expect(page.getByTestId("txs").locator("li").first()).toHaveAttribute("data-status", "confirmed");
}

test("a client opens an ETH and a permit stablecoin channel from the page; the wallet sees only those prompts; a reload keeps everything", async ({ page, chain, site, wallet }) => {
  const sent: string[] = [];
  page.on("request", (r) => sent.push(`${r.url()} ${r.postData() ?? ""}`));
  await page.goto(clientUrl(site, chain));
  await expect(page.getByTestId("service-error")).toContainText("is not answering");
  await page.getByRole("button", { name: "Connect Piecework Test Wallet" }).click();
  await expect(page.getByTestId("wallet-account")).toContainText(DEV.client.slice(0, 8));
  await expect(page.getByTestId("balance-TUSD")).toContainText("1,000 TUSD");

  await openChannel(page, "ETH", "0.05");
  await openChannel(page, "TUSD", "25");
  await expect(page.getByTestId("channel")).toHaveCount(2);

  // One connect, two transactions, one permit signature: nothing else asked of the person.
  expect(wallet.prompts()).toEqual({ eth_requestAccounts: 1, eth_sendTransaction: 2, eth_signTypedData_v4: 1 });

  const [signer] = await storedSigner(page);
  expect(signer).toBeDefined();
  expect(privateKeyToAccount(signer!.privateKey).address).toBe(signer!.address);
  await expect(page.getByTestId("voucher-signer")).toContainText(signer!.address.slice(0, 8));
  const ids = await page.getByTestId("channel").evaluateAll((els) => els.map((e) => e.getAttribute("data-channel-id")!));
  const onchain = await Promise.all(ids.map((id) => getChannel(chain.public, { contract: chain.contract, channelId: id as `0x${string}` })));
  expect(onchain.map((c) => [c.token, c.deposit, c.voucherSigner, c.payer, c.payee, c.status])).toEqual([
    [ZERO_ADDRESS, 5n * 10n ** 16n, signer!.address, DEV.client, DEV.freelancer, "open"],
    [chain.stablecoin, 25_000_000n, signer!.address, DEV.client, DEV.freelancer, "open"],
  ]);
  // The key never left the page: not in a wallet request, not in any HTTP request.
  const secret = signer!.privateKey.slice(2).toLowerCase();
  expect(JSON.stringify(wallet.requests).toLowerCase()).not.toContain(secret);
  expect(sent.join("\n").toLowerCase()).not.toContain(secret);

  const before = wallet.requests.length;
  await page.reload();
  await expect(page.getByTestId("channel")).toHaveCount(2);
  await expect(page.getByTestId("channel").first().getByTestId("deposit")).toHaveText("0.05 ETH");
  await expect(page.getByTestId("channel").nth(1).getByTestId("deposit")).toHaveText("25 TUSD");
  expect((await storedSigner(page)).map((s) => s.address)).toEqual([signer!.address]);
  expect(wallet.prompts(before)).toEqual({});

  // Top up the ETH channel; start closing the stablecoin one.
  const eth = page.getByTestId("channel").first();
  await eth.getByLabel(/^Top up/).fill("0.01");
  await eth.getByRole("button", { name: "Top up" }).click();
  await expect(eth.getByTestId("deposit")).toHaveText("0.06 ETH");
  const usd = page.getByTestId("channel").nth(1);
  // A token top-up needs an allowance first: approve, then topUp (two transactions).
  await usd.getByLabel(/^Top up/).fill("5");
  await usd.getByRole("button", { name: "Top up" }).click();
  await expect(usd.getByTestId("deposit")).toHaveText("30 TUSD");
  await expect(page.getByTestId("txs").locator("li").nth(1)).toContainText("Approve 5 TUSD for the top-up confirmed");
  await usd.getByRole("button", { name: "Start closing without the freelancer" }).click();
  await expect(usd.getByTestId("status")).toHaveText("closing");
  await expect(usd.getByTestId("countdown")).toContainText(/in (59 min|1 h)/);
  await expect(usd.getByRole("button", { name: /Settle/ })).toBeDisabled();
  expect(wallet.prompts()).toEqual({ eth_requestAccounts: 1, eth_sendTransaction: 6, eth_signTypedData_v4: 1 });
});

test("a token without permit opens with approve + open: two transactions, no signature", async ({ page, chain, site, wallet }) => {
  await page.goto(`${clientUrl(site, chain)}&token=${chain.plainToken}`);
  await page.getByRole("button", { name: "Connect Piecework Test Wallet" }).click();
  await page.getByLabel("Token").selectOption({ label: "MNT" });
  await page.getByLabel(/^Deposit/).fill("12.5");
  await expect(page.getByRole("button", { name: "Approve and open (two transactions)" })).toBeVisible();
  await page.getByRole("button", { name: "Approve and open (two transactions)" }).click();
  await expect(page.getByTestId("channel")).toHaveCount(1);
  await expect(page.getByTestId("channel").getByTestId("deposit")).toHaveText("12.5 MNT");
  await expect(page.getByTestId("txs").locator("li")).toHaveText([/^Open MNT channel with 12\.5 MNT confirmed/, /^Approve 12\.5 MNT for the channel confirmed/]);
  expect(wallet.prompts()).toEqual({ eth_requestAccounts: 1, eth_sendTransaction: 2 });
});

test("the payment key's backup restores it in another browser profile", async ({ page, chain, site, wallet, browser }) => {
  await page.goto(clientUrl(site, chain));
  await page.getByRole("button", { name: "Connect Piecework Test Wallet" }).click();
  await openChannel(page, "ETH", "0.02");
  const [signer] = await storedSigner(page);
  const download = page.waitForEvent("download");
  await page.getByRole("button", { name: "Export backup" }).click();
  const file = await (await download).path();

  // A fresh profile (cleared browser data): no key, the channel unknown until the backup is restored.
  const context = await browser.newContext();
  await installWallet(context, { rpcUrl: chain.url, account: wallet.account, chainId: chain.chainId, realChainId: chain.chainId });
  const fresh = await context.newPage();
  await fresh.goto(clientUrl(site, chain));
  await fresh.getByRole("button", { name: "Connect Piecework Test Wallet" }).click();
  await expect(fresh.getByText("No channel yet.")).toBeVisible();
  await fresh.getByLabel("Restore a backup").setInputFiles(file);
  await expect(fresh.getByTestId("message")).toHaveText("Backup restored.");
  await expect(fresh.getByTestId("channel")).toHaveCount(1);
  await expect(fresh.getByTestId("channel").getByTestId("deposit")).toHaveText("0.02 ETH");
  expect((await storedSigner(fresh)).map((s) => s.address)).toEqual([signer!.address]);
  await context.close();
});

test("a link to another service never receives this channel's signatures", async ({ page, chain, site, wallet }) => {
  void wallet;
  await page.goto(clientUrl(site, chain));
  await page.getByRole("button", { name: "Connect Piecework Test Wallet" }).click();
  await openChannel(page, "ETH", "0.01");
  const id = (await page.getByTestId("channel").getAttribute("data-channel-id"))!;

  // A hostile look-alike: it copies the freelancer's public terms and records what it is sent.
  const received: string[] = [];
  const impostor = createServer((req, res) => {
    received.push(`${req.method} ${req.url} ${req.headers.authorization ?? ""}`);
    const cors = { "access-control-allow-origin": "*", "access-control-allow-headers": "authorization, content-type" };
    if (req.method === "OPTIONS") return void res.writeHead(204, cors).end();
    if (req.url === "/v1/info") {
      const info = { version: "2", chain_id: chain.chainId, contract: chain.contract, payees: [DEV.freelancer], min_challenge_period: 3600, tokens: [{ address: ZERO_ADDRESS, symbol: "ETH", decimals: 18, min_deposit: "1" }] };
      return void res.writeHead(200, { ...cors, "content-type": "application/json" }).end(JSON.stringify(info));
    }
    res.writeHead(404, { ...cors, "content-type": "application/problem+json" }).end(JSON.stringify({ status: 404, code: "not_found", title: "Not Found" }));
  });
  await new Promise<void>((resolve) => impostor.listen(0, "127.0.0.1", resolve));
  const { port } = impostor.address() as AddressInfo;
  try {
    await page.goto(`${site.url}/index.html?service=http://127.0.0.1:${port}`);
    const card = page.locator(`[data-channel-id="${id}"]`);
    await expect(card).toContainText("Opened through the service http://127.0.0.1:9");
    await expect(card.getByRole("button", { name: "Start closing without the freelancer" })).toBeEnabled();
    await page.getByRole("button", { name: "Refresh" }).click();
    await expect(card).toBeVisible();
    expect(received.some((r) => r.startsWith("GET /v1/info"))).toBe(true);
    expect(received.filter((r) => r.includes(id) || r.includes("Access "))).toEqual([]);
  } finally {
    impostor.close();
  }
});
