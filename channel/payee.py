"""The payee service: take a voucher for a task, check it, store it, return a signed receipt.

``PayeeService.accept`` is the whole payee check in one readable function (after
microraiden's ``register_payment``): parse -> load the channel (fetch it from chain if unknown)
-> it must be ours -> recover the voucher's signer -> the pure state transition decides ->
sign the receipt -> commit (compare-and-set in the database) -> return the receipt. Nothing
is returned before the commit.

Besides payments it answers the payer side's ``CloseRequest`` with a ``CloseConsent`` (which
freezes the channel until its deadline has passed on chain), records the payee's task
requests, and checks ``Access`` signatures for the payer side's private reads.

``GroupCommitter`` batches concurrent ``accept`` calls into one transaction (one fsync for
many payments), which is what makes thousands of durable acceptances per second possible on
SQLite, whose per-commit fsync alone costs a few hundred microseconds. A batch the database
refuses (``StoreError``) is redone payment by payment, so one bad row cannot fail the honest
payments that happened to share its batch.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
import types
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Final, Protocol

from channel.errors import (
    AccessDenied,
    ChannelNotOpen,
    CloseNotAuthorized,
    ExceedsDeposit,
    InvalidAmount,
    InvalidDescription,
    InvalidSignature,
    PieceworkError,
    StoreError,
    TokenNotAccepted,
    UnknownChannel,
)
from channel.messages import (
    MAX_ACCESS_AHEAD,
    ZERO_ADDRESS,
    Access,
    CloseConsent,
    CloseRequest,
    Domain,
    Receipt,
    Voucher,
    parse_access,
    parse_amount,
    parse_bytes32,
    parse_signature,
    parse_task_id,
    task_id_hash,
)
from channel.signing import Signer, recover_digest
from channel.state import (
    DEFAULT_MIN_CHALLENGE_PERIOD,
    ChannelStatus,
    ConsentGiven,
    OnchainChannel,
    PayeeChannelState,
    PayeeRules,
    PaymentAccepted,
    PaymentReceived,
    PaymentReplayed,
    transition,
)
from channel.store import (
    PayeeStore,
    PendingPayment,
    Snapshot,
    StoredConsent,
    StoredPayment,
    StoredTask,
    prior_of,
)

__all__ = [
    "DEFAULT_CONSENT_TTL",
    "MAX_CONSENT_TTL",
    "MAX_DESCRIPTION_LENGTH",
    "ChannelSource",
    "GrantedConsent",
    "GroupCommitter",
    "InMemoryChannelSource",
    "PayeeService",
    "PaymentRequest",
    "SignedReceipt",
    "TokenInfo",
]

log = logging.getLogger(__name__)

# A lost compare-and-set means another writer advanced the channel; re-reading turns that
# into a definite answer (replay, stale, conflict) almost always on the first retry.
_MAX_ATTEMPTS = 4
_CHAIN_TIME_MAX_AGE: Final = 1.0
UNKNOWN_CHANNEL_TTL: Final = 10.0
"""Seconds a channel id the chain does not know is answered 404 without asking the node again
(issue 11 item 6). Short: a channel opened meanwhile is mirrored by the watcher, which is read
before this memory, or found again once it expires."""
_UNKNOWN_CHANNELS_MAX: Final = 100_000

DEFAULT_CONSENT_TTL: Final = 900
"""Seconds from the latest block's timestamp to a new consent's deadline (15 min)."""
MAX_CONSENT_TTL: Final = 3600
"""PROTOCOL.md: a deadline is at most one hour after the latest block's timestamp."""
MAX_DESCRIPTION_LENGTH: Final = 2000
# Plain text: printable characters, line breaks and tabs; no other control character (a
# terminal escape in a description shown to the client is an attack), no lone surrogate.
_BAD_DESCRIPTION_CHAR = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What ``/v1/info`` says of a token: read from its contract (ETH is fixed)."""

    address: str
    symbol: str
    decimals: int


class ChannelSource(Protocol):
    """What the payee reads from the chain (the chain client, or a twin)."""

    def get(self, channel_id: bytes) -> OnchainChannel | None:
        """The channel as ``getChannel`` returns it, or None if it was never opened."""
        ...

    def chain_time(self) -> int:
        """The latest block's timestamp."""
        ...

    def token(self, address: str) -> TokenInfo:
        """An ERC-20's symbol and decimals (never called for ETH)."""
        ...


