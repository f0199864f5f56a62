"""The pure channel state machine: ``transition(state, change) -> TransitionResult`` (Raiden style).

No I/O, no clock, no crypto: time arrives inside the state change (``now``, unix seconds
comparable with block timestamps) and the voucher's signer arrives already recovered
(``PaymentReceived.signer``), so the same inputs always give the same outputs and replaying a
log of changes rebuilds the state exactly.

A change the rules refuse raises a ``PaymentRejected`` subclass (microraiden style): nothing
was mutated, because states are frozen, so the caller simply keeps the old state.

Payee rules for ``PaymentReceived`` (in this order):

0. the task was already paid by this very voucher: an idempotent replay (``PaymentReplayed``,
   the caller answers with the stored receipt), whatever the channel's status now;
1. the channel is known and ``OPEN`` (a channel whose payer started closing takes no new
   payments: ``ChannelNotOpen``, even before ``closesAt``, because a receipt promises work
   the payee may not be paid for once the payer can settle);
2. its challenge period is at least the service minimum (``ChallengePeriodTooShort``);
3. the voucher was signed by the channel's payer (``WrongSigner``);
4. the task was already paid by another voucher: ``TaskConflict``;
5. ``amount > 0`` and ``cumulative == accepted + amount`` (else ``StaleVoucher(current=...)``);
6. ``cumulative <= deposit`` (else ``ExceedsDeposit``).

Payer rules for ``MakePayment``: channel open, ``amount > 0``, new cumulative within deposit.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from dataclasses import dataclass
from typing import Any, Final

from channel.errors import (
    ChallengePeriodTooShort,
    ChannelNotOpen,
    ExceedsDeposit,
    InvalidAmount,
    StaleVoucher,
    TaskConflict,
    UnknownChannel,
    WrongSigner,
)

__all__ = [
    "DEFAULT_MIN_CHALLENGE_PERIOD",
    "ChannelClosed",
    "ChannelOpened",
    "ChannelStatus",
    "ChannelToppedUp",
    "Claimed",
    "CloseStarted",
    "Event",
    "MakePayment",
    "OnchainChannel",
    "PayeeChannelState",
    "PayeeRules",
    "PayerChannelState",
    "PaymentAccepted",
    "PaymentReceived",
    "PaymentReplayed",
    "PriorPayment",
    "ReceiptReceived",
    "SignVoucher",
    "StateChange",
    "TransitionResult",
    "VoucherSigned",
    "decode_change",
    "encode_change",
    "transition",
]

DEFAULT_MIN_CHALLENGE_PERIOD: Final = 3600


class ChannelStatus(enum.IntEnum):
    """``getChannel().status`` as the contract returns it."""

    NONE = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


@dataclass(frozen=True, slots=True)
class OnchainChannel:
    """A channel as ``getChannel`` shows it (addresses EIP-55 checksummed, amounts int)."""

    channel_id: bytes
    payer: str
    payee: str
    token: str
    deposit: int
    claimed: int
    challenge_period: int
    closes_at: int
    status: ChannelStatus


# --- states ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PayeeChannelState:
    """What the payee knows about one channel: the chain's view plus its latest voucher."""

    channel_id: bytes
    payer: str
    payee: str
    token: str
    deposit: int
    claimed: int
    challenge_period: int
    closes_at: int
    status: ChannelStatus
    accepted: int = 0
    """Cumulative amount of the latest accepted voucher."""
    voucher_signature: bytes | None = None
    """The payer's signature over ``Voucher(channel_id, accepted)``; None before any payment."""
    close_consented: bool = False
    """The payee signed a ``CloseConsent`` for ``accepted``: the amount is final from then on,
    since the payer may close at it any time and a later voucher would never be paid."""

    @classmethod
    def from_onchain(cls, ch: OnchainChannel) -> PayeeChannelState:
        return cls(
            ch.channel_id,
            ch.payer,
            ch.payee,
            ch.token,
            ch.deposit,
            ch.claimed,
            ch.challenge_period,
            ch.closes_at,
            ch.status,
            accepted=ch.claimed,
        )


