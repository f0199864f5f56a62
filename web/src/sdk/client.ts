/**
 * `PieceworkClient`: the payee service's HTTP API (PROTOCOL.md v2) from the payer's side, plus
 * the few operator calls the freelancer's dashboard makes. Nothing the service says is trusted
 * as is: every receipt and consent is verified against the payee, and a higher amount the
 * service claims to hold is adopted only with a voucher signature that proves it.
 */
import { type Address, type Hex, isAddressEqual } from "viem";
import { parseUint } from "./amounts.ts";
import { type Problem, InputError, InvalidResponseError, PieceworkError, ProblemError, ServiceUnreachableError, UntrustedStateError, VerificationError } from "./errors.ts";
import { ZERO_ADDRESS, parseAddress, parseBytes32, taskHash, validateTaskId } from "./ids.ts";
import {
  type CloseConsentData,
  type ReceiptData,
  type TypedDataSigner,
  accessAuthorization,
  isValidVoucher,
  parseSignature,
  signCloseRequest,
  signVoucher,
  verifyCloseConsent,
  verifyReceipt,
} from "./signatures.ts";
import type { PieceworkDomain } from "./typedData.ts";

export type AcceptedToken = { address: Address; symbol: string; decimals: number; minDeposit: bigint };

export type ServiceInfo = {
  version: string;
  chainId: number;
  contract: Address;
  payees: Address[];
  minChallengePeriod: bigint;
  tokens: AcceptedToken[];
  /** A public RPC URL of the chain, for wallets that must add the network (optional, web/SERVICE-NEEDS.md). */
  rpcUrl: string | null;
};

export type ServiceChannel = {
  channelId: Hex;
  payer: Address;
  payee: Address;
  token: Address;
  deposit: bigint;
  claimed: bigint;
  challengePeriod: bigint;
  closesAt: bigint;
  status: string;
  voucherSigner: Address | null;
  /** Latest accepted voucher; `signature` null when the service does not show it. */
  latest: { cumulativeAmount: bigint; signature: Hex | null } | null;
};

export type Task = {
  taskId: string;
  taskHash: Hex;
  amount: bigint;
  description: string;
  status: "requested" | "paid";
  requestedAt: number;
  receipt: ReceiptData | null;
};

export type OperatorReceipt = ReceiptData & { task: string | null; createdAt: number | null; claimTx: Hex | null };

/** What the payer side knows about its channel: enough to sign and to verify. */
export type PayerChannel = {
  domain: PieceworkDomain;
  channelId: Hex;
  payer: Address;
  payee: Address;
  voucherSigner: Address | null;
  deposit: bigint;
};

/** Produces the `Authorization` value for a channel's private reads (see `createAccess`). */
export type AccessProvider = (channelId: Hex) => Promise<string>;

export type Voucher = { taskId: string; amount: bigint; cumulativeAmount: bigint; signature: Hex };

export type PayParameters = {
  channel: PayerChannel;
  /** The voucher signer (or the payer's wallet). */
  signer: TypedDataSigner;
  taskId: string;
  amount: bigint;
  /** The latest cumulative amount the payer knows the service accepted. */
  previous: bigint;
  access: AccessProvider;
  /**
   * The highest cumulative amount this payer has ever signed for the channel (its own records).
   * A `stale_voucher` naming an amount up to here is trusted without further proof.
   */
  highestSigned?: bigint;
  /** Called with each voucher before it is sent, so it can be stored durably first. */
  onVoucher?: (voucher: Voucher) => Promise<void> | void;
};

export type PaymentResult = { receipt: ReceiptData; cumulativeAmount: bigint; alreadyPaid: boolean };

export type ClientOptions = {
  /** The service's base URL, e.g. `https://freelancer.example` (no trailing /v1). */
  baseUrl: string;
  fetch?: typeof fetch;
  /** The operator's bearer token (dashboard only). Never sent anywhere but `baseUrl`. */
  operatorToken?: string;
  timeoutMs?: number;
};

const MAX_RESYNCS = 3;
const PAGE_LIMIT_GUARD = 100_000;

/**
 * An `AccessProvider` that signs `Access(channelId, expires)` with the voucher signer (no
 * wallet prompt) and reuses it until shortly before it expires.
 */
