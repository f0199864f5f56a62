/**
 * One error tree for the SDK; every message is plain words a page can show as is.
 *
 *   PieceworkError (shortMessage, details)
 *   ├── InputError            bad amount, task id, address, hex typed by a person or a caller
 *   ├── ProblemError          the service answered RFC 9457 problem+json (status, code)
 *   ├── ServiceUnreachableError   no answer, or not JSON
 *   ├── InvalidResponseError  the service answered something that breaks the protocol
 *   ├── VerificationError     a receipt, consent or voucher that does not check out
 *   ├── UntrustedStateError   the service claims a state the payer cannot verify
 *   ├── ContractError         the contract reverted (named custom error)
 *   └── WalletError           the wallet refused (rejected, wrong network, no wallet)
 */

export class PieceworkError extends Error {
  override name = "PieceworkError";
  /** One sentence for people. */
  readonly shortMessage: string;
  /** Values involved (both sides of a mismatch), for logs and bug reports; never secrets. */
  readonly details: Readonly<Record<string, unknown>>;

  constructor(shortMessage: string, options: { details?: Record<string, unknown>; cause?: unknown } = {}) {
    super(shortMessage, options.cause === undefined ? undefined : { cause: options.cause });
    this.shortMessage = shortMessage;
    this.details = options.details ?? {};
  }
}

export class InputError extends PieceworkError {
  override name = "InputError";
}

export class ServiceUnreachableError extends PieceworkError {
  override name = "ServiceUnreachableError";
}

export class InvalidResponseError extends PieceworkError {
  override name = "InvalidResponseError";
}

export class VerificationError extends PieceworkError {
  override name = "VerificationError";
}

export class UntrustedStateError extends PieceworkError {
  override name = "UntrustedStateError";
}

export class ContractError extends PieceworkError {
  override name = "ContractError";
  readonly errorName: string;
  constructor(errorName: string, shortMessage: string, options: { details?: Record<string, unknown>; cause?: unknown } = {}) {
    super(shortMessage, options);
    this.errorName = errorName;
  }
}

export type WalletErrorKind = "rejected" | "wrong_chain" | "no_wallet" | "no_account" | "unsupported" | "failed";

export class WalletError extends PieceworkError {
  override name = "WalletError";
  readonly kind: WalletErrorKind;
  constructor(kind: WalletErrorKind, shortMessage: string, options: { details?: Record<string, unknown>; cause?: unknown } = {}) {
    super(shortMessage, options);
    this.kind = kind;
  }
}

/**
 * The stable problem codes of PROTOCOL.md (and of the service's generic errors), in plain
 * words. A code the SDK does not know falls back to the service's own `detail`.
 */
export const problemMessages = {
  access_required: "This channel's tasks and receipts are private: the request was not signed by the channel's payer side.",
  access_denied: "The service did not accept this page's access signature (wrong key, wrong channel, or expired).",
  unauthorized: "The operator token is missing or wrong.",
  forbidden: "The operator token is wrong.",
  unknown_channel: "The freelancer's service does not know this channel (not opened yet, or for another freelancer).",
  not_found: "The freelancer's service has no such resource.",
  channel_not_open: "The channel does not take payments now: it is closing, closed, or frozen by a close consent until its deadline.",
  token_not_accepted: "The freelancer does not accept this token, or the deposit is below the least the freelancer takes.",
  challenge_period_too_short: "The channel's challenge period is shorter than the freelancer requires.",
  invalid_signature: "The service says the signature is not from the channel's payer or voucher signer.",
  stale_voucher: "The service holds a newer payment than this page knew about.",
  exceeds_deposit: "This payment would exceed the channel's deposit: top up first.",
  amount_mismatch: "The amount differs from what the freelancer requested for this task.",
  invalid_task_id: "The task id is not valid (1 to 256 characters, no control characters).",
  close_not_authorized: "The close request was not signed by the channel's payer or voucher signer.",
  task_conflict: "A task with this id already exists with another amount or description.",
  nothing_to_claim: "There is nothing new to claim on this channel.",
  validation_error: "The service rejected the request's format.",
  payload_too_large: "The request is too large for the service.",
  node_unavailable: "The freelancer's service cannot reach the blockchain right now; try again shortly.",
  store_error: "The freelancer's service is busy; try again shortly.",
  unhealthy: "The freelancer's service is not healthy right now.",
  too_many_requests: "Too many requests; wait a moment.",
  internal_error: "The freelancer's service failed; try again later.",
} as const satisfies Record<string, string>;

export type ProblemCode = keyof typeof problemMessages;

/** A problem+json body (RFC 9457) with the service's extension members kept in `problem`. */
export type Problem = {
  type?: string;
  title?: string;
  status: number;
  detail?: string;
  code: string;
  [extension: string]: unknown;
};

export class ProblemError extends PieceworkError {
  override name = "ProblemError";
  readonly status: number;
  readonly code: string;
  readonly problem: Problem;
  constructor(problem: Problem) {
    const known = (problemMessages as Record<string, string>)[problem.code];
    super(known ?? problem.detail ?? `The service answered ${problem.status} (${problem.code}).`, {
      details: { status: problem.status, code: problem.code, detail: problem.detail },
    });
    this.status = problem.status;
    this.code = problem.code;
    this.problem = problem;
  }
}

/** Plain words for any error a page may meet; never shows a stack or a private key. */
export function plainMessage(error: unknown): string {
  if (error instanceof PieceworkError) return error.shortMessage;
  if (error instanceof Error && error.message) return `Something went wrong: ${error.message.split("\n")[0]}`;
  return "Something went wrong.";
}
