"""The pure channel state machine: ``transition(state, change) -> TransitionResult`` (Raiden style).

No I/O, no clock, no crypto: time arrives inside the state change (``now``, the service's unix
seconds, and ``chain_time``, the latest block timestamp the I/O layer knows) and the voucher's
signer arrives already recovered (``PaymentReceived.signer``), so the same inputs always give
the same outputs and replaying a log of changes rebuilds the state exactly.

A change the rules refuse raises a ``PaymentRejected`` subclass (microraiden style): nothing
was mutated, because states are frozen, so the caller simply keeps the old state.

Payee rules for ``PaymentReceived``, in PROTOCOL.md's validation order (the body's shape was
checked before a change could be built):

0. the task was already paid by this very voucher: an idempotent replay (``PaymentReplayed``,
   the caller answers with the stored receipt), whatever the channel's status now;
1. the channel: known and ``OPEN`` (a channel whose payer started closing takes no new
   payments: ``ChannelNotOpen``, even before ``closesAt``, because a receipt promises work
   the payee may not be paid for once the payer can settle), and not frozen by a close
   consent: after the payee signed ``CloseConsent(accepted, deadline)`` the payer may close at
   that amount until a block with ``timestamp > deadline`` exists, so no later voucher is
   accepted before ``chain_time > deadline`` (``ChannelNotOpen``);
2. the channel's terms: its token is accepted and its deposit at least that token's minimum
   (``TokenNotAccepted``); its challenge period at least the service minimum
   (``ChallengePeriodTooShort``);
3. the signature: the voucher was signed by the channel's payer, or by its voucher signer when
   it has one (``InvalidSignature``);
4. the amounts: the task was not already paid by another voucher (``TaskConflict``);
   ``amount > 0``; a requested task is paid exactly the requested amount (``AmountMismatch``);
   ``cumulative == accepted + amount`` (else ``StaleVoucher(current=...)``);
   ``cumulative <= deposit`` (else ``ExceedsDeposit``).

Payer rules for ``MakePayment``: channel open, ``amount > 0``, new cumulative within deposit.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from channel.errors import (
    AmountMismatch,
    ChallengePeriodTooShort,
    ChannelNotOpen,
    ExceedsDeposit,
    InvalidAmount,
    InvalidSignature,
    StaleVoucher,
    TaskConflict,
    TokenNotAccepted,
    UnknownChannel,
)
from channel.messages import ZERO_ADDRESS

__all__ = [
    "DEFAULT_MIN_CHALLENGE_PERIOD",
    "ChannelClosed",
    "ChannelOpened",
    "ChannelStatus",
    "ChannelToppedUp",
    "Claimed",
    "CloseStarted",
    "ConsentGiven",
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

# 24 h: an L2 sequencer outage (hours, not minutes, have happened) stops the payee's claim from
# landing while the challenge period keeps running; a day leaves room to ride one out.
DEFAULT_MIN_CHALLENGE_PERIOD: Final = 86_400


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
    voucher_signer: str = ZERO_ADDRESS
    """The key that may sign vouchers besides the payer; the zero address when none."""


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
    """The payer's (or voucher signer's) signature over ``Voucher(channel_id, accepted)``;
    None before any payment."""
    voucher_signer: str = ZERO_ADDRESS
    """From the chain (``getChannel``), never from a request."""
    consent_deadline: int | None = None
    """Deadline of the latest ``CloseConsent`` the payee signed (for ``accepted``), or None.
    While no block later than it exists the payer may close at ``accepted``: frozen."""
    revision: int = 0
    """Bumped by every consent and task request; a payment decided on an older revision
    loses its compare-and-set in the store and is decided again."""

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
            voucher_signer=ch.voucher_signer,
        )

    def frozen_at(self, chain_time: int) -> bool:
        """A consent is outstanding: no block with a timestamp above its deadline yet."""
        return self.consent_deadline is not None and chain_time <= self.consent_deadline

    def may_sign(self, signer: bytes) -> bool:
        """Whether ``signer`` (20 bytes) speaks for the payer side: the payer, or the voucher
        signer when the channel has one. Vouchers, close requests and access all use this."""
        if signer == bytes.fromhex(self.payer[2:]):
            return True
        # The zero address is "no voucher signer"; no key recovers to it, but never let a
        # zero 'signer' through by accident.
        return self.voucher_signer != ZERO_ADDRESS and signer == bytes.fromhex(
            self.voucher_signer[2:]
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
    """The payer sent a voucher paying ``amount`` for ``task_hash``; ``signer`` is recovered.

    ``chain_time`` is the latest block timestamp the I/O layer knows (only compared with a
    consent's deadline); ``requested_amount`` the amount the payee asked for this task, or
    None when it was never requested (metered use).
    """

    channel_id: bytes
    task_hash: bytes
    amount: int
    cumulative_amount: int
    voucher_signature: bytes
    signer: bytes
    now: int
    prior: PriorPayment | None = None
    chain_time: int = 0
    requested_amount: int | None = None


@dataclass(frozen=True, slots=True)
class ConsentGiven:
    """The payee signs ``CloseConsent(channel_id, cumulative_amount, deadline)``: the amount
    must be the latest accepted one, and the channel is frozen until block time passes
    ``deadline`` (or an earlier consent's, whichever is later)."""

    channel_id: bytes
    cumulative_amount: int
    deadline: int


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
    | ConsentGiven
    | MakePayment
    | VoucherSigned
    | ReceiptReceived
)

# --- events ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PaymentAccepted:
    """Store the voucher durably, then return ``Receipt(channel, cumulative, amount, task)``.

    ``revision`` is the channel revision the decision saw (the store's compare-and-set checks
    it); ``requested`` says the payment settles a requested task, to be marked paid.
    """

    channel_id: bytes
    task_hash: bytes
    amount: int
    previous: int
    cumulative_amount: int
    voucher_signature: bytes
    revision: int = 0
    requested: bool = False


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


def _eth_only() -> Mapping[str, int]:
    return types.MappingProxyType({ZERO_ADDRESS: 0})


@dataclass(frozen=True, slots=True)
class PayeeRules:
    """Service policy the payee applies on top of the protocol.

    ``accepted_tokens`` maps each accepted token (checksummed; the zero address is ETH) to the
    least deposit, in base units, a channel in it must hold.
    """

    min_challenge_period: int = DEFAULT_MIN_CHALLENGE_PERIOD
    accepted_tokens: Mapping[str, int] = field(default_factory=_eth_only)


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
                    voucher_signer=ch.voucher_signer,
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
        if isinstance(change, ConsentGiven):
            return _payee_consent(state, change)
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
                raise InvalidSignature("receipt is not signed by the channel's payee")
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
    # 1. the channel
    if state.status != ChannelStatus.OPEN:
        raise ChannelNotOpen(
            f"channel {channel} is {state.status.name.lower()}, not open",
            channel=channel,
            status=state.status.name.lower(),
            closes_at=state.closes_at,
        )
    if state.frozen_at(change.chain_time):
        raise ChannelNotOpen(
            f"channel {channel} is frozen: the payee consented to close it at "
            f"{state.accepted} until block time {state.consent_deadline}",
            channel=channel,
            status="close_consented",
            deadline=state.consent_deadline,
        )
    # 2. the channel's terms
    min_deposit = rules.accepted_tokens.get(state.token)
    if min_deposit is None:
        raise TokenNotAccepted(
            f"channel {channel} is in token {state.token}, which this service does not accept",
            channel=channel,
            token=state.token,
        )
    if state.deposit < min_deposit:
        raise TokenNotAccepted(
            f"channel {channel} holds a deposit of {state.deposit}, this service needs at "
            f"least {min_deposit} in token {state.token}",
            channel=channel,
            token=state.token,
            deposit=state.deposit,
            min_deposit=min_deposit,
        )
    if state.challenge_period < rules.min_challenge_period:
        raise ChallengePeriodTooShort(
            f"channel {channel} has a {state.challenge_period} s challenge period, "
            f"this service needs at least {rules.min_challenge_period} s",
            got=state.challenge_period,
            minimum=rules.min_challenge_period,
        )
    # 3. the signature
    if not state.may_sign(change.signer):
        raise InvalidSignature(
            f"voucher is signed by {_hex(change.signer)}, neither the payer {state.payer} "
            f"nor the channel's voucher signer",
            got=_hex(change.signer),
            expected=state.payer,
        )
    # 4. the amounts
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
    if change.requested_amount is not None and change.amount != change.requested_amount:
        raise AmountMismatch(
            f"task {_hex(change.task_hash)} was requested for {change.requested_amount}, "
            f"got a payment of {change.amount}",
            requested=change.requested_amount,
            got=change.amount,
        )
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
        state.voucher_signer,
        state.consent_deadline,
        state.revision,
    )
    event = PaymentAccepted(
        state.channel_id,
        change.task_hash,
        change.amount,
        state.accepted,
        change.cumulative_amount,
        change.voucher_signature,
        state.revision,
        change.requested_amount is not None,
    )
    return TransitionResult(new_state, (event,))


def _payee_consent(state: PayeeChannelState, change: ConsentGiven) -> TransitionResult:
    channel = _hex(state.channel_id)
    if state.status not in (ChannelStatus.OPEN, ChannelStatus.CLOSING):
        # cooperativeClose works while open or closing; a closed channel has nothing to agree.
        raise ChannelNotOpen(
            f"channel {channel} is {state.status.name.lower()}",
            channel=channel,
            status=state.status.name.lower(),
        )
    if change.cumulative_amount != state.accepted:
        raise StaleVoucher(
            f"close requested at {change.cumulative_amount}, the latest accepted amount is "
            f"{state.accepted}",
            current=state.accepted,
            channel=channel,
            got=change.cumulative_amount,
        )
    # A consent handed out earlier stays usable until its own deadline: a new one may extend
    # the freeze, never shorten it.
    deadline = max(change.deadline, state.consent_deadline or 0)
    return TransitionResult(
        dataclasses.replace(state, consent_deadline=deadline, revision=state.revision + 1)
    )


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
        ConsentGiven,
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
