/**
 * Contract calls through viem with the ABI generated from the Hardhat artifact. Each write
 * simulates first (a call that would revert never reaches the wallet as a prompt), then sends;
 * `waitForTransaction` turns a mined receipt into success or a named `ContractError`.
 */
import {
  type Account,
  type Address,
  type Chain,
  type ContractFunctionArgs,
  type ContractFunctionName,
  type Hex,
  type PublicClient,
  type Transport,
  type WalletClient,
  BaseError,
  ContractFunctionRevertedError,
  UserRejectedRequestError,
  erc20Abi,
  hashDomain,
  hexToSignature,
  isAddressEqual,
  parseAbi,
} from "viem";
import { paymentChannelsAbi } from "./abi.generated.ts";
import { ContractError, InputError, PieceworkError, WalletError } from "./errors.ts";
import { ZERO_ADDRESS, channelId as computeChannelId, randomSalt } from "./ids.ts";

export type Wallet = WalletClient<Transport, Chain | undefined, Account>;
export type Reader = PublicClient<Transport, Chain | undefined>;

export type ChannelStatus = "none" | "open" | "closing" | "closed";
const STATUS: readonly ChannelStatus[] = ["none", "open", "closing", "closed"];

/** `getChannel` in the protocol's shape; `voucherSigner` is null when only the payer signs. */
export type OnchainChannel = {
  channelId: Hex;
  payer: Address;
  payee: Address;
  token: Address;
  deposit: bigint;
  claimed: bigint;
  challengePeriod: bigint;
  closesAt: bigint;
  status: ChannelStatus;
  voucherSigner: Address | null;
};

export type Claim = { channelId: Hex; cumulativeAmount: bigint; payerSignature: Hex };

/** The EIP-2612 / EIP-5267 views a permit needs; not our contract's, so not generated. */
const permitAbi = parseAbi([
  "function nonces(address owner) view returns (uint256)",
  "function DOMAIN_SEPARATOR() view returns (bytes32)",
  "function eip712Domain() view returns (bytes1 fields, string name, string version, uint256 chainId, address verifyingContract, bytes32 salt, uint256[] extensions)",
]);

const EIP712_DOMAIN = [
  { name: "name", type: "string" },
  { name: "version", type: "string" },
  { name: "chainId", type: "uint256" },
  { name: "verifyingContract", type: "address" },
] as const;

/** The contract's custom errors in plain words. */
export const revertMessages: Record<string, string> = {
  ChannelIdUsed: "A channel with this id already exists; open it again to get a new id.",
  ChannelNotOpen: "The channel is not open.",
  ChannelClosing: "The channel is already closing; it can no longer be topped up or closed again.",
  ChannelNotClosing: "The channel's close has not been started, so it cannot be settled yet.",
  ChallengePeriodOver: "The challenge period is over: only settle is possible now.",
  ChallengePeriodNotOver: "The challenge period has not ended yet; settle becomes possible at the time shown.",
  InvalidChallengePeriod: "The challenge period must be more than 0 and at most 30 days.",
  InvalidPayee: "The freelancer's address is missing.",
  ZeroAmount: "The amount must be more than 0.",
  DepositTooLarge: "The deposit would be larger than the contract allows.",
  EthNotAccepted: "ETH cannot be sent with a token channel.",
  WrongEthAmount: "The ETH sent does not match the amount.",
  FeeOnTransferToken: "The token delivered less than the amount (a fee-on-transfer token); it cannot be used.",
  NotPayer: "Only the client who opened this channel can do this; switch your wallet to that account.",
  NotPayee: "Only the freelancer of this channel can do this; switch your wallet to the freelancer's account.",
  InvalidSignature: "A signature does not match the channel's payer, voucher signer or freelancer.",
  NothingToClaim: "There is nothing new to claim.",
  NothingToWithdraw: "Nothing is owed to this account.",
  EthTransferFailed: "The ETH transfer was refused by the receiver.",
  InvalidToken: "The token address is not a token contract.",
  ConsentExpired: "The freelancer's close consent expired before the transaction was mined; ask for a new one.",
  InsufficientGasForPayout: "The transaction did not leave enough gas for the payout; retry with a higher gas limit.",
  ERC20InsufficientBalance: "Your token balance is too low.",
  ERC20InsufficientAllowance: "The contract may not take that many tokens yet (allowance too low).",
  SafeERC20FailedOperation: "The token transfer failed (balance or allowance too low).",
};

