// The shared vectors tie this SDK to the Python implementation: the Python side writes
// tests/vectors/protocol_v2.json (digests and signatures from channel/signing.py); here every
// case must hash to the same digest, recover to the same signer, and re-sign byte-identically.
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import type { Hex } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { type MessageOf, type MessageType, hashMessage, parseAddress, pieceworkDomain, pieceworkTypes, recoverSigner, signAccess, signCloseConsent, signCloseRequest, signReceipt, signVoucher, taskHash } from "../src/sdk/index.ts";
import { ROOT } from "./support/chain.ts";

const FILE = join(ROOT, "tests/vectors/protocol_v2.json");
const missing = !existsSync(FILE);

type Case = { type: MessageType; signer: string; message: Record<string, string>; task_id?: string; digest: Hex; signature: Hex };
type Vectors = { domain: { name: string; version: string; chainId: number | string; verifyingContract: string }; keys: Record<string, Hex>; addresses?: Record<string, string>; cases: Case[] };

function typedMessage<T extends MessageType>(type: T, raw: Record<string, string>): MessageOf[T] {
  const out: Record<string, unknown> = {};
  for (const { name, type: solidity } of pieceworkTypes[type]) {
    const value = raw[name];
    assert.equal(typeof value, "string", `${type}.${name} missing in the vector`);
    out[name] = solidity.startsWith("uint") ? BigInt(value!) : value;
  }
  assert.deepEqual(Object.keys(raw).sort(), Object.keys(out).sort(), `${type} has exactly the protocol's fields`);
  return out as MessageOf[T];
}

const signers = {
  Voucher: signVoucher,
  Receipt: signReceipt,
  CloseConsent: signCloseConsent,
  CloseRequest: signCloseRequest,
  Access: signAccess,
} as const;

test(
  "shared vectors from the Python side: same digests, signers and signatures",
  { skip: missing ? "tests/vectors/protocol_v2.json is not on this branch yet (the Python side, branch v2-py, generates it)" : false },
  async () => {
    const vectors = JSON.parse(readFileSync(FILE, "utf8")) as Vectors;
    assert.equal(vectors.domain.name, "PaymentChannels");
    assert.equal(vectors.domain.version, "2");
    const domain = pieceworkDomain(BigInt(vectors.domain.chainId), parseAddress(vectors.domain.verifyingContract));
    for (const [role, address] of Object.entries(vectors.addresses ?? {})) {
      assert.equal(privateKeyToAccount(vectors.keys[role]!).address, parseAddress(address), `address of ${role}`);
    }
    const types = new Set(vectors.cases.map((c) => c.type));
    for (const type of Object.keys(pieceworkTypes)) assert.ok(types.has(type as MessageType), `the vectors cover ${type}`);
    for (const [i, c] of vectors.cases.entries()) {
      const where = `case ${i} (${c.type})`;
      const key = vectors.keys[c.signer];
      assert.ok(key, `${where}: key for role ${c.signer}`);
      const account = privateKeyToAccount(key);
      const message = typedMessage(c.type, c.message);
      assert.equal(hashMessage(domain, c.type, message), c.digest.toLowerCase(), `${where}: digest`);
      assert.equal(await recoverSigner(domain, c.type, message, c.signature), account.address, `${where}: signer`);
      const sign = signers[c.type] as (s: typeof account, p: object) => Promise<Hex>;
      assert.equal(await sign(account, { domain, ...message }), c.signature.toLowerCase(), `${where}: signature`);
      if (c.type === "Receipt") {
        assert.equal(typeof c.task_id, "string", `${where}: task_id string`);
        assert.equal(taskHash(c.task_id!), (message as MessageOf["Receipt"]).taskId.toLowerCase(), `${where}: taskId = keccak256(utf8(task_id))`);
      }
    }
  },
);