export function createAccess(parameters: { domain: PieceworkDomain; signer: TypedDataSigner; ttlSeconds?: number; now?: () => number }): AccessProvider {
  const ttl = parameters.ttlSeconds ?? 3600;
  const now = parameters.now ?? (() => Math.floor(Date.now() / 1000));
  const cache = new Map<string, { value: string; expires: number }>();
  return async (channelId) => {
    const hit = cache.get(channelId);
    const t = now();
    if (hit && hit.expires - 60 > t) return hit.value;
    const expires = t + ttl;
    const value = await accessAuthorization(parameters.signer, { domain: parameters.domain, channelId, expires: BigInt(expires) });
    cache.set(channelId, { value, expires });
    return value;
  };
}

export class PieceworkClient {
  readonly baseUrl: string;
  readonly #fetch: typeof fetch;
  readonly #operatorToken: string | undefined;
  readonly #timeoutMs: number;

  constructor(options: ClientOptions) {
    let url: URL;
    try {
      url = new URL(options.baseUrl);
    } catch {
      throw new InputError(`"${options.baseUrl}" is not a URL of a Piecework service.`);
    }
    if (url.protocol !== "https:" && url.protocol !== "http:") throw new InputError("The service URL must start with https:// or http://.");
    this.baseUrl = url.href.replace(/\/+$/, "");
    this.#fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.#operatorToken = options.operatorToken;
    this.#timeoutMs = options.timeoutMs ?? 15_000;
  }