@dataclass(frozen=True, slots=True)
class PayerChannelState:
    """What the payer knows about one channel: its deposit and the latest voucher it signed."""

    channel_id: bytes
    payer: str
    payee: str
    token: str
    deposit: int
    challenge_period: int
    closes_at: int
    status: ChannelStatus
    signed: int = 0
    """Cumulative amount of the latest voucher signed (or about to be signed)."""
    signature: bytes | None = None
    """Signature of ``Voucher(channel_id, signed)`` once the I/O layer has signed it."""
    receipted: int = 0
    """Highest cumulative amount the payee has acknowledged with a valid receipt."""


# --- state changes ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChannelOpened:
    """``ChannelOpened`` seen on chain (or the channel fetched with ``getChannel``)."""

    channel: OnchainChannel


@dataclass(frozen=True, slots=True)
class ChannelToppedUp:
    channel_id: bytes
    deposit: int
    """The new total deposit from the event (absolute, so replays are harmless)."""


@dataclass(frozen=True, slots=True)
class Claimed:
    channel_id: bytes
    cumulative_amount: int
    paid: int


@dataclass(frozen=True, slots=True)
class CloseStarted:
    channel_id: bytes
    closes_at: int


@dataclass(frozen=True, slots=True)
class ChannelClosed:
    channel_id: bytes
    payee_total: int
    payer_refund: int


@dataclass(frozen=True, slots=True)
class PriorPayment:
    """The stored payment for the same task, looked up by the I/O layer (None if new)."""

    cumulative_amount: int
    voucher_signature: bytes


@dataclass(frozen=True, slots=True)
class PaymentReceived:
    """The payer sent a voucher paying ``amount`` for ``task_hash``; ``signer`` is recovered."""

    channel_id: bytes
    task_hash: bytes
    amount: int
    cumulative_amount: int
    voucher_signature: bytes
    signer: bytes
    now: int
    prior: PriorPayment | None = None


@dataclass(frozen=True, slots=True)
class MakePayment:
    """The payer wants to pay ``amount`` for ``task_hash``."""

    channel_id: bytes
    task_hash: bytes
    amount: int


@dataclass(frozen=True, slots=True)
class VoucherSigned:
    """The payer's I/O layer signed the voucher ``MakePayment`` asked for."""

    channel_id: bytes
    cumulative_amount: int
    signature: bytes


@dataclass(frozen=True, slots=True)
class ReceiptReceived:
    """The payee answered with a receipt; ``signer_ok`` says it recovered to the channel payee."""

    channel_id: bytes
    task_hash: bytes
    cumulative_amount: int
    signer_ok: bool


StateChange = (
    ChannelOpened
    | ChannelToppedUp
    | Claimed
    | CloseStarted
    | ChannelClosed
    | PaymentReceived
    | MakePayment
    | VoucherSigned
    | ReceiptReceived
)

# --- events ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PaymentAccepted:
    """Store the voucher durably, then sign and return ``Receipt(channel, cumulative, task)``."""

    channel_id: bytes
    task_hash: bytes
    amount: int
    previous: int
    cumulative_amount: int
    voucher_signature: bytes


@dataclass(frozen=True, slots=True)
class PaymentReplayed:
    """The task was paid by this very voucher already: answer with the same receipt again."""

    channel_id: bytes
    task_hash: bytes
    cumulative_amount: int


@dataclass(frozen=True, slots=True)
class SignVoucher:
    """Payer side: sign ``Voucher(channel_id, cumulative_amount)`` and send it for the task."""

    channel_id: bytes
    task_hash: bytes
    amount: int
    cumulative_amount: int


Event = PaymentAccepted | PaymentReplayed | SignVoucher


@dataclass(frozen=True, slots=True)
class PayeeRules:
    """Service policy the payee applies on top of the protocol."""

    min_challenge_period: int = DEFAULT_MIN_CHALLENGE_PERIOD


State = PayeeChannelState | PayerChannelState


@dataclass(frozen=True, slots=True)
class TransitionResult:
    new_state: Any
    events: tuple[Event, ...] = ()


# --- the transition --------------------------------------------------------------------------


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


_DEFAULT_RULES: Final = PayeeRules()


