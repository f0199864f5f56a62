// An independent Piecework client, written only from docs/PROTOCOL.md (v2): it never reads the
// project's code or the Hardhat artifact's ABI. Interop tests drive the contract with it; a later
// test can drive the payee service's HTTP API with the same module (`PayeeService`).
//
//   protocol constants   DOMAIN_NAME/VERSION, TYPES (the five EIP-712 types), PROTOCOL_ABI
//   pure helpers         domainOf, typedData, channelIdOf, taskHashOf
//   three signers        signWith.ethSigUtil / .ethers / .viem  (eth_signTypedData_v4 bytes)
//   three hashers        hashWith.ethSigUtil / .ethers / .viem  (EIP-712 digests)
//   ChannelsContract     ethers contract calls with custom errors decoded by name
//   PayeeService         the HTTP API (JSON, decimal-string amounts, problem+json errors)
import { SignTypedDataVersion, TypedDataUtils, recoverTypedSignature, signTypedData } from "@metamask/eth-sig-util";
import { AbiCoder, Contract, TypedDataEncoder, Wallet, getAddress, keccak256 as ethersKeccak, toUtf8Bytes } from "ethers";
import { hashTypedData, keccak256 as viemKeccak, toHex } from "viem";
import { privateKeyToAccount } from "viem/accounts";

export const DOMAIN_NAME = "PaymentChannels";
export const DOMAIN_VERSION = "2";
export const ETH = "0x0000000000000000000000000000000000000000";

/** The EIP-712 domain type exactly as MetaMask's eth_signTypedData_v4 hashes it (PROTOCOL.md). */
export const EIP712_DOMAIN = [
  { name: "name", type: "string" },
  { name: "version", type: "string" },
  { name: "chainId", type: "uint256" },
  { name: "verifyingContract", type: "address" },
];

/** The five signed messages of PROTOCOL.md "Signed messages (EIP-712)", field order as written. */
export const TYPES = {
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
};

/** The type strings as PROTOCOL.md prints them, to check every library's encodeType against. */
export const TYPE_STRINGS = {
  Voucher: "Voucher(bytes32 channelId,uint256 cumulativeAmount)",
  Receipt: "Receipt(bytes32 channelId,uint256 cumulativeAmount,uint256 amount,bytes32 taskId)",
  CloseConsent: "CloseConsent(bytes32 channelId,uint256 cumulativeAmount,uint64 deadline)",
  CloseRequest: "CloseRequest(bytes32 channelId,uint256 cumulativeAmount)",
  Access: "Access(bytes32 channelId,uint64 expires)",
};

/** The contract constant that publishes each type's hash. */
export const TYPEHASH_CONSTANT = {
  Voucher: "VOUCHER_TYPEHASH",
  Receipt: "RECEIPT_TYPEHASH",
  CloseConsent: "CLOSE_CONSENT_TYPEHASH",
  CloseRequest: "CLOSE_REQUEST_TYPEHASH",
  Access: "ACCESS_TYPEHASH",
};

/**
 * The contract's public interface, transcribed from PROTOCOL.md. The errors are the ones this
 * client decodes; PROTOCOL.md names them but does not spell out their arguments, so those were
 * taken from the contract's NatSpec-documented errors (see the report).
 */