/** Maps anything a contract call throws to a `PieceworkError` with plain words. */
export function toPieceworkError(error: unknown): PieceworkError {
  if (error instanceof PieceworkError) return error;
  if (error instanceof BaseError) {
    const rejected = error.walk((e) => e instanceof UserRejectedRequestError || (typeof e === "object" && e !== null && (e as { code?: unknown }).code === 4001));
    if (rejected) return new WalletError("rejected", "You rejected the request in your wallet; nothing was sent.", { cause: error });
    const reverted = error.walk((e) => e instanceof ContractFunctionRevertedError);
    if (reverted instanceof ContractFunctionRevertedError) {
      const name = reverted.data?.errorName ?? "";
      const args = reverted.data?.args ?? [];
      const words = revertMessages[name] ?? (reverted.reason ? `The contract refused: ${reverted.reason}.` : "The contract refused the transaction.");
      return new ContractError(name || "unknown", words, { details: { args: args.map(String) }, cause: error });
    }
    if (error.name === "ChainMismatchError") return new WalletError("wrong_chain", "Your wallet is on another network.", { cause: error });
    return new PieceworkError(error.shortMessage || "The transaction failed.", { cause: error });
  }
  const code = typeof error === "object" && error !== null ? (error as { code?: unknown }).code : undefined;
  if (code === 4001) return new WalletError("rejected", "You rejected the request in your wallet; nothing was sent.", { cause: error });
  return new PieceworkError(error instanceof Error ? error.message : "The transaction failed.", { cause: error });
}

async function guarded<T>(run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (error) {
    throw toPieceworkError(error);
  }
}

type Mutability = "payable" | "nonpayable";
type WriteName = ContractFunctionName<typeof paymentChannelsAbi, Mutability>;
/** A write checked against the generated ABI: a renamed function or changed argument fails tsc. */
type Write<F extends WriteName> = {
  functionName: F;
  args: ContractFunctionArgs<typeof paymentChannelsAbi, Mutability, F>;
  value?: bigint;
};

async function send<const F extends WriteName>(wallet: Wallet, reader: Reader, contract: Address, call: Write<F>): Promise<Hex> {
  return guarded(async () => {
    // `Write<F>` checked the call; viem's overloads cannot follow a generic F, hence the casts.
    const { request } = await reader.simulateContract({
      address: contract,
      abi: paymentChannelsAbi,
      account: wallet.account,
      ...call,
    } as Parameters<Reader["simulateContract"]>[0]);
    return wallet.writeContract({ ...request, chain: wallet.chain ?? null, account: wallet.account } as Parameters<Wallet["writeContract"]>[0]);
  });
}

/** Waits for the receipt; throws a named `ContractError` when the transaction reverted. */
export async function waitForTransaction(reader: Reader, hash: Hex) {
  const receipt = await guarded(() => reader.waitForTransactionReceipt({ hash, pollingInterval: 250 }));
  if (receipt.status !== "success") {
    throw new ContractError("reverted", "The transaction was mined but reverted.", { details: { hash } });
  }
  return receipt;
}

export async function getChannel(reader: Reader, parameters: { contract: Address; channelId: Hex }): Promise<OnchainChannel> {
  const c = await guarded(() =>
    reader.readContract({ address: parameters.contract, abi: paymentChannelsAbi, functionName: "getChannel", args: [parameters.channelId] }),
  );
  return {
    channelId: parameters.channelId,
    payer: c.payer,
    payee: c.payee,
    token: c.token,
    deposit: c.deposit,
    claimed: c.claimed,
    challengePeriod: BigInt(c.challengePeriod),
    closesAt: BigInt(c.closesAt),
    status: STATUS[c.status] ?? "none",
    voucherSigner: isAddressEqual(c.voucherSigner, ZERO_ADDRESS) ? null : c.voucherSigner,
  };
}

/**
 * The final split of a closed channel from its `ChannelClosed` event (a closed channel's
 * storage is cleared, so `getChannel` reads zeros). Null when no such event is found.
 */
export async function closedSplit(reader: Reader, p: { contract: Address; channelId: Hex; fromBlock?: bigint }): Promise<{ payeeTotal: bigint; payerRefund: bigint; transactionHash: Hex } | null> {
  const logs = await guarded(() =>
    reader.getContractEvents({ address: p.contract, abi: paymentChannelsAbi, eventName: "ChannelClosed", args: { channelId: p.channelId }, fromBlock: p.fromBlock ?? 0n, toBlock: "latest" }),
  );
  const log = logs.at(-1);
  if (!log || log.args.payeeTotal === undefined || log.args.payerRefund === undefined) return null;
  return { payeeTotal: log.args.payeeTotal, payerRefund: log.args.payerRefund, transactionHash: log.transactionHash };
}

export type OpenParameters = {
  contract: Address;
  payee: Address;
  /** ERC-20 token, or the zero address for ETH. */
  token: Address;
  amount: bigint;
  challengePeriod: bigint;
  /** A key that may sign vouchers besides the payer (the browser's voucher signer), or null. */
  voucherSigner: Address | null;
  /** Defaults to 32 random bytes. */
  salt?: Hex;
};
export type Opened = { hash: Hex; channelId: Hex; salt: Hex };

