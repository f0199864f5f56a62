// The SDK against the v2 contract on a real anvil: the typed data matches the contract's
// constants, and vouchers from a browser-style voucher signer are claimed on chain.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { type Address, type Hex, createWalletClient, http, keccak256, toBytes } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { foundry } from "viem/chains";
import {
  type Wallet,
  ContractError,
  ZERO_ADDRESS,
  approveAndOpen,
  balanceOf,
  channelId,
  claimMany,
  closeByPayee,
  cooperativeClose,
  estimateClaimMany,
  getChannel,
  hashMessage,
  openChannel,
  openChannelWithPermit,
  paymentChannelsAbi,
  permitDomain,
  pieceworkDomain,
  pieceworkTypes,
  settle,
  signCloseConsent,
  signVoucher,
  startClose,
  tokenInfo,
  topUp,
  waitForTransaction,
} from "../src/sdk/index.ts";
import { type Chain, DEV, startChain, timeTravel } from "./support/chain.ts";

let chain: Chain;
let domain: ReturnType<typeof pieceworkDomain>;
/** Wallets as a browser has them: anvil's unlocked accounts over JSON-RPC, no local key. */
const wallet = (address: Address): Wallet => createWalletClient({ account: address, chain: foundry, transport: http(chain.url) });
const HOUR = 3600n;

before(async () => {
  chain = await startChain();
  domain = pieceworkDomain(chain.chainId, chain.contract);
});
after(() => chain?.stop());

async function mined(hash: Hex) {
  return waitForTransaction(chain.public, hash);
}
async function now(): Promise<bigint> {
  return (await chain.public.getBlock()).timestamp;
}
async function open(token: Address, amount: bigint, voucherSigner: Address | null) {
  const opened = await openChannel(wallet(DEV.client), chain.public, { contract: chain.contract, payee: DEV.freelancer, token, amount, challengePeriod: HOUR, voucherSigner });
  await mined(opened.hash);
  return opened.channelId;
}

describe("typed data and ids agree with the contract", () => {
  test("type strings hash to the contract's *_TYPEHASH constants", async () => {
    const names = { Voucher: "VOUCHER_TYPEHASH", Receipt: "RECEIPT_TYPEHASH", CloseConsent: "CLOSE_CONSENT_TYPEHASH", CloseRequest: "CLOSE_REQUEST_TYPEHASH", Access: "ACCESS_TYPEHASH" } as const;
    for (const [type, constant] of Object.entries(names)) {
      const fields = pieceworkTypes[type as keyof typeof names].map((f) => `${f.type} ${f.name}`).join(",");
      const onchain = await chain.public.readContract({ address: chain.contract, abi: paymentChannelsAbi, functionName: constant });
      assert.equal(onchain, keccak256(toBytes(`${type}(${fields})`)), type);
    }
  });

  test("eip712Domain(), hashVoucher, hashCloseConsent and channelId match the SDK", async () => {
    const [, name, version, chainId, verifyingContract] = await chain.public.readContract({ address: chain.contract, abi: paymentChannelsAbi, functionName: "eip712Domain" });
    assert.deepEqual({ name, version, chainId: Number(chainId), verifyingContract }, domain);
    const id = `0x${"5a".repeat(32)}` as const;
    const big = 2n ** 95n + 3n;
    assert.equal(await chain.public.readContract({ address: chain.contract, abi: paymentChannelsAbi, functionName: "hashVoucher", args: [id, big] }), hashMessage(domain, "Voucher", { channelId: id, cumulativeAmount: big }));
    assert.equal(
      await chain.public.readContract({ address: chain.contract, abi: paymentChannelsAbi, functionName: "hashCloseConsent", args: [id, big, 1_800_000_000n] }),
      hashMessage(domain, "CloseConsent", { channelId: id, cumulativeAmount: big, deadline: 1_800_000_000n }),
    );
    const salt = `0x${"07".repeat(32)}` as const;
    assert.equal(
      await chain.public.readContract({ address: chain.contract, abi: paymentChannelsAbi, functionName: "channelId", args: [DEV.client, DEV.freelancer, chain.stablecoin, salt] }),
      channelId({ payer: DEV.client, payee: DEV.freelancer, token: chain.stablecoin, salt }),
    );
  });
});

