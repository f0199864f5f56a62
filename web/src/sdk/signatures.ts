/**
 * Sign and verify the protocol's EIP-712 messages, one small function per action (viem's shape).
 * A signer is a viem LocalAccount (the browser's voucher signer) or a WalletClient with an
 * account (a browser wallet: eth_signTypedData_v4).
 */
import {
  type Account,
  type Address,
  type Chain,
  type Hex,
  type LocalAccount,
  type Transport,
  type TypedDataDefinition,
  type WalletClient,
  getAddress,
  hashTypedData,
  isAddressEqual,
  recoverTypedDataAddress,
} from "viem";
import { VerificationError } from "./errors.ts";
import { parseBytes32, taskHash } from "./ids.ts";
import {
  type AccessMessage,
  type CloseConsentMessage,
  type CloseRequestMessage,
  type MessageOf,
  type MessageType,
  type PieceworkDomain,
  type ReceiptMessage,
  type VoucherMessage,
  typedData,
} from "./typedData.ts";

export type TypedDataSigner = LocalAccount | WalletClient<Transport, Chain | undefined, Account>;

function isLocal(signer: TypedDataSigner): signer is LocalAccount {
  return "type" in signer && signer.type === "local";
}

// viem infers message types from literal type tables; ours are checked by MessageOf instead,
// so the generic object is handed over as viem's untyped definition.
function definition<T extends MessageType>(domain: PieceworkDomain, type: T, message: MessageOf[T]): TypedDataDefinition {
  return typedData(domain, type, message) as unknown as TypedDataDefinition;
}

// secp256k1 group order / 2: the contract (OpenZeppelin ECDSA) rejects s above it.
const HALF_N = 0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0n;

/** The address that signs for `signer`. */
export function signerAddress(signer: TypedDataSigner): Address {
  return isLocal(signer) ? signer.address : signer.account.address;
}

async function sign<T extends MessageType>(signer: TypedDataSigner, domain: PieceworkDomain, type: T, message: MessageOf[T]): Promise<Hex> {
  const data = definition(domain, type, message);
  const signature = isLocal(signer) ? await signer.signTypedData(data) : await signer.signTypedData({ ...data, account: signer.account });
  return parseSignature(signature, `${type} signature from the signer`);
}

/** The EIP-712 digest of a message (what is signed). */
export function hashMessage<T extends MessageType>(domain: PieceworkDomain, type: T, message: MessageOf[T]): Hex {
  return hashTypedData(definition(domain, type, message));
}

/** The address that signed `message`; throws on a malformed or high-s signature. */
export async function recoverSigner<T extends MessageType>(domain: PieceworkDomain, type: T, message: MessageOf[T], signature: Hex): Promise<Address> {
  const sig = parseSignature(signature, `${type} signature`);
  return getAddress(await recoverTypedDataAddress({ ...definition(domain, type, message), signature: sig }));
}

/**
 * A signature as 0x + 65 bytes (r, s, v) with v 27/28 and low s: what eth_signTypedData_v4
 * returns and the only form the contract accepts. Lower-cased.
 */
export function parseSignature(value: unknown, what = "signature"): Hex {
  if (typeof value !== "string" || !/^0x[0-9a-fA-F]{130}$/.test(value)) {
    throw new VerificationError(`The ${what} is not 65 bytes of hex.`, { details: { [what]: value } });
  }
  const v = Number.parseInt(value.slice(130, 132), 16);
  if (v !== 27 && v !== 28) throw new VerificationError(`The ${what} has v = ${v}; only 27 or 28 are valid.`);
  const s = BigInt(`0x${value.slice(66, 130)}`);
  if (s > HALF_N) throw new VerificationError(`The ${what} is in high-s form, which the contract rejects.`);
  return value.toLowerCase() as Hex;
}

export function signVoucher(signer: TypedDataSigner, parameters: { domain: PieceworkDomain } & VoucherMessage): Promise<Hex> {
  const { domain, channelId, cumulativeAmount } = parameters;
  return sign(signer, domain, "Voucher", { channelId: parseBytes32(channelId, "channel id"), cumulativeAmount });
}

export function signCloseRequest(signer: TypedDataSigner, parameters: { domain: PieceworkDomain } & CloseRequestMessage): Promise<Hex> {
  const { domain, channelId, cumulativeAmount } = parameters;
  return sign(signer, domain, "CloseRequest", { channelId: parseBytes32(channelId, "channel id"), cumulativeAmount });
}

export function signAccess(signer: TypedDataSigner, parameters: { domain: PieceworkDomain } & AccessMessage): Promise<Hex> {
  const { domain, channelId, expires } = parameters;
  return sign(signer, domain, "Access", { channelId: parseBytes32(channelId, "channel id"), expires });
}

/** The payee's side (a payee implementation, tests): "I hold your voucher; `amount` pays `taskId`". */
export function signReceipt(signer: TypedDataSigner, parameters: { domain: PieceworkDomain } & ReceiptMessage): Promise<Hex> {
  const { domain, ...message } = parameters;
  return sign(signer, domain, "Receipt", { ...message, channelId: parseBytes32(message.channelId, "channel id"), taskId: parseBytes32(message.taskId, "task id hash") });
}

/** The payee's side: consent to close at `cumulativeAmount` until `deadline` (chain time). */
export function signCloseConsent(signer: TypedDataSigner, parameters: { domain: PieceworkDomain } & CloseConsentMessage): Promise<Hex> {
  const { domain, ...message } = parameters;
  return sign(signer, domain, "CloseConsent", { ...message, channelId: parseBytes32(message.channelId, "channel id") });
}

