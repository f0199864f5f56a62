// Interop: the independent client (independent_client.js, written from docs/PROTOCOL.md only)
// against the built PaymentChannels bytecode on a fresh native anvil. Signatures come from
// MetaMask's @metamask/eth-sig-util, ethers and viem, and must agree byte for byte with each
// other and with the contract. Also checks the shared vector file tests/vectors/protocol_v2.json
// when it exists.
// Run: npm run test:interop  (node --test, Node 22; needs `npm run build` first)
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { AbiCoder, Contract, Interface, JsonRpcProvider, Wallet, getAddress, keccak256, parseEther, solidityPacked } from "ethers";
import {
  ChannelsContract,
  DOMAIN_NAME,
  DOMAIN_VERSION,
  ETH,
  PROTOCOL_ABI,
  STATUS,
  TYPEHASH_CONSTANT,
  TYPES,
  TYPE_STRINGS,
  channelIdOf,
  domainOf,
  hashWith,
  recoverSigner,
  signWith,
  taskHashOf,
  typeHashWith,
  typedData,
} from "./independent_client.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "../..");
const ANVIL = join(ROOT, "node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
const ARTIFACTS = join(ROOT, "artifacts/contracts");
const VECTORS = join(ROOT, "tests/vectors/protocol_v2.json");
const CHAIN_ID = 31337;
// anvil's well-known dev keys ("test test ... junk", accounts 0-3); the voucher signer is a key
// the client app generated itself and never funds
const KEYS = {
  deployer: "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
  payer: "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
  payee: "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
  stranger: "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
  voucherSigner: keccak256(Buffer.from("piecework interop voucher signer")),
};
const ERC20_ABI = ["function mint(address to, uint256 amount)", "function approve(address spender, uint256 amount) returns (bool)", "function balanceOf(address) view returns (uint256)"];

let anvil;
let provider;
let wallets;
let pc; // ChannelsContract as the deployer
let token;
let domain;

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

const artifact = (path) => JSON.parse(readFileSync(join(ARTIFACTS, path), "utf8"));
const rpc = (method, params = []) => provider.send(method, params);
const latestTimestamp = async () => BigInt((await provider.getBlock("latest")).timestamp);
const as = (role) => pc.connect(wallets[role]);
const addressOf = (role) => new Wallet(KEYS[role]).address;

/** Signs with all three libraries, checks they agree and recover to the signer; returns one. */
async function sign(role, primaryType, message) {
  const td = typedData(primaryType, domain, message);
  const sigs = await Promise.all(Object.values(signWith).map((f) => f(KEYS[role], td)));
  assert.equal(new Set(sigs).size, 1, `${primaryType}: eth-sig-util, ethers and viem signatures differ: ${sigs.join(" ")}`);
  assert.match(sigs[0], /^0x[0-9a-f]{130}$/);
  assert.equal(recoverSigner(td, sigs[0]), addressOf(role));
  return sigs[0];
}

const voucher = (role, channelId, cumulativeAmount) => sign(role, "Voucher", { channelId, cumulativeAmount });
const consent = (channelId, cumulativeAmount, deadline) => sign("payee", "CloseConsent", { channelId, cumulativeAmount, deadline });

async function rejectsWith(promise, name, check = () => {}) {
  await assert.rejects(promise, (e) => {
    assert.equal(e.revertName, name, `expected ${name}, got ${e.message}`);
    check(e.revertArgs);
    return true;
  });
}

before(async () => {
  const port = await freePort();
  anvil = spawn(ANVIL, ["--host", "127.0.0.1", "--port", String(port), "--chain-id", String(CHAIN_ID), "--silent"], {
    stdio: ["ignore", "ignore", "inherit"],
  });
  provider = new JsonRpcProvider(`http://127.0.0.1:${port}`, CHAIN_ID, { staticNetwork: true, cacheTimeout: -1, pollingInterval: 20 });
  provider.pollingInterval = 20;
  for (let i = 0; ; i++) {
    try {
      await provider.getBlockNumber();
      break;
    } catch (e) {
      if (i > 200) throw e;
      await new Promise((r) => setTimeout(r, 25));
    }
  }
  // plain wallets (pending nonce per send): the tests expect reverts, which would leave a
  // NonceManager's counter ahead of the chain
  wallets = Object.fromEntries(Object.entries(KEYS).map(([role, key]) => [role, new Wallet(key, provider)]));
  const deploy = async (a) => {
    const tx = await wallets.deployer.sendTransaction({ data: a.bytecode });
    return getAddress((await tx.wait()).contractAddress);
  };
  // first deployment of the first dev account: the address every anvil-based vector file uses
  const address = await deploy(artifact("PaymentChannels.sol/PaymentChannels.json"));
  pc = new ChannelsContract(address, wallets.deployer);
  token = new Contract(await deploy(artifact("test/mocks/Tokens.sol/TestStablecoin.json")), ERC20_ABI, wallets.deployer);
  domain = domainOf(CHAIN_ID, address);
  for (const role of ["payer", "stranger"]) {
    await (await token.mint(addressOf(role), 10n ** 12n)).wait();
    await (await token.connect(wallets[role]).approve(address, 2n ** 256n - 1n)).wait();
  }
});

after(() => {
  if (anvil && anvil.exitCode === null) anvil.kill("SIGKILL");
});

describe("the contract's interface is PROTOCOL.md's", () => {
  test("every function and event of PROTOCOL.md is in the built ABI with the same signature and outputs", () => {
    const built = new Interface(artifact("PaymentChannels.sol/PaymentChannels.json").abi);
    const ours = new Interface(PROTOCOL_ABI);
    ours.forEachFunction((f) => {
      const b = built.getFunction(f.selector);
      assert.ok(b, `missing ${f.format("full")}`);
      assert.equal(b.stateMutability, f.stateMutability, `${f.name} mutability`);
      assert.deepEqual(b.outputs.map((o) => o.format("sighash")), f.outputs.map((o) => o.format("sighash")), `${f.name} output types`);
    });
    ours.forEachEvent((e) => {
      const b = built.getEvent(e.topicHash);
      assert.ok(b, `missing ${e.format("full")}`);
      assert.equal(b.format("full"), e.format("full"), "event names, types and indexed flags");
    });
    ours.forEachError((e) => assert.ok(built.getError(e.selector), `missing error ${e.format("full")}`));
    // the struct's field names and order are part of the protocol (clients read them by name)
    const fields = (i) => i.getFunction("getChannel").outputs[0].components.map((c) => `${c.type} ${c.name}`);
    assert.deepEqual(fields(built), fields(ours));
  });

  test("eip712Domain() is exactly the protocol's domain (EIP-5267)", async () => {
    const [fields, name, version, chainId, verifyingContract, salt, extensions] = await pc.contract.eip712Domain();
    assert.equal(fields, "0x0f"); // name, version, chainId, verifyingContract
    assert.deepEqual(
      { name, version, chainId, verifyingContract: getAddress(verifyingContract), salt, extensions: [...extensions] },
      { name: DOMAIN_NAME, version: DOMAIN_VERSION, chainId: BigInt(CHAIN_ID), verifyingContract: pc.address, salt: `0x${"0".repeat(64)}`, extensions: [] },
    );
  });
});

describe("every EIP-712 type hashes alike in eth-sig-util, ethers, viem and the contract", () => {
  const id = keccak256(Buffer.from("a channel"));
  const samples = {
    Voucher: { channelId: id, cumulativeAmount: "123456789012345678901234567890" },
    Receipt: { channelId: id, cumulativeAmount: "900719925474099300", amount: "7", taskId: taskHashOf("logo-42 ✓") },
    CloseConsent: { channelId: id, cumulativeAmount: "5", deadline: "18446744073709551615" },
    CloseRequest: { channelId: id, cumulativeAmount: "0" },
    Access: { channelId: id, expires: "1767225600" },
  };

  for (const primaryType of Object.keys(TYPES)) {
    test(primaryType, async () => {
      const onChain = await pc.contract[TYPEHASH_CONSTANT[primaryType]]();
      assert.equal(typeHashWith.fromString(primaryType), onChain, `the contract's ${TYPEHASH_CONSTANT[primaryType]} is keccak256("${TYPE_STRINGS[primaryType]}")`);
      assert.equal(typeHashWith.ethSigUtil(primaryType), onChain, "eth-sig-util type hash");
      assert.equal(typeHashWith.ethers(primaryType), onChain, "ethers type hash");

      // the digest from first principles with the contract's own type hash and domain separator
      const td = typedData(primaryType, domain, samples[primaryType]);
      const fields = TYPES[primaryType];
      const structHash = keccak256(AbiCoder.defaultAbiCoder().encode(["bytes32", ...fields.map((f) => f.type)], [onChain, ...fields.map((f) => td.message[f.name])]));
      const domainSeparator = keccak256(AbiCoder.defaultAbiCoder().encode(
        ["bytes32", "bytes32", "bytes32", "uint256", "address"],
        [keccak256(Buffer.from("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")), keccak256(Buffer.from(DOMAIN_NAME)), keccak256(Buffer.from(DOMAIN_VERSION)), CHAIN_ID, pc.address],
      ));
      const digest = keccak256(solidityPacked(["bytes2", "bytes32", "bytes32"], ["0x1901", domainSeparator, structHash]));
      for (const [lib, hash] of Object.entries(hashWith)) assert.equal(hash(td), digest, `${lib} digest`);
      if (primaryType === "Voucher") assert.equal(await pc.contract.hashVoucher(id, BigInt(td.message.cumulativeAmount)), digest, "hashVoucher");
      if (primaryType === "CloseConsent") {
        assert.equal(await pc.contract.hashCloseConsent(id, BigInt(td.message.cumulativeAmount), BigInt(td.message.deadline)), digest, "hashCloseConsent");
      }
      // and the three libraries' signatures are byte-identical
      await sign("payer", primaryType, samples[primaryType]);
    });
  }

  test("a short bytes32 is refused before hashing (eth-sig-util would right-pad it)", () => {
    assert.throws(() => typedData("Voucher", domain, { channelId: "0x1234", cumulativeAmount: "1" }), /32 bytes/);
  });
});

describe("a channel's life, driven by the independent client", () => {
  const deposit = parseEther("1");
  let id;
  let salt;

  test("open (ETH) with a voucher signer: the id is known before mining", async () => {
    salt = keccak256(Buffer.from("interop salt 1"));
    id = channelIdOf(addressOf("payer"), addressOf("payee"), ETH, salt);
    assert.equal(await pc.contract.channelId(addressOf("payer"), addressOf("payee"), ETH, salt), id);
    const receipt = await as("payer").send("open", [addressOf("payee"), ETH, deposit, 3600n, salt, addressOf("voucherSigner")], { value: deposit });
    const [ev] = as("payer").events(receipt, "ChannelOpened");
    assert.deepEqual(
      [ev.channelId, ev.payer, ev.payee, ev.token, ev.deposit, ev.challengePeriod, ev.voucherSigner],
      [id, addressOf("payer"), addressOf("payee"), ETH, deposit, 3600n, addressOf("voucherSigner")],
    );
    assert.deepEqual(await pc.getChannel(id), {
      payer: addressOf("payer"), payee: addressOf("payee"), token: ETH, deposit, claimed: 0n,
      challengePeriod: 3600n, closesAt: 0n, status: STATUS.Open, voucherSigner: addressOf("voucherSigner"),
    });
  });

  test("vouchers from the voucher signer and from the payer both claim; receipts verify", async () => {
    // per task the client app's key signs; the payee answers with a receipt for that task
    const tasks = [["logo-1", parseEther("0.1")], ["logo-2 ✓", parseEther("0.15")]];
    let cumulative = 0n;
    let latest;
    for (const [taskId, amount] of tasks) {
      cumulative += amount;
      latest = await voucher("voucherSigner", id, cumulative); // checks all three libraries agree
      // sign() also checks that the receipt recovers to the payee
      await sign("payee", "Receipt", { channelId: id, cumulativeAmount: cumulative, amount, taskId: taskHashOf(taskId) });
    }
    const before = await provider.getBalance(addressOf("payee"));
    const r = await as("stranger").send("claim", [id, cumulative, latest]);
    const [claimed] = as("stranger").events(r, "Claimed");
    assert.deepEqual([claimed.cumulativeAmount, claimed.paid], [cumulative, cumulative]);
    assert.equal(await provider.getBalance(addressOf("payee")), before + cumulative, "a watchtower's claim pays the payee");
    // the payer's own voucher still works on a channel with a voucher signer
    await as("stranger").send("claim", [id, parseEther("0.3"), await voucher("payer", id, parseEther("0.3"))]);
    assert.equal((await pc.getChannel(id)).claimed, parseEther("0.3"));
    // a stale voucher pays nothing and says so
    await rejectsWith(as("stranger").send("claim", [id, cumulative, await voucher("voucherSigner", id, cumulative)]), "NothingToClaim",
      (a) => assert.deepEqual(a, [id, cumulative, parseEther("0.3")]));
    // a stranger's voucher never pays
    await rejectsWith(as("stranger").send("claim", [id, parseEther("0.5"), await voucher("stranger", id, parseEther("0.5"))]), "InvalidSignature",
      (a) => assert.deepEqual(a, [id, addressOf("payer"), addressOf("stranger")]));
  });

  test("claimMany over an ETH and an ERC-20 channel, one voucher from each key", async () => {
    const tokSalt = keccak256(Buffer.from("interop salt token"));
    await as("payer").send("open", [addressOf("payee"), await token.getAddress(), 10n ** 9n, 3600n, tokSalt, addressOf("voucherSigner")]);
    const tokId = channelIdOf(addressOf("payer"), addressOf("payee"), await token.getAddress(), tokSalt);
    const tokBefore = await token.balanceOf(addressOf("payee"));
    const claims = [
      { channelId: id, cumulativeAmount: parseEther("0.4"), payerSignature: await voucher("payer", id, parseEther("0.4")) },
      { channelId: tokId, cumulativeAmount: 250_000n, payerSignature: await voucher("voucherSigner", tokId, 250_000n) },
    ];
    const r = await as("payee").send("claimMany", [claims]);
    assert.equal(as("payee").events(r, "Claimed").length, 2);
    assert.equal((await pc.getChannel(id)).claimed, parseEther("0.4"));
    assert.equal(await token.balanceOf(addressOf("payee")), tokBefore + 250_000n);
  });

  test("an expired CloseConsent reverts ConsentExpired; one at exactly its deadline closes", async () => {
    const amount = parseEther("0.6");
    const expiredDeadline = (await latestTimestamp()) + 60n;
    const expired = await consent(id, amount, expiredDeadline);
    await rpc("evm_increaseTime", [3600]);
    await rpc("evm_mine");
    await rejectsWith(as("payer").send("cooperativeClose", [id, amount, expiredDeadline, await voucher("voucherSigner", id, amount), expired]),
      "ConsentExpired", (a) => {
        assert.equal(a[0], id);
        assert.equal(a[1], expiredDeadline);
        assert.ok(a[2] > expiredDeadline);
      });

    // a fresh consent, mined in a block whose timestamp is the deadline itself
    const deadline = (await latestTimestamp()) + 600n;
    const c = await consent(id, amount, deadline);
    const v = await voucher("voucherSigner", id, amount);
    const payerBefore = await provider.getBalance(addressOf("payer"));
    const payeeBefore = await provider.getBalance(addressOf("payee"));
    await rpc("evm_setNextBlockTimestamp", [Number(deadline)]);
    const r = await as("stranger").send("cooperativeClose", [id, amount, deadline, v, c], { gasLimit: 300_000n });
    assert.equal(BigInt((await provider.getBlock(r.blockNumber)).timestamp), deadline);
    const [closed] = as("stranger").events(r, "ChannelClosed");
    assert.deepEqual([closed.payeeTotal, closed.payerRefund], [amount, deposit - amount]);
    assert.equal(await provider.getBalance(addressOf("payee")), payeeBefore + amount - parseEther("0.4"));
    assert.equal(await provider.getBalance(addressOf("payer")), payerBefore + deposit - amount);
    const ch = await pc.getChannel(id);
    assert.equal(ch.status, STATUS.Closed);
    // the id can never be reused
    await rejectsWith(as("payer").send("open", [addressOf("payee"), ETH, 1n, 3600n, salt, addressOf("voucherSigner")], { value: 1n }),
      "ChannelIdUsed", (a) => assert.deepEqual(a, [id]));
  });

  test("startClose, then anyone settles after the challenge period", async () => {
    const s = keccak256(Buffer.from("interop salt 2"));
    const cid = channelIdOf(addressOf("payer"), addressOf("payee"), ETH, s);
    await as("payer").send("open", [addressOf("payee"), ETH, deposit, 3600n, s, ETH], { value: deposit });
    await as("payee").send("claim", [cid, 1000n, await voucher("payer", cid, 1000n)]);
    await rejectsWith(as("stranger").send("startClose", [cid]), "NotPayer");
    const r = await as("payer").send("startClose", [cid]);
    const [started] = as("payer").events(r, "CloseStarted");
    assert.equal((await pc.getChannel(cid)).status, STATUS.Closing);
    await rejectsWith(as("stranger").send("settle", [cid]), "ChallengePeriodNotOver", (a) => assert.equal(a[1], started.closesAt));
    await rpc("evm_increaseTime", [3600]);
    await rpc("evm_mine");
    const payerBefore = await provider.getBalance(addressOf("payer"));
    const settled = await as("stranger").send("settle", [cid]);
    const [closed] = as("stranger").events(settled, "ChannelClosed");
    assert.deepEqual([closed.payeeTotal, closed.payerRefund], [1000n, deposit - 1000n]);
    assert.equal(await provider.getBalance(addressOf("payer")), payerBefore + deposit - 1000n);
    assert.equal((await pc.getChannel(cid)).status, STATUS.Closed);
  });
});

describe("shared vectors (tests/vectors/protocol_v2.json, generated by the Python side)", () => {
  test("every case's digest and signature from eth-sig-util, ethers and viem", async (t) => {
    if (!existsSync(VECTORS)) {
      t.skip(`${VECTORS} does not exist on this branch yet (scripts/make_vectors.py on the Python side writes it)`);
      return;
    }
    const file = JSON.parse(readFileSync(VECTORS, "utf8"));
    const vDomain = domainOf(file.domain.chainId, file.domain.verifyingContract);
    assert.deepEqual({ name: file.domain.name, version: String(file.domain.version) }, { name: DOMAIN_NAME, version: DOMAIN_VERSION });
    assert.ok(file.cases.length > 0, "no cases");
    const onOurContract = Number(file.domain.chainId) === CHAIN_ID && getAddress(file.domain.verifyingContract) === pc.address;
    const seen = new Set();
    for (const [i, c] of file.cases.entries()) {
      const where = `case ${i} (${c.type} by ${c.signer})`;
      seen.add(c.type);
      const td = typedData(c.type, vDomain, c.message);
      for (const [lib, hash] of Object.entries(hashWith)) assert.equal(hash(td), c.digest.toLowerCase(), `${where}: ${lib} digest`);
      const key = file.keys[c.signer];
      assert.ok(key, `${where}: no key for role ${c.signer}`);
      for (const [lib, signer] of Object.entries(signWith)) assert.equal(await signer(key, td), c.signature.toLowerCase(), `${where}: ${lib} signature`);
      assert.equal(recoverSigner(td, c.signature), new Wallet(key).address, `${where}: recovers to ${c.signer}`);
      if (file.addresses?.[c.signer]) assert.equal(getAddress(file.addresses[c.signer]), new Wallet(key).address, `${where}: address of ${c.signer}`);
      if (c.type === "Receipt" && c.task_id !== undefined) assert.equal(taskHashOf(c.task_id), c.message.taskId.toLowerCase(), `${where}: taskId = keccak256(utf8(task_id))`);
      if (onOurContract && c.type === "Voucher") assert.equal(await pc.contract.hashVoucher(c.message.channelId, BigInt(c.message.cumulativeAmount)), c.digest.toLowerCase(), `${where}: hashVoucher`);
      if (onOurContract && c.type === "CloseConsent") {
        assert.equal(await pc.contract.hashCloseConsent(c.message.channelId, BigInt(c.message.cumulativeAmount), BigInt(c.message.deadline)), c.digest.toLowerCase(), `${where}: hashCloseConsent`);
      }
    }
    assert.deepEqual([...seen].sort(), Object.keys(TYPES).sort(), "the file covers every type");
  });
});