  async #request(method: "GET" | "POST", path: string, options: { body?: unknown; authorization?: string } = {}): Promise<{ status: number; body: unknown }> {
    const headers: Record<string, string> = { accept: "application/json, application/problem+json" };
    if (options.body !== undefined) headers["content-type"] = "application/json";
    if (options.authorization) headers.authorization = options.authorization;
    let response: Response;
    try {
      response = await this.#fetch(`${this.baseUrl}${path}`, {
        method,
        headers,
        ...(options.body !== undefined ? { body: JSON.stringify(options.body) } : {}),
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
    } catch (error) {
      throw new ServiceUnreachableError(`The freelancer's service at ${this.baseUrl} is not answering. Nothing was lost; try again when it is back.`, { cause: error });
    }
    const type = response.headers.get("content-type") ?? "";
    let body: unknown;
    if (/^application\/(problem\+)?json/i.test(type)) {
      try {
        body = await response.json();
      } catch (error) {
        throw new InvalidResponseError(`The freelancer's service sent broken JSON (HTTP ${response.status}).`, { cause: error });
      }
    }
    if (response.ok && body !== undefined) return { status: response.status, body };
    if (!response.ok && isProblem(body)) throw new ProblemError(body);
    throw new ServiceUnreachableError(
      response.ok
        ? `The address ${this.baseUrl} answered, but not as a Piecework service (HTTP ${response.status}).`
        : `The freelancer's service failed (HTTP ${response.status}). Nothing was lost; try again later.`,
      { details: { status: response.status } },
    );
  }

  #operator(): string {
    if (!this.#operatorToken) throw new InputError("Enter the operator token first.");
    return `Bearer ${this.#operatorToken}`;
  }

  /** `GET /v1/info`: chain, contract, payees and accepted tokens. */
  async info(): Promise<ServiceInfo> {
    const { body } = await this.#request("GET", "/v1/info");
    return parseInfo(body);
  }

  /** `GET /v1/channels/{id}` (public): on-chain state plus the latest accepted voucher. */
  async channel(channelId: Hex): Promise<ServiceChannel> {
    const { body } = await this.#request("GET", `/v1/channels/${parseBytes32(channelId, "channel id")}`);
    return parseServiceChannel(body);
  }

  /** `GET .../tasks` (Access): requested and paid tasks, oldest first; paid ones' receipts verified. */
  async tasks(channel: PayerChannel, options: { access: AccessProvider; status?: "requested" | "paid" }): Promise<Task[]> {
    const query = options.status ? `?status=${options.status}` : "";
    const { body } = await this.#request("GET", `/v1/channels/${channel.channelId}/tasks${query}`, {
      authorization: await options.access(channel.channelId),
    });
    const list = field(body, "tasks");
    if (!Array.isArray(list)) throw invalid("tasks", "a list");
    const tasks: Task[] = [];
    for (const raw of list) {
      const task = parseTask(raw, channel.channelId);
      if (task.receipt) {
        await verifyReceipt({ domain: channel.domain, payee: channel.payee, receipt: task.receipt, expected: { channelId: channel.channelId, taskId: task.taskHash, amount: task.amount } });
      }
      tasks.push(task);
    }
    return tasks;
  }

  /** `GET .../receipts?after=` (Access): one page, each receipt verified against the payee. */
  async receipts(channel: PayerChannel, options: { access: AccessProvider; after?: bigint }): Promise<{ receipts: ReceiptData[]; next: bigint | null }> {
    const after = options.after ?? 0n;
    const query = options.after !== undefined ? `?after=${after}` : "";
    const { body } = await this.#request("GET", `/v1/channels/${channel.channelId}/receipts${query}`, {
      authorization: await options.access(channel.channelId),
    });
    const list = field(body, "receipts");
    if (!Array.isArray(list)) throw invalid("receipts", "a list");
    const receipts: ReceiptData[] = [];
    let last = after;
    for (const raw of list) {
      const r = parseReceipt(raw);
      if (r.channelId !== channel.channelId.toLowerCase()) throw invalid("receipts[].channel_id", `this channel (${channel.channelId})`);
      if (r.cumulativeAmount <= last) throw invalid("receipts", "ascending cumulative amounts above `after`");
      await verifyReceipt({ domain: channel.domain, payee: channel.payee, receipt: r, expected: { channelId: channel.channelId, taskId: r.taskId } });
      receipts.push(r);
      last = r.cumulativeAmount;
    }
    const rawNext = field(body, "next");
    const next = rawNext === null || rawNext === undefined ? null : parseUint(rawNext, "next");
    if (next !== null && next <= after) throw invalid("next", "a cursor beyond `after`");
    return { receipts, next };
  }

  /**
   * Every receipt after `after`, all pages, checked to chain: each cumulative amount is the one
   * before plus its task's amount (the protocol's rule), so a gap or a forged step shows.
   */
  async allReceipts(channel: PayerChannel, options: { access: AccessProvider; after?: bigint }): Promise<ReceiptData[]> {
    const all: ReceiptData[] = [];
    let after: bigint | undefined = options.after;
    for (let page = 0; page < PAGE_LIMIT_GUARD; page++) {
      const { receipts, next } = await this.receipts(channel, { access: options.access, ...(after !== undefined ? { after } : {}) });
      all.push(...receipts);
      if (next === null) break;
      after = next;
    }
    let previous = options.after ?? 0n;
    for (const r of all) {
      if (r.cumulativeAmount !== previous + r.amount && !(options.after !== undefined && r === all[0])) {
        throw new VerificationError(`The receipts do not add up: ${r.cumulativeAmount} is not ${previous} + ${r.amount}.`, {
          details: { cumulative: r.cumulativeAmount, previous, amount: r.amount },
        });
      }
      previous = r.cumulativeAmount;
    }
    return all;
  }

  /**
   * Rebuilds the payer's view from the service's receipts (after a reload, in a second tab, on
   * another device): every receipt verified and chained; the latest amount is adopted only when
   * this payer signed at least that much or the service proves it with a voucher.
   */
  async resync(p: { channel: PayerChannel; access: AccessProvider; highestSigned?: bigint }): Promise<{ receipts: ReceiptData[]; cumulativeAmount: bigint }> {
    const receipts = await this.allReceipts(p.channel, { access: p.access });
    const last = receipts.at(-1)?.cumulativeAmount ?? 0n;
    const cumulativeAmount = last === 0n ? 0n : await this.#trusted(p.channel, last, 0n, p.highestSigned);
    return { receipts, cumulativeAmount };
  }

  /**
   * Pays one task: signs `Voucher(previous + amount)`, posts it, verifies the receipt. On 409
   * `stale_voucher` it resyncs (another tab or device paid meanwhile): a task already paid
   * returns its existing receipt; otherwise the service's amount is adopted only when proven
   * by a voucher signature, and the payment is signed again on top of it.
   */
  async pay(p: PayParameters): Promise<PaymentResult> {
    validateTaskId(p.taskId);
    if (p.amount <= 0n) throw new InputError("The amount must be more than 0.");
    const hash = taskHash(p.taskId);
    let previous = p.previous;
    for (let attempt = 0; attempt <= MAX_RESYNCS; attempt++) {
      const cumulativeAmount = previous + p.amount;
      if (cumulativeAmount > p.channel.deposit) {
        throw new InputError(`This task costs more than is left in the channel (${p.channel.deposit - previous} base units); top up first.`, {
          details: { deposit: p.channel.deposit, previous, amount: p.amount },
        });
      }
      const signature = await signVoucher(p.signer, { domain: p.channel.domain, channelId: p.channel.channelId, cumulativeAmount });
      await p.onVoucher?.({ taskId: p.taskId, amount: p.amount, cumulativeAmount, signature });
      try {
        const receipt = await this.sendVoucher(p.channel, { taskId: p.taskId, amount: p.amount, cumulativeAmount, signature });
        return { receipt, cumulativeAmount, alreadyPaid: false };
      } catch (error) {
        if (!(error instanceof ProblemError && error.code === "stale_voucher")) throw error;
        const current = parseUint(error.problem.current_cumulative_amount, "current_cumulative_amount");
        const paid = await this.#findReceipt(p.channel, p.access, hash, p.amount, previous);
        if (paid) return { receipt: paid, cumulativeAmount: paid.cumulativeAmount, alreadyPaid: true };
        previous = await this.#trusted(p.channel, current, previous, p.highestSigned);
      }
    }
    throw new UntrustedStateError("The service kept answering that newer payments exist; stopped after several tries. Reload the page.");
  }

  /**
   * Posts an already signed voucher and verifies the receipt. Use it to re-send the voucher a
   * page stored before a reload: the same task with the same voucher returns the same receipt.
   */
  async sendVoucher(channel: PayerChannel, voucher: Voucher): Promise<ReceiptData> {
    const { body } = await this.#request("POST", `/v1/channels/${channel.channelId}/payments`, {
      body: {
        task_id: voucher.taskId,
        amount: voucher.amount.toString(),
        cumulative_amount: voucher.cumulativeAmount.toString(),
        signature: voucher.signature,
      },
    });
    const receipt = parseReceipt(field(body, "receipt"));
    return verifyReceipt({
      domain: channel.domain,
      payee: channel.payee,
      receipt,
      expected: { channelId: channel.channelId, taskId: voucher.taskId, amount: voucher.amount, cumulativeAmount: voucher.cumulativeAmount },
    });
  }

  /** Pays tasks one after the other (cumulative amounts chain); stops at the first failure. */
  async payAll(
    p: Omit<PayParameters, "taskId" | "amount"> & { tasks: readonly { taskId: string; amount: bigint }[]; onPaid?: (result: PaymentResult, taskId: string) => Promise<void> | void },
  ): Promise<{ results: PaymentResult[]; error: PieceworkError | null }> {
    const results: PaymentResult[] = [];
    let previous = p.previous;
    let highest = p.highestSigned;
    for (const task of p.tasks) {
      try {
        const result = await this.pay({ ...p, taskId: task.taskId, amount: task.amount, previous, ...(highest !== undefined ? { highestSigned: highest } : {}) });
        results.push(result);
        await p.onPaid?.(result, task.taskId);
        previous = result.cumulativeAmount;
        if (highest === undefined || previous > highest) highest = previous;
      } catch (error) {
        return { results, error: error instanceof PieceworkError ? error : new PieceworkError(String(error), { cause: error }) };
      }
    }
    return { results, error: null };
  }

  /**
   * Asks for the payee's `CloseConsent` at `cumulativeAmount` with a signed `CloseRequest`, and
   * verifies it (payee, channel, amount, not expired at chain time `now`). On `stale_voucher`
   * the request is repeated at the service's amount when a voucher signature proves it.
   */
  async requestClose(p: {
    channel: PayerChannel;
    signer: TypedDataSigner;
    cumulativeAmount: bigint;
    access: AccessProvider;
    highestSigned?: bigint;
    now?: bigint;
  }): Promise<CloseConsentData> {
    let amount = p.cumulativeAmount;
    for (let attempt = 0; attempt <= MAX_RESYNCS; attempt++) {
      const signature = await signCloseRequest(p.signer, { domain: p.channel.domain, channelId: p.channel.channelId, cumulativeAmount: amount });
      try {
        const { body } = await this.#request("POST", `/v1/channels/${p.channel.channelId}/close`, {
          body: { cumulative_amount: amount.toString(), signature },
        });
        const consent: CloseConsentData = {
          channelId: p.channel.channelId,
          cumulativeAmount: parseUint(field(body, "cumulative_amount"), "cumulative_amount"),
          deadline: parseInteger(field(body, "deadline"), "deadline"),
          signature: parseSignature(field(body, "signature"), "close consent signature"),
        };
        return await verifyCloseConsent({
          domain: p.channel.domain,
          payee: p.channel.payee,
          consent,
          expected: { channelId: p.channel.channelId, cumulativeAmount: amount },
          ...(p.now !== undefined ? { now: p.now } : {}),
        });
      } catch (error) {
        if (!(error instanceof ProblemError && error.code === "stale_voucher")) throw error;
        const current = parseUint(error.problem.current_cumulative_amount, "current_cumulative_amount");
        amount = await this.#trusted(p.channel, current, amount, p.highestSigned);
      }
    }
    throw new UntrustedStateError("The service kept changing the amount to close at; stopped after several tries.");
  }

  async #findReceipt(channel: PayerChannel, access: AccessProvider, hash: Hex, amount: bigint, after: bigint): Promise<ReceiptData | null> {
    const { receipts } = await this.receipts(channel, { access, after });
    return receipts.find((r) => r.taskId === hash && r.amount === amount) ?? null;
  }

  /**
   * The service says it accepted `current`. Adopt it only if the payer signed at least that
   * much itself (`highestSigned`), or the service shows a voucher for exactly `current` signed
   * by the payer or the voucher signer. Otherwise paying on top would hand over money for
   * payments that never happened.
   */
  async #trusted(channel: PayerChannel, current: bigint, known: bigint, highestSigned: bigint | undefined): Promise<bigint> {
    if (current < known) {
      throw new UntrustedStateError(`The service now reports ${current} accepted, less than the ${known} it already receipted. Stop paying this service and close the channel.`, {
        details: { current, known },
      });
    }
    if (highestSigned !== undefined && current <= highestSigned) return current;
    const view = await this.channel(channel.channelId);
    const latest = view.latest;
    if (
      latest?.signature &&
      latest.cumulativeAmount === current &&
      (await isValidVoucher({ domain: channel.domain, channelId: channel.channelId, cumulativeAmount: current, signature: latest.signature, payer: channel.payer, voucherSigner: channel.voucherSigner }))
    ) {
      return current;
    }
    throw new UntrustedStateError(`The service claims ${current} was already paid on this channel but shows no voucher of yours for it. Nothing more was signed.`, {
      details: { current, known },
    });
  }

  // ------------------------------------------------------------------ operator (dashboard)

  /** `POST .../tasks` (operator): ask the client to pay for a finished task. */
  async requestTask(channelId: Hex, task: { taskId: string; amount: bigint; description: string }): Promise<Task> {
    validateTaskId(task.taskId);
    if (task.amount <= 0n) throw new InputError("The amount must be more than 0.");
    if ([...task.description].length > 2000) throw new InputError("The description is longer than 2,000 characters.");
    const { body } = await this.#request("POST", `/v1/channels/${parseBytes32(channelId, "channel id")}/tasks`, {
      body: { task_id: task.taskId, amount: task.amount.toString(), description: task.description },
      authorization: this.#operator(),
    });
    return parseTask(field(body, "task"), channelId);
  }

  /** `GET /v1/channels` (operator): every channel of this service's payees, all pages. */
  async operatorChannels(): Promise<ServiceChannel[]> {
    const all: ServiceChannel[] = [];
    let cursor: string | null = null;
    for (let page = 0; page < PAGE_LIMIT_GUARD; page++) {
      const { body } = await this.#request("GET", `/v1/channels?limit=500${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`, { authorization: this.#operator() });
      const items = field(body, "items");
      if (!Array.isArray(items)) throw invalid("items", "a list");
      all.push(...items.map(parseServiceChannel));
      const next = field(body, "next_cursor");
      if (next === null || next === undefined) break;
      if (typeof next !== "string") throw invalid("next_cursor", "a string or null");
      cursor = next;
    }
    return all;
  }

  /**
   * Every receipt of one channel as the operator sees it, all pages: the protocol's fields plus
   * `task` (the task id string), `created_at` and `claim_tx` (web/SERVICE-NEEDS.md), for CSV.
   */
  async operatorReceipts(channelId: Hex): Promise<OperatorReceipt[]> {
    const id = parseBytes32(channelId, "channel id");
    const all: OperatorReceipt[] = [];
    let after: string | null = null;
    for (let page = 0; page < PAGE_LIMIT_GUARD; page++) {
      const { body } = await this.#request("GET", `/v1/channels/${id}/receipts${after ? `?after=${after}` : ""}`, { authorization: this.#operator() });
      const list = field(body, "receipts");
      if (!Array.isArray(list)) throw invalid("receipts", "a list");
      for (const raw of list) {
        const receipt = parseReceipt(raw);
        const task = field(raw, "task");
        const createdAt = field(raw, "created_at");
        const claimTx = field(raw, "claim_tx");
        all.push({
          ...receipt,
          task: typeof task === "string" ? task : null,
          createdAt: typeof createdAt === "number" ? createdAt : null,
          claimTx: typeof claimTx === "string" && /^0x[0-9a-fA-F]{64}$/.test(claimTx) ? (claimTx as Hex) : null,
        });
      }
      const next = field(body, "next");
      if (next === null || next === undefined) break;
      after = parseUint(next, "next").toString();
    }
    return all;
  }

  /** Opens the operator event stream (`GET /v1/events`, SERVICE-NEEDS.md) with the bearer token in a header. */
  async events(onEvent: (event: { type: string; data: unknown }) => void, signal: AbortSignal): Promise<void> {
    let response: Response;
    try {
      response = await this.#fetch(`${this.baseUrl}/v1/events`, { headers: { accept: "text/event-stream", authorization: this.#operator() }, signal });
    } catch (error) {
      throw new ServiceUnreachableError(`The freelancer's service at ${this.baseUrl} is not answering.`, { cause: error });
    }
    if (!response.ok || !response.body) {
      const type = response.headers.get("content-type") ?? "";
      if (/json/.test(type)) {
        const body: unknown = await response.json().catch(() => undefined);
        if (isProblem(body)) throw new ProblemError(body);
      }
      throw new ServiceUnreachableError(`The service's live event stream is not available (HTTP ${response.status}).`);
    }
    await readEventStream(response.body, onEvent);
  }
}