class InMemoryChannelSource:
    """A ``ChannelSource`` backed by dicts: the chain's twin for unit tests."""

    def __init__(
        self, channels: Sequence[OnchainChannel] = (), *, now: int = 1_700_000_000
    ) -> None:
        self.channels: dict[bytes, OnchainChannel] = {c.channel_id: c for c in channels}
        self.now = now
        """The latest block's timestamp; tests move it."""
        self.tokens: dict[str, TokenInfo] = {}

    def put(self, channel: OnchainChannel) -> None:
        self.channels[channel.channel_id] = channel

    def get(self, channel_id: bytes) -> OnchainChannel | None:
        return self.channels.get(channel_id)

    def chain_time(self) -> int:
        return self.now

    def token(self, address: str) -> TokenInfo:
        try:
            return self.tokens[address]
        except KeyError:
            raise TokenNotAccepted(f"no token contract at {address}", token=address) from None


@dataclass(frozen=True, slots=True)
class SignedReceipt:
    """``Receipt(channel_id, cumulative_amount, amount, task_id)`` signed by the payee."""

    channel_id: bytes
    cumulative_amount: int
    amount: int
    task_id: bytes
    """bytes32 ``keccak256(utf8(task id))``."""
    signature: bytes

    @classmethod
    def of(cls, payment: StoredPayment) -> SignedReceipt:
        """The receipt a stored payment was answered with."""
        return cls(
            payment.channel_id,
            payment.cumulative_amount,
            payment.amount,
            payment.task_hash,
            payment.receipt_signature,
        )

    def as_json(self) -> dict[str, str]:
        """The protocol's JSON shape: hex ids/signature, amounts as decimal strings."""
        return {
            "channel_id": "0x" + self.channel_id.hex(),
            "task_id": "0x" + self.task_id.hex(),
            "amount": str(self.amount),
            "cumulative_amount": str(self.cumulative_amount),
            "signature": "0x" + self.signature.hex(),
        }


@dataclass(frozen=True, slots=True)
class GrantedConsent:
    """The payee's ``CloseConsent(channel_id, cumulative_amount, deadline)`` and signature."""

    channel_id: bytes
    cumulative_amount: int
    deadline: int
    signature: bytes


@dataclass(frozen=True, slots=True)
class PaymentRequest:
    """One ``accept`` call's arguments, for ``accept_many`` and ``GroupCommitter``."""

    channel_id: bytes | str
    task_id: str
    amount: int | str
    cumulative_amount: int | str
    signature: bytes | str
    now: int


@dataclass(frozen=True, slots=True)
class _Parsed:
    """A request whose fields passed the protocol's validation."""

    channel_id: bytes
    task_id: str
    task_hash: bytes
    amount: int
    cumulative_amount: int
    signature: bytes
    now: int


def _parse(r: PaymentRequest) -> _Parsed:
    return _Parsed(
        channel_id=parse_bytes32(r.channel_id),
        task_id=r.task_id,
        task_hash=task_id_hash(r.task_id),
        amount=parse_amount(r.amount),
        cumulative_amount=parse_amount(r.cumulative_amount),
        signature=parse_signature(r.signature),
        now=r.now,
    )


@dataclass(frozen=True, slots=True)
class _Decision:
    """What the payee decided for one request before anything is written."""

    receipt: SignedReceipt
    pending: PendingPayment | None
    """None for an idempotent replay: nothing to write, ``receipt`` is the stored one."""
    state: PayeeChannelState


@dataclass(slots=True)
class _Plan:
    """A batch decided but not yet written (see ``PayeeService._plan``)."""

    requests: Sequence[PaymentRequest]
    results: list[SignedReceipt | PieceworkError | None] = field(default_factory=list)
    parsed: list[_Parsed | None] = field(default_factory=list)
    pending: list[tuple[int, _Decision]] = field(default_factory=list)
    later: list[int] = field(default_factory=list)
    final_states: dict[bytes, PayeeChannelState] = field(default_factory=dict)
    tasks: set[tuple[bytes, bytes]] = field(default_factory=set)

    def __post_init__(self) -> None:
        if not self.results:
            self.results = [None] * len(self.requests)