/** The `Authorization` header value for payer-side reads: `Access <expires>.<signature>`. */
export async function accessAuthorization(signer: TypedDataSigner, parameters: { domain: PieceworkDomain; channelId: Hex; expires: bigint }): Promise<string> {
  return `Access ${parameters.expires}.${await signAccess(signer, parameters)}`;
}

export type ReceiptData = {
  channelId: Hex;
  /** The signed bytes32 task id hash. */
  taskId: Hex;
  amount: bigint;
  cumulativeAmount: bigint;
  signature: Hex;
};

/**
 * Checks a receipt against what the payer paid: the payee signed it, for this channel, this
 * task, this task's amount and this cumulative amount. Returns the receipt on success; throws
 * `VerificationError` naming the first mismatch, with both sides in `details`.
 */
export async function verifyReceipt(parameters: {
  domain: PieceworkDomain;
  payee: Address;
  receipt: ReceiptData;
  expected: { channelId: Hex; taskId: string | Hex; amount?: bigint; cumulativeAmount?: bigint };
}): Promise<ReceiptData> {
  const { domain, payee, receipt, expected } = parameters;
  const wantTask = /^0x[0-9a-fA-F]{64}$/.test(expected.taskId) && expected.taskId.length === 66 ? expected.taskId.toLowerCase() : taskHash(expected.taskId);
  const mismatch = (what: string, got: unknown, want: unknown) => {
    throw new VerificationError(`The freelancer's receipt has the wrong ${what}: it says ${String(got)}, expected ${String(want)}.`, {
      details: { field: what, got, expected: want },
    });
  };
  if (receipt.channelId.toLowerCase() !== expected.channelId.toLowerCase()) mismatch("channel", receipt.channelId, expected.channelId);
  if (receipt.taskId.toLowerCase() !== wantTask) mismatch("task", receipt.taskId, wantTask);
  if (expected.amount !== undefined && receipt.amount !== expected.amount) mismatch("amount", receipt.amount, expected.amount);
  if (expected.cumulativeAmount !== undefined && receipt.cumulativeAmount !== expected.cumulativeAmount) {
    mismatch("cumulative amount", receipt.cumulativeAmount, expected.cumulativeAmount);
  }
  const message: ReceiptMessage = {
    channelId: receipt.channelId,
    cumulativeAmount: receipt.cumulativeAmount,
    amount: receipt.amount,
    taskId: receipt.taskId,
  };
  const signer = await recoverSigner(domain, "Receipt", message, receipt.signature);
  if (!isAddressEqual(signer, payee)) {
    throw new VerificationError(`The receipt is not signed by the freelancer ${payee} (signed by ${signer}).`, { details: { payee, signer } });
  }
  return receipt;
}

export type CloseConsentData = { channelId: Hex; cumulativeAmount: bigint; deadline: bigint; signature: Hex };

/**
 * Checks the payee's close consent: signed by the payee, for this channel and exactly the
 * amount asked, and not expired at `now` (chain time, seconds). A consent that fails here would
 * make `cooperativeClose` revert and waste the payer's gas.
 */
export async function verifyCloseConsent(parameters: {
  domain: PieceworkDomain;
  payee: Address;
  consent: CloseConsentData;
  expected: { channelId: Hex; cumulativeAmount: bigint };
  now?: bigint;
}): Promise<CloseConsentData> {
  const { domain, payee, consent, expected, now } = parameters;
  if (consent.channelId.toLowerCase() !== expected.channelId.toLowerCase()) {
    throw new VerificationError("The close consent is for another channel.", { details: { got: consent.channelId, expected: expected.channelId } });
  }
  if (consent.cumulativeAmount !== expected.cumulativeAmount) {
    throw new VerificationError(`The close consent is for ${consent.cumulativeAmount}, not the ${expected.cumulativeAmount} asked for.`, {
      details: { got: consent.cumulativeAmount, expected: expected.cumulativeAmount },
    });
  }
  if (now !== undefined && consent.deadline < now) {
    throw new VerificationError("The close consent has already expired.", { details: { deadline: consent.deadline, now } });
  }
  const signer = await recoverSigner(domain, "CloseConsent", { channelId: consent.channelId, cumulativeAmount: consent.cumulativeAmount, deadline: consent.deadline }, consent.signature);
  if (!isAddressEqual(signer, payee)) {
    throw new VerificationError(`The close consent is not signed by the freelancer ${payee} (signed by ${signer}).`, { details: { payee, signer } });
  }
  return consent;
}

/** True when `signature` is a voucher for `cumulativeAmount` from the payer or the voucher signer. */
export async function isValidVoucher(parameters: {
  domain: PieceworkDomain;
  channelId: Hex;
  cumulativeAmount: bigint;
  signature: Hex;
  payer: Address;
  voucherSigner: Address | null;
}): Promise<boolean> {
  const { domain, channelId, cumulativeAmount, signature, payer, voucherSigner } = parameters;
  try {
    const signer = await recoverSigner(domain, "Voucher", { channelId, cumulativeAmount }, signature);
    return isAddressEqual(signer, payer) || (voucherSigner !== null && !isAddressEqual(voucherSigner, "0x0000000000000000000000000000000000000000") && isAddressEqual(signer, voucherSigner));
  } catch {
    return false;
  }
}
