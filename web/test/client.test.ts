import assert from "node:assert/strict";
import { beforeEach, describe, test } from "node:test";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import {
  type PayerChannel,
  InvalidResponseError,
  PieceworkClient,
  ProblemError,
  ServiceUnreachableError,
  UntrustedStateError,
  VerificationError,
  channelId,
  createAccess,
  pieceworkDomain,
  plainMessage,
  randomSalt,
  signReceipt,
  signVoucher,
  taskHash,
} from "../src/sdk/index.ts";
import { DEV_KEYS } from "./support/chain.ts";
import { ServiceTwin } from "./support/serviceTwin.ts";

const payer = privateKeyToAccount(DEV_KEYS.client);
const payee = privateKeyToAccount(DEV_KEYS.freelancer);
const stranger = privateKeyToAccount(DEV_KEYS.bystander);
const domain = pieceworkDomain(31337, "0x5FbDB2315678afecb367f032d93F642f64180aa3");

let voucherSigner: ReturnType<typeof privateKeyToAccount>;
let channel: PayerChannel;
let twin: ServiceTwin;
let client: PieceworkClient;
let access: ReturnType<typeof createAccess>;

beforeEach(() => {
  voucherSigner = privateKeyToAccount(generatePrivateKey());
  const id = channelId({ payer: payer.address, payee: payee.address, token: "0x0000000000000000000000000000000000000000", salt: randomSalt() });
  channel = { domain, channelId: id, payer: payer.address, payee: payee.address, voucherSigner: voucherSigner.address, deposit: 1000n };
  twin = new ServiceTwin(domain, payee, { channelId: id, payer: payer.address, payee: payee.address, voucherSigner: voucherSigner.address, deposit: 1000n });
  client = new PieceworkClient({ baseUrl: "http://service.test/", fetch: twin.fetch });
  access = createAccess({ domain, signer: voucherSigner });
});