def transition(
    state: State | None, change: StateChange, rules: PayeeRules = _DEFAULT_RULES
) -> TransitionResult:
    """Apply ``change`` to ``state`` (None before ``ChannelOpened``); pure and deterministic."""
    if isinstance(change, ChannelOpened):
        if state is None:
            return TransitionResult(PayeeChannelState.from_onchain(change.channel))
        # Re-fetching a known channel refreshes the chain fields, never our accepted amount.
        ch = change.channel
        if isinstance(state, PayeeChannelState):
            return TransitionResult(
                dataclasses.replace(
                    state,
                    deposit=ch.deposit,
                    claimed=ch.claimed,
                    closes_at=ch.closes_at,
                    status=ch.status,
                    accepted=max(state.accepted, ch.claimed),
                )
            )
        return TransitionResult(
            dataclasses.replace(state, deposit=ch.deposit, closes_at=ch.closes_at, status=ch.status)
        )
    if state is None:
        raise UnknownChannel(
            f"unknown channel {_hex(change.channel_id)}", channel=_hex(change.channel_id)
        )
    if isinstance(change, ChannelToppedUp):
        return TransitionResult(dataclasses.replace(state, deposit=change.deposit))
    if isinstance(change, CloseStarted):
        return TransitionResult(
            dataclasses.replace(state, closes_at=change.closes_at, status=ChannelStatus.CLOSING)
        )
    if isinstance(change, ChannelClosed):
        return TransitionResult(dataclasses.replace(state, status=ChannelStatus.CLOSED))
    if isinstance(state, PayeeChannelState):
        if isinstance(change, Claimed):
            return TransitionResult(
                dataclasses.replace(
                    state,
                    claimed=state.claimed + change.paid,
                    # Another instance (or a watchtower) may hold a newer voucher than ours.
                    accepted=max(state.accepted, change.cumulative_amount),
                )
            )
        if isinstance(change, PaymentReceived):
            return _payee_payment(state, change, rules)
    if isinstance(state, PayerChannelState):
        if isinstance(change, MakePayment):
            return _payer_payment(state, change)
        if isinstance(change, VoucherSigned):
            if change.cumulative_amount != state.signed:
                raise StaleVoucher(
                    f"signed {change.cumulative_amount}, expected {state.signed}",
                    current=state.signed,
                )
            return TransitionResult(dataclasses.replace(state, signature=change.signature))
        if isinstance(change, ReceiptReceived):
            if not change.signer_ok:
                raise WrongSigner("receipt is not signed by the channel's payee")
            return TransitionResult(
                dataclasses.replace(state, receipted=max(state.receipted, change.cumulative_amount))
            )
        if isinstance(change, Claimed):
            return TransitionResult(state)
    raise TypeError(f"{type(change).__name__} does not apply to {type(state).__name__}")


