/** Task ids and channel ids: validation and the hashes the protocol signs. */
import { type Address, type Hex, encodeAbiParameters, getAddress, isAddress, keccak256, toBytes, toHex } from "viem";
import { InputError } from "./errors.ts";

export const MAX_TASK_ID_LENGTH = 256;
export const ZERO_ADDRESS: Address = "0x0000000000000000000000000000000000000000";

/**
 * Throws unless `taskId` is 1..256 code points without control characters (Cc) or lone
 * surrogates: the service refuses any other, and TextEncoder would silently turn a lone
 * surrogate into U+FFFD, i.e. hash a different id than the one shown.
 */
export function validateTaskId(taskId: string): void {
  let count = 0;
  for (const ch of taskId) {
    const cp = ch.codePointAt(0)!;
    count++;
    if (cp <= 0x1f || (cp >= 0x7f && cp <= 0x9f)) {
      throw new InputError(`The task id contains a control character (U+${cp.toString(16).toUpperCase().padStart(4, "0")}) at position ${count}.`, { details: { taskId } });
    }
    if (cp >= 0xd800 && cp <= 0xdfff) {
      throw new InputError(`The task id contains an unpaired surrogate at position ${count}.`, { details: { taskId } });
    }
  }
  if (count === 0) throw new InputError("The task id is empty.");
  if (count > MAX_TASK_ID_LENGTH) {
    throw new InputError(`The task id is ${count} characters long; at most ${MAX_TASK_ID_LENGTH} are allowed.`, { details: { length: count } });
  }
}

/** `keccak256(utf8(taskId))`: the `taskId` a Receipt signs. */
export function taskHash(taskId: string): Hex {
  validateTaskId(taskId);
  return keccak256(toBytes(taskId));
}

/** `keccak256(abi.encode(payer, payee, token, salt))`: known before the open is mined. */
export function channelId(parameters: { payer: Address; payee: Address; token: Address; salt: Hex }): Hex {
  const { payer, payee, token, salt } = parameters;
  return keccak256(
    encodeAbiParameters(
      [{ type: "address" }, { type: "address" }, { type: "address" }, { type: "bytes32" }],
      [payer, payee, token, parseBytes32(salt, "salt")],
    ),
  );
}

/** 32 random bytes from the platform's CSPRNG. */
export function randomSalt(): Hex {
  return toHex(crypto.getRandomValues(new Uint8Array(32)));
}

/**
 * A bytes32 as exactly 0x + 64 hex digits, lower-cased. Short values are refused, not padded:
 * some libraries right-pad `0x1234` silently and would sign a different value.
 */
export function parseBytes32(value: unknown, what = "value"): Hex {
  if (typeof value !== "string" || !/^0x[0-9a-fA-F]{64}$/.test(value)) {
    throw new InputError(`The ${what} must be 0x followed by 64 hex digits.`, { details: { [what]: value } });
  }
  return value.toLowerCase() as Hex;
}

/** An address, checksummed. A mixed-case address with a wrong checksum is refused (a typo). */
export function parseAddress(value: unknown, what = "address"): Address {
  if (typeof value !== "string" || !isAddress(value, { strict: true })) {
    throw new InputError(`The ${what} is not a valid address (0x and 40 hex digits, correct checksum).`, { details: { [what]: value } });
  }
  return getAddress(value);
}