describe("pay", () => {
  test("signs the next cumulative voucher with the voucher signer and returns the verified receipt", async () => {
    const stored: bigint[] = [];
    const r1 = await client.pay({ channel, signer: voucherSigner, taskId: "t1", amount: 30n, previous: 0n, access, onVoucher: (v) => void stored.push(v.cumulativeAmount) });
    const r2 = await client.pay({ channel, signer: voucherSigner, taskId: "t2", amount: 12n, previous: r1.cumulativeAmount, access });
    assert.equal(r1.cumulativeAmount, 30n);
    assert.equal(r2.cumulativeAmount, 42n);
    assert.equal(r2.receipt.amount, 12n);
    assert.equal(r2.receipt.taskId, taskHash("t2"));
    assert.deepEqual(stored, [30n]);
    assert.deepEqual(twin.requests.at(-1)?.body, { task_id: "t2", amount: "12", cumulative_amount: "42", signature: twin.payments[1]!.voucher });
  });

  const forgeries: [string, (r: Record<string, string>) => Record<string, string>, RegExp][] = [
    ["amount", (r) => ({ ...r, amount: "1" }), /wrong amount/],
    ["cumulative amount", (r) => ({ ...r, cumulative_amount: "999" }), /wrong cumulative amount/],
    ["task", (r) => ({ ...r, task_id: taskHash("other") }), /wrong task/],
    ["channel", (r) => ({ ...r, channel_id: `0x${"22".repeat(32)}` }), /wrong channel/],
    
  ];
  for (const [what, forge, message] of forgeries) {
    test(`a receipt with a forged ${what} is rejected`, async () => {
      twin.forgeReceipt = forge;
      await assert.rejects(client.pay({ channel, signer: voucherSigner, taskId: "t1", amount: 30n, previous: 0n, access }), (e: unknown) => e instanceof VerificationError && message.test(e.shortMessage));
    });
  }

  test("a malformed receipt signature is an invalid answer", async () => {
    twin.forgeReceipt = (r) => ({ ...r, signature: `0x${"00".repeat(65)}` });
    await assert.rejects(client.pay({ channel, signer: voucherSigner, taskId: "t1", amount: 30n, previous: 0n, access }), (e: unknown) => e instanceof InvalidResponseError && /v = 0/.test(e.shortMessage));
  });

  test("a receipt signed by someone else than the payee is rejected", async () => {
    const forged = await signReceipt(stranger, { domain, channelId: channel.channelId, cumulativeAmount: 30n, amount: 30n, taskId: taskHash("t1") });
    twin.forgeReceipt = (r) => ({ ...r, signature: forged });
    await assert.rejects(client.pay({ channel, signer: voucherSigner, taskId: "t1", amount: 30n, previous: 0n, access }), (e: unknown) => e instanceof VerificationError && /not signed by the freelancer/.test(e.shortMessage));
  });

  test("409 stale_voucher: a payment proven by the payer side's voucher is adopted and the task paid on top", async () => {
    const other = await signVoucher(voucherSigner, { domain, channelId: channel.channelId, cumulativeAmount: 100n });
    await twin.acceptElsewhere("other-tab", 100n, other);
    const result = await client.pay({ channel, signer: voucherSigner, taskId: "t1", amount: 5n, previous: 0n, access });
    assert.equal(result.cumulativeAmount, 105n);
    assert.equal(result.alreadyPaid, false);
    assert.equal(twin.accepted, 105n);
  });

  test("the same task with the same voucher again (a lost response) gets the same receipt", async () => {
    const first = await client.pay({ channel, signer: voucherSigner, taskId: "t1", amount: 7n, previous: 0n, access });
    const again = await client.pay({ channel, signer: voucherSigner, taskId: "t1", amount: 7n, previous: 0n, access });
    assert.deepEqual(again.receipt, first.receipt);
    assert.equal(twin.payments.length, 1);
  });

  test("409 stale_voucher for a task another tab already paid returns that receipt, pays nothing more", async () => {
    // The other tab paid "x" then "t1"; this tab still thinks nothing was paid.
    await twin.acceptElsewhere("x", 3n, await signVoucher(voucherSigner, { domain, channelId: channel.channelId, cumulativeAmount: 3n }));
    await twin.acceptElsewhere("t1", 7n, await signVoucher(voucherSigner, { domain, channelId: channel.channelId, cumulativeAmount: 10n }));
    const result = await client.pay({ channel, signer: voucherSigner, taskId: "t1", amount: 7n, previous: 0n, access });
    assert.equal(result.alreadyPaid, true);
    assert.equal(result.cumulativeAmount, 10n);
    assert.equal(twin.payments.length, 2);
  });

  test("409 stale_voucher the service cannot prove is refused and nothing more is signed", async () => {
    twin.fakeCurrent = 900n;
    let signed = 0;
    await assert.rejects(
      client.pay({ channel, signer: voucherSigner, taskId: "t1", amount: 5n, previous: 0n, access, onVoucher: () => void signed++ }),
      (e: unknown) => e instanceof UntrustedStateError && /shows no voucher of yours/.test(e.shortMessage),
    );
    assert.equal(signed, 1);
  });

  test("a voucher signature from a stranger does not prove the service's amount", async () => {
    const forged = await signVoucher(stranger, { domain, channelId: channel.channelId, cumulativeAmount: 100n });
    await twin.acceptElsewhere("x", 100n, forged);
    await assert.rejects(client.pay({ channel, signer: voucherSigner, taskId: "t1", amount: 5n, previous: 0n, access }), UntrustedStateError);
  });

  test("a stale_voucher up to what this payer signed itself is trusted without the service's proof", async () => {
    const v = await signVoucher(voucherSigner, { domain, channelId: channel.channelId, cumulativeAmount: 50n });
    await twin.acceptElsewhere("lost-response", 50n, v);
    twin.hideVoucher = true;
    const result = await client.pay({ channel, signer: voucherSigner, taskId: "t1", amount: 5n, previous: 0n, access, highestSigned: 50n });
    assert.equal(result.cumulativeAmount, 55n);
  });

  test("a payment above the deposit is refused before anything is signed", async () => {
    let signed = 0;
    await assert.rejects(client.pay({ channel, signer: voucherSigner, taskId: "t1", amount: 1001n, previous: 0n, access, onVoucher: () => void signed++ }), /more than is left/);
    assert.equal(signed, 0);
  });

  test("problem+json codes become plain words", async () => {
    twin.tasks.set("t1", { amount: 10n, description: "logo", requestedAt: 1 });
    await assert.rejects(client.pay({ channel, signer: voucherSigner, taskId: "t1", amount: 11n, previous: 0n, access }), (e: unknown) => {
      assert.ok(e instanceof ProblemError);
      assert.equal(e.code, "amount_mismatch");
      assert.equal(plainMessage(e), "The amount differs from what the freelancer requested for this task.");
      return true;
    });
  });

  test("a service that is down gives a clear message", async () => {
    twin.down = true;
    await assert.rejects(client.info(), (e: unknown) => e instanceof ServiceUnreachableError && /is not answering\. Nothing was lost/.test(e.shortMessage));
  });

  test("an HTML error page from a proxy is not mistaken for the API", async () => {
    const html = new PieceworkClient({ baseUrl: "http://service.test", fetch: async () => new Response("<h1>Bad gateway</h1>", { status: 502, headers: { "content-type": "text/html" } }) });
    await assert.rejects(html.info(), (e: unknown) => e instanceof ServiceUnreachableError && /failed \(HTTP 502\)/.test(e.shortMessage));
  });
});

