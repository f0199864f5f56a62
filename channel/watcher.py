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
4. **defend** — a channel the payer started closing while we hold a voucher above ``claimed``
   is claimed at once, well before ``closesAt`` (or closed with ``closeByPayee`` when we are
   its payee and ``close_on_defend`` is set);
5. **collect** — routine claims are batched into ``claimMany`` when a channel's unclaimed amount
   reaches the threshold or its oldest unclaimed voucher is older than ``max_age``.

Every transaction is recorded in ``outgoing_transactions``. A reverted transaction is recorded,
reported, and its channels re-read; the same voucher is not sent again by this process (no
revert loop), only a newer voucher or changed chain state lets the channel be tried again.
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
    ChainClient,
    ChannelClosed,
    ChannelEvent,
    ChannelOpened,
    Claim,
    PreconditionFailed,
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
    # Voucher amounts already sent per channel, with the block the tx was mined in (None:
    # reverted). Prevents resending the same voucher until the mirror has caught up.
    _attempted: dict[bytes, tuple[int, int | None]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if self.confirmations < 1:
            raise ConfigError(f"confirmations must be >= 1, got {self.confirmations}")
        if self.payees is not None:
            self.payees = frozenset(p.lower() for p in self.payees)

    # -- the loop -------------------------------------------------------------------------

    def run(self, stop: threading.Event, *, interval: float = 2.0) -> None:
        """Poll until ``stop`` is set; node or database hiccups are logged and retried."""
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

    def _act(self, safe_block: int) -> list[SentTx]:
        now = self.chain.timestamp()
        urgent: list[PayeeChannelState] = []
        routine: list[PayeeChannelState] = []
        for ch in self.store.channels():
            if ch.voucher_signature is None or not self._ours(ch.payee):
                continue
            payable = min(ch.accepted, ch.deposit) - ch.claimed
            if payable <= 0 or self._already_sent(ch, safe_block):
                continue
            if ch.status is ChannelStatus.CLOSING:
                if now < ch.closes_at:
                    urgent.append(ch)
                else:
                    self._say(f"too late for 0x{ch.channel_id.hex()}: challenge period ended "
                              f"at {ch.closes_at} (now {now}), {payable} unclaimed")
            elif ch.status is ChannelStatus.OPEN and self._due(ch, payable):
                routine.append(ch)
        sent = [self._defend(ch, ch.voucher_signature or b"")
                for ch in sorted(urgent, key=lambda c: c.closes_at)]
        for i in range(0, len(routine), self.policy.max_batch):
            sent.append(self._claim_batch(routine[i:i + self.policy.max_batch]))
        return sent

    def _already_sent(self, ch: PayeeChannelState, safe_block: int) -> bool:
        attempt = self._attempted.get(ch.channel_id)
        if attempt is None:
            return False
        amount, mined = attempt
        if amount < ch.accepted:
            return False  # a newer voucher arrived since: worth a new transaction
        if mined is None:
            return True  # reverted with this voucher: do not loop on it
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

    def _defend(self, ch: PayeeChannelState, sig: bytes) -> SentTx:
        as_payee = (self.close_on_defend and self.chain.account is not None
                    and ch.payee == self.chain.sender)
        kind = "closeByPayee" if as_payee else "claim"
        self._say(f"channel 0x{ch.channel_id.hex()} is closing at {ch.closes_at}: {kind} "
                  f"{ch.accepted} (claimed {ch.claimed})")

        def send() -> Any:
            if as_payee:
                return self.chain.close_by_payee(ch.channel_id, ch.accepted, sig)
            return self.chain.claim(ch.channel_id, ch.accepted, sig)

        return self._send(kind, [ch], send)

    def _claim_batch(self, batch: Sequence[PayeeChannelState]) -> SentTx:
        claims = [Claim(c.channel_id, c.accepted, c.voucher_signature or b"") for c in batch]
        if len(claims) == 1:
            only = claims[0]
            return self._send("claim", batch, lambda: self.chain.claim(
                only.channel_id, only.cumulative_amount, only.payer_signature))
        return self._send("claimMany", batch, lambda: self.chain.claim_many(claims))

    def _send(
        self, kind: str, channels: Sequence[PayeeChannelState], send: Callable[[], Any]
    ) -> SentTx:
        ids = tuple(c.channel_id for c in channels)
        amounts = tuple(c.accepted for c in channels)
        tx_id = self.store.add_transaction(kind, ids)

        def sent_hook(tx_hash: bytes, nonce: int) -> None:
            self.store.update_transaction(tx_id, tx_hash="0x" + tx_hash.hex(), nonce=nonce,
                                          status="sent", attempts=1)

        try:
            with self.chain.sent_hook(sent_hook):
                result = send()
        except (ContractRevert, PreconditionFailed) as exc:
            status = "reverted" if isinstance(exc, ContractRevert) else "skipped"
            self.store.update_transaction(tx_id, status=status, last_error=str(exc)[:2000])
            for c in channels:
                self._attempted[c.channel_id] = (c.accepted, None)
            self._say(f"{kind} for {_ids(ids)} {status}: {exc}")
            self._refresh(ids)
            return SentTx(kind, ids, amounts, False, error=str(exc))
        except ChainError as exc:
            # Timeout / node trouble: the transaction may still land; the next poll re-reads,
            # and sends from the node's nonce (a dropped one must not leave a gap).
            self.chain.resync_nonce()
            self.store.update_transaction(tx_id, status="failed", last_error=str(exc)[:2000])
            self._say(f"{kind} for {_ids(ids)} failed: {exc}")
            return SentTx(kind, ids, amounts, False, error=str(exc))
        self.store.update_transaction(tx_id, status="mined", tx_hash="0x" + result.tx_hash.hex())
        for c in channels:
            self._attempted[c.channel_id] = (c.accepted, int(result.block_number))
        self._say(f"{kind} for {_ids(ids)} mined in block {result.block_number}")
        return SentTx(kind, ids, amounts, True, tx_hash=result.tx_hash)

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
) -> Watcher:
    """A watcher on the payee store at ``database_url``, acting for the chain client's account."""
    store = _open_store(database_url)
    chosen = frozenset(payees) if payees is not None else (
        frozenset({chain.sender}) if chain.account is not None else None
    )
    return Watcher(chain, store, chosen, confirmations, policy or ClaimPolicy(),
                   lock or NoLock())


def latest_voucher(database_url: str, channel_id: bytes) -> tuple[int, bytes]:
    """The payee's latest accepted voucher for ``channel_id``: (cumulative amount, signature)."""
    state = _open_store(database_url).channel(channel_id)
    if state is None or state.voucher_signature is None:
        raise ConfigError(f"no accepted voucher for channel 0x{channel_id.hex()} in the store")
    return state.accepted, state.voucher_signature

