// One client session against a running payee service, driven only by the independent client
// (independent_client.js, written from docs/PROTOCOL.md): no project code, no project ABI.
//
//   node tests/js/service_session.js   with RPC_URL, SERVICE_URL, PAYER_KEY, OPERATOR_TOKEN set
//
// It opens an ETH channel with a voucher signer made here, has the freelancer (operator token)
// request three tasks, pays what is asked with the voucher signer, verifies every receipt
// against the payee, reads tasks and receipts with an `Access` signature, asks for a close
// consent with a `CloseRequest` and closes cooperatively on chain. It prints one JSON line with
// what it saw; tests/test_packaging.py runs it against the service installed from the wheel.
import { randomBytes } from "node:crypto";
import { JsonRpcProvider, NonceManager, Wallet, getAddress, hexlify, parseEther } from "ethers";
import {
  ChannelsContract, ETH, PayeeService, ProblemError, channelIdOf, domainOf, recoverSigner,
  signWith, taskHashOf, typedData,
} from "./independent_client.js";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

const provider = new JsonRpcProvider(env("RPC_URL"), undefined, { staticNetwork: true, pollingInterval: 100 });
const payer = new NonceManager(new Wallet(env("PAYER_KEY"), provider));
const service = new PayeeService(env("SERVICE_URL"));
const operator = { authorization: `Bearer ${env("OPERATOR_TOKEN")}` };
const signerKey = hexlify(randomBytes(32));
const voucherSigner = new Wallet(signerKey).address;

/** Retries while the service has not yet seen the channel's confirmed open (404), mining blocks. */
async function whenKnown(action) {
  for (let attempt = 0; ; attempt += 1) {
    try {
      return await action();
    } catch (e) {
      if (!(e instanceof ProblemError) || e.status !== 404 || attempt >= 50) throw e;
      await provider.send("evm_mine", []);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

const info = await service.info();
if (info.version !== "2") throw new Error(`service speaks protocol ${info.version}, not 2`);
const contract = new ChannelsContract(info.contract, payer);
const domain = await contract.domain();
const expected = domainOf(info.chain_id, info.contract);
if (JSON.stringify(domain) !== JSON.stringify(expected)) throw new Error(`domain ${JSON.stringify(domain)} is not ${JSON.stringify(expected)}`);
const payee = getAddress(info.payees[0]);
if (!info.tokens.some((t) => BigInt(t.address) === 0n)) throw new Error("the service does not accept ETH");

const sign = (type, message) => signWith.viem(signerKey, typedData(type, domain, message));
const payerAddress = await payer.getAddress();
const salt = hexlify(randomBytes(32));
const id = channelIdOf(payerAddress, payee, ETH, salt);
const deposit = parseEther("0.01");
await contract.send("open", [payee, ETH, deposit, BigInt(info.min_challenge_period), salt, voucherSigner], { value: deposit });

const amounts = [1_000_000_000_000n, 2_500_000_000_000n, 7n];
const taskIds = amounts.map((_, i) => `independent-${salt.slice(2, 10)}-${i}`);
for (const [i, taskId] of taskIds.entries()) {
  await whenKnown(() => service.request("POST", `/v1/channels/${id}/tasks`, {
    body: { task_id: taskId, amount: String(amounts[i]), description: `task ${i} from the independent client` },
    headers: operator,
  }));
}

const expires = Math.floor(Date.now() / 1000) + 600;
const access = { expires, signature: await sign("Access", { channelId: id, expires }) };
const requested = await service.tasks(id, access, "requested");
let cumulative = 0n;
const receipts = [];
for (const task of requested) {
  const amount = BigInt(task.amount);
  cumulative += amount;
  const signature = await sign("Voucher", { channelId: id, cumulativeAmount: cumulative });
  const receipt = await service.pay(id, { taskId: task.task_id, amount, cumulativeAmount: cumulative, signature });
  const message = { channelId: id, cumulativeAmount: cumulative, amount, taskId: taskHashOf(task.task_id) };
  if (receipt.task_id !== taskHashOf(task.task_id) || BigInt(receipt.amount) !== amount || BigInt(receipt.cumulative_amount) !== cumulative) {
    throw new Error(`receipt ${JSON.stringify(receipt)} is not for ${task.task_id}`);
  }
  if (recoverSigner(typedData("Receipt", domain, message), receipt.signature) !== payee) throw new Error("receipt not signed by the payee");
  receipts.push(receipt);
}
const stored = await service.receipts(id, access);
const paid = await service.tasks(id, access, "paid");

const closeSignature = await sign("CloseRequest", { channelId: id, cumulativeAmount: cumulative });
const consent = await service.requestClose(id, { cumulativeAmount: cumulative, signature: closeSignature });
const voucher = await sign("Voucher", { channelId: id, cumulativeAmount: cumulative });
const closed = await contract.send("cooperativeClose", [id, cumulative, BigInt(consent.deadline), voucher, consent.signature]);
const [event] = contract.events(closed, "ChannelClosed");

console.log(JSON.stringify({
  channel_id: id,
  requested: requested.map((t) => t.task_id),
  receipts_verified: receipts.length,
  receipts_listed: stored.receipts.length,
  paid_tasks: paid.length,
  cumulative: cumulative.toString(),
  consent_amount: consent.cumulative_amount,
  payee_total: event.payeeTotal.toString(),
  payer_refund: event.payerRefund.toString(),
}));
provider.destroy();
