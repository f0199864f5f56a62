/**
 * An in-memory twin of the payee service's HTTP API (PROTOCOL.md v2), as a `fetch` function:
 * honest by default, with knobs that make it hostile. It lets the client's checks be tested
 * against every way a service can lie; the real service is exercised by the browser suite.
 */
import type { Address, Hex, LocalAccount } from "viem";
import { type PieceworkDomain, recoverSigner, signCloseConsent, signReceipt, taskHash } from "../../src/sdk/index.ts";

type Payment = { taskId: string; taskHash: Hex; amount: bigint; cumulative: bigint; signature: Hex; voucher: Hex };

export type TwinChannel = { channelId: Hex; payer: Address; payee: Address; voucherSigner: Address | null; deposit: bigint };

export class ServiceTwin {
  payments: Payment[] = [];
  requests: { method: string; path: string; body: unknown; authorization: string | null }[] = [];
  tasks = new Map<string, { amount: bigint; description: string; requestedAt: number }>();
  /** Rewrites each receipt before it is sent (a lying service). */
  forgeReceipt: ((r: Record<string, string>) => Record<string, string>) | null = null;
  /** Claims this cumulative amount on every payment (409 stale_voucher), without a voucher. */
  fakeCurrent: bigint | null = null;
  /** Hides the latest voucher signature in GET /channels/{id}. */
  hideVoucher = false;
  down = false;
  consentDeadline = 2_000_000_000n;
  consentAmountOverride: bigint | null = null;

  readonly domain: PieceworkDomain;
  readonly payee: LocalAccount;
  readonly channel: TwinChannel;

  constructor(domain: PieceworkDomain, payee: LocalAccount, channel: TwinChannel) {
    this.domain = domain;
    this.payee = payee;
    this.channel = channel;
  }

  get accepted(): bigint {
    return this.payments.at(-1)?.cumulative ?? 0n;
  }

  /** Records a payment made elsewhere (another tab) with a real voucher. */
  async acceptElsewhere(taskId: string, amount: bigint, voucher: Hex): Promise<void> {
    const cumulative = this.accepted + amount;
    const signature = await signReceipt(this.payee, { domain: this.domain, channelId: this.channel.channelId, cumulativeAmount: cumulative, amount, taskId: taskHash(taskId) });
    this.payments.push({ taskId, taskHash: taskHash(taskId), amount, cumulative, signature, voucher });
  }

  readonly fetch = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    if (this.down) throw new TypeError("fetch failed");
    const url = new URL(String(input));
    const method = init?.method ?? "GET";
    const headers = new Headers(init?.headers);
    const body = init?.body ? JSON.parse(String(init.body)) : undefined;
    this.requests.push({ method, path: url.pathname + url.search, body, authorization: headers.get("authorization") });
    const id = this.channel.channelId;
    const route = `${method} ${url.pathname}`;
    if (route === "GET /v1/info") {
      return json(200, { version: "2", chain_id: this.domain.chainId, contract: this.domain.verifyingContract, payees: [this.payee.address], min_challenge_period: 3600, tokens: [{ address: "0x0000000000000000000000000000000000000000", symbol: "ETH", decimals: 18, min_deposit: "1" }] });
    }
    if (route === `GET /v1/channels/${id}`) {
      const last = this.payments.at(-1);
      return json(200, {
        channel_id: id, payer: this.channel.payer, payee: this.channel.payee, token: "0x0000000000000000000000000000000000000000",
        deposit: String(this.channel.deposit), claimed: "0", challenge_period: 3600, closes_at: 0, status: "open",
        voucher_signer: this.channel.voucherSigner,
        latest: last ? { cumulative_amount: String(last.cumulative), signature: this.hideVoucher ? null : last.voucher } : null,
      });
    }
    if (route === `POST /v1/channels/${id}/payments`) {
      if (this.fakeCurrent !== null) return problem(409, "stale_voucher", { current_cumulative_amount: String(this.fakeCurrent) });
      const { task_id, amount, cumulative_amount, signature } = body as Record<string, string>;
      const same = this.payments.find((p) => p.taskId === task_id && p.voucher === signature);
      if (same) return json(201, { receipt: this.receipt(same) });
      const cumulative = BigInt(cumulative_amount!);
      if (cumulative !== this.accepted + BigInt(amount!)) return problem(409, "stale_voucher", { current_cumulative_amount: String(this.accepted) });
      if (cumulative > this.channel.deposit) return problem(422, "exceeds_deposit", {});
      const signer = await recoverSigner(this.domain, "Voucher", { channelId: id, cumulativeAmount: cumulative }, signature as Hex);
      if (signer !== this.channel.payer && signer !== this.channel.voucherSigner) return problem(422, "invalid_signature", {});
      const requested = this.tasks.get(task_id!);
      if (requested && requested.amount !== BigInt(amount!)) return problem(422, "amount_mismatch", {});
      await this.acceptElsewhere(task_id!, BigInt(amount!), signature as Hex);
      return json(201, { receipt: this.receipt(this.payments.at(-1)!) });
    }
    if (route === `POST /v1/channels/${id}/close`) {
      const { cumulative_amount, signature } = body as Record<string, string>;
      const signer = await recoverSigner(this.domain, "CloseRequest", { channelId: id, cumulativeAmount: BigInt(cumulative_amount!) }, signature as Hex);
      if (signer !== this.channel.payer && signer !== this.channel.voucherSigner) return problem(403, "close_not_authorized", {});
      if (BigInt(cumulative_amount!) !== this.accepted) return problem(409, "stale_voucher", { current_cumulative_amount: String(this.accepted) });
      const amount = this.consentAmountOverride ?? this.accepted;
      const sig = await signCloseConsent(this.payee, { domain: this.domain, channelId: id, cumulativeAmount: amount, deadline: this.consentDeadline });
      return json(200, { cumulative_amount: String(amount), deadline: Number(this.consentDeadline), signature: sig });
    }
    if (route === `GET /v1/channels/${id}/receipts`) {
      if (!headers.get("authorization")?.startsWith("Access ")) return problem(401, "access_required", {});
      const after = BigInt(url.searchParams.get("after") ?? "0");
      return json(200, { receipts: this.payments.filter((p) => p.cumulative > after).map((p) => this.receipt(p)), next: null });
    }
    if (route === `GET /v1/channels/${id}/tasks`) {
      if (!headers.get("authorization")?.startsWith("Access ")) return problem(401, "access_required", {});
      const list = [...this.tasks].map(([taskId, t]) => {
        const paid = this.payments.find((p) => p.taskId === taskId);
        return { task_id: taskId, task_hash: taskHash(taskId), amount: String(t.amount), description: t.description, status: paid ? "paid" : "requested", requested_at: t.requestedAt, receipt: paid ? this.receipt(paid) : null };
      });
      return json(200, { tasks: list });
    }
    return problem(404, "not_found", {});
  };

  receipt(p: Payment): Record<string, string> {
    const r = { channel_id: this.channel.channelId, task_id: p.taskHash, amount: String(p.amount), cumulative_amount: String(p.cumulative), signature: p.signature };
    return this.forgeReceipt ? this.forgeReceipt(r) : r;
  }
}

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
}

function problem(status: number, code: string, extra: Record<string, unknown>): Response {
  return new Response(JSON.stringify({ type: `urn:piecework:problem:${code}`, title: "x", status, detail: `detail of ${code}`, code, ...extra }), {
    status,
    headers: { "content-type": "application/problem+json" },
  });
}