class PayeeService:
    """Accepts vouchers for the payees whose keys it holds. Thread-safe; share one per process."""

    def __init__(
        self,
        store: PayeeStore,
        signer: Signer,
        domain: Domain,
        source: ChannelSource | None = None,
        *,
        min_challenge_period: int = DEFAULT_MIN_CHALLENGE_PERIOD,
        accepted_tokens: Mapping[str, int] | None = None,
        consent_ttl: int = DEFAULT_CONSENT_TTL,
    ) -> None:
        """``accepted_tokens``: token address (zero for ETH) -> least deposit; default ETH only.
        ``consent_ttl``: seconds from the latest block to a consent's deadline (<= 1 h)."""
        if not 0 < consent_ttl <= MAX_CONSENT_TTL:
            raise ValueError(f"consent_ttl must be 1..{MAX_CONSENT_TTL} s, got {consent_ttl}")
        self.store = store
        self.signer = signer
        self.domain = domain
        self.source = source
        tokens = dict(accepted_tokens) if accepted_tokens is not None else {ZERO_ADDRESS: 0}
        self.rules = PayeeRules(
            min_challenge_period=min_challenge_period,
            accepted_tokens=types.MappingProxyType(tokens),
        )
        self.consent_ttl = consent_ttl
        self._payee_address = signer.address
        # The latest block timestamp seen. Block time only moves forward, so once it is past a
        # consent's deadline it stays past: the node is asked again only for a channel whose
        # consent may still be outstanding, never on the plain payment path.
        self._chain_time = 0
        self._chain_time_read = float("-inf")  # time.monotonic() of the last read
        # Channel ids the chain did not know -> time.monotonic() until which that answer
        # stands: a payer repeating a random id costs the node one read per TTL, not one per
        # request (insertion order = expiry order, so the oldest go first when full).
        self._unknown: dict[bytes, float] = {}
        self._unknown_lock = threading.Lock()
        self.mirrored: set[bytes] = set()
        """Channel ids known to be in the store (a channel row is never deleted): the group
        committer decides these at once and looks the others up outside its decider."""

    # --- the payee check -------------------------------------------------------------------

    def accept(  # noqa: PLR0917 - the positional signature the API layer was promised
        self,
        channel_id: bytes | str,
        task_id: str,
        amount: int | str,
        cumulative_amount: int | str,
        signature: bytes | str,
        now: int,
    ) -> SignedReceipt:
        """Accept a voucher paying ``amount`` for ``task_id``; returns the receipt after commit.

        ``cumulative_amount`` must equal the latest accepted amount plus ``amount``. The same
        task with the same voucher again returns the same receipt. ``now`` is unix seconds.

        Raises, in PROTOCOL.md's order: ``InvalidInput`` subclasses for malformed fields;
        ``UnknownChannel`` (not on chain, or not for this payee), ``ChannelNotOpen`` (also
        while frozen by a consent); ``TokenNotAccepted``, ``ChallengePeriodTooShort``;
        ``InvalidSignature``; ``TaskConflict``, ``InvalidAmount``, ``AmountMismatch``,
        ``StaleVoucher`` (with ``current``), ``ExceedsDeposit`` (with ``deposit``). Also
        ``StoreError`` and ``NodeUnavailable``.
        """
        request = PaymentRequest(channel_id, task_id, amount, cumulative_amount, signature, now)
        parsed = _parse(request)
        key = (parsed.channel_id, parsed.task_hash)
        for _attempt in range(_MAX_ATTEMPTS):
            snap = self.store.load(parsed.channel_id, parsed.task_hash)
            decision = self._decide(
                parsed,
                snap.state(parsed.channel_id),
                snap.payments.get(key),
                snap.requested.get(key),
            )
            if decision.pending is None:
                return decision.receipt  # idempotent replay of a stored payment
            if self.store.accept_payment(decision.pending):
                return decision.receipt
            log.debug("lost the compare-and-set on 0x%s; re-reading", parsed.channel_id.hex())
        raise StoreError(f"payment still racing after {_MAX_ATTEMPTS} attempts; retry")

    def _decide(
        self,
        p: _Parsed,
        state: PayeeChannelState | None,
        stored: StoredPayment | None,
        requested: int | None,
    ) -> _Decision:
        """Verify one parsed request against ``state`` and run the transition; writes nothing
        (except fetching an unknown channel from the chain into the store)."""
        if state is None:
            state = self._fetch(p.channel_id)
        self._require_ours(state)
        voucher = Voucher(p.channel_id, p.cumulative_amount)
        try:
            signer = recover_digest(self.domain.digest(voucher), p.signature)
        except InvalidSignature:
            # Not a signature at all (bad v, high s, ...): the state machine reports it at the
            # signature step, after the channel and its terms, as PROTOCOL.md orders.
            signer = bytes(20)

        def change_for(st: PayeeChannelState) -> PaymentReceived:
            return PaymentReceived(
                p.channel_id,
                p.task_hash,
                p.amount,
                p.cumulative_amount,
                p.signature,
                signer,
                p.now,
                prior_of(stored),
                self._chain_time_for(st),
                requested,
            )

        try:
            result = transition(state, change_for(state), self.rules)
        except (ExceedsDeposit, TokenNotAccepted):
            # Our mirror may have missed a top-up: ask the chain once before refusing.
            fresh = self._refresh(p.channel_id, state)
            if fresh is None:
                raise
            state = fresh
            result = transition(state, change_for(state), self.rules)
        (event,) = result.events
        if isinstance(event, PaymentReplayed):
            if stored is None:  # pragma: no cover - a replay always has a stored payment
                raise StoreError("replay without a stored payment")
            return _Decision(SignedReceipt.of(stored), None, state)
        if not isinstance(event, PaymentAccepted):  # pragma: no cover
            raise StoreError(f"unexpected event {event!r}")
        receipt_message = Receipt(p.channel_id, p.cumulative_amount, p.amount, p.task_hash)
        receipt_sig = self.signer.sign(self.domain, receipt_message)
        return _Decision(
            SignedReceipt(p.channel_id, p.cumulative_amount, p.amount, p.task_hash, receipt_sig),
            PendingPayment(event, p.task_id, receipt_sig),
            result.new_state,
        )

    def _chain_time_for(self, state: PayeeChannelState) -> int:
        """Block time good enough to decide ``state``'s freeze: cached unless a consent may
        still be outstanding by it, then the node's latest block (``NodeUnavailable`` if down:
        a payment must not slip into a consent's window because the node was unreachable)."""
        deadline = state.consent_deadline
        if deadline is None or self._chain_time > deadline:
            return self._chain_time
        # At most one node read per second for frozen channels: a payer hammering a frozen
        # channel must not put a node round trip into every batch. A cached time is never
        # ahead of the chain, so this can only keep the freeze a moment longer, not shorten it.
        return self._fresh_chain_time(max_age=_CHAIN_TIME_MAX_AGE)

    def _fresh_chain_time(self, max_age: float = 0.0) -> int:
        if self.source is None:
            raise ChannelNotOpen("no chain to tell the time of a close consent's deadline")
        if time.monotonic() - self._chain_time_read < max_age:
            return self._chain_time
        now = self.source.chain_time()
        self._chain_time = max(self._chain_time, now)
        self._chain_time_read = time.monotonic()
        return self._chain_time

    def _require_ours(self, state: PayeeChannelState) -> None:
        if state.payee != self._payee_address:
            raise UnknownChannel(
                f"channel 0x{state.channel_id.hex()} pays {state.payee}, not this service's "
                "payee",
                channel="0x" + state.channel_id.hex(),
            )

    def _fetch(self, channel_id: bytes) -> PayeeChannelState:
        now = time.monotonic()
        with self._unknown_lock:
            until = self._unknown.get(channel_id)
        if until is not None and now < until:
            raise self._not_on_chain(channel_id)
        onchain = self.source.get(channel_id) if self.source is not None else None
        if onchain is None:
            with self._unknown_lock:
                self._unknown.pop(channel_id, None)
                self._unknown[channel_id] = now + UNKNOWN_CHANNEL_TTL
                while len(self._unknown) > _UNKNOWN_CHANNELS_MAX:
                    del self._unknown[next(iter(self._unknown))]
            raise self._not_on_chain(channel_id)
        state = self.store.upsert_channel(onchain)
        self.mirrored.add(channel_id)
        return state

    @staticmethod
    def _not_on_chain(channel_id: bytes) -> UnknownChannel:
        return UnknownChannel(
            f"channel 0x{channel_id.hex()} is not known on chain",
            channel="0x" + channel_id.hex(),
        )

    def mirror(self, request: PaymentRequest) -> None:
        """Make sure the request's channel is in the store, reading the chain if it is not:
        what the group committer runs OUTSIDE its decider for a channel it has not seen.
        Raises what ``accept`` would raise first: ``InvalidInput`` for a malformed field,
        ``UnknownChannel`` (remembered for ``UNKNOWN_CHANNEL_TTL``), ``NodeUnavailable``."""
        cid = _parse(request).channel_id
        if cid in self.mirrored:
            return
        if self.store.channel(cid) is None:
            self._fetch(cid)
        self.mirrored.add(cid)

    def _refresh(self, channel_id: bytes, state: PayeeChannelState) -> PayeeChannelState | None:
        onchain = self.source.get(channel_id) if self.source is not None else None
        if onchain is None or onchain.deposit == state.deposit:
            return None
        return self.store.upsert_channel(onchain)

    # --- group commit ----------------------------------------------------------------------

    def accept_many(
        self, requests: Sequence[PaymentRequest]
    ) -> list[SignedReceipt | PieceworkError]:
        """``accept`` for many requests with ONE commit; per request a receipt or the error.

        Channels, stored payments and requested tasks are read in three queries; requests on
        the same channel are decided in order, each on top of the previous one's new state. If
        the commit loses a race (another process wrote one of the channels meanwhile) or the
        database refuses it, every payment of the batch is redone alone with ``accept``, as is
        any request repeating a task already decided in this batch.
        """
        plan = self._plan(requests)
        return self._finish(plan, self._commit(plan))

    def _plan(
        self,
        requests: Sequence[PaymentRequest],
        overlay: Mapping[bytes, PayeeChannelState] | None = None,
        inflight_tasks: AbstractSet[tuple[bytes, bytes]] = frozenset(),
    ) -> _Plan:
        """Parse and decide a batch without writing. ``overlay`` holds channel states of
        batches decided but not yet committed, which replace the stored ones; a request for
        a task in ``inflight_tasks`` (or repeated in this batch) is left for later."""
        plan = _Plan(requests)
        for i, request in enumerate(requests):
            try:
                plan.parsed.append(_parse(request))
            except PieceworkError as exc:
                plan.results[i] = exc
                plan.parsed.append(None)
        try:
            snap: Snapshot = self.store.load_many(
                (p.channel_id, p.task_hash) for p in plan.parsed if p is not None
            )
        except PieceworkError as exc:
            plan.results = [exc if r is None else r for r in plan.results]
            return plan
        states = snap.states
        self.mirrored.update(states)
        if overlay:
            states.update({c: st for c, st in overlay.items() if c in states})
        seen = set(inflight_tasks)
        for i, p in enumerate(plan.parsed):
            if p is None:
                continue
            key = (p.channel_id, p.task_hash)
            if key in seen:
                plan.later.append(i)
                continue
            seen.add(key)
            try:
                decision = self._decide(
                    p, states.get(p.channel_id), snap.payments.get(key), snap.requested.get(key)
                )
            except PieceworkError as exc:
                plan.results[i] = exc
                continue
            states[p.channel_id] = decision.state
            if decision.pending is None:
                plan.results[i] = decision.receipt
            else:
                plan.pending.append((i, decision))
                plan.final_states[p.channel_id] = decision.state
                plan.tasks.add(key)
        return plan

    def _commit(self, plan: _Plan) -> bool | StoreError:
        """Write the plan's payments in one transaction: True, False (lost a race) or error."""
        try:
            return self.store.accept_payments(
                [d.pending for _, d in plan.pending if d.pending is not None]
            )
        except StoreError as exc:
            return exc

    def _finish(
        self, plan: _Plan, committed: bool | StoreError, *, redo_all: bool = False
    ) -> list[SignedReceipt | PieceworkError]:
        """Results of a committed plan; redo alone what could not be answered from it.

        ``redo_all``: the plan was decided on top of a batch that then failed, so every
        decision in it (refusals included) is redone against the database. A batch the
        database refused is redone payment by payment too: the refusal may be one request's
        fault (a value it cannot store), and the others must not pay for it.
        """
        results = plan.results
        later = list(plan.later)
        if redo_all:
            later.extend(i for i, p in enumerate(plan.parsed) if p is not None)
        elif committed is True:
            for i, d in plan.pending:
                results[i] = d.receipt
        else:
            if isinstance(committed, StoreError):
                log.warning("payment batch refused (%s); redoing it payment by payment",
                            committed)
            later.extend(i for i, _ in plan.pending)
        for i in sorted(set(later)):
            r = plan.requests[i]
            try:
                results[i] = self.accept(
                    r.channel_id, r.task_id, r.amount, r.cumulative_amount, r.signature, r.now
                )
            except PieceworkError as exc:
                results[i] = exc
        return [r if r is not None else StoreError("not processed") for r in results]

    # --- reads -----------------------------------------------------------------------------

    def latest(self, channel_id: bytes | str) -> PayeeChannelState:
        """The stored channel with its latest accepted voucher; ``UnknownChannel`` if none."""
        cid = parse_bytes32(channel_id)
        state = self.store.channel(cid)
        if state is None:
            state = self._fetch(cid)
        return state

    def ours(self, channel_id: bytes | str) -> PayeeChannelState:
        """``latest``, and ``UnknownChannel`` too when the channel pays another payee."""
        state = self.latest(channel_id)
        self._require_ours(state)
        return state

    def receipts(
        self, channel_id: bytes | str, *, after: int | None = None, limit: int = 500
    ) -> tuple[list[SignedReceipt], int | None]:
        """A page of the channel's receipts in ascending cumulative order (see the store)."""
        state = self.ours(channel_id)
        payments, next_after = self.store.receipts(state.channel_id, after=after, limit=limit)
        return [SignedReceipt.of(p) for p in payments], next_after

    def tasks(self, channel_id: bytes | str, status: str | None = None) -> list[StoredTask]:
        """The channel's requested tasks, oldest first."""
        state = self.ours(channel_id)
        return self.store.tasks(state.channel_id, status)

    # --- access ----------------------------------------------------------------------------

    def check_access(self, channel_id: bytes | str, credential: str, now: int) -> None:
        """``AccessDenied`` unless ``credential`` (``<expires>.<signature>``) is an ``Access``
        signature for this channel by its payer or voucher signer, not expired at ``now``
        (the service's clock) and expiring at most ``MAX_ACCESS_AHEAD`` seconds ahead.
        ``UnknownChannel`` for a channel that is not ours."""
        state = self.ours(channel_id)
        try:
            expires, signature = parse_access(credential)
        except PieceworkError as exc:
            raise AccessDenied(f"malformed access credential: {exc}") from None
        if expires < now:
            raise AccessDenied(f"access expired at {expires} (now {now})", expires=expires)
        if expires > now + MAX_ACCESS_AHEAD:
            raise AccessDenied(
                f"access expires at {expires}, more than {MAX_ACCESS_AHEAD} s after now ({now})",
                expires=expires,
            )
        try:
            signer = recover_digest(
                self.domain.digest(Access(state.channel_id, expires)), signature
            )
        except InvalidSignature as exc:
            raise AccessDenied(f"access signature: {exc}") from None
        if not state.may_sign(signer):
            raise AccessDenied(
                f"access is signed by 0x{signer.hex()}, not by this channel's payer or voucher "
                "signer"
            )

    # --- close -----------------------------------------------------------------------------

    def close(
        self, channel_id: bytes | str, cumulative_amount: int | str, signature: bytes | str
    ) -> GrantedConsent:
        """The payee's ``CloseConsent`` answering the payer side's ``CloseRequest``.

        The request must be signed by the payer or the voucher signer (``CloseNotAuthorized``,
        nothing changes) and name the latest accepted amount (``StaleVoucher``); the channel
        must be open or closing (``ChannelNotOpen``). The consent's
        deadline is the latest block's timestamp plus ``consent_ttl``; it is stored, and the
        channel frozen, before it is returned: until a block later than the deadline exists
        the channel accepts no payment and the same request gets the same consent back.
        ``UnknownChannel``/``ChannelNotOpen`` for a channel that is not ours or is closed.
        """
        cid = parse_bytes32(channel_id)
        amount = parse_amount(cumulative_amount)
        raw_signature = parse_signature(signature)
        for _attempt in range(_MAX_ATTEMPTS):
            state = self.ours(cid)
            self._require_close_request(state, amount, raw_signature)
            chain_time = self._fresh_chain_time()
            outstanding = state.consent_deadline if state.frozen_at(chain_time) else None
            deadline = outstanding if outstanding is not None else chain_time + self.consent_ttl
            # The rules (status, latest amount) are the state machine's.
            transition(state, ConsentGiven(cid, amount, deadline), self.rules)
            consent = self._consent(state, deadline)
            if outstanding is not None:
                # Signatures are deterministic (RFC 6979): this is the consent handed out.
                return consent
            stored = StoredConsent(consent.cumulative_amount, consent.deadline, consent.signature)
            if self.store.record_consent(state, stored):
                return consent
            log.debug("consent on 0x%s raced a payment; re-reading", cid.hex())
        raise StoreError(f"close of 0x{cid.hex()} still racing after {_MAX_ATTEMPTS} attempts")

    def _require_close_request(
        self, state: PayeeChannelState, amount: int, signature: bytes
    ) -> None:
        message = CloseRequest(state.channel_id, amount)
        try:
            signer = recover_digest(self.domain.digest(message), signature)
        except InvalidSignature as exc:
            raise CloseNotAuthorized(f"close request signature: {exc}") from None
        if not state.may_sign(signer):
            raise CloseNotAuthorized(
                f"close request is signed by 0x{signer.hex()}, neither the payer "
                f"{state.payer} nor the channel's voucher signer"
            )

    def _consent(self, state: PayeeChannelState, deadline: int) -> GrantedConsent:
        message = CloseConsent(state.channel_id, state.accepted, deadline)
        signature = self.signer.sign(self.domain, message)
        return GrantedConsent(state.channel_id, state.accepted, deadline, signature)

    # --- tasks -----------------------------------------------------------------------------

    def request_task(
        self,
        channel_id: bytes | str,
        task_id: str,
        amount: int | str,
        description: str,
        now: int,
    ) -> tuple[StoredTask, bool]:
        """Ask the channel's payer to pay ``amount`` for ``task_id``; ``(task, created)``.

        The same request again returns the stored task (``created`` False); the same task id
        with another amount or description is a ``TaskConflict``. The channel must be ours
        and open. ``now`` (the service's clock) becomes ``requested_at``.
        """
        cid = parse_bytes32(channel_id)
        task_hash = task_id_hash(task_id)
        value = parse_amount(amount)
        if value <= 0:
            raise InvalidAmount(f"a task's amount must be positive, got {value}", got=value)
        text = _parse_description(description)
        state = self.ours(cid)
        if state.status is not ChannelStatus.OPEN:
            raise ChannelNotOpen(
                f"channel 0x{cid.hex()} is {state.status.name.lower()}, not open",
                status=state.status.name.lower(),
            )
        return self.store.request_task(
            cid,
            task_id=parse_task_id(task_id),
            task_hash=task_hash,
            amount=value,
            description=text,
            now=now,
        )


