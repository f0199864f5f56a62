// The settle page: anyone pastes a channel id, sees its on-chain state, and settles once the
// challenge period is over (anvil time travel); the client's refund reconciles to the unit.
import { createWalletClient, http } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { foundry } from "viem/chains";
import { ZERO_ADDRESS, claimMany, getChannel, openChannel, openChannelWithPermit, pieceworkDomain, signVoucher, startClose, waitForTransaction } from "../src/sdk/index.ts";
import { DEV, timeTravel } from "../test/support/chain.ts";
import { expect, test } from "./fixtures.ts";

test.use({ walletAccount: DEV.bystander });

test("a bystander settles a stablecoin channel after closesAt; the refund is exact", async ({ page, chain, site, wallet }) => {
  // The client opens with a permit, pays 7.25 TUSD through its voucher signer, the freelancer
  // claims it, the client starts closing: all through the SDK, outside the page.
  const client = createWalletClient({ account: DEV.client2, chain: foundry, transport: http(chain.url) });
  const freelancer = createWalletClient({ account: DEV.freelancer, chain: foundry, transport: http(chain.url) });
  const signer = privateKeyToAccount(generatePrivateKey());
  const opened = await openChannelWithPermit(client, chain.public, { contract: chain.contract, payee: DEV.freelancer, token: chain.stablecoin, amount: 40_000_000n, challengePeriod: 3600n, voucherSigner: signer.address });
  await waitForTransaction(chain.public, opened.hash);
  const domain = pieceworkDomain(chain.chainId, chain.contract);
  const payerSignature = await signVoucher(signer, { domain, channelId: opened.channelId, cumulativeAmount: 7_250_000n });
  await waitForTransaction(chain.public, await claimMany(freelancer, chain.public, { contract: chain.contract, claims: [{ channelId: opened.channelId, cumulativeAmount: 7_250_000n, payerSignature }] }));
  await waitForTransaction(chain.public, await startClose(client, chain.public, { contract: chain.contract, channelId: opened.channelId }));

  await page.goto(`${site.url}/settle.html?service=http://127.0.0.1:9&chain=${chain.chainId}&contract=${chain.contract}&channel=${opened.channelId}`);
  await page.getByRole("button", { name: "Connect Piecework Test Wallet" }).click();
  await page.getByRole("button", { name: "Look up" }).click();
  const state = page.getByTestId("state");
  await expect(state.getByTestId("status")).toHaveText("closing");
  await expect(state.getByTestId("refund")).toHaveText("32.75 TUSD");
  await expect(state.getByTestId("countdown")).toContainText(/in (59 min|1 h)/);
  await expect(page.getByRole("button", { name: /^Settle/ })).toBeDisabled();

  await timeTravel(chain, 3600);
  await page.getByRole("button", { name: "Look up" }).click();
  await expect(state.getByTestId("countdown")).toHaveText("challenge period over");
  const balance = async () => chain.public.readContract({ address: chain.stablecoin, abi: [{ type: "function", name: "balanceOf", stateMutability: "view", inputs: [{ name: "a", type: "address" }], outputs: [{ type: "uint256" }] }], functionName: "balanceOf", args: [DEV.client2] });
  const before = await balance();
  await page.getByRole("button", { name: "Settle now" }).click();
  await expect(page.getByTestId("txs").locator("li").first()).toHaveAttribute("data-status", "confirmed");
  await expect(state.getByTestId("status")).toHaveText("closed");
  expect(await balance()).toBe(before + 32_750_000n);
  expect((await getChannel(chain.public, { contract: chain.contract, channelId: opened.channelId })).status).toBe("closed");
  expect(wallet.prompts()).toEqual({ eth_requestAccounts: 1, eth_sendTransaction: 1 });
});

test("the settle page explains a malformed id, an unknown id and an open channel in plain words", async ({ page, chain, site, wallet }) => {
  await page.goto(`${site.url}/settle.html?service=http://127.0.0.1:9&chain=${chain.chainId}&contract=${chain.contract}`);
  await page.getByRole("button", { name: "Connect Piecework Test Wallet" }).click();
  await page.getByLabel("Channel id").fill("0x1234");
  await page.getByRole("button", { name: "Look up" }).click();
  await expect(page.getByTestId("error")).toHaveText("The channel id must be 0x followed by 64 hex digits.");
  await page.getByLabel("Channel id").fill(`0x${"ab".repeat(32)}`);
  await page.getByRole("button", { name: "Look up" }).click();
  await expect(page.getByTestId("error")).toHaveText("No channel with this id exists on this contract.");
  const client = createWalletClient({ account: DEV.client2, chain: foundry, transport: http(chain.url) });
  const opened = await openChannel(client, chain.public, { contract: chain.contract, payee: DEV.freelancer, token: ZERO_ADDRESS, amount: 1000n, challengePeriod: 3600n, voucherSigner: null });
  await waitForTransaction(chain.public, opened.hash);
  await page.getByLabel("Channel id").fill(opened.channelId);
  await page.getByRole("button", { name: "Look up" }).click();
  await expect(page.getByTestId("state")).toContainText("The channel is open: its client must start closing it first.");
  await expect(page.getByRole("button", { name: /^Settle/ })).toHaveCount(0);
  expect(wallet.prompts()).toEqual({ eth_requestAccounts: 1 });
});
