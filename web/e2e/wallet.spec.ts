// What a person sees when the wallet is on another network or says no: a clear sentence, and
// nothing sent or stored.
import { clientUrl, expect, test } from "./fixtures.ts";

test.describe("wrong network", () => {
  test.use({ walletChainId: 1 });

  test("the page offers wallet_switchEthereumChain and works after the switch", async ({ page, chain, site, wallet }) => {
    await page.goto(clientUrl(site, chain));
    await page.getByRole("button", { name: "Connect Piecework Test Wallet" }).click();
    const warning = page.getByTestId("wrong-network");
    await expect(warning).toContainText("Your wallet is on network 1, but these channels are on network 31337.");
    await expect(page.getByRole("button", { name: /^Open/ })).toHaveCount(0);
    expect(wallet.requests.filter((r) => r.method === "eth_sendTransaction")).toHaveLength(0);
    await warning.getByRole("button", { name: "Switch to network 31337" }).click();
    await expect(warning).toHaveCount(0);
    await expect(page.getByTestId("balance-ETH")).toContainText("ETH");
    expect(wallet.prompts()).toEqual({ eth_requestAccounts: 1, wallet_switchEthereumChain: 1 });
  });

  test("a wallet that does not know the network is asked to add it when the link names an RPC URL", async ({ page, chain, site, wallet }) => {
    wallet.known.clear();
    wallet.known.add(1);
    await page.goto(clientUrl(site, chain, `&rpc=${encodeURIComponent(chain.url)}`));
    await page.getByRole("button", { name: "Connect Piecework Test Wallet" }).click();
    await page.getByRole("button", { name: "Switch to network 31337" }).click();
    await expect(page.getByTestId("wrong-network")).toHaveCount(0);
    const add = wallet.requests.find((r) => r.method === "wallet_addEthereumChain");
    expect(add?.params).toEqual([{ chainId: "0x7a69", chainName: "Chain 31337", rpcUrls: [chain.url], nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 } }]);
  });

  test("without an RPC URL to add, the person is told to add the network in the wallet", async ({ page, chain, site, wallet }) => {
    wallet.known.clear();
    wallet.known.add(1);
    await page.goto(clientUrl(site, chain));
    await page.getByRole("button", { name: "Connect Piecework Test Wallet" }).click();
    await page.getByRole("button", { name: "Switch to network 31337" }).click();
    await expect(page.getByTestId("wallet-error")).toHaveText("Your wallet does not know network 31337; add it in the wallet, then try again.");
  });
});

test("a rejected connect and a rejected transaction show a clear message and change nothing", async ({ page, chain, site, wallet }) => {
  await page.goto(clientUrl(site, chain));
  wallet.rejectNext("eth_requestAccounts");
  await page.getByRole("button", { name: "Connect Piecework Test Wallet" }).click();
  await expect(page.getByTestId("wallet-error")).toHaveText("You rejected the request in your wallet; nothing was sent.");
  await page.getByRole("button", { name: "Connect Piecework Test Wallet" }).click();
  await expect(page.getByTestId("wallet-account")).toBeVisible();

  const nonce = await chain.public.getTransactionCount({ address: wallet.account as `0x${string}` });
  wallet.rejectNext("eth_sendTransaction");
  await page.getByLabel(/^Deposit/).fill("0.01");
  await page.getByRole("button", { name: "Open channel" }).click();
  await expect(page.getByTestId("error")).toHaveText("You rejected the request in your wallet; nothing was sent.");
  await expect(page.getByTestId("txs").locator("li").first()).toHaveAttribute("data-status", "failed");
  // The channel record written before the prompt is dropped: nothing was opened.
  await expect(page.getByTestId("channel")).toHaveCount(0);
  expect(await chain.public.getTransactionCount({ address: wallet.account as `0x${string}` })).toBe(nonce);

  // A bad amount never reaches the wallet.
  const asked = wallet.requests.length;
  await page.getByLabel(/^Deposit/).fill("0.0000000000000000001");
  await page.getByRole("button", { name: "Open channel" }).click();
  await expect(page.getByTestId("error")).toHaveText("ETH has 18 decimals; 0.0000000000000000001 has 19.");
  expect(wallet.prompts(asked)).toEqual({});
});