describe("channels", () => {
  test("ETH and permit channels with a voucher signer; its vouchers are claimed in one claimMany", async () => {
    const signer = privateKeyToAccount(generatePrivateKey());
    const eth = await open(ZERO_ADDRESS, 10n ** 16n, signer.address);
    assert.deepEqual(await getChannel(chain.public, { contract: chain.contract, channelId: eth }), {
      channelId: eth, payer: DEV.client, payee: DEV.freelancer, token: ZERO_ADDRESS, deposit: 10n ** 16n, claimed: 0n,
      challengePeriod: HOUR, closesAt: 0n, status: "open", voucherSigner: signer.address,
    });

    assert.ok(await permitDomain(chain.public, chain.stablecoin), "TestStablecoin has a usable permit");
    const before = await balanceOf(chain.public, { token: chain.stablecoin, owner: DEV.client });
    const permitted = await openChannelWithPermit(wallet(DEV.client), chain.public, { contract: chain.contract, payee: DEV.freelancer, token: chain.stablecoin, amount: 5_000_000n, challengePeriod: HOUR, voucherSigner: signer.address });
    await mined(permitted.hash);
    assert.equal(await balanceOf(chain.public, { token: chain.stablecoin, owner: DEV.client }), before - 5_000_000n);

    const claims = [
      { channelId: eth, cumulativeAmount: 3n * 10n ** 15n, payerSignature: await signVoucher(signer, { domain, channelId: eth, cumulativeAmount: 3n * 10n ** 15n }) },
      { channelId: permitted.channelId, cumulativeAmount: 1_250_000n, payerSignature: await signVoucher(signer, { domain, channelId: permitted.channelId, cumulativeAmount: 1_250_000n }) },
    ];
    const gas = await estimateClaimMany(chain.public, { contract: chain.contract, account: DEV.freelancer, claims });
    assert.ok(gas > 21_000n && gas < 300_000n, `gas estimate ${gas}`);
    const ethBefore = await balanceOf(chain.public, { token: ZERO_ADDRESS, owner: DEV.freelancer });
    const usdBefore = await balanceOf(chain.public, { token: chain.stablecoin, owner: DEV.freelancer });
    const receipt = await mined(await claimMany(wallet(DEV.freelancer), chain.public, { contract: chain.contract, claims }));
    const fee = receipt.gasUsed * receipt.effectiveGasPrice;
    assert.equal(await balanceOf(chain.public, { token: ZERO_ADDRESS, owner: DEV.freelancer }), ethBefore + 3n * 10n ** 15n - fee);
    assert.equal(await balanceOf(chain.public, { token: chain.stablecoin, owner: DEV.freelancer }), usdBefore + 1_250_000n);
    assert.equal((await getChannel(chain.public, { contract: chain.contract, channelId: permitted.channelId })).claimed, 1_250_000n);
  });

  test("a voucher from a key that is neither payer nor voucher signer is refused by name, before any transaction", async () => {
    const signer = privateKeyToAccount(generatePrivateKey());
    const id = await open(ZERO_ADDRESS, 1000n, signer.address);
    const stranger = privateKeyToAccount(generatePrivateKey());
    const nonceBefore = await chain.public.getTransactionCount({ address: DEV.freelancer });
    await assert.rejects(
      claimMany(wallet(DEV.freelancer), chain.public, { contract: chain.contract, claims: [{ channelId: id, cumulativeAmount: 5n, payerSignature: await signVoucher(stranger, { domain, channelId: id, cumulativeAmount: 5n }) }] }),
      (e: unknown) => e instanceof ContractError && e.errorName === "InvalidSignature" && /signature does not match/.test(e.shortMessage),
    );
    assert.equal(await chain.public.getTransactionCount({ address: DEV.freelancer }), nonceBefore);
  });

  test("a token without permit opens with approve + open; its metadata comes from the token", async () => {
    assert.equal(await permitDomain(chain.public, chain.plainToken), null);
    assert.deepEqual(await tokenInfo(chain.public, chain.plainToken), { address: chain.plainToken, symbol: "MNT", decimals: 18, permit: false });
    assert.deepEqual(await tokenInfo(chain.public, chain.stablecoin), { address: chain.stablecoin, symbol: "TUSD", decimals: 6, permit: true });
    const approvals: Hex[] = [];
    const opened = await approveAndOpen(wallet(DEV.client), chain.public, { contract: chain.contract, payee: DEV.freelancer, token: chain.plainToken, amount: 10n ** 18n, challengePeriod: HOUR, voucherSigner: null, onApproveSent: (h) => approvals.push(h) });
    await mined(opened.hash);
    assert.equal(approvals.length, 1);
    assert.equal(opened.approveHash, approvals[0]);
    const c = await getChannel(chain.public, { contract: chain.contract, channelId: opened.channelId });
    assert.equal(c.deposit, 10n ** 18n);
    assert.equal(c.voucherSigner, null);
  });

  test("cooperativeClose with the payee's consent before its deadline; an expired consent reverts ConsentExpired", async () => {
    const signer = privateKeyToAccount(generatePrivateKey());
    const freelancer = privateKeyToAccount("0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d");
    const a = await open(ZERO_ADDRESS, 1000n, signer.address);
    const b = await open(ZERO_ADDRESS, 1000n, signer.address);
    const deadline = (await now()) + 60n;
    const close = async (id: Hex) =>
      cooperativeClose(wallet(DEV.client), chain.public, {
        contract: chain.contract, channelId: id, cumulativeAmount: 400n, deadline,
        payerSignature: await signVoucher(signer, { domain, channelId: id, cumulativeAmount: 400n }),
        payeeSignature: await signCloseConsent(freelancer, { domain, channelId: id, cumulativeAmount: 400n, deadline }),
      });
    await mined(await close(a));
    assert.equal((await getChannel(chain.public, { contract: chain.contract, channelId: a })).status, "closed");
    await timeTravel(chain, 61);
    await assert.rejects(close(b), (e: unknown) => e instanceof ContractError && e.errorName === "ConsentExpired" && /expired/.test(e.shortMessage));
  });

  test("topUp, startClose, settle only after closesAt, refund to the payer", async () => {
    const id = await open(ZERO_ADDRESS, 1000n, null);
    await mined(await topUp(wallet(DEV.client), chain.public, { contract: chain.contract, channelId: id, token: ZERO_ADDRESS, amount: 500n }));
    assert.equal((await getChannel(chain.public, { contract: chain.contract, channelId: id })).deposit, 1500n);
    await assert.rejects(startClose(wallet(DEV.bystander), chain.public, { contract: chain.contract, channelId: id }), (e: unknown) => e instanceof ContractError && e.errorName === "NotPayer");
    await mined(await startClose(wallet(DEV.client), chain.public, { contract: chain.contract, channelId: id }));
    const closing = await getChannel(chain.public, { contract: chain.contract, channelId: id });
    assert.equal(closing.status, "closing");
    assert.equal(closing.closesAt, (await now()) + HOUR);
    await assert.rejects(settle(wallet(DEV.bystander), chain.public, { contract: chain.contract, channelId: id }), (e: unknown) => e instanceof ContractError && e.errorName === "ChallengePeriodNotOver");
    await timeTravel(chain, Number(HOUR));
    const payerBefore = await balanceOf(chain.public, { token: ZERO_ADDRESS, owner: DEV.client });
    await mined(await settle(wallet(DEV.bystander), chain.public, { contract: chain.contract, channelId: id }));
    assert.equal(await balanceOf(chain.public, { token: ZERO_ADDRESS, owner: DEV.client }), payerBefore + 1500n);
    assert.equal((await getChannel(chain.public, { contract: chain.contract, channelId: id })).status, "closed");
  });

  test("closeByPayee: only the payee; pays the voucher and refunds the rest", async () => {
    const signer = privateKeyToAccount(generatePrivateKey());
    const id = await open(ZERO_ADDRESS, 1000n, signer.address);
    const payerSignature = await signVoucher(signer, { domain, channelId: id, cumulativeAmount: 300n });
    await assert.rejects(closeByPayee(wallet(DEV.client), chain.public, { contract: chain.contract, channelId: id, cumulativeAmount: 300n, payerSignature }), (e: unknown) => e instanceof ContractError && e.errorName === "NotPayee");
    const payerBefore = await balanceOf(chain.public, { token: ZERO_ADDRESS, owner: DEV.client });
    await mined(await closeByPayee(wallet(DEV.freelancer), chain.public, { contract: chain.contract, channelId: id, cumulativeAmount: 300n, payerSignature }));
    assert.equal(await balanceOf(chain.public, { token: ZERO_ADDRESS, owner: DEV.client }), payerBefore + 700n);
  });
});