/** Parses a text/event-stream body (WHATWG SSE framing) and calls `onEvent` per event. */
export async function readEventStream(body: ReadableStream<Uint8Array>, onEvent: (event: { type: string; data: unknown }) => void): Promise<void> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end: number;
    while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + (buffer[end] === "\r" ? 4 : 2));
      let type = "message";
      const data: string[] = [];
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const name = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (name === "event") type = text;
        else if (name === "data") data.push(text);
      }
      if (data.length === 0) continue;
      let parsed: unknown;
      try {
        parsed = JSON.parse(data.join("\n"));
      } catch {
        continue;
      }
      onEvent({ type, data: parsed });
    }
  }
}

// ---------------------------------------------------------------------- response parsing

function isProblem(body: unknown): body is Problem {
  return typeof body === "object" && body !== null && typeof (body as Problem).code === "string" && typeof (body as Problem).status === "number";
}

function invalid(where: string, what: string): InvalidResponseError {
  return new InvalidResponseError(`The freelancer's service sent an invalid answer: ${where} should be ${what}.`, { details: { field: where } });
}

function field(body: unknown, name: string): unknown {
  if (typeof body !== "object" || body === null || Array.isArray(body)) throw invalid("the body", "a JSON object");
  return (body as Record<string, unknown>)[name];
}

