/** The protocol's EIP-712 domain and the five v2 message types, described once (PROTOCOL.md). */
import type { Address, Hex } from "viem";

export const DOMAIN_NAME = "PaymentChannels";
export const DOMAIN_VERSION = "2";

/**
 * The EIP-712 domain. Exactly these four fields, in this order: MetaMask's
 * eth_signTypedData_v4 hashes only the fields listed, so an extra field would change the digest.
 */
export type PieceworkDomain = {
  readonly name: typeof DOMAIN_NAME;
  readonly version: typeof DOMAIN_VERSION;
  readonly chainId: number;
  readonly verifyingContract: Address;
};

export function pieceworkDomain(chainId: number | bigint, verifyingContract: Address): PieceworkDomain {
  return { name: DOMAIN_NAME, version: DOMAIN_VERSION, chainId: Number(chainId), verifyingContract };
}

/** Field lists, the same strings as the contract's *_TYPEHASH constants (test/anvil.test.ts). */
export const pieceworkTypes = {
  Voucher: [
    { name: "channelId", type: "bytes32" },
    { name: "cumulativeAmount", type: "uint256" },
  ],
  Receipt: [
    { name: "channelId", type: "bytes32" },
    { name: "cumulativeAmount", type: "uint256" },
    { name: "amount", type: "uint256" },
    { name: "taskId", type: "bytes32" },
  ],
  CloseConsent: [
    { name: "channelId", type: "bytes32" },
    { name: "cumulativeAmount", type: "uint256" },
    { name: "deadline", type: "uint64" },
  ],
  CloseRequest: [
    { name: "channelId", type: "bytes32" },
    { name: "cumulativeAmount", type: "uint256" },
  ],
  Access: [
    { name: "channelId", type: "bytes32" },
    { name: "expires", type: "uint64" },
  ],
} as const;

export type MessageType = keyof typeof pieceworkTypes;

/** The message of each type, with every integer a bigint. */
export type VoucherMessage = { channelId: Hex; cumulativeAmount: bigint };
export type ReceiptMessage = { channelId: Hex; cumulativeAmount: bigint; amount: bigint; taskId: Hex };
export type CloseConsentMessage = { channelId: Hex; cumulativeAmount: bigint; deadline: bigint };
export type CloseRequestMessage = { channelId: Hex; cumulativeAmount: bigint };
export type AccessMessage = { channelId: Hex; expires: bigint };

export type MessageOf = {
  Voucher: VoucherMessage;
  Receipt: ReceiptMessage;
  CloseConsent: CloseConsentMessage;
  CloseRequest: CloseRequestMessage;
  Access: AccessMessage;
};

/**
 * The typed-data object for one message: only the primary type under `types`, so a wallet
 * shows (and hashes) exactly one struct.
 */
export function typedData<T extends MessageType>(domain: PieceworkDomain, primaryType: T, message: MessageOf[T]) {
  return {
    domain,
    types: { [primaryType]: pieceworkTypes[primaryType] } as Pick<typeof pieceworkTypes, T>,
    primaryType,
    message,
  } as const;
}