describe("payAll", () => {
  test("pays each task in order on top of the previous, and stops at the first failure", async () => {
    const { results, error } = await client.payAll({ channel, signer: voucherSigner, tasks: [{ taskId: "a", amount: 1n }, { taskId: "b", amount: 2n }, { taskId: "c", amount: 2000n }, { taskId: "d", amount: 1n }], previous: 0n, access });
    assert.deepEqual(results.map((r) => r.cumulativeAmount), [1n, 3n]);
    assert.match(error?.shortMessage ?? "", /more than is left/);
  });
});

describe("reads", () => {
  test("tasks: sends the Access signature, verifies hashes and receipts", async () => {
    twin.tasks.set("t1", { amount: 10n, description: "Draw a logo", requestedAt: 1_700_000_000 });
    twin.tasks.set("t2", { amount: 20n, description: "Fix a typo", requestedAt: 1_700_000_001 });
    await client.pay({ channel, signer: voucherSigner, taskId: "t1", amount: 10n, previous: 0n, access });
    const tasks = await client.tasks(channel, { access });
    assert.deepEqual(tasks.map((t) => [t.taskId, t.status, t.amount]), [["t1", "paid", 10n], ["t2", "requested", 20n]]);
    assert.match(twin.requests.at(-1)!.authorization!, /^Access \d+\.0x[0-9a-f]{130}$/);
  });

  test("a task whose hash is not its id's is refused", async () => {
    twin.tasks.set("t1", { amount: 10n, description: "x", requestedAt: 1 });
    const real = twin.fetch;
    const lying = async (input: string | URL | Request, init?: RequestInit) => {
      const response = await real(input, init);
      if (!String(input).endsWith("/tasks")) return response;
      const body = await response.json();
      body.tasks[0].task_hash = taskHash("t2");
      return new Response(JSON.stringify(body), { status: 200, headers: { "content-type": "application/json" } });
    };
    const c = new PieceworkClient({ baseUrl: "http://service.test", fetch: lying });
    await assert.rejects(c.tasks(channel, { access }), (e: unknown) => e instanceof InvalidResponseError && /task_hash should be keccak256 of its task_id/.test(e.shortMessage));
  });

  test("allReceipts checks that every step adds up", async () => {
    for (const [t, a] of [["a", 3n], ["b", 4n]] as const) {
      const prev = twin.accepted;
      await client.pay({ channel, signer: voucherSigner, taskId: t, amount: a, previous: prev, access });
    }
    assert.deepEqual((await client.allReceipts(channel, { access })).map((r) => r.cumulativeAmount), [3n, 7n]);
    // A forged but validly signed extra step (the service signs receipts itself) must still add up.
    twin.payments[1]!.cumulative = 9n;
    twin.payments[1]!.signature = await signReceipt(payee, { domain, channelId: channel.channelId, cumulativeAmount: 9n, amount: 4n, taskId: taskHash("b") });
    await assert.rejects(client.allReceipts(channel, { access }), /do not add up: 9 is not 3 \+ 4/);
  });
});

describe("requestClose", () => {
  test("returns the payee's consent after checking amount and signer", async () => {
    await client.pay({ channel, signer: voucherSigner, taskId: "a", amount: 9n, previous: 0n, access });
    const consent = await client.requestClose({ channel, signer: voucherSigner, cumulativeAmount: 9n, access, now: 1_900_000_000n });
    assert.equal(consent.cumulativeAmount, 9n);
    assert.equal(consent.deadline, 2_000_000_000n);
  });

  test("an expired consent or one for another amount is refused", async () => {
    await client.pay({ channel, signer: voucherSigner, taskId: "a", amount: 9n, previous: 0n, access });
    await assert.rejects(client.requestClose({ channel, signer: voucherSigner, cumulativeAmount: 9n, access, now: 2_000_000_001n }), /already expired/);
    twin.consentAmountOverride = 8n;
    await assert.rejects(client.requestClose({ channel, signer: voucherSigner, cumulativeAmount: 9n, access }), /for 8, not the 9 asked for/);
  });

  test("a close requested below the accepted amount moves up only to a proven amount", async () => {
    await client.pay({ channel, signer: voucherSigner, taskId: "a", amount: 9n, previous: 0n, access });
    const consent = await client.requestClose({ channel, signer: voucherSigner, cumulativeAmount: 0n, access });
    assert.equal(consent.cumulativeAmount, 9n);
  });
});