function wrap<T>(where: string, parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    if (error instanceof InvalidResponseError) throw error;
    throw new InvalidResponseError(`The freelancer's service sent an invalid ${where}: ${error instanceof PieceworkError ? error.shortMessage : String(error)}`, { cause: error });
  }
}

function parseInteger(value: unknown, where: string): bigint {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) throw invalid(where, "a non-negative integer");
  return BigInt(value);
}

function parseInfo(body: unknown): ServiceInfo {
  return wrap("/v1/info", () => {
    const chainId = Number(parseInteger(field(body, "chain_id"), "chain_id"));
    const payees = field(body, "payees");
    if (!Array.isArray(payees) || payees.length === 0) throw invalid("payees", "a non-empty list of addresses");
    const tokens = field(body, "tokens");
    if (!Array.isArray(tokens)) throw invalid("tokens", "a list");
    const version = field(body, "version");
    const rpcUrl = field(body, "rpc_url");
    return {
      rpcUrl: typeof rpcUrl === "string" && /^https?:\/\//.test(rpcUrl) ? rpcUrl : null,
      version: typeof version === "string" ? version : "",
      chainId,
      contract: parseAddress(field(body, "contract"), "contract"),
      payees: payees.map((p) => parseAddress(p, "payee")),
      minChallengePeriod: parseInteger(field(body, "min_challenge_period"), "min_challenge_period"),
      tokens: tokens.map((t) => {
        const symbol = field(t, "symbol");
        const decimals = field(t, "decimals");
        if (typeof decimals !== "number" || !Number.isInteger(decimals) || decimals < 0 || decimals > 77) throw invalid("tokens[].decimals", "an integer 0..77");
        return {
          address: parseAddress(field(t, "address"), "token"),
          symbol: typeof symbol === "string" ? symbol.replace(/[^\p{L}\p{N}._-]/gu, "").slice(0, 12) : "?",
          decimals,
          minDeposit: parseUint(field(t, "min_deposit"), "min_deposit"),
        };
      }),
    };
  });
}