export const PROTOCOL_ABI = [
  "function open(address payee, address token, uint256 amount, uint64 challengePeriod, bytes32 salt, address voucherSigner) payable returns (bytes32 channelId)",
  "function openWithPermit(address payee, address token, uint256 amount, uint64 challengePeriod, bytes32 salt, address voucherSigner, uint256 deadline, uint8 v, bytes32 r, bytes32 s) returns (bytes32 channelId)",
  "function topUp(bytes32 channelId, uint256 amount) payable",
  "function claim(bytes32 channelId, uint256 cumulativeAmount, bytes payerSignature)",
  "function claimMany((bytes32 channelId, uint256 cumulativeAmount, bytes payerSignature)[] claims)",
  "function closeByPayee(bytes32 channelId, uint256 cumulativeAmount, bytes payerSignature)",
  "function cooperativeClose(bytes32 channelId, uint256 cumulativeAmount, uint64 deadline, bytes payerSignature, bytes payeeSignature)",
  "function startClose(bytes32 channelId)",
  "function settle(bytes32 channelId)",
  "function getChannel(bytes32 channelId) view returns ((address payer, address payee, address token, uint256 deposit, uint256 claimed, uint64 challengePeriod, uint64 closesAt, uint8 status, address voucherSigner))",
  "function channelId(address payer, address payee, address token, bytes32 salt) pure returns (bytes32)",
  "function eip712Domain() view returns (bytes1 fields, string name, string version, uint256 chainId, address verifyingContract, bytes32 salt, uint256[] extensions)",
  "function owed(address account, address token) view returns (uint256)",
  "function withdraw(address token, address to)",
  "function VOUCHER_TYPEHASH() view returns (bytes32)",
  "function RECEIPT_TYPEHASH() view returns (bytes32)",
  "function CLOSE_CONSENT_TYPEHASH() view returns (bytes32)",
  "function CLOSE_REQUEST_TYPEHASH() view returns (bytes32)",
  "function ACCESS_TYPEHASH() view returns (bytes32)",
  "function hashVoucher(bytes32 channelId, uint256 cumulativeAmount) view returns (bytes32)",
  "function hashCloseConsent(bytes32 channelId, uint256 cumulativeAmount, uint64 deadline) view returns (bytes32)",
  "event ChannelOpened(bytes32 indexed channelId, address indexed payer, address indexed payee, address token, uint256 deposit, uint64 challengePeriod, address voucherSigner)",
  "event ChannelToppedUp(bytes32 indexed channelId, uint256 amount, uint256 deposit)",
  "event Claimed(bytes32 indexed channelId, uint256 cumulativeAmount, uint256 paid)",
  "event CloseStarted(bytes32 indexed channelId, uint64 closesAt)",
  "event ChannelClosed(bytes32 indexed channelId, uint256 payeeTotal, uint256 payerRefund)",
  "event PaymentDeferred(address indexed account, address indexed token, uint256 amount)",
  "event Withdrawn(address indexed account, address indexed token, address to, uint256 amount)",
  "error InvalidSignature(bytes32 channelId, address expectedSigner, address recoveredSigner)",
  "error ChannelNotOpen(bytes32 channelId, uint8 status)",
  "error ChannelIdUsed(bytes32 channelId)",
  "error NothingToClaim(bytes32 channelId, uint256 cumulativeAmount, uint256 claimed)",
  "error ConsentExpired(bytes32 channelId, uint64 deadline, uint256 timestamp)",
  "error ChallengePeriodNotOver(bytes32 channelId, uint64 closesAt, uint256 timestamp)",
  "error NotPayer(bytes32 channelId, address caller, address payer)",
  "error NothingToWithdraw(address account, address token)",
];

/** Channel.status values (PROTOCOL.md getChannel). */
export const STATUS = { None: 0, Open: 1, Closing: 2, Closed: 3 };

// ------------------------------------------------------------------ pure helpers

export function domainOf(chainId, verifyingContract) {
  return { name: DOMAIN_NAME, version: DOMAIN_VERSION, chainId: Number(chainId), verifyingContract: getAddress(verifyingContract) };
}

const BYTES32 = /^0x[0-9a-fA-F]{64}$/;

/**
 * The eth_signTypedData_v4 payload of one message. Integers travel as decimal strings (they may
 * exceed 2^53). bytes32 fields are checked for length here: eth-sig-util right-pads a short one.
 */
export function typedData(primaryType, domain, message) {
  const fields = TYPES[primaryType];
  if (!fields) throw new Error(`unknown type ${primaryType}`);
  const msg = {};
  for (const { name, type } of fields) {
    const v = message[name];
    if (v === undefined) throw new Error(`${primaryType}.${name} missing`);
    if (type === "bytes32") {
      if (!BYTES32.test(v)) throw new Error(`${primaryType}.${name} must be 32 bytes of hex, got ${v}`);
      msg[name] = v.toLowerCase();
    } else {
      msg[name] = BigInt(v).toString(10);
    }
  }
  return { types: { EIP712Domain: EIP712_DOMAIN, [primaryType]: fields }, primaryType, domain, message: msg };
}