def _payee_payment(
    state: PayeeChannelState, change: PaymentReceived, rules: PayeeRules
) -> TransitionResult:
    channel = _hex(state.channel_id)
    prior = change.prior
    if (
        prior is not None
        and prior.cumulative_amount == change.cumulative_amount
        and prior.voucher_signature == change.voucher_signature
    ):
        # The receipt was issued already; answering a retry with it again is always safe,
        # even if the channel has started closing since.
        return TransitionResult(
            state,
            (PaymentReplayed(state.channel_id, change.task_hash, change.cumulative_amount),),
        )
    if state.status != ChannelStatus.OPEN:
        raise ChannelNotOpen(
            f"channel {channel} is {state.status.name.lower()}, not open",
            channel=channel,
            status=state.status.name.lower(),
            closes_at=state.closes_at,
        )
    if state.close_consented:
        raise ChannelNotOpen(
            f"channel {channel} is closing: the payee consented to close it at "
            f"{state.accepted}",
            channel=channel,
            status="close_consented",
            closes_at=state.closes_at,
        )
    if state.challenge_period < rules.min_challenge_period:
        raise ChallengePeriodTooShort(
            f"channel {channel} has a {state.challenge_period} s challenge period, "
            f"this service needs at least {rules.min_challenge_period} s",
            got=state.challenge_period,
            minimum=rules.min_challenge_period,
        )
    if change.signer != bytes.fromhex(state.payer[2:]):
        raise WrongSigner(
            f"voucher is signed by {_hex(change.signer)}, not by the payer {state.payer}",
            got=_hex(change.signer),
            expected=state.payer,
        )
    if prior is not None:
        raise TaskConflict(
            f"task {_hex(change.task_hash)} was already paid by the voucher for "
            f"{prior.cumulative_amount}, got one for {change.cumulative_amount}",
            task=_hex(change.task_hash),
            paid_cumulative=prior.cumulative_amount,
            got=change.cumulative_amount,
        )
    if change.amount <= 0:
        raise InvalidAmount(f"amount must be positive, got {change.amount}", got=change.amount)
    if change.cumulative_amount != state.accepted + change.amount:
        raise StaleVoucher(
            f"voucher for {change.cumulative_amount} does not extend the latest accepted "
            f"{state.accepted} by {change.amount}",
            current=state.accepted,
            channel=channel,
            got=change.cumulative_amount,
        )
    if change.cumulative_amount > state.deposit:
        raise ExceedsDeposit(
            f"voucher for {change.cumulative_amount} exceeds the deposit {state.deposit}",
            deposit=state.deposit,
            channel=channel,
            got=change.cumulative_amount,
        )
    # The explicit constructor, not dataclasses.replace: this runs once per payment and
    # replace() re-inspects the fields every call (~5x slower).
    new_state = PayeeChannelState(
        state.channel_id,
        state.payer,
        state.payee,
        state.token,
        state.deposit,
        state.claimed,
        state.challenge_period,
        state.closes_at,
        state.status,
        change.cumulative_amount,
        change.voucher_signature,
    )
    event = PaymentAccepted(
        state.channel_id,
        change.task_hash,
        change.amount,
        state.accepted,
        change.cumulative_amount,
        change.voucher_signature,
    )
    return TransitionResult(new_state, (event,))


def _payer_payment(state: PayerChannelState, change: MakePayment) -> TransitionResult:
    channel = _hex(state.channel_id)
    if state.status != ChannelStatus.OPEN:
        raise ChannelNotOpen(f"channel {channel} is not open", channel=channel)
    if change.amount <= 0:
        raise InvalidAmount(f"amount must be positive, got {change.amount}", got=change.amount)
    cumulative = state.signed + change.amount
    if cumulative > state.deposit:
        raise ExceedsDeposit(
            f"paying {change.amount} would bring the total to {cumulative}, "
            f"above the deposit {state.deposit}",
            deposit=state.deposit,
            channel=channel,
            got=cumulative,
        )
    return TransitionResult(
        dataclasses.replace(state, signed=cumulative, signature=None),
        (SignVoucher(state.channel_id, change.task_hash, change.amount, cumulative),),
    )


# --- (de)serialising changes for the state-change log ----------------------------------------

_CHANGE_TYPES: Final[dict[str, type[Any]]] = {
    cls.__name__: cls
    for cls in (
        ChannelOpened,
        ChannelToppedUp,
        Claimed,
        CloseStarted,
        ChannelClosed,
        PaymentReceived,
        MakePayment,
        VoucherSigned,
        ReceiptReceived,
        OnchainChannel,
        PriorPayment,
    )
}


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {"_type": type(value).__name__}
        for f in dataclasses.fields(value):
            out[f.name] = _encode(getattr(value, f.name))
        return out
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, enum.IntEnum):
        return int(value)
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        # Decimal strings: JSON readers in other languages round integers above 2**53.
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def _decode(value: Any, hint: Any) -> Any:
    if isinstance(value, dict):
        cls = _CHANGE_TYPES[value["_type"]]
        hints = typing.get_type_hints(cls)
        fields = dataclasses.fields(cls)
        return cls(**{f.name: _decode(value[f.name], hints[f.name]) for f in fields})
    if value is None:
        return None
    args = typing.get_args(hint)
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if base is bytes:
        return bytes.fromhex(value[2:])
    if base is ChannelStatus:
        return ChannelStatus(value)
    if base is int:
        return int(value)
    return value


def encode_change(change: StateChange) -> dict[str, Any]:
    """A JSON-safe dict of ``change`` (bytes as 0x hex, ints as decimal strings)."""
    encoded: dict[str, Any] = _encode(change)
    return encoded


def decode_change(data: dict[str, Any]) -> StateChange:
    """The inverse of ``encode_change``."""
    change: StateChange = _decode(data, None)
    return change