function parseServiceChannel(body: unknown): ServiceChannel {
  return wrap("channel", () => {
    const latest = field(body, "latest");
    const signer = field(body, "voucher_signer");
    const rawSig = latest ? field(latest, "signature") : null;
    const voucherSigner = signer === null || signer === undefined ? null : parseAddress(signer, "voucher_signer");
    return {
      channelId: parseBytes32(field(body, "channel_id"), "channel_id"),
      payer: parseAddress(field(body, "payer"), "payer"),
      payee: parseAddress(field(body, "payee"), "payee"),
      token: parseAddress(field(body, "token"), "token"),
      deposit: parseUint(field(body, "deposit"), "deposit"),
      claimed: parseUint(field(body, "claimed"), "claimed"),
      challengePeriod: parseInteger(field(body, "challenge_period"), "challenge_period"),
      closesAt: parseInteger(field(body, "closes_at"), "closes_at"),
      status: String(field(body, "status")),
      voucherSigner: voucherSigner && isAddressEqual(voucherSigner, ZERO_ADDRESS) ? null : voucherSigner,
      latest: latest
        ? {
            cumulativeAmount: parseUint(field(latest, "cumulative_amount"), "latest.cumulative_amount"),
            signature: rawSig === null || rawSig === undefined ? null : parseSignature(rawSig, "latest voucher signature"),
          }
        : null,
    };
  });
}