/** `keccak256(abi.encode(payer, payee, token, salt))`, known before the open is mined. */
export function channelIdOf(payer, payee, token, salt) {
  return ethersKeccak(AbiCoder.defaultAbiCoder().encode(["address", "address", "address", "bytes32"], [payer, payee, token, salt]));
}

/** `taskId` as bytes32: keccak256 of the task id string's UTF-8 bytes. */
export function taskHashOf(taskId) {
  return ethersKeccak(toUtf8Bytes(taskId));
}

// ------------------------------------------------------------------ three independent signers/hashers

const keyBuffer = (privateKey) => Buffer.from(privateKey.replace(/^0x/, ""), "hex");
const withoutDomainType = (types) => Object.fromEntries(Object.entries(types).filter(([k]) => k !== "EIP712Domain"));
const bigintMessage = (primaryType, message) =>
  Object.fromEntries(TYPES[primaryType].map(({ name, type }) => [name, type === "bytes32" ? message[name] : BigInt(message[name])]));

/** Signatures as eth_signTypedData_v4 returns them (0x + r + s + v, v = 27/28). */
export const signWith = {
  ethSigUtil: async (privateKey, td) =>
    signTypedData({ privateKey: keyBuffer(privateKey), data: td, version: SignTypedDataVersion.V4 }),
  ethers: async (privateKey, td) => new Wallet(privateKey).signTypedData(td.domain, withoutDomainType(td.types), td.message),
  viem: async (privateKey, td) =>
    privateKeyToAccount(privateKey).signTypedData({
      domain: td.domain,
      types: withoutDomainType(td.types),
      primaryType: td.primaryType,
      message: bigintMessage(td.primaryType, td.message),
    }),
};

/** EIP-712 digests (what the contract's hashVoucher / hashCloseConsent return). */
export const hashWith = {
  ethSigUtil: (td) => `0x${TypedDataUtils.eip712Hash(td, SignTypedDataVersion.V4).toString("hex")}`,
  ethers: (td) => TypedDataEncoder.hash(td.domain, withoutDomainType(td.types), td.message),
  viem: (td) =>
    hashTypedData({ domain: td.domain, types: withoutDomainType(td.types), primaryType: td.primaryType, message: bigintMessage(td.primaryType, td.message) }),
};

/** Each library's type hash: keccak256 of its encodeType (viem does not export one). */
export const typeHashWith = {
  ethSigUtil: (primaryType) => `0x${TypedDataUtils.hashType(primaryType, TYPES).toString("hex")}`,
  ethers: (primaryType) =>
    ethersKeccak(toUtf8Bytes(TypedDataEncoder.from({ [primaryType]: TYPES[primaryType] }).encodeType(primaryType))),
  fromString: (primaryType) => viemKeccak(toHex(TYPE_STRINGS[primaryType])),
};

export function recoverSigner(td, signature) {
  return getAddress(recoverTypedSignature({ data: td, signature, version: SignTypedDataVersion.V4 }));
}

// ------------------------------------------------------------------ the contract

/** Thin wrapper over an ethers Contract built from PROTOCOL_ABI. */
export class ChannelsContract {
  constructor(address, runner) {
    this.contract = new Contract(address, PROTOCOL_ABI, runner);
    this.address = getAddress(address);
  }

  connect(runner) {
    return new ChannelsContract(this.address, runner);
  }

  async domain() {
    const [, name, version, chainId, verifyingContract] = await this.contract.eip712Domain();
    return { name, version, chainId: Number(chainId), verifyingContract: getAddress(verifyingContract) };
  }

  /** Sends a transaction and waits for its receipt; a revert rejects with `{name, args}` decoded. */
  async send(fn, args, overrides = {}) {
    try {
      const tx = await this.contract[fn](...args, overrides);
      return await tx.wait();
    } catch (e) {
      throw decodeRevert(e, this.contract.interface);
    }
  }

