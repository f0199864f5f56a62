import assert from "node:assert/strict";
import { test } from "node:test";
import { SignTypedDataVersion, signTypedData } from "@metamask/eth-sig-util";
import { privateKeyToAccount } from "viem/accounts";
import {
  VerificationError,
  hashMessage,
  parseSignature,
  pieceworkDomain,
  pieceworkTypes,
  recoverSigner,
  signAccess,
  signCloseConsent,
  signCloseRequest,
  signReceipt,
  signVoucher,
  taskHash,
  verifyCloseConsent,
  verifyReceipt,
} from "../src/sdk/index.ts";
import { DEV_KEYS } from "./support/chain.ts";

const payer = privateKeyToAccount(DEV_KEYS.client);
const payee = privateKeyToAccount(DEV_KEYS.freelancer);
const domain = pieceworkDomain(31337, "0x5FbDB2315678afecb367f032d93F642f64180aa3");
const id = `0x${"ab".repeat(32)}` as const;
const N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;

/** MetaMask's own eth_signTypedData_v4 implementation, for byte-for-byte comparison. */
function metamask(key: string, primaryType: keyof typeof pieceworkTypes, message: Record<string, string>): string {
  return signTypedData({
    privateKey: Buffer.from(key.slice(2), "hex"),
    version: SignTypedDataVersion.V4,
    data: {
      types: {
        EIP712Domain: [
          { name: "name", type: "string" },
          { name: "version", type: "string" },
          { name: "chainId", type: "uint256" },
          { name: "verifyingContract", type: "address" },
        ],
        [primaryType]: [...pieceworkTypes[primaryType]],
      },
      primaryType,
      domain,
      message,
    },
  });
}

test("every message signs byte-identically to MetaMask's eth_signTypedData_v4", async () => {
  const big = 2n ** 200n + 12345n;
  assert.equal(await signVoucher(payer, { domain, channelId: id, cumulativeAmount: big }), metamask(DEV_KEYS.client, "Voucher", { channelId: id, cumulativeAmount: big.toString() }));
  assert.equal(await signCloseRequest(payer, { domain, channelId: id, cumulativeAmount: 5n }), metamask(DEV_KEYS.client, "CloseRequest", { channelId: id, cumulativeAmount: "5" }));
  assert.equal(await signAccess(payer, { domain, channelId: id, expires: 1_800_000_000n }), metamask(DEV_KEYS.client, "Access", { channelId: id, expires: "1800000000" }));
  const t = taskHash("logo-42");
  assert.equal(await signReceipt(payee, { domain, channelId: id, cumulativeAmount: 9n, amount: 4n, taskId: t }), metamask(DEV_KEYS.freelancer, "Receipt", { channelId: id, cumulativeAmount: "9", amount: "4", taskId: t }));
  assert.equal(await signCloseConsent(payee, { domain, channelId: id, cumulativeAmount: 9n, deadline: 1_800_000_000n }), metamask(DEV_KEYS.freelancer, "CloseConsent", { channelId: id, cumulativeAmount: "9", deadline: "1800000000" }));
});

test("the domain is version 2: a version-1 signature does not recover to the signer", async () => {
  const v1 = { ...domain, version: "1" } as unknown as typeof domain;
  const sig = await signVoucher(payer, { domain: v1, channelId: id, cumulativeAmount: 1n });
  assert.notEqual(await recoverSigner(domain, "Voucher", { channelId: id, cumulativeAmount: 1n }, sig), payer.address);
  assert.notEqual(hashMessage(v1, "Voucher", { channelId: id, cumulativeAmount: 1n }), hashMessage(domain, "Voucher", { channelId: id, cumulativeAmount: 1n }));
});

test("signatures must be 65 bytes, v 27/28 and low s", async () => {
  const sig = await signVoucher(payer, { domain, channelId: id, cumulativeAmount: 1n });
  assert.equal(parseSignature(sig.toUpperCase().replace("0X", "0x")), sig);
  const s = BigInt(`0x${sig.slice(66, 130)}`);
  const v = Number.parseInt(sig.slice(130), 16);
  const high = `${sig.slice(0, 66)}${(N - s).toString(16).padStart(64, "0")}${(v === 27 ? 28 : 27).toString(16)}` as const;
  assert.throws(() => parseSignature(high), (e: unknown) => e instanceof VerificationError && /high-s/.test(e.shortMessage));
  assert.throws(() => parseSignature(sig.slice(0, 130)), /not 65 bytes/);
  assert.throws(() => parseSignature(`${sig.slice(0, 130)}01`), /v = 1/);
});

test("verifyReceipt checks payee, channel, task, amount and cumulative amount", async () => {
  const t = taskHash("t1");
  const receipt = { channelId: id, taskId: t, amount: 4n, cumulativeAmount: 9n, signature: await signReceipt(payee, { domain, channelId: id, cumulativeAmount: 9n, amount: 4n, taskId: t }) };
  const expected = { channelId: id, taskId: "t1", amount: 4n, cumulativeAmount: 9n };
  assert.equal(await verifyReceipt({ domain, payee: payee.address, receipt, expected }), receipt);
  const cases: [Partial<typeof expected>, RegExp][] = [
    [{ taskId: "t2" }, /wrong task/],
    [{ amount: 5n }, /wrong amount: it says 4, expected 5/],
    [{ cumulativeAmount: 10n }, /wrong cumulative amount: it says 9, expected 10/],
    [{ channelId: `0x${"cd".repeat(32)}` }, /wrong channel/],
  ];
  for (const [change, message] of cases) {
    await assert.rejects(verifyReceipt({ domain, payee: payee.address, receipt, expected: { ...expected, ...change } }), message);
  }
  await assert.rejects(verifyReceipt({ domain, payee: payer.address, receipt, expected }), /not signed by the freelancer/);
  // Signed fields changed after signing: the recovered signer is no longer the payee.
  await assert.rejects(verifyReceipt({ domain, payee: payee.address, receipt: { ...receipt, amount: 5n }, expected: { ...expected, amount: 5n } }), /not signed by the freelancer/);
});

test("verifyCloseConsent checks signer, channel, amount and deadline", async () => {
  const consent = { channelId: id, cumulativeAmount: 9n, deadline: 1000n, signature: await signCloseConsent(payee, { domain, channelId: id, cumulativeAmount: 9n, deadline: 1000n }) };
  const expected = { channelId: id, cumulativeAmount: 9n };
  await verifyCloseConsent({ domain, payee: payee.address, consent, expected, now: 1000n });
  await assert.rejects(verifyCloseConsent({ domain, payee: payee.address, consent, expected, now: 1001n }), /expired/);
  await assert.rejects(verifyCloseConsent({ domain, payee: payee.address, consent, expected: { ...expected, cumulativeAmount: 8n } }), /for 9, not the 8/);
  await assert.rejects(verifyCloseConsent({ domain, payee: payer.address, consent, expected }), /not signed by the freelancer/);
  await assert.rejects(verifyCloseConsent({ domain, payee: payee.address, consent: { ...consent, deadline: 2000n }, expected }), /not signed by the freelancer/);
});
