"""The one exception tree of Piecework: every failure a user can see has a class and a stable code.

    PieceworkError                    root; ``str(e)`` is safe to show a user (never a key)
    ├── InvalidInput                  malformed data, rejected before any state is touched
    │   ├── InvalidBytes32            not exactly 32 bytes / not 0x hex
    │   ├── InvalidAddress            wrong length, not hex, or bad EIP-55 checksum
    │   ├── InvalidAmount             not an integer in 0..2**256-1 (or not a decimal string)
    │   ├── InvalidTaskId             not 1..256 code points, a control character, a surrogate
    │   ├── InvalidDescription        a task description that is not plain text of <= 2,000
    │   └── MalformedSignature        not 65 bytes of 0x hex (the shape; see InvalidSignature)
    ├── PaymentRejected               a well-formed request the payee must not accept
    │   ├── UnknownChannel            no such channel on chain (or not for our payee)
    │   ├── ChannelNotOpen            closing, closed, never opened, or frozen by a consent
    │   ├── ChannelClosingSoon        closesAt is inside the safety margin
    │   ├── TokenNotAccepted          the channel's token is not accepted, or deposit too low
    │   ├── ChallengePeriodTooShort   below the service's minimum
    │   ├── InvalidSignature          bad v/r/s, high s, or not by an allowed signer
    │   ├── StaleVoucher              does not extend the latest accepted voucher (race/replay)
    │   ├── TaskConflict              the task id was already paid by a different voucher, or
    │   │                             requested with another amount or description
    │   ├── AmountMismatch            a requested task paid with another amount
    │   └── ExceedsDeposit            cumulative amount above the channel's deposit
    ├── NotAuthorized                 who is asking may not do this
    │   ├── AccessRequired            a payer-side read without credentials (401)
    │   ├── AccessDenied              wrong signer or channel, expired, too far ahead (403)
    │   └── CloseNotAuthorized        a CloseRequest not signed by the payer side (403)
    ├── ChainError                    talking to the node or the contract failed
    │   ├── NodeUnavailable           RPC unreachable or timed out
    │   ├── ContractRevert            the contract reverted with a named custom error
    │   └── TransactionTimeout        no receipt within the configured time
    ├── StoreError                    the database refused (after retries)
    └── ConfigError                   missing or contradictory configuration

Each class carries ``code`` (stable, machine-readable, used in problem+json) and keeps the
values involved as attributes so callers (api/problems.py) can expose them.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AccessDenied",
    "AccessRequired",
    "AmountMismatch",
    "ChainError",
    "ChallengePeriodTooShort",
    "ChannelClosingSoon",
    "ChannelNotOpen",
    "CloseNotAuthorized",
    "ConfigError",
    "ContractRevert",
    "ExceedsDeposit",
    "InvalidAddress",
    "InvalidAmount",
    "InvalidBytes32",
    "InvalidDescription",
    "InvalidInput",
    "InvalidSignature",
    "InvalidTaskId",
    "MalformedSignature",
    "NodeUnavailable",
    "NotAuthorized",
    "PaymentRejected",
    "PieceworkError",
    "StaleVoucher",
    "StoreError",
    "TaskConflict",
    "TokenNotAccepted",
    "TransactionTimeout",
    "UnknownChannel",
]


class PieceworkError(Exception):
    """Root of every error Piecework raises on purpose. The message is safe to show users."""

    code = "piecework_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details

    def __repr__(self) -> str:
        extra = ", ".join(f"{k}={v!r}" for k, v in self.details.items())
        return f"{type(self).__name__}({self.message!r}{', ' + extra if extra else ''})"


# --- malformed input -------------------------------------------------------------------------


class InvalidInput(PieceworkError):  # noqa: N818 - names fixed by the protocol docs
    code = "invalid_input"


class InvalidBytes32(InvalidInput):
    code = "invalid_bytes32"


class InvalidAddress(InvalidInput):
    code = "invalid_address"


class InvalidAmount(InvalidInput):
    code = "invalid_amount"


class InvalidTaskId(InvalidInput):
    code = "invalid_task_id"


class InvalidDescription(InvalidInput):
    code = "invalid_description"


class MalformedSignature(InvalidInput):
    code = "malformed_signature"


# --- well-formed but unacceptable payments -----------------------------------------------------


class PaymentRejected(PieceworkError):  # noqa: N818 - names fixed by the protocol docs
    code = "payment_rejected"


class UnknownChannel(PaymentRejected):
    code = "unknown_channel"


class ChannelNotOpen(PaymentRejected):
    code = "channel_not_open"


class ChannelClosingSoon(PaymentRejected):
    code = "channel_closing_soon"


class ChallengePeriodTooShort(PaymentRejected):
    code = "challenge_period_too_short"


class TokenNotAccepted(PaymentRejected):
    code = "token_not_accepted"


class InvalidSignature(PaymentRejected):
    """Not a canonical signature (v, r, s, low s) or not by a key allowed to sign this."""

    code = "invalid_signature"


class StaleVoucher(PaymentRejected):
    """The voucher does not extend the latest accepted one. ``current`` is that amount."""

    code = "stale_voucher"

    def __init__(self, message: str, *, current: int, **details: Any) -> None:
        super().__init__(message, current=current, **details)
        self.current = current


class TaskConflict(PaymentRejected):
    code = "task_conflict"


class AmountMismatch(PaymentRejected):
    """A requested task must be paid exactly the requested amount."""

    code = "amount_mismatch"


class ExceedsDeposit(PaymentRejected):
    code = "exceeds_deposit"

    def __init__(self, message: str, *, deposit: int, **details: Any) -> None:
        super().__init__(message, deposit=deposit, **details)
        self.deposit = deposit


# --- authorization ------------------------------------------------------------------------------


class NotAuthorized(PieceworkError):  # noqa: N818 - names fixed by the protocol docs
    code = "not_authorized"


class AccessRequired(NotAuthorized):
    code = "access_required"


class AccessDenied(NotAuthorized):
    code = "access_denied"


class CloseNotAuthorized(NotAuthorized):
    code = "close_not_authorized"


# --- chain --------------------------------------------------------------------------------------


class ChainError(PieceworkError):
    code = "chain_error"


class NodeUnavailable(ChainError):  # noqa: N818 - names fixed by the protocol docs
    code = "node_unavailable"


class ContractRevert(ChainError):  # noqa: N818 - names fixed by the protocol docs
    """The contract reverted; ``name`` is the Solidity custom error (e.g. ``InvalidSignature``)."""

    code = "contract_revert"

    def __init__(self, name: str, args: tuple[Any, ...] = (), message: str | None = None) -> None:
        shown = message or (f"contract reverted with {name}{args!r}" if args else name)
        super().__init__(shown, name=name, args=args)
        self.name = name
        self.revert_args = args


class TransactionTimeout(ChainError):  # noqa: N818 - names fixed by the protocol docs
    code = "transaction_timeout"


# --- infrastructure -----------------------------------------------------------------------------


class StoreError(PieceworkError):
    code = "store_error"


class ConfigError(PieceworkError):
    code = "config_error"