  async getChannel(id) {
    const c = await this.contract.getChannel(id);
    return {
      payer: c.payer, payee: c.payee, token: c.token, deposit: c.deposit, claimed: c.claimed,
      challengePeriod: c.challengePeriod, closesAt: c.closesAt, status: Number(c.status), voucherSigner: c.voucherSigner,
    };
  }

  events(receipt, name) {
    return receipt.logs
      .map((l) => { try { return this.contract.interface.parseLog(l); } catch { return null; } })
      .filter((l) => l && l.name === name)
      .map((l) => l.args);
  }
}

/**
 * A contract revert as an Error with `revertName` / `revertArgs` (the custom error decoded by
 * selector with `iface`), or the error unchanged when it carries no revert data this ABI knows.
 */
export function decodeRevert(e, iface) {
  const data = [e?.data, e?.info?.error?.data, e?.error?.data].find((d) => typeof d === "string" && /^0x[0-9a-fA-F]{8}/.test(d));
  if (!data) return e;
  let parsed = null;
  try {
    parsed = iface.parseError(data);
  } catch {
    // not one of ours: keep the original error
  }
  if (!parsed) return e;
  const out = new Error(`${parsed.name}(${parsed.args.join(", ")})`, { cause: e });
  out.revertName = parsed.name;
  out.revertArgs = [...parsed.args];
  return out;
}

// ------------------------------------------------------------------ the payee service (HTTP)

/** A problem+json answer of the payee service, with its stable `code`. */
export class ProblemError extends Error {
  constructor(status, problem) {
    super(`${status} ${problem.code ?? ""}: ${problem.detail ?? problem.title ?? ""}`);
    this.status = status;
    this.code = problem.code;
    this.problem = problem;
  }
}

/**
 * The payee service's HTTP API as PROTOCOL.md describes it. Amounts go out and come back as
 * decimal strings; signatures as 0x hex. Payer-side reads carry an `Access` signature.
 */
export class PayeeService {
  constructor(baseUrl, { fetchImpl = fetch } = {}) {
    this.baseUrl = baseUrl.replace(/\/$/, "");
    this.fetch = fetchImpl;
  }

  async request(method, path, { body, headers = {} } = {}) {
    const res = await this.fetch(`${this.baseUrl}${path}`, {
      method,
      headers: { accept: "application/json", ...(body ? { "content-type": "application/json" } : {}), ...headers },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    const json = text ? JSON.parse(text) : null;
    if (!res.ok) throw new ProblemError(res.status, json ?? {});
    return { status: res.status, body: json };
  }

  info() {
    return this.request("GET", "/v1/info").then((r) => r.body);
  }

  channel(id) {
    return this.request("GET", `/v1/channels/${id}`).then((r) => r.body);
  }

  /** Pays one task: the voucher for `cumulativeAmount` signed by the payer or its voucher signer. */
  pay(id, { taskId, amount, cumulativeAmount, signature }) {
    return this.request("POST", `/v1/channels/${id}/payments`, {
      body: { task_id: taskId, amount: String(amount), cumulative_amount: String(cumulativeAmount), signature },
    }).then((r) => r.body.receipt);
  }

  /** Asks for the payee's CloseConsent with a CloseRequest signature. */
  requestClose(id, { cumulativeAmount, signature }) {
    return this.request("POST", `/v1/channels/${id}/close`, {
      body: { cumulative_amount: String(cumulativeAmount), signature },
    }).then((r) => r.body);
  }

  tasks(id, access, status) {
    const q = status ? `?status=${status}` : "";
    return this.request("GET", `/v1/channels/${id}/tasks${q}`, { headers: accessHeader(access) }).then((r) => r.body.tasks);
  }

  receipts(id, access, after) {
    const q = after === undefined ? "" : `?after=${after}`;
    return this.request("GET", `/v1/channels/${id}/receipts${q}`, { headers: accessHeader(access) }).then((r) => r.body);
  }
}

/** `Authorization: Access <expires>.<signature>` for an Access message signed by the payer side. */
export function accessHeader({ expires, signature }) {
  return { authorization: `Access ${expires}.${signature}` };
}
