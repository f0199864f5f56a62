"""The watchtower: follows PaymentChannels events into the payee store and claims in time.

One :meth:`Watcher.poll_once` does, deterministically:

1. **leadership** — only the holder of ``lock`` acts (PostgreSQL advisory lock from the api,
   a file lock or nothing for SQLite); a follower returns without touching anything;
2. **reorg check** — the block at the persisted cursor must still have the stored hash; if not,
   the cursor is rewound ``rewind_depth`` blocks (re-processing is idempotent, see 3);
3. **follow** — events in ``(cursor, head - confirmations + 1]`` (only blocks at least
   ``confirmations`` deep) name the channels that changed; each is re-read with ``getChannel``
   *at that block* and written to the store's mirror, so replaying a range never double-counts;
   the cursor (number + hash) is saved after each chunk, so a restart resumes from it;
4. **defend** — every channel the payer started closing while we hold a voucher above
   ``claimed`` is claimed at once (or closed with ``closeByPayee`` when we are its payee and
   ``close_on_defend`` is set): all of them in ``claimMany`` batches per token, most payable
   first, sent together without waiting for each other (``channel.defence`` plans them; dust
   worth less than ``fee_multiple`` times its gas is left alone);
5. **collect** — routine claims are batched into ``claimMany`` when a channel's unclaimed amount
   reaches the threshold or its oldest unclaimed voucher is older than ``max_age``, and deferred
   payouts (``owed``) are withdrawn.

Every transaction goes through one ``channel.txsender.TxSender`` (the key's one nonce owner):
gas is capped per transaction, a stuck one is replaced with the same nonce and fees raised by
12.5 % or more up to a cap that rises as its deadline nears, a dropped one is sent again. Every
transaction is recorded in ``outgoing_transactions``. A batch that reverts marks nobody: each of
its channels is replayed alone (``eth_call`` with the batch's fees) and the one that fails is
left out of the retry. A channel whose own transaction reverted is not sent again with the same
voucher (no revert loop), except once as a defence if it failed before its close began.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from channel.chain import (
    ZERO_ADDRESS,
    ChainClient,
    ChannelClosed,
    ChannelEvent,
    ChannelOpened,
    PreconditionFailed,
)
from channel.defence import (
    Alert,
    ClosingChannel,
    DefencePolicy,
    DefenceTx,
    WalletStatus,
    WatchtowerStatus,
    batch_runs,
    payable,
    plan_defence,
    worth_claiming,
)
from channel.errors import (
    ChainError,
    ConfigError,
    ContractRevert,
    NodeUnavailable,
    PieceworkError,
)
from channel.state import ChannelStatus, OnchainChannel, PayeeChannelState
from channel.store import PayeeStore, make_engine, metadata, migrate
from channel.txsender import GWEI, FeePolicy, Pending, TxSender

__all__ = [
    "ClaimPolicy",
    "Lock",
    "NoLock",
    "PollResult",
    "SentTx",
    "Watcher",
    "build_watcher",
    "latest_voucher",
]

log = logging.getLogger(__name__)


class Lock(Protocol):
    """Leadership: the same shape as ``api.leader.Lock``."""

    def try_acquire(self) -> bool: ...
    def held(self) -> bool: ...
    def release(self) -> None: ...


class NoLock:
    """A single node (SQLite, tests): always the leader."""

    def try_acquire(self) -> bool:
        return True

    def held(self) -> bool:
        return True

    def release(self) -> None:
        return None


@dataclass(frozen=True)
class ClaimPolicy:
    """When routine (non-urgent) claims are worth their gas.

    ``thresholds`` maps a token address (``ZERO_ADDRESS`` for ETH) to the unclaimed amount, in
    base units, that triggers a claim; tokens not listed use ``default_threshold``.
    """

    default_threshold: int = 10**16
    thresholds: Mapping[str, int] = field(default_factory=dict)
    max_age: float = 86_400.0
    max_batch: int = 50

    def threshold(self, token: str) -> int:
        return self.thresholds.get(token, self.default_threshold)


@dataclass(frozen=True)
class SentTx:
    """One transaction the watcher sent in a poll, and how it ended."""

    kind: str
    channel_ids: tuple[bytes, ...]
    cumulative_amounts: tuple[int, ...]
    ok: bool
    tx_hash: bytes | None = None
    error: str | None = None
    nonce: int | None = None
    replacements: int = 0


@dataclass(frozen=True)
class PollResult:
    leader: bool
    from_block: int | None = None
    to_block: int | None = None
    events: tuple[ChannelEvent, ...] = ()
    reorg: bool = False
    sent: tuple[SentTx, ...] = ()
    follow_error: str | None = None
    """Following failed this poll (node trouble): the act step still ran on the mirror, with
    our live channels re-read directly."""


@dataclass(frozen=True)
class _Tag:
    """What one pending transaction of the watcher is for."""

    tx_id: int
    kind: str
    batch: tuple[PayeeChannelState, ...]
    ids: tuple[bytes, ...]
    amounts: tuple[int, ...]
    urgent: bool


@dataclass
class Watcher:
    """Follows the chain for ``payees`` (None: every channel already in the store)."""

    chain: ChainClient
    store: PayeeStore
    payees: frozenset[str] | None = None
    confirmations: int = 1
    policy: ClaimPolicy = field(default_factory=ClaimPolicy)
    lock: Lock = field(default_factory=NoLock)
    cursor_name: str = "watcher"
    start_block: int | None = None
    """First block to follow without a cursor; None: the contract's deployment block, found
    once with ``eth_getCode`` (0 when the node cannot tell)."""
    max_range: int = 2_000
    max_chunks: int = 10
    """``max_range`` chunks followed per poll at most: a long catch-up never delays acting."""
    rewind_depth: int = 64
    checkpoints: int = 32
    """Recent (block, hash) pairs kept besides the cursor, to find the common ancestor of a
    reorg instead of rewinding a fixed depth."""
    clock: Callable[[], float] = time.time
    report: Callable[[str], None] | None = None
    close_on_defend: bool = False
    """Answer a payer's close with ``closeByPayee`` (ends it now, when we are the payee)
    instead of ``claim`` (the channel stays closing and the payer settles the rest later)."""
    defence: DefencePolicy = field(default_factory=DefencePolicy)
    max_fee_per_gas: int = 500 * GWEI
    """Fee cap of a defence at its deadline (PIECEWORK_MAX_FEE_GWEI); a quarter of it for
    routine claims and far deadlines (see channel.txsender)."""
    bump_after: float = 4.0
    """Seconds a transaction may stay pending before it is replaced with higher fees."""
    sender: TxSender | None = None
    """The one sender (nonce owner, fee bumps) of this watcher; built on first use."""
    on_alert: Callable[[str, str], None] | None = None
    """Called with (kind, message) for each alert (the api counts them in /metrics)."""
    on_wallet: Callable[[int, bool], None] | None = None
    """Called with (balance in wei, low) after each poll (the api's wallet gauge)."""
    alert_counts: dict[str, int] = field(default_factory=dict, init=False)
    # Voucher amounts already sent per channel, with the block the tx was mined in (None:
    # failed on its own). Prevents resending the same voucher until the mirror has caught up.
    _attempted: dict[bytes, tuple[int, int | None]] = field(default_factory=dict, init=False)
    _inflight: dict[bytes, int] = field(default_factory=dict, init=False)
    _suspects: set[bytes] = field(default_factory=set, init=False)
    _failed_closing: set[bytes] = field(default_factory=set, init=False)
    _dust: set[bytes] = field(default_factory=set, init=False)
    _late: set[bytes] = field(default_factory=set, init=False)
    _alerts: list[Alert] = field(default_factory=list, init=False)
    _history: list[DefenceTx] = field(default_factory=list, init=False)
    _wallet: WalletStatus | None = field(default=None, init=False)
    _wallet_alerted: bool = field(default=False, init=False)
    _deadline_alerted: set[int] = field(default_factory=set, init=False)
    _withdrawing: set[str] = field(default_factory=set, init=False)
    _withdraw_backoff: dict[str, float] = field(default_factory=dict, init=False)
    _last_withdraw_check: float = field(default=float("-inf"), init=False)
    _resubmit_needed: bool = field(default=False, init=False)
    _chain_now: int | None = field(default=None, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)

    def __post_init__(self) -> None:
        if self.confirmations < 1:
            raise ConfigError(f"confirmations must be >= 1, got {self.confirmations}")
        if self.payees is not None:
            self.payees = frozenset(p.lower() for p in self.payees)

    # -- the loop -------------------------------------------------------------------------

    def run(self, stop: threading.Event, *, interval: float = 2.0) -> None:
        """Poll until ``stop`` is set; node or database hiccups are logged and retried.

        Every wait inside a poll watches ``stop`` too, so a leader handing over is never held
        up by a transaction that takes long to mine."""
        self._stop = stop
        failures = 0
        while not stop.is_set():
            try:
                self.poll_once()
                failures = 0
            except PieceworkError as exc:
                failures += 1
                log.warning("watcher poll failed (%d in a row): %s", failures, exc)
            except Exception:
                # A watchtower that dies silently lets a stale close through: log loudly and
                # keep going; the cursor makes the next poll redo whatever was cut short.
                failures += 1
                log.exception("watcher poll crashed (%d in a row)", failures)
            stop.wait(min(interval * 2 ** min(failures, 5), 60.0) if failures else interval)

    def poll_once(self) -> PollResult:
        if not (self.lock.held() or self.lock.try_acquire()):
            return PollResult(leader=False)
        first = reorg = None
        events: list[ChannelEvent] = []
        try:
            reorg, first = self._check_cursor()
            head = self.chain.block_number()
            safe = head - self.confirmations + 1
            start = first
            for _chunk in range(self.max_chunks):
                if start > safe:
                    break
                end = min(safe, start + self.max_range - 1)
                events.extend(self._follow(start, end))
                start = end + 1
            if start <= safe:
                # A long catch-up (after downtime) continues next poll; meanwhile our live
                # channels are read at the head, so a close among them is defended now.
                self._say(f"following lags: at block {start - 1} of {safe}; re-reading "
                          "live channels at the head")
                self._refresh_live(safe)
                sent = self._act(start - 1)
                return PollResult(True, first, start - 1, tuple(events), reorg, tuple(sent))
        except ChainError as exc:
            if isinstance(exc, ContractRevert):  # pragma: no cover - reads do not revert
                raise
            # Following lags (a refused getLogs, a node hiccup): defences must not wait for
            # it. Re-read our live channels directly, then act on the mirror.
            self._say(f"following failed: {exc}; acting on the mirror")
            cursor = self.store.cursor(self.cursor_name)
            followed = cursor[0] if cursor is not None else -1
            try:
                self._refresh_live(self.chain.block_number() - self.confirmations + 1)
            except ChainError as again:
                log.warning("re-reading live channels failed too: %s", again)
            sent = self._act(followed)
            return PollResult(True, first, None, tuple(events), bool(reorg), tuple(sent),
                              follow_error=str(exc))
        # The mirror now reflects every block up to here (the cursor if nothing was new).
        sent = self._act(max(first - 1, safe))
        return PollResult(True, first, safe if safe >= first else None, tuple(events), reorg,
                          tuple(sent))

    # -- cursor and reorgs ----------------------------------------------------------------

    def _first_block(self) -> int:
        if self.start_block is None:
            try:
                self.start_block = self.chain.deployment_block()
            except ChainError as exc:
                log.warning("cannot find the contract's deployment block (%s); following "
                            "from block 0", exc)
                self.start_block = 0
        return self.start_block

    def _hash_at(self, number: int) -> str:
        """The node's hash of block ``number``; "" when it has no such block (shorter chain)."""
        try:
            return "0x" + bytes(self.chain.block(number)["hash"]).hex()
        except ChainError as exc:
            if isinstance(exc, ContractRevert):  # pragma: no cover - reads do not revert
                raise
            if isinstance(exc, NodeUnavailable):
                raise
            log.warning("block %d unavailable (%s)", number, exc)
            return ""

    def _check_cursor(self) -> tuple[bool, int]:
        """The first block to process; after a reorg, the block after the common ancestor."""
        saved = self.store.cursor(self.cursor_name)
        if saved is None:
            return False, self._first_block()
        number, stored_hash = saved
        if self._hash_at(number) == stored_hash.lower():
            return False, number + 1
        back = self._common_ancestor(number) + 1
        self._say(f"reorg: block {number} changed hash; re-processing from block {back}")
        # Our own transactions may have been dropped with the old blocks: a cached nonce past
        # them would park every later claim behind a nonce gap, defences included.
        self.chain.resync_nonce()
        # Anything we sent and saw mined may have been dropped with the old blocks.
        self._attempted = {
            cid: (amount, mined) for cid, (amount, mined) in self._attempted.items()
            if mined is None or mined < back
        }
        # A reorg can drop a top-up or a claim without leaving any event on the new branch to
        # name the channel: re-read every live channel of ours, not only the touched ones.
        self._refresh_live(max(back - 1, self.chain.block_number() - self.confirmations + 1))
        return True, back

    def _common_ancestor(self, number: int) -> int:
        """The newest checkpoint below ``number`` whose block is still on the node's chain
        (every block before it is then unchanged too: each hash commits to its parent)."""
        kept = []
        for slot in range(self.checkpoints):
            point = self.store.cursor(f"{self.cursor_name}#{slot}")
            if point is not None and point[0] < number:
                kept.append(point)
        for block, stored in sorted(kept, reverse=True):
            if self._hash_at(block) == stored.lower():
                return block
        # Deeper than our history: the old fixed rewind from the oldest point we know.
        oldest = min([number, *(b for b, _ in kept)])
        return max(self._first_block(), oldest - self.rewind_depth) - 1

    def _follow(self, start: int, end: int) -> list[ChannelEvent]:
        # Pin the block first: the logs and every read below are then of this one chain, and
        # a reorg while we read shows up as a hash change instead of a silently mixed view.
        pinned = bytes(self.chain.block(end)["hash"])
        live = [] if self.payees is None else [
            c.channel_id for c in self.store.channels()
            if c.status in (ChannelStatus.OPEN, ChannelStatus.CLOSING) and self._ours(c.payee)
        ]
        events = self.chain.get_events(
            start, end, payees=None if self.payees is None else sorted(self.payees),
            channel_ids=live,
        )
        if bytes(self.chain.block(end)["hash"]) != pinned:
            raise ChainError(f"block {end} changed while following; retrying next poll",
                             block=end)
        opened: dict[bytes, ChannelOpened] = {}
        closed: dict[bytes, ChannelClosed] = {}
        touched: list[bytes] = []
        for ev in events:
            cid = getattr(ev, "channel_id", None)
            if not isinstance(cid, bytes):
                continue  # PaymentDeferred / Withdrawn concern accounts, not channels
            if isinstance(ev, ChannelOpened):
                opened[cid] = ev
            elif isinstance(ev, ChannelClosed):
                closed[cid] = ev
            if cid not in touched:
                touched.append(cid)
        # Which transaction claimed what, for the receipts' claim_tx (channels of ours only).
        # Imported here to keep this hook one hunk.
        from channel.claims import record_claims  # noqa: PLC0415

        record_claims(self.store.engine, start, end, events, payees=self.payees)
        for cid in touched:
            self._mirror(cid, pinned, opened.get(cid), closed.get(cid))
        block_hash = "0x" + pinned.hex()
        self.store.set_cursor(end, block_hash, self.cursor_name)
        self.store.set_cursor(end, block_hash, f"{self.cursor_name}#{end % self.checkpoints}")
        return events

    def _refresh_live(self, block: int) -> None:
        """Re-read every open or closing channel of ours at ``block`` into the mirror."""
        at = bytes(self.chain.block(max(block, 0))["hash"])
        for ch in self.store.channels():
            if ch.status in (ChannelStatus.OPEN, ChannelStatus.CLOSING) and self._ours(ch.payee):
                self._mirror(ch.channel_id, at, None, None)

    def _mirror(
        self, channel_id: bytes, block: int | bytes, opened: ChannelOpened | None,
        closed: ChannelClosed | None,
    ) -> None:
        onchain = self.chain.get_channel(channel_id, block)
        known = self.store.channel(channel_id)
        if onchain.status is ChannelStatus.CLOSED:
            # A closed channel reads back with payee/token/deposit/claimed zeroed; keep what we
            # knew and take the payee's final total from the event.
            base = _onchain_of(known) if known is not None else None
            if base is None and opened is not None:
                base = OnchainChannel(channel_id, opened.payer, opened.payee, opened.token,
                                      opened.deposit, 0, opened.challenge_period, 0,
                                      ChannelStatus.OPEN, opened.voucher_signer)
            if base is None:
                return  # closed before we ever saw it: nothing of ours
            total = closed.payee_total if closed is not None else base.claimed
            onchain = dataclasses.replace(base, claimed=total, closes_at=onchain.closes_at,
                                          status=ChannelStatus.CLOSED)
        if onchain.status is ChannelStatus.NONE:
            # Opened in a block that a reorg removed: nothing exists at this height.
            return
        if known is None and not self._ours(onchain.payee):
            return
        self.store.upsert_channel(onchain, now=self.clock())

    def _ours(self, payee: str) -> bool:
        return self.payees is None or payee.lower() in self.payees

    # -- acting ---------------------------------------------------------------------------
    #
    # Every transaction goes through one TxSender (one nonce owner, fees bumped while pending)
    # and none is waited for alone: a poll plans, submits everything, then waits up to
    # ``defence.act_wait`` for all of them together, replacing stuck ones. Whatever is still
    # pending is carried to the next poll and reported when it ends.

    def _act(self, safe_block: int) -> list[SentTx]:
        if self.chain.account is None:
            return []  # no key: a follower that only mirrors the chain
        finished: list[SentTx] = []
        rounds = 0
        submitted: list[Pending] = []
        now = self.chain.timestamp()
        self._chain_now = now
        finished.extend(self._collect(self._sender().tick(now)))
        while rounds < 3 and not self._stop.is_set():
            rounds += 1
            now = self.chain.timestamp()
            new, early = self._plan_and_submit(now, safe_block)
            submitted.extend(new)
            finished.extend(early)
            if not new:
                break
            finished.extend(self._wait(submitted))
            if not self._resubmit_needed:
                break
        withdrawals = self._maybe_withdraw(now)
        if withdrawals:
            finished.extend(self._wait(withdrawals))
        self._check_wallet()
        self._check_deadlines(now)
        return finished

    def _plan_and_submit(self, now: int, safe_block: int) -> tuple[list[Pending], list[SentTx]]:
        self._resubmit_needed = False
        urgent: list[PayeeChannelState] = []
        routine: list[PayeeChannelState] = []
        for ch in self.store.channels():
            if ch.voucher_signature is None or not self._ours(ch.payee):
                continue
            amount = payable(ch)
            if amount <= 0:
                continue
            if self._inflight.get(ch.channel_id, -1) >= ch.accepted:
                if ch.status is ChannelStatus.CLOSING:
                    self._promote(ch)
                continue
            if self._already_sent(ch, safe_block):
                continue
            if ch.status is ChannelStatus.CLOSING:
                if now < ch.closes_at:
                    urgent.append(ch)
                elif ch.channel_id not in self._late:
                    self._late.add(ch.channel_id)
                    self._alert("too_late",
                                f"too late for 0x{ch.channel_id.hex()}: challenge period ended "
                                f"at {ch.closes_at} (now {now}), {amount} unclaimed")
            elif ch.status is ChannelStatus.OPEN and self._due(ch, amount):
                routine.append(ch)
        if not urgent and not routine:
            return [], []
        base, tip = self.chain.fee_quote()
        price = base + tip
        plan = plan_defence(urgent, price, self.defence, alone=frozenset(self._suspects))
        new_dust = [ch for ch in plan.dust if ch.channel_id not in self._dust]
        if new_dust:
            self._dust.update(ch.channel_id for ch in new_dust)
            self._say(f"{len(new_dust)} closing channel(s) pay less than "
                      f"{self.defence.fee_multiple}x their gas at {price} wei/gas, not claimed "
                      f"(largest {max(payable(c) for c in new_dust)}): "
                      f"{_ids([c.channel_id for c in new_dust[:5]])}"
                      + (" ..." if len(new_dust) > 5 else ""))
        pending: list[Pending] = []
        early: list[SentTx] = []
        as_payee = (self.close_on_defend and self.chain.account is not None)
        for batch in plan.batches:
            if as_payee and all(c.payee == self.chain.sender for c in batch):
                for ch in batch:
                    self._submit("closeByPayee", [ch], now, pending, early, urgent=True)
            else:
                self._submit("claim" if len(batch) == 1 else "claimMany", batch, now, pending,
                             early, urgent=True)
        worth = [c for c in routine
                 if worth_claiming(payable(c), c.token, self.defence.claim_gas, price,
                                   self.defence.fee_multiple)]
        size = min(self.policy.max_batch, self.defence.entries_per_tx())
        for i in range(0, len(worth), size):
            chunk = worth[i:i + size]
            if len(chunk) > 1 and any(c.channel_id in self._suspects for c in chunk):
                for ch in chunk:
                    self._submit("claim", [ch], now, pending, early, urgent=False)
            else:
                self._submit("claim" if len(chunk) == 1 else "claimMany", chunk, now, pending,
                             early, urgent=False)
        return pending, early

    def _promote(self, ch: PayeeChannelState) -> None:
        """A routine claim still pending for a channel that is now closing is its defence:
        give it the channel's deadline, so its fees may rise to the defence's cap."""
        for item in self._sender().pending:
            tag = item.tag
            if isinstance(tag, _Tag) and ch.channel_id in tag.ids and (
                    item.deadline is None or item.deadline > ch.closes_at):
                item.deadline = ch.closes_at
                item.window = ch.challenge_period
                item.capped = False  # its cap rose: a new alert if even that is not enough
                self._say(f"pending {tag.kind} nonce {item.nonce} now defends "
                          f"0x{ch.channel_id.hex()} (closing by {ch.closes_at})")

    def _already_sent(self, ch: PayeeChannelState, safe_block: int) -> bool:
        attempt = self._attempted.get(ch.channel_id)
        if attempt is None:
            return False
        amount, mined = attempt
        if amount < ch.accepted:
            return False  # a newer voucher arrived since: worth a new transaction
        if mined is None:
            # Failed on its own with this voucher: do not loop on it. A routine failure does
            # not disable defence: once the payer starts closing, it is defended (once).
            return not (ch.status is ChannelStatus.CLOSING
                        and ch.channel_id not in self._failed_closing)
        if mined <= safe_block:
            # The mirror already reflects that block: if claimed is still low the transaction
            # did not stick (reorg), so it may be sent again, from the node's nonce.
            del self._attempted[ch.channel_id]
            self.chain.resync_nonce()
            return False
        return True

    def _due(self, ch: PayeeChannelState, payable: int) -> bool:
        if payable >= self.policy.threshold(ch.token):
            return True
        oldest = self.store.oldest_unclaimed_at(ch.channel_id, ch.claimed)
        return oldest is not None and self.clock() - oldest >= self.policy.max_age

    def _submit(
        self, kind: str, batch: Sequence[PayeeChannelState], now: int, pending: list[Pending],
        early: list[SentTx], *, urgent: bool,
    ) -> None:
        """Check, estimate and send one transaction for ``batch``; split it when the estimate
        reverts or it needs more gas than the cap (bisecting down to single channels)."""
        if self.chain.check_preconditions:
            batch = self._live(kind, batch, now, early, urgent=urgent)
            if not batch:
                return
            if kind == "claimMany" and len(batch) == 1:
                kind = "claim"
        batch = sorted(batch, key=lambda c: (c.payee.lower(), c.token.lower())) \
            if kind == "claimMany" else list(batch)
        tx = self._tx_for(kind, batch)
        try:
            estimate = self.chain.estimate_gas(kind, tx)
        except ContractRevert as exc:
            if len(batch) > 1:
                half = len(batch) // 2
                for part in (batch[:half], batch[half:]):
                    self._submit("claim" if len(part) == 1 else "claimMany", part, now,
                                 pending, early, urgent=urgent)
                return
            early.append(self._failed(kind, batch, "reverted", exc, urgent=urgent))
            return
        except ChainError as exc:
            early.append(self._failed(kind, batch, "failed", exc, urgent=urgent))
            return
        # closeByPayee also refunds the payer: one more payout than the claims' runs.
        payouts = batch_runs(batch) + (1 if kind == "closeByPayee" else 0)
        gas = (estimate + estimate * self.defence.margin_percent // 100
               + self.defence.payout_gas * payouts)
        if gas > self.defence.max_gas and len(batch) > 1:
            half = len(batch) // 2
            for part in (batch[:half], batch[half:]):
                self._submit("claim" if len(part) == 1 else "claimMany", part, now, pending,
                             early, urgent=urgent)
            return
        deadline = min(c.closes_at for c in batch) if urgent else None
        window = max(c.challenge_period for c in batch) if urgent else None
        ids = tuple(c.channel_id for c in batch)
        amounts = tuple(c.accepted for c in batch)
        tx_id = self.store.add_transaction(kind, ids)
        tag = _Tag(tx_id, kind, tuple(batch), ids, amounts, urgent)
        try:
            item = self._sender().submit(kind, tx, gas=gas, deadline=deadline, window=window,
                                         now=now, tag=tag)
        except ChainError as exc:
            self.chain.resync_nonce()
            self.store.update_transaction(tx_id, status="failed", last_error=str(exc)[:2000])
            self._say(f"{kind} for {_ids(ids)} failed: {exc}")
            if urgent:
                self._alert("send_failed", f"defence {kind} for {_ids(ids)} not sent: {exc}")
            early.append(SentTx(kind, ids, amounts, False, error=str(exc)))
            return
        self.store.update_transaction(tx_id, tx_hash="0x" + item.tx_hash.hex(),
                                      nonce=item.nonce, status="sent", attempts=1)
        for c in batch:
            self._inflight[c.channel_id] = c.accepted
        if urgent:
            self._say(f"defending {_ids(ids)} (closing by {deadline}) with {kind}: nonce "
                      f"{item.nonce}, tx 0x{item.tx_hash.hex()}")
        pending.append(item)

    def _live(
        self, kind: str, batch: Sequence[PayeeChannelState], now: int, early: list[SentTx], *,
        urgent: bool,
    ) -> list[PayeeChannelState]:
        """The channels of ``batch`` the chain (latest) would still pay; a single one that it
        would not is recorded as skipped (nothing sent) and not retried with this voucher."""
        keep: list[PayeeChannelState] = []
        for ch in batch:
            try:
                onchain = self.chain.get_channel(ch.channel_id)
            except ChainError as exc:
                log.warning("reading 0x%s failed: %s", ch.channel_id.hex(), exc)
                keep.append(ch)
                continue
            live = onchain.status is ChannelStatus.OPEN or (
                onchain.status is ChannelStatus.CLOSING and now < onchain.closes_at)
            if live and min(ch.accepted, onchain.deposit) > onchain.claimed:
                keep.append(ch)
                continue
            if len(batch) == 1:
                why = PreconditionFailed(
                    f"0x{ch.channel_id.hex()} pays nothing now: status {onchain.status.name}, "
                    f"claimed {onchain.claimed}, deposit {onchain.deposit}")
                early.append(self._failed(kind, [ch], "skipped", why, urgent=urgent))
            else:
                self._refresh([ch.channel_id])
        return keep

    def _tx_for(self, kind: str, batch: Sequence[PayeeChannelState]) -> dict[str, Any]:
        if kind == "claimMany":
            entries = [(c.channel_id, c.accepted, c.voucher_signature or b"") for c in batch]
            return self.chain.tx_data("claimMany", entries)
        (ch,) = batch
        fn = "closeByPayee" if kind == "closeByPayee" else "claim"
        return self.chain.tx_data(fn, ch.channel_id, ch.accepted, ch.voucher_signature or b"")

    def _failed(
        self, kind: str, batch: Sequence[PayeeChannelState], status: str, exc: Exception, *,
        urgent: bool,
    ) -> SentTx:
        """A single channel's transaction that failed on its own, before or when mined."""
        ids = tuple(c.channel_id for c in batch)
        amounts = tuple(c.accepted for c in batch)
        tx_id = self.store.add_transaction(kind, ids)
        self.store.update_transaction(tx_id, status=status, last_error=str(exc)[:2000])
        self._mark_failed(batch, urgent=urgent)
        self._say(f"{kind} for {_ids(ids)} {status}: {exc}")
        self._refresh(ids)
        return SentTx(kind, ids, amounts, False, error=str(exc))

    def _mark_failed(self, batch: Sequence[PayeeChannelState], *, urgent: bool) -> None:
        for c in batch:
            self._attempted[c.channel_id] = (c.accepted, None)
            self._suspects.discard(c.channel_id)
            if urgent or c.status is ChannelStatus.CLOSING:
                self._failed_closing.add(c.channel_id)
                self._alert("defence_failed",
                            f"defence of 0x{c.channel_id.hex()} failed on its own; "
                            f"{payable(c)} at stake")

    def _wait(self, items: Sequence[Pending]) -> list[SentTx]:
        """Wait (interruptibly) until ``items`` end or ``act_wait`` passes, bumping fees."""
        out: list[SentTx] = []
        deadline = time.monotonic() + self.defence.act_wait
        interval = 0.01
        while any(i.state == "pending" for i in items) and time.monotonic() < deadline:
            out.extend(self._collect(self._sender().tick(self.chain.timestamp())))
            if not any(i.state == "pending" for i in items):
                break
            if self._stop.wait(interval):
                break
            interval = min(interval * 2, 0.25)
        return out

    def _collect(self, finished: Sequence[Pending]) -> list[SentTx]:
        out: list[SentTx] = []
        for item in finished:
            tag = item.tag
            if not isinstance(tag, _Tag):
                out.extend(self._collect_other(item))
                continue
            for cid in tag.ids:
                self._inflight.pop(cid, None)
            tx_hash = "0x" + item.tx_hash.hex()
            if item.state == "mined":
                block = int(item.receipt["blockNumber"])
                self.store.update_transaction(tag.tx_id, status="mined", tx_hash=tx_hash,
                                              attempts=len(item.hashes))
                for c, amount in zip(tag.ids, tag.amounts, strict=True):
                    self._attempted[c] = (amount, block)
                    self._suspects.discard(c)
                self._say(f"{tag.kind} for {_ids(tag.ids)} mined in block {block}"
                          + (f" after {item.replacements} fee bump(s)"
                             if item.replacements else ""))
                self._record(item, "mined")
                out.append(SentTx(tag.kind, tag.ids, tag.amounts, True, tx_hash=item.tx_hash,
                                  nonce=item.nonce, replacements=item.replacements))
                continue
            if item.state == "lost":
                self.store.update_transaction(tag.tx_id, status="failed",
                                              last_error=(item.error or "")[:2000])
                self._say(f"{tag.kind} for {_ids(tag.ids)} lost: {item.error}")
                self.chain.resync_nonce()
                self._refresh(tag.ids)
                self._record(item, "lost")
                self._resubmit_needed = True
                out.append(SentTx(tag.kind, tag.ids, tag.amounts, False, tx_hash=item.tx_hash,
                                  error=item.error, nonce=item.nonce))
                continue
            error = self.chain.explain_failure(tag.kind, item.tx, item.receipt)
            self.store.update_transaction(tag.tx_id, status="reverted", tx_hash=tx_hash,
                                          last_error=str(error)[:2000])
            self._record(item, "reverted")
            self._say(f"{tag.kind} for {_ids(tag.ids)} reverted: {error}")
            self._refresh(tag.ids)
            if len(tag.batch) == 1:
                self._mark_failed(tag.batch, urgent=tag.urgent)
            else:
                self._isolate(tag, item)
            out.append(SentTx(tag.kind, tag.ids, tag.amounts, False, tx_hash=item.tx_hash,
                              error=str(error), nonce=item.nonce))
        return out

    def _isolate(self, tag: _Tag, item: Pending) -> None:
        """A batch reverted: find the channel(s) that made it revert by replaying each alone
        (``eth_call`` with the batch's fees and the gas it would get alone); those are marked
        failed, the others are sent again at once. When no single replay reverts, every channel
        of the batch is sent alone (a bisection down to one)."""
        culprits: list[PayeeChannelState] = []
        for ch in tag.batch:
            tx = self._tx_for("claim", [ch])
            try:  # sized exactly as it would be sent alone...
                estimate = self.chain.estimate_gas("claim", tx)
            except ContractRevert:
                culprits.append(ch)
                continue
            except ChainError:
                continue
            # ...and replayed with the fees the batch paid (a token may look at them).
            tx.update(gas=estimate + estimate * self.defence.margin_percent // 100
                      + self.defence.payout_gas,
                      maxFeePerGas=item.max_fee, maxPriorityFeePerGas=item.tip)
            if self.chain.call_would_revert(tx) is not None:
                culprits.append(ch)
        if culprits:
            self._say(f"{tag.kind} reverted because of {_ids([c.channel_id for c in culprits])};"
                      f" sending the other {len(tag.batch) - len(culprits)} again")
            self._mark_failed(culprits, urgent=tag.urgent)
        else:
            self._suspects.update(tag.ids)
            self._say(f"{tag.kind} reverted and no channel fails alone: sending each alone")
        self._resubmit_needed = True

    def _record(self, item: Pending, state: str) -> None:
        tag = item.tag
        kind = tag.kind if isinstance(tag, _Tag) else item.what
        ids = tuple("0x" + c.hex() for c in tag.ids) if isinstance(tag, _Tag) else ()
        self._history.append(DefenceTx(kind, ids, "0x" + item.tx_hash.hex(), item.nonce,
                                       item.max_fee, item.tip, item.gas, item.replacements,
                                       state, item.deadline))
        del self._history[:-100]

    # -- deferred payouts (item 11) --

    def _maybe_withdraw(self, now: int) -> list[Pending]:
        """Withdraw deferred payouts (``owed``) of the signing account, if it is a payee."""
        sent: list[Pending] = []
        if self.chain.account is None or self._stop.is_set():
            return sent
        me = self.chain.sender
        if not self._ours(me):
            return sent
        if self.clock() - self._last_withdraw_check < self.defence.withdraw_interval:
            return sent
        self._last_withdraw_check = self.clock()
        tokens = {ZERO_ADDRESS} | {c.token for c in self.store.channels()
                                   if c.payee.lower() == me.lower()}
        for token in sorted(tokens):
            if token in self._withdrawing or self._withdraw_backoff.get(token, 0.0) > self.clock():
                continue
            try:
                owed = self.chain.owed(me, token)
            except ChainError as exc:
                log.warning("reading owed(%s) failed: %s", token, exc)
                continue
            if owed <= 0:
                continue
            base, tip = self.chain.fee_quote()
            if not worth_claiming(owed, token, self.defence.withdraw_gas, base + tip,
                                  self.defence.fee_multiple):
                continue
            tx = self.chain.tx_data("withdraw", token, me)
            try:
                estimate = self.chain.estimate_gas("withdraw", tx)
                gas = estimate + estimate * self.defence.margin_percent // 100
                # Replayed with real fees first: a token that behaves only under
                # eth_estimateGas would otherwise burn this gas again at every retry.
                trial = {**tx, "gas": gas, "maxFeePerGas": 2 * base + tip,
                         "maxPriorityFeePerGas": tip}
                refused = self.chain.call_would_revert(trial)
                if refused is not None:
                    raise refused
                sent.append(self._sender().submit("withdraw", tx, gas=gas, now=now,
                                                  tag=("withdraw", token)))
            except ChainError as exc:
                self._say(f"withdraw of {owed} {token} not sent: {exc}")
                self._withdraw_backoff[token] = self.clock() + 10 * self.defence.withdraw_interval
                continue
            self._withdrawing.add(token)
            self._say(f"withdrawing {owed} deferred {token}")
        return sent

    def _collect_other(self, item: Pending) -> list[SentTx]:
        tag = item.tag
        if isinstance(tag, tuple) and tag and tag[0] == "withdraw":
            token = str(tag[1])
            self._withdrawing.discard(token)
            ok = item.state == "mined"
            if not ok:
                self._withdraw_backoff[token] = self.clock() + 10 * self.defence.withdraw_interval
            self._record(item, item.state)
            self._say(f"withdraw of {token} {item.state}")
            return [SentTx("withdraw", (), (), ok, tx_hash=item.tx_hash, nonce=item.nonce,
                           error=None if ok else item.error or item.state)]
        return []

    # -- wallet, deadlines, alerts, status --

    def _check_wallet(self) -> None:
        if self.chain.account is None:
            return
        try:
            balance = self.chain.balance(self.chain.sender)
        except ChainError as exc:
            log.warning("reading the wallet balance failed: %s", exc)
            return
        low = balance < self.defence.wallet_min_balance
        self._wallet = WalletStatus(self.chain.sender, balance, self.defence.wallet_min_balance,
                                    low)
        if self.on_wallet is not None:
            self.on_wallet(balance, low)
        if low and not self._wallet_alerted:
            self._alert("wallet_low", f"hot wallet {self.chain.sender} holds {balance} wei, "
                        f"below {self.defence.wallet_min_balance}: defences may fail for gas")
        self._wallet_alerted = low

    def _check_deadlines(self, now: int) -> None:
        """Alert when a pending defence may not make it: less than three bump intervals left."""
        margin = 3 * self._sender().policy.bump_after + 2
        for item in self._sender().pending:
            if item.deadline is None or id(item) in self._deadline_alerted:
                continue
            if item.deadline - now <= margin:
                self._deadline_alerted.add(id(item))
                self._alert("defence_late",
                            f"{item.what} nonce {item.nonce} still pending {item.deadline - now}s"
                            f" before closesAt (max fee {item.max_fee})")

    def _alert(self, kind: str, message: str) -> None:
        log.error("watchtower alert (%s): %s", kind, message)
        self.alert_counts[kind] = self.alert_counts.get(kind, 0) + 1
        self._alerts.append(Alert(kind, message, time.time()))
        del self._alerts[:-50]
        if self.report is not None:
            self.report(message)
        if self.on_alert is not None:
            self.on_alert(kind, message)

    def _sender(self) -> TxSender:
        if self.sender is None:
            self.sender = TxSender(self.chain, FeePolicy(
                max_fee_per_gas=self.max_fee_per_gas, max_gas=self.defence.max_gas,
                bump_after=self.bump_after), alert=self._alert)
        return self.sender

    def status(self) -> WatchtowerStatus:
        """A snapshot for the dashboard (GET /v1/watchtower): closing channels, defences,
        wallet, alerts."""
        now = self._chain_now if self._chain_now is not None else int(self.clock())
        closing: list[ClosingChannel] = []
        for ch in self.store.channels():
            if ch.status is not ChannelStatus.CLOSING or not self._ours(ch.payee):
                continue
            amount = payable(ch)
            cid = ch.channel_id
            if cid in self._inflight:
                state = "defending"
            elif amount <= 0 or (cid in self._attempted and self._attempted[cid][1] is not None):
                state = "defended"
            elif cid in self._dust:
                state = "dust"
            elif cid in self._failed_closing:
                state = "failed"
            elif ch.closes_at <= now:
                state = "too_late"
            else:
                state = "waiting"
            closing.append(ClosingChannel("0x" + cid.hex(), ch.closes_at, max(amount, 0),
                                          ch.token, state))
        sender = self.sender
        live = [DefenceTx(p.tag.kind if isinstance(p.tag, _Tag) else p.what,
                          tuple("0x" + c.hex() for c in p.tag.ids) if isinstance(p.tag, _Tag)
                          else (), "0x" + p.tx_hash.hex(), p.nonce, p.max_fee, p.tip, p.gas,
                          p.replacements, "pending", p.deadline)
                for p in (sender.pending if sender is not None else [])]
        return WatchtowerStatus(
            closing=tuple(sorted(closing, key=lambda c: c.closes_at)),
            defences=tuple(live + self._history[::-1]),
            wallet=self._wallet,
            alerts=tuple(self._alerts),
            alert_counts=dict(self.alert_counts),
            replacements=sender.replacements if sender is not None else 0,
            dust_skipped=len(self._dust),
        )

    def _refresh(self, ids: Iterable[bytes]) -> None:
        """After a revert: the chain disagreed with our mirror, so re-read it now."""
        for cid in ids:
            try:
                onchain = self.chain.get_channel(cid)
            except ChainError as exc:
                log.warning("re-reading 0x%s failed: %s", cid.hex(), exc)
                continue
            if onchain.status not in (ChannelStatus.NONE, ChannelStatus.CLOSED):
                self.store.upsert_channel(onchain, now=self.clock())

    def _say(self, message: str) -> None:
        log.info("%s", message)
        if self.report is not None:
            self.report(message)


def _ids(ids: Sequence[bytes]) -> str:
    return ", ".join("0x" + c.hex() for c in ids)


def _onchain_of(state: PayeeChannelState) -> OnchainChannel:
    return OnchainChannel(state.channel_id, state.payer, state.payee, state.token, state.deposit,
                          state.claimed, state.challenge_period, state.closes_at, state.status,
                          state.voucher_signer)


# --- wiring for the CLI ------------------------------------------------------------------------


def _open_store(database_url: str) -> PayeeStore:
    engine = make_engine(database_url)
    try:
        migrate(engine)
    except Exception as exc:  # no migrations shipped: the models are the schema
        log.debug("migrations unavailable (%s); creating tables from the models", exc)
        metadata.create_all(engine)
    return PayeeStore(engine)


def build_watcher(
    chain: ChainClient,
    database_url: str,
    *,
    confirmations: int = 1,
    payees: Iterable[str] | None = None,
    policy: ClaimPolicy | None = None,
    lock: Lock | None = None,
    **options: Any,
) -> Watcher:
    """A watcher on the payee store at ``database_url``, acting for the chain client's account.

    ``options``: further ``Watcher`` fields (``defence``, ``max_fee_per_gas``, ``bump_after``)."""
    store = _open_store(database_url)
    chosen = frozenset(payees) if payees is not None else (
        frozenset({chain.sender}) if chain.account is not None else None
    )
    return Watcher(chain, store, chosen, confirmations, policy or ClaimPolicy(),
                   lock or NoLock(), **options)


def latest_voucher(database_url: str, channel_id: bytes) -> tuple[int, bytes]:
    """The payee's latest accepted voucher for ``channel_id``: (cumulative amount, signature)."""
    state = _open_store(database_url).channel(channel_id)
    if state is None or state.voucher_signature is None:
        raise ConfigError(f"no accepted voucher for channel 0x{channel_id.hex()} in the store")
    return state.accepted, state.voucher_signature

