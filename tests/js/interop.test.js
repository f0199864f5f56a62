// Interop test: an independent client written only from shared/PROTOCOL.md (human-readable ABI
// below, viem for transactions, MetaMask's @metamask/eth-sig-util signTypedData V4 for
// signatures) against the built PaymentChannels artifact on a fresh native anvil.
// Run: npm run test:interop  (node --test tests/js/, Node 22; needs `npm run build` first)
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { SignTypedDataVersion, recoverTypedSignature, signTypedData } from "@metamask/eth-sig-util";
import {
  createPublicClient,
  createWalletClient,
  encodeAbiParameters,
  getAddress,
  http,
  keccak256,
  parseAbi,
  parseEther,
  parseEventLogs,
  toHex,
} from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { foundry } from "viem/chains";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "../..");
const ANVIL = join(ROOT, "node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
const ARTIFACT = join(ROOT, "artifacts/contracts/PaymentChannels.sol/PaymentChannels.json");
// anvil's well-known dev keys (accounts 0 and 1 of "test test ... junk")
const PAYER_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const PAYEE_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
const ETH = "0x0000000000000000000000000000000000000000";

// The protocol's public interface, transcribed from PROTOCOL.md.
const ABI = parseAbi([
  "struct Channel { address payer; address payee; address token; uint256 deposit; uint256 claimed; uint64 challengePeriod; uint64 closesAt; uint8 status; }",
  "function open(address payee, address token, uint256 amount, uint64 challengePeriod, bytes32 salt) payable returns (bytes32 channelId)",
  "function claim(bytes32 channelId, uint256 cumulativeAmount, bytes payerSignature)",
  "function cooperativeClose(bytes32 channelId, uint256 cumulativeAmount, bytes payerSignature, bytes payeeSignature)",
  "function getChannel(bytes32 channelId) view returns (Channel)",
  "function channelId(address payer, address payee, address token, bytes32 salt) pure returns (bytes32)",
  "function eip712Domain() view returns (bytes1 fields, string name, string version, uint256 chainId, address verifyingContract, bytes32 salt, uint256[] extensions)",
  "event ChannelOpened(bytes32 indexed channelId, address indexed payer, address indexed payee, address token, uint256 deposit, uint64 challengePeriod)",
  "event Claimed(bytes32 indexed channelId, uint256 cumulativeAmount, uint256 paid)",
  "event ChannelClosed(bytes32 indexed channelId, uint256 payeeTotal, uint256 payerRefund)",
]);

const EIP712_DOMAIN = [
  { name: "name", type: "string" },
  { name: "version", type: "string" },
  { name: "chainId", type: "uint256" },
  { name: "verifyingContract", type: "address" },
];
const AMOUNT_MSG = [
  { name: "channelId", type: "bytes32" },
  { name: "cumulativeAmount", type: "uint256" },
];

let anvil;
let pub;
let payerW;
let payeeW;
let contract;
const payer = privateKeyToAccount(PAYER_KEY);
const payee = privateKeyToAccount(PAYEE_KEY);

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** eth_signTypedData_v4 exactly as MetaMask does it; amounts travel as decimal strings. */
function signV4(privateKeyHex, primaryType, fields, message) {
  return signTypedData({
    privateKey: Buffer.from(privateKeyHex.slice(2), "hex"),
    version: SignTypedDataVersion.V4,
    data: {
      types: { EIP712Domain: EIP712_DOMAIN, [primaryType]: fields },
      primaryType,
      domain: { name: "PaymentChannels", version: "1", chainId: 31337, verifyingContract: contract },
      message,
    },
  });
}

const voucher = (id, amount) => signV4(PAYER_KEY, "Voucher", AMOUNT_MSG, { channelId: id, cumulativeAmount: amount.toString() });
const closeConsent = (id, amount) =>
  signV4(PAYEE_KEY, "CloseConsent", AMOUNT_MSG, { channelId: id, cumulativeAmount: amount.toString() });

async function mined(hash) {
  const r = await pub.waitForTransactionReceipt({ hash, pollingInterval: 5 });
  assert.equal(r.status, "success");
  return r;
}

const gasCost = (r) => r.gasUsed * r.effectiveGasPrice;

before(async () => {
  const port = await freePort();
  anvil = spawn(ANVIL, ["--host", "127.0.0.1", "--port", String(port), "--chain-id", "31337", "--silent"], {
    stdio: ["ignore", "ignore", "inherit"],
  });
  const url = `http://127.0.0.1:${port}`;
  const transport = http(url);
  pub = createPublicClient({ chain: foundry, transport, pollingInterval: 5 });
  payerW = createWalletClient({ account: payer, chain: foundry, transport });
  payeeW = createWalletClient({ account: payee, chain: foundry, transport });
  for (let i = 0; ; i++) {
    try {
      assert.equal(await pub.getChainId(), 31337);
      break;
    } catch (e) {
      if (i > 200) throw e;
      await new Promise((r) => setTimeout(r, 25));
    }
  }
  const { bytecode } = JSON.parse(readFileSync(ARTIFACT, "utf8"));
  const r = await mined(await payerW.deployContract({ abi: ABI, bytecode }));
  contract = getAddress(r.contractAddress);
});

after(() => {
  if (anvil && anvil.exitCode === null) anvil.kill("SIGKILL");
});

test("eip712Domain() is exactly the protocol's domain (EIP-5267)", async () => {
  const [fields, name, version, chainId, verifyingContract, salt, extensions] = await pub.readContract({
    address: contract,
    abi: ABI,
    functionName: "eip712Domain",
  });
  assert.equal(fields, "0x0f"); // name, version, chainId, verifyingContract
  assert.equal(name, "PaymentChannels");
  assert.equal(version, "1");
  assert.equal(chainId, 31337n);
  assert.equal(getAddress(verifyingContract), contract);
  assert.equal(salt, toHex(0, { size: 32 }));
  assert.deepEqual(extensions, []);
});

test("open (ETH), claim with vouchers, cooperativeClose with a CloseConsent", async () => {
  const salt = keccak256(toHex("interop-test-salt"));
  const deposit = parseEther("1");
  // the client knows the id before mining
  const id = keccak256(
    encodeAbiParameters([{ type: "address" }, { type: "address" }, { type: "address" }, { type: "bytes32" }], [
      payer.address,
      payee.address,
      ETH,
      salt,
    ]),
  );
  assert.equal(
    await pub.readContract({ address: contract, abi: ABI, functionName: "channelId", args: [payer.address, payee.address, ETH, salt] }),
    id,
  );

  const opened = await mined(
    await payerW.writeContract({ address: contract, abi: ABI, functionName: "open", args: [payee.address, ETH, deposit, 3600n, salt], value: deposit }),
  );
  const [ev] = parseEventLogs({ abi: ABI, logs: opened.logs, eventName: "ChannelOpened" });
  assert.equal(ev.args.channelId, id);
  assert.equal(ev.args.deposit, deposit);
  assert.equal(ev.args.challengePeriod, 3600n);
  let ch = await pub.readContract({ address: contract, abi: ABI, functionName: "getChannel", args: [id] });
  assert.deepEqual(
    { payer: ch.payer, payee: ch.payee, token: ch.token, deposit: ch.deposit, claimed: ch.claimed, cp: ch.challengePeriod, closesAt: ch.closesAt, status: ch.status },
    { payer: payer.address, payee: payee.address, token: ETH, deposit, claimed: 0n, cp: 3600n, closesAt: 0n, status: 1 },
  );

  // pay per task: cumulative vouchers; the payee answers with receipts (off-chain only)
  const v1 = voucher(id, parseEther("0.1"));
  const v2 = voucher(id, parseEther("0.25"));
  assert.match(v2, /^0x[0-9a-f]{130}$/);
  const receipt = signV4(PAYEE_KEY, "Receipt", [...AMOUNT_MSG, { name: "taskId", type: "bytes32" }], {
    channelId: id,
    cumulativeAmount: parseEther("0.25").toString(),
    taskId: keccak256(toHex("task-2")),
  });
  assert.equal(
    recoverTypedSignature({
      version: SignTypedDataVersion.V4,
      signature: receipt,
      data: {
        types: { EIP712Domain: EIP712_DOMAIN, Receipt: [...AMOUNT_MSG, { name: "taskId", type: "bytes32" }] },
        primaryType: "Receipt",
        domain: { name: "PaymentChannels", version: "1", chainId: 31337, verifyingContract: contract },
        message: { channelId: id, cumulativeAmount: parseEther("0.25").toString(), taskId: keccak256(toHex("task-2")) },
      },
    }),
    payee.address.toLowerCase(),
  );
  void v1;

  // the payee claims the latest voucher
  const payeeBefore = await pub.getBalance({ address: payee.address });
  const claimed = await mined(
    await payeeW.writeContract({ address: contract, abi: ABI, functionName: "claim", args: [id, parseEther("0.25"), v2] }),
  );
  const [cl] = parseEventLogs({ abi: ABI, logs: claimed.logs, eventName: "Claimed" });
  assert.equal(cl.args.paid, parseEther("0.25"));
  assert.equal(await pub.getBalance({ address: payee.address }), payeeBefore + parseEther("0.25") - gasCost(claimed));

  // a stale voucher now pays nothing and reverts
  await assert.rejects(
    payeeW.writeContract({ address: contract, abi: ABI, functionName: "claim", args: [id, parseEther("0.1"), v1] }),
  );

  // cooperative close at 0.4: the payee's CloseConsent + the payer's voucher, submitted by the payer
  const finalAmount = parseEther("0.4");
  const payerBefore = await pub.getBalance({ address: payer.address });
  const payeeBefore2 = await pub.getBalance({ address: payee.address });
  const closed = await mined(
    await payerW.writeContract({
      address: contract,
      abi: ABI,
      functionName: "cooperativeClose",
      args: [id, finalAmount, voucher(id, finalAmount), closeConsent(id, finalAmount)],
    }),
  );
  const [cc] = parseEventLogs({ abi: ABI, logs: closed.logs, eventName: "ChannelClosed" });
  assert.equal(cc.args.payeeTotal, finalAmount);
  assert.equal(cc.args.payerRefund, deposit - finalAmount);
  assert.equal(await pub.getBalance({ address: payee.address }), payeeBefore2 + parseEther("0.15"));
  assert.equal(await pub.getBalance({ address: payer.address }), payerBefore + parseEther("0.6") - gasCost(closed));
  assert.equal(await pub.getBalance({ address: contract }), 0n);
  ch = await pub.readContract({ address: contract, abi: ABI, functionName: "getChannel", args: [id] });
  assert.equal(ch.status, 3);
  assert.equal(ch.payer, payer.address);

  // the id can never be reused
  await assert.rejects(
    payerW.writeContract({ address: contract, abi: ABI, functionName: "open", args: [payee.address, ETH, 1n, 3600n, salt], value: 1n }),
  );
});