function parseReceipt(body: unknown): ReceiptData {
  return wrap("receipt", () => ({
    channelId: parseBytes32(field(body, "channel_id"), "channel_id"),
    taskId: parseBytes32(field(body, "task_id"), "task_id"),
    amount: parseUint(field(body, "amount"), "amount"),
    cumulativeAmount: parseUint(field(body, "cumulative_amount"), "cumulative_amount"),
    signature: parseSignature(field(body, "signature"), "receipt signature"),
  }));
}

function parseTask(body: unknown, channelId: Hex): Task {
  return wrap("task", () => {
    const taskId = field(body, "task_id");
    if (typeof taskId !== "string") throw invalid("task.task_id", "a string");
    const hash = parseBytes32(field(body, "task_hash"), "task_hash");
    // The hash is what receipts sign; a task whose hash is not its id's would show one task
    // and let the payer pay (and get a receipt for) another.
    if (hash !== taskHash(taskId)) throw invalid("task.task_hash", "keccak256 of its task_id");
    const description = field(body, "description");
    const status = field(body, "status");
    if (status !== "requested" && status !== "paid") throw invalid("task.status", '"requested" or "paid"');
    const receipt = field(body, "receipt");
    const parsed = receipt === null || receipt === undefined ? null : parseReceipt(receipt);
    if (parsed && parsed.channelId !== channelId.toLowerCase()) throw invalid("task.receipt.channel_id", "this channel");
    return {
      taskId,
      taskHash: hash,
      amount: parseUint(field(body, "amount"), "amount"),
      description: typeof description === "string" ? description.slice(0, 2000) : "",
      status,
      requestedAt: Number(parseInteger(field(body, "requested_at"), "requested_at")),
      receipt: parsed,
    };
  });
}