def _parse_description(description: object) -> str:
    if not isinstance(description, str):
        raise InvalidDescription("description must be a string")
    if len(description) > MAX_DESCRIPTION_LENGTH:
        raise InvalidDescription(
            f"description is {len(description)} characters, at most {MAX_DESCRIPTION_LENGTH}",
            length=len(description),
        )
    bad = _BAD_DESCRIPTION_CHAR.search(description)
    if bad is not None:
        raise InvalidDescription(
            f"description is not plain text: U+{ord(bad.group()):04X} at position {bad.start()}",
            position=bad.start(),
        )
    return description


class GroupCommitter:
    """Collects concurrent payments from many threads and commits them in pipelined batches.

    ``submit`` returns a ``Future``; ``accept`` blocks on it. A decider thread drains the
    queue (whatever arrived, up to ``max_batch``; no fixed linger unless ``max_wait`` > 0)
    and verifies and signs the batch while a committer thread is still fsyncing the previous
    one: the CPU work overlaps the disk wait. The decider drains only once the committer has
    taken the previous plan, so a batch holds everything that queued during the commit before
    it and is committed as soon as that commit ends: a lone payment waits for no timer, and
    under load the batch grows with the queue instead of with a fixed wait. The decider sees the
    in-flight batch's channel states (an overlay), so consecutive payments on one channel
    can sit in consecutive batches; if a batch loses its compare-and-set, the batch decided
    on top of it is redone request by request against the database. A batch decided while
    nothing is in flight and nothing is queued (one client paying in sequence) is committed by
    the decider itself: one thread hand-off less per lone payment.
    """

    def __init__(
        self, service: PayeeService, max_batch: int = 256, max_wait: float = 0.0
    ) -> None:
        self.service = service
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.batches = 0
        """Batches committed so far (``items / batches`` is the mean batch size)."""
        self.items = 0
        self._queue: queue.SimpleQueue[tuple[PaymentRequest, Future[SignedReceipt]] | None] = (
            queue.SimpleQueue()
        )
        # One plan in flight while the next is decided: a bounded hand-off keeps it that way.
        self._plans: queue.Queue[_InFlight | None] = queue.Queue(maxsize=1)
        self._lock = threading.Lock()
        self._overlay: dict[bytes, tuple[int, PayeeChannelState]] = {}
        self._inflight_tasks: dict[tuple[bytes, bytes], int] = {}
        self._failed: set[int] = set()
        # Chain reads for channels not in the store run here, never in the decider: a flood
        # of unknown (random) channel ids must not stall the honest payments queued behind
        # them (issue 11 item 6). Two threads: at most two node reads at a time for them.
        self._lookups = ThreadPoolExecutor(2, thread_name_prefix="gc-lookup")
        self._decider = threading.Thread(target=self._decide_loop, name="gc-decide", daemon=True)
        self._committer = threading.Thread(target=self._commit_loop, name="gc-commit", daemon=True)
        self._decider.start()
        self._committer.start()

    def submit(self, request: PaymentRequest) -> Future[SignedReceipt]:
        future: Future[SignedReceipt] = Future()
        self._queue.put((request, future))
        return future

    def accept(self, request: PaymentRequest, timeout: float | None = 30.0) -> SignedReceipt:
        """Like ``PayeeService.accept``: the receipt after commit, or the same errors."""
        return self.submit(request).result(timeout)

    def close(self) -> None:
        """Finish the queued work and stop both threads."""
        self._lookups.shutdown(wait=True)  # their payments are queued again before the end
        self._queue.put(None)
        self._decider.join()
        self._committer.join()

    def _next_batch(self) -> tuple[list[tuple[PaymentRequest, Future[SignedReceipt]]], bool]:
        first = self._queue.get()
        if first is None:
            return [], True
        batch = [first]
        # Whatever queued while the previous batch was being committed. A fixed linger
        # (max_wait) only delays a lone payment: under load the queue fills during each
        # commit by itself. Tests set max_wait to force several payments into one batch.
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            try:
                if self.max_wait > 0:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                else:
                    item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _decide_loop(self) -> None:
        seq = 0
        stop = False
        while not stop:
            batch, stop = self._next_batch()
            batch = self._known_channels(batch)
            if not batch:
                if stop:
                    break
                continue
            seq += 1
            with self._lock:
                overlay = {c: st for c, (_, st) in self._overlay.items()}
                inflight = set(self._inflight_tasks)
                depends = {n for n, _ in self._overlay.values()}
                idle = not self._overlay and not self._inflight_tasks
            try:
                plan = self.service._plan([r for r, _ in batch], overlay, inflight)
            except Exception as exc:  # never leave a caller waiting forever
                for _, fut in batch:
                    fut.set_exception(exc)
                continue
            with self._lock:
                for c, st in plan.final_states.items():
                    self._overlay[c] = (seq, st)
                for key in plan.tasks:
                    self._inflight_tasks[key] = seq
            item = _InFlight(seq, plan, [f for _, f in batch], depends)
            if idle and self._queue.empty():
                # Nothing in flight and nothing waiting (one client paying in sequence): commit
                # here instead of waking the committer thread, one thread hand-off less.
                self._complete(item)
                continue
            self._plans.put(item)
            # Decide the next batch only once the committer has taken this one: payments
            # arriving meanwhile then join the batch committed right after it, instead of a
            # small batch decided early and left waiting a whole commit in the hand-off.
            self._plans.join()
        self._plans.put(None)

    def _known_channels(
        self, batch: list[tuple[PaymentRequest, Future[SignedReceipt]]]
    ) -> list[tuple[PaymentRequest, Future[SignedReceipt]]]:
        """The payments whose channel is known to be in the store; the others go to the
        lookup threads, which queue them again once their channel is mirrored."""
        keep = []
        for item in batch:
            cid = item[0].channel_id
            if isinstance(cid, str):
                try:
                    cid = parse_bytes32(cid)
                except PieceworkError:
                    keep.append(item)  # the decider reports the malformed field
                    continue
            if cid in self.service.mirrored:
                keep.append(item)
                continue
            try:
                self._lookups.submit(self._look_up, *item)
            except RuntimeError:  # closing: the lookup threads are gone, look up here
                try:
                    self.service.mirror(item[0])
                except Exception as exc:
                    item[1].set_exception(exc)
                    continue
                keep.append(item)
        return keep

    def _look_up(self, request: PaymentRequest, future: Future[SignedReceipt]) -> None:
        try:
            self.service.mirror(request)
        except Exception as exc:  # answered here: UnknownChannel, NodeUnavailable, ...
            future.set_exception(exc)
            return
        self._queue.put((request, future))

    def _commit_loop(self) -> None:
        while True:
            item = self._plans.get()
            self._plans.task_done()
            if item is None:
                return
            self._complete(item)

    def _complete(self, item: _InFlight) -> None:
        """Commit one decided batch and answer its callers (committer thread, or the decider
        itself for a lone batch when nothing else is in flight)."""
        self.batches += 1
        self.items += len(item.futures)
        with self._lock:
            redo = bool(item.depends & self._failed)
        committed: bool | StoreError = False
        try:
            if not redo:
                committed = self.service._commit(item.plan)
        except Exception as exc:  # a bug or an unmapped error: still only this batch's
            log.exception("payment batch %d failed", item.seq)
            committed = StoreError(f"payment batch failed: {type(exc).__name__}")
        finally:
            # Whatever happened, the batch leaves the overlay: the database is the truth
            # again for its channels unless a newer batch is in flight. A stale overlay
            # entry would have every later payment on those channels decided on a state
            # that never reached the database.
            with self._lock:
                if committed is not True:
                    self._failed.add(item.seq)
                for c, (n, _) in list(self._overlay.items()):
                    if n == item.seq:
                        del self._overlay[c]
                for key, n in list(self._inflight_tasks.items()):
                    if n == item.seq:
                        del self._inflight_tasks[key]
                self._failed = {n for n in self._failed if n >= item.seq - 1}
        try:
            results = self.service._finish(item.plan, committed, redo_all=redo)
        except Exception as exc:  # never leave a caller waiting forever
            for fut in item.futures:
                fut.set_exception(exc)
            return
        for fut, res in zip(item.futures, results, strict=True):
            if isinstance(res, BaseException):
                fut.set_exception(res)
            else:
                fut.set_result(res)


@dataclass(frozen=True, slots=True)
class _InFlight:
    seq: int
    plan: _Plan
    futures: list[Future[SignedReceipt]]
    depends: set[int]