function prepareOpen(wallet: Wallet, p: OpenParameters) {
  if (p.amount <= 0n) throw new InputError("The deposit must be more than 0.");
  const salt = p.salt ?? randomSalt();
  const id = computeChannelId({ payer: wallet.account.address, payee: p.payee, token: p.token, salt });
  const args = [p.payee, p.token, p.amount, p.challengePeriod, salt, p.voucherSigner ?? ZERO_ADDRESS] as const;
  return { salt, id, args };
}

/** `open` from the wallet: ETH (value = amount) or an ERC-20 the contract may already pull. */
export async function openChannel(wallet: Wallet, reader: Reader, p: OpenParameters): Promise<Opened> {
  const { salt, id, args } = prepareOpen(wallet, p);
  const isEth = isAddressEqual(p.token, ZERO_ADDRESS);
  const hash = await send(wallet, reader, p.contract, { functionName: "open", args, ...(isEth ? { value: p.amount } : {}) });
  return { hash, channelId: id, salt };
}

/** True when `owner` has not yet allowed `spender` to pull `amount` of `token`. */
export async function needsApproval(reader: Reader, p: { token: Address; owner: Address; spender: Address; amount: bigint }): Promise<boolean> {
  const allowance = await guarded(() => reader.readContract({ address: p.token, abi: erc20Abi, functionName: "allowance", args: [p.owner, p.spender] }));
  return allowance < p.amount;
}

/** `approve(spender, amount)` on the token from the wallet's account; returns the hash once sent. */
export function approve(wallet: Wallet, p: { token: Address; spender: Address; amount: bigint }): Promise<Hex> {
  return guarded(() =>
    wallet.writeContract({ address: p.token, abi: erc20Abi, functionName: "approve", args: [p.spender, p.amount], chain: wallet.chain ?? null, account: wallet.account }),
  );
}

/**
 * Lets `spender` pull `amount` of `token` from the wallet's account: sends `approve` and waits
 * for it, unless the allowance already covers `amount` (then returns null, no prompt).
 */
export async function approveIfNeeded(wallet: Wallet, reader: Reader, p: { token: Address; spender: Address; amount: bigint; onSent?: (hash: Hex) => void }): Promise<Hex | null> {
  if (!(await needsApproval(reader, { token: p.token, owner: wallet.account.address, spender: p.spender, amount: p.amount }))) return null;
  const hash = await approve(wallet, p);
  p.onSent?.(hash);
  await waitForTransaction(reader, hash);
  return hash;
}

/** ERC-20 without permit: `approve` (when needed), then `open`. Two transactions. */
export async function approveAndOpen(wallet: Wallet, reader: Reader, p: OpenParameters & { onApproveSent?: (hash: Hex) => void }): Promise<Opened & { approveHash: Hex | null }> {
  const approveHash = await approveIfNeeded(wallet, reader, { token: p.token, spender: p.contract, amount: p.amount, ...(p.onApproveSent ? { onSent: p.onApproveSent } : {}) });
  return { ...(await openChannel(wallet, reader, p)), approveHash };
}

/** The token's EIP-712 domain for its permit, or null when the token has no usable EIP-2612 permit. */
export async function permitDomain(reader: Reader, token: Address) {
  try {
    const separator = await reader.readContract({ address: token, abi: permitAbi, functionName: "DOMAIN_SEPARATOR" });
    const [, name, version, chainId, verifyingContract] = await reader.readContract({ address: token, abi: permitAbi, functionName: "eip712Domain" });
    const domain = { name, version, chainId, verifyingContract };
    // A token whose advertised domain does not hash to its DOMAIN_SEPARATOR would make the
    // permit fail on chain: treat it as permit-less rather than ask the wallet for a useless signature.
    const ours = hashDomain({ domain, types: { EIP712Domain: EIP712_DOMAIN } });
    return ours.toLowerCase() === separator.toLowerCase() ? domain : null;
  } catch {
    return null;
  }
}

/**
 * ERC-20 with an EIP-2612 permit: one signature prompt (the permit) and one transaction
 * (`openWithPermit`), no separate approve.
 */
