/**
 * The voucher signer's backup file: written by "Export backup", read back by "Restore". A file
 * is outside input: everything in it is checked before it is stored, down to each channel id
 * being the hash of its own payer, payee, token and salt.
 */
import { type Address, type Hex, isAddressEqual } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { InputError, channelId, parseAddress, parseBytes32, parseUint } from "../../sdk/index.ts";

export const BACKUP_TYPE = "piecework-voucher-signer";

export type BackupChannel = { channelId: Hex; payee: Address; token: Address; salt: Hex; service: string; cumulative: bigint; highestSigned: bigint };
export type Backup = { chainId: number; contract: Address; payer: Address; signer: { address: Address; privateKey: Hex }; channels: BackupChannel[] };

export function writeBackup(backup: Backup): string {
  return JSON.stringify(
    {
      type: BACKUP_TYPE,
      version: 1,
      warning: "Anyone holding this file can sign payments from these channels up to their unclaimed deposits. Keep it private.",
      chainId: backup.chainId,
      contract: backup.contract,
      payer: backup.payer,
      address: backup.signer.address,
      privateKey: backup.signer.privateKey,
      channels: backup.channels.map((c) => ({ ...c, cumulative: c.cumulative.toString(), highestSigned: c.highestSigned.toString() })),
    },
    null,
    2,
  );
}

/** Parses and checks a backup for this network, contract and payer; throws `InputError` in plain words. */
export function readBackup(text: string, expected: { chainId: number; contract: Address; payer: Address }): Backup {
  let data: Record<string, unknown>;
  try {
    data = JSON.parse(text);
  } catch {
    throw new InputError("This file is not a Piecework signer backup (not JSON).");
  }
  if (typeof data !== "object" || data === null || data.type !== BACKUP_TYPE || data.version !== 1) throw new InputError("This file is not a Piecework signer backup.");
  if (typeof data.privateKey !== "string" || !/^0x[0-9a-fA-F]{64}$/.test(data.privateKey)) throw new InputError("The backup's key is damaged.");
  const privateKey = data.privateKey.toLowerCase() as Hex;
  const address = privateKeyToAccount(privateKey).address;
  if (typeof data.address !== "string" || !isAddressEqual(parseAddress(data.address, "signer address"), address)) throw new InputError("The backup's key does not match its address: the file is damaged.");
  if (data.chainId !== expected.chainId || !isAddressEqual(parseAddress(data.contract, "contract"), expected.contract) || !isAddressEqual(parseAddress(data.payer, "payer"), expected.payer)) {
    throw new InputError("This backup belongs to another account, network or contract.");
  }
  if (!Array.isArray(data.channels)) throw new InputError("The backup's channel list is damaged.");
  const channels = data.channels.map((raw: Record<string, unknown>, i: number): BackupChannel => {
    const c = {
      channelId: parseBytes32(raw?.channelId, "channel id"),
      payee: parseAddress(raw?.payee, "payee"),
      token: parseAddress(raw?.token, "token"),
      salt: parseBytes32(raw?.salt, "salt"),
      service: typeof raw?.service === "string" ? raw.service : "",
      cumulative: parseUint(raw?.cumulative, "cumulative"),
      highestSigned: parseUint(raw?.highestSigned, "highestSigned"),
    };
    if (channelId({ payer: expected.payer, payee: c.payee, token: c.token, salt: c.salt }) !== c.channelId) {
      throw new InputError(`Channel ${i + 1} in the backup does not match its own payee, token and salt: the file was altered.`);
    }
    return c.highestSigned < c.cumulative ? { ...c, highestSigned: c.cumulative } : c;
  });
  return { chainId: expected.chainId, contract: expected.contract, payer: expected.payer, signer: { address, privateKey }, channels };
}
