/**
 * The client page's durable state in IndexedDB (shared by every tab of this origin): voucher
 * signer keys, channels, verified receipts, the last service terms. BigInts are stored as is
 * (structured clone keeps them exact).
 */
import type { Address, Hex } from "viem";
import type { ReceiptData, Voucher } from "../sdk/index.ts";

const NAME = "piecework";
const VERSION = 1;

export type SignerRecord = { key: string; address: Address; privateKey: Hex; createdAt: number };

export type ChannelRecord = {
  channelId: Hex;
  chainId: number;
  contract: Address;
  payer: Address;
  payee: Address;
  token: Address;
  salt: Hex;
  voucherSigner: Address;
  openTx: Hex | null;
  /** Latest cumulative amount the service receipted. */
  cumulative: bigint;
  /** Highest cumulative amount this browser ever signed for the channel. */
  highestSigned: bigint;
  /** A voucher signed and maybe sent, whose receipt has not arrived yet (re-sent after a reload). */
  pending: Voucher | null;
  /** The service's base URL this channel pays. */
  service: string;
  createdAt: number;
};

export type StoredReceipt = ReceiptData & { key: string; taskLabel: string | null; receivedAt: number };

let opening: Promise<IDBDatabase> | null = null;

function open(): Promise<IDBDatabase> {
  opening ??= new Promise((resolve, reject) => {
    const request = indexedDB.open(NAME, VERSION);
    request.onupgradeneeded = () => {
      const db = request.result;
      db.createObjectStore("signers", { keyPath: "key" });
      db.createObjectStore("channels", { keyPath: "channelId" });
      const receipts = db.createObjectStore("receipts", { keyPath: "key" });
      receipts.createIndex("channel", "channelId");
      db.createObjectStore("meta");
    };
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
  return opening;
}

function done<T>(request: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function store(name: string, mode: IDBTransactionMode): Promise<IDBObjectStore> {
  return (await open()).transaction(name, mode).objectStore(name);
}

/** Other tabs hear about every write and reload what they show. */
const channel = typeof BroadcastChannel === "undefined" ? null : new BroadcastChannel("piecework");
export function onChange(listener: () => void): () => void {
  const handler = () => listener();
  channel?.addEventListener("message", handler);
  return () => channel?.removeEventListener("message", handler);
}
function changed(): void {
  channel?.postMessage("changed");
}

export const signerKey = (chainId: number, contract: Address, payer: Address) => `${chainId}:${contract.toLowerCase()}:${payer.toLowerCase()}`;

export async function getSigner(key: string): Promise<SignerRecord | undefined> {
  return done((await store("signers", "readonly")).get(key));
}

/** Stores `record` unless a signer exists for the key already (another tab won): returns the one kept. */
export async function putSignerOnce(record: SignerRecord): Promise<SignerRecord> {
  const db = await open();
  const tx = db.transaction("signers", "readwrite");
  const s = tx.objectStore("signers");
  const existing = (await done(s.get(record.key))) as SignerRecord | undefined;
  if (existing) return existing;
  await done(s.add(record));
  changed();
  return record;
}

export async function allSigners(): Promise<SignerRecord[]> {
  return done((await store("signers", "readonly")).getAll());
}

export async function getChannel(id: Hex): Promise<ChannelRecord | undefined> {
  return done((await store("channels", "readonly")).get(id));
}

export async function putChannel(record: ChannelRecord): Promise<void> {
  await done((await store("channels", "readwrite")).put(record));
  changed();
}

export async function updateChannel(id: Hex, update: (r: ChannelRecord) => ChannelRecord): Promise<ChannelRecord> {
  const db = await open();
  const s = db.transaction("channels", "readwrite").objectStore("channels");
  const current = (await done(s.get(id))) as ChannelRecord | undefined;
  if (!current) throw new Error(`unknown channel ${id}`);
  const next = update(current);
  await done(s.put(next));
  changed();
  return next;
}

export async function deleteChannel(id: Hex): Promise<void> {
  await done((await store("channels", "readwrite")).delete(id));
  changed();
}

export async function channelsOf(chainId: number, contract: Address, payer: Address): Promise<ChannelRecord[]> {
  const all = (await done((await store("channels", "readonly")).getAll())) as ChannelRecord[];
  return all
    .filter((c) => c.chainId === chainId && c.contract.toLowerCase() === contract.toLowerCase() && c.payer.toLowerCase() === payer.toLowerCase())
    .sort((a, b) => a.createdAt - b.createdAt);
}

export const receiptKey = (channelId: Hex, cumulative: bigint) => `${channelId}:${cumulative.toString().padStart(78, "0")}`;

export async function putReceipts(receipts: StoredReceipt[]): Promise<void> {
  if (receipts.length === 0) return;
  const s = await store("receipts", "readwrite");
  await Promise.all(receipts.map((r) => done(s.put(r))));
  changed();
}

export async function receiptsOf(channelId: Hex): Promise<StoredReceipt[]> {
  const s = await store("receipts", "readonly");
  const list = (await done(s.index("channel").getAll(channelId))) as StoredReceipt[];
  return list.sort((a, b) => (a.cumulativeAmount < b.cumulativeAmount ? -1 : 1));
}

export async function getMeta<T>(key: string): Promise<T | undefined> {
  return done((await store("meta", "readonly")).get(key));
}

export async function putMeta(key: string, value: unknown): Promise<void> {
  await done((await store("meta", "readwrite")).put(value, key));
}