export async function openChannelWithPermit(wallet: Wallet, reader: Reader, p: OpenParameters & { deadline?: bigint }): Promise<Opened> {
  const { salt, id, args } = prepareOpen(wallet, p);
  const domain = await permitDomain(reader, p.token);
  if (domain === null) throw new InputError("This token has no EIP-2612 permit; approve it first, then open.");
  const owner = wallet.account.address;
  const nonce = await guarded(() => reader.readContract({ address: p.token, abi: permitAbi, functionName: "nonces", args: [owner] }));
  const block = await guarded(() => reader.getBlock());
  const deadline = p.deadline ?? block.timestamp + 3600n;
  const signature = await guarded(() =>
    wallet.signTypedData({
      account: wallet.account,
      domain,
      types: {
        Permit: [
          { name: "owner", type: "address" },
          { name: "spender", type: "address" },
          { name: "value", type: "uint256" },
          { name: "nonce", type: "uint256" },
          { name: "deadline", type: "uint256" },
        ],
      },
      primaryType: "Permit",
      message: { owner, spender: p.contract, value: p.amount, nonce, deadline },
    }),
  );
  const { r, s, v } = hexToSignature(signature);
  const hash = await send(wallet, reader, p.contract, {
    functionName: "openWithPermit",
    args: [...args, deadline, Number(v ?? 27n), r, s],
  });
  return { hash, channelId: id, salt };
}

export function topUp(wallet: Wallet, reader: Reader, p: { contract: Address; channelId: Hex; token: Address; amount: bigint }): Promise<Hex> {
  const isEth = isAddressEqual(p.token, ZERO_ADDRESS);
  return send(wallet, reader, p.contract, { functionName: "topUp", args: [p.channelId, p.amount], ...(isEth ? { value: p.amount } : {}) });
}

export function startClose(wallet: Wallet, reader: Reader, p: { contract: Address; channelId: Hex }): Promise<Hex> {
  return send(wallet, reader, p.contract, { functionName: "startClose", args: [p.channelId] });
}

export function settle(wallet: Wallet, reader: Reader, p: { contract: Address; channelId: Hex }): Promise<Hex> {
  return send(wallet, reader, p.contract, { functionName: "settle", args: [p.channelId] });
}

/**
 * Closes at once with the payee's consent. `payerSignature` is the voucher for
 * `cumulativeAmount` (the voucher signer's counts); "0x" when nothing above `claimed` is owed.
 */
export function cooperativeClose(
  wallet: Wallet,
  reader: Reader,
  p: { contract: Address; channelId: Hex; cumulativeAmount: bigint; deadline: bigint; payerSignature: Hex; payeeSignature: Hex },
): Promise<Hex> {
  return send(wallet, reader, p.contract, {
    functionName: "cooperativeClose",
    args: [p.channelId, p.cumulativeAmount, p.deadline, p.payerSignature, p.payeeSignature],
  });
}

export function claimMany(wallet: Wallet, reader: Reader, p: { contract: Address; claims: readonly Claim[] }): Promise<Hex> {
  if (p.claims.length === 0) throw new InputError("Select at least one channel to claim.");
  return send(wallet, reader, p.contract, { functionName: "claimMany", args: [p.claims] });
}

/** Gas `claimMany` would use now, for showing the cost before the wallet prompt. */
export function estimateClaimMany(reader: Reader, p: { contract: Address; account: Address; claims: readonly Claim[] }): Promise<bigint> {
  return guarded(() =>
    reader.estimateContractGas({ address: p.contract, abi: paymentChannelsAbi, functionName: "claimMany", args: [p.claims], account: p.account }),
  );
}

export function closeByPayee(wallet: Wallet, reader: Reader, p: { contract: Address; channelId: Hex; cumulativeAmount: bigint; payerSignature: Hex }): Promise<Hex> {
  return send(wallet, reader, p.contract, { functionName: "closeByPayee", args: [p.channelId, p.cumulativeAmount, p.payerSignature] });
}

export type TokenInfo = { address: Address; symbol: string; decimals: number; permit: boolean };

/**
 * Symbol and decimals read from the token itself, never taken from the service: a service
 * that misstated decimals would make a person deposit 10^12 times what they typed.
 */
export async function tokenInfo(reader: Reader, token: Address): Promise<TokenInfo> {
  if (isAddressEqual(token, ZERO_ADDRESS)) return { address: ZERO_ADDRESS, symbol: "ETH", decimals: 18, permit: false };
  const [symbol, decimals] = await guarded(() =>
    Promise.all([
      reader.readContract({ address: token, abi: erc20Abi, functionName: "symbol" }),
      reader.readContract({ address: token, abi: erc20Abi, functionName: "decimals" }),
    ]),
  );
  // A token chooses its own symbol: keep it short and printable so it cannot pose as text.
  const clean = symbol.replace(/[^\p{L}\p{N}._-]/gu, "").slice(0, 12) || "TOKEN";
  return { address: token, symbol: clean, decimals, permit: (await permitDomain(reader, token)) !== null };
}

export async function balanceOf(reader: Reader, p: { token: Address; owner: Address }): Promise<bigint> {
  if (isAddressEqual(p.token, ZERO_ADDRESS)) return guarded(() => reader.getBalance({ address: p.owner }));
  return guarded(() => reader.readContract({ address: p.token, abi: erc20Abi, functionName: "balanceOf", args: [p.owner] }));
}
