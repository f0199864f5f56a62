"""Non-blocking, fee-bumped transaction sending for the watchtower (issue 11, items 3 and 5).

:meth:`TxSender.submit` signs and broadcasts a transaction and returns at once; its nonce comes
from the chain client's one nonce owner (:class:`channel.chain.NonceManager`, under the
cross-process lock when the api configures one). :meth:`TxSender.tick` then, for every
transaction still pending:

* returns it once any version of it has a receipt (mined or reverted);
* re-broadcasts it when the node forgot it (dropped from the pool);
* gives it up as ``lost`` when its nonce was used by a transaction that is none of ours;
* replaces it, same nonce, with both fee fields raised by at least 12.5 % (what nodes demand
  of a replacement) when it has been pending ``bump_after`` seconds or the base fee rose past
  its ``maxFeePerGas``, never above the fee cap. The cap rises as the deadline nears: a
  quarter of ``max_fee_per_gas`` with the whole window left (and for routine claims), all of it
  from half the window on.

Gas is capped per transaction (``max_gas``); a transaction that needs more is refused before
anything is signed (:class:`GasCapExceeded`), so the caller splits it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from channel.chain import ChainClient, NonceUsed
from channel.errors import ChainError

__all__ = ["FeePolicy", "GasCapExceeded", "Pending", "TxSender", "bumped"]

log = logging.getLogger(__name__)

GWEI = 10**9
BUMP_NUMERATOR = 1125  # +12.5 %, the least a node accepts for a replacement (geth: 10 %)
BUMP_DENOMINATOR = 1000


def bumped(value: int) -> int:
    """``value`` raised by at least 12.5 % (and by at least 1 wei)."""
    return value * BUMP_NUMERATOR // BUMP_DENOMINATOR + 1


class GasCapExceeded(ChainError):  # noqa: N818 - named like the rest of channel.errors
    """A transaction needs more gas than the per-transaction cap allows; nothing was sent."""

    code = "gas_cap_exceeded"


@dataclass(frozen=True)
class FeePolicy:
    """How much the watchtower may spend per transaction, and how fast it bumps fees."""

    max_fee_per_gas: int = 500 * GWEI
    """The fee cap at the deadline (PIECEWORK_MAX_FEE_GWEI)."""
    max_gas: int = 3_000_000
    """Gas limit cap of one transaction (PIECEWORK_MAX_GAS_PER_TX)."""
    bump_after: float = 4.0
    """Seconds a transaction may stay pending before it is replaced with higher fees."""
    floor_share: float = 0.25
    """Share of ``max_fee_per_gas`` allowed with the whole window left, and for routine sends."""

    def cap(self, seconds_left: float | None, window: float | None) -> int:
        """The fee cap for a transaction due in ``seconds_left`` of a ``window`` (None: no
        deadline). Rises linearly from ``floor_share`` to the whole cap at half the window."""
        floor = int(self.max_fee_per_gas * self.floor_share)
        if seconds_left is None:
            return floor
        if window is None or window <= 0 or seconds_left <= 0:
            return self.max_fee_per_gas
        used = 1.0 - min(1.0, seconds_left / window)
        share = self.floor_share + (1.0 - self.floor_share) * min(1.0, 2.0 * used)
        return max(floor, min(self.max_fee_per_gas, int(self.max_fee_per_gas * share)))


@dataclass
class Pending:
    """One transaction (one nonce) and every version of it that was broadcast."""

    what: str
    tx: dict[str, Any]
    hashes: list[bytes]
    deadline: int | None
    window: int | None
    sent_at: float
    tag: Any = None
    replacements: int = 0
    rebroadcasts: int = 0
    state: str = "pending"  # pending | mined | reverted | lost
    receipt: Any = None
    error: str | None = None
    capped: bool = False

    @property
    def nonce(self) -> int:
        return int(self.tx["nonce"])

    @property
    def tx_hash(self) -> bytes:
        return self.hashes[-1]

    @property
    def max_fee(self) -> int:
        return int(self.tx["maxFeePerGas"])

    @property
    def tip(self) -> int:
        return int(self.tx["maxPriorityFeePerGas"])

    @property
    def gas(self) -> int:
        return int(self.tx["gas"])


@dataclass
class TxSender:
    """Sends for one chain client's account and keeps every pending transaction moving."""

    chain: ChainClient
    policy: FeePolicy = field(default_factory=FeePolicy)
    clock: Callable[[], float] = time.monotonic
    alert: Callable[[str, str], None] | None = None
    """Called with (kind, message) when a transaction cannot be pushed any further."""
    pending: list[Pending] = field(default_factory=list)
    replacements: int = 0
    rebroadcasts: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _capped: set[tuple[str, int | None]] = field(default_factory=set, repr=False)

    def submit(
        self, what: str, tx: dict[str, Any], *, gas: int, deadline: int | None = None,
        window: int | None = None, now: int | None = None, tag: Any = None,
    ) -> Pending:
        """Sign and broadcast ``tx`` (to, data, value) with ``gas``; returns without waiting.

        ``deadline`` (chain timestamp) and ``window`` (seconds) set how high fees may go."""
        if gas > self.policy.max_gas:
            raise GasCapExceeded(f"{what} needs {gas} gas, above the cap of {self.policy.max_gas}",
                                 gas=gas, cap=self.policy.max_gas)
        base, tip = self.chain.fee_quote()
        left = None if deadline is None or now is None else deadline - now
        cap = self.policy.cap(left, window)
        max_fee = min(2 * base + tip, cap)
        tip = min(tip, max_fee)
        if max_fee <= base and (what, deadline) not in self._capped:
            self._capped.add((what, deadline))  # once per kind and deadline, not every poll
            self._alert("fee_cap", f"{what}: the base fee {base} is above the fee cap {cap} now; "
                        "sending at the cap")
        body = {**tx, "gas": gas, "maxFeePerGas": max_fee, "maxPriorityFeePerGas": tip}
        tx_hash, nonce = self.chain.broadcast(what, body)
        body["nonce"] = nonce
        item = Pending(what, body, [tx_hash], deadline, window, self.clock(), tag)
        with self._lock:
            self.pending.append(item)
        log.info("%s: sent 0x%s nonce %d max fee %d tip %d gas %d", what, tx_hash.hex(), nonce,
                 max_fee, tip, gas)
        return item

    def tick(self, now: int | None = None) -> list[Pending]:
        """Check every pending transaction once; returns those that finished since."""
        with self._lock:
            todo = list(self.pending)
        if not todo:
            return []
        finished: list[Pending] = []
        for item in todo:
            try:
                done = self._check(item, now)
            except ChainError as exc:  # node trouble: this item is checked again next tick
                log.warning("%s nonce %d: check failed: %s", item.what, item.nonce, exc)
                continue
            if done:
                finished.append(item)
        with self._lock:
            self.pending = [p for p in self.pending if p not in finished]
        return finished

    def _check(self, item: Pending, now: int | None) -> bool:
        """One look at ``item``: True when it ended (mined, reverted, lost)."""
        receipt = self._receipt(item)
        if receipt is not None:
            item.receipt = receipt
            item.state = "mined" if int(receipt["status"]) == 1 else "reverted"
            return True
        if self.chain.account_nonce("latest") > item.nonce:
            # The nonce is used; one last look for our receipt (it may have just landed).
            receipt = self._receipt(item)
            if receipt is not None:
                item.receipt = receipt
                item.state = "mined" if int(receipt["status"]) == 1 else "reverted"
            else:
                item.state = "lost"
                item.error = f"nonce {item.nonce} was used by another transaction"
            return True
        base, tip = self.chain.fee_quote()
        if not self.chain.transaction_known(item.tx_hash):
            self._rebroadcast(item, base, tip, now)
            return False
        stale = self.clock() - item.sent_at >= self.policy.bump_after
        if stale or base > item.max_fee:
            self._replace(item, base, tip, now)
        return False

    def forget(self, item: Pending) -> None:
        with self._lock:
            self.pending = [p for p in self.pending if p is not item]

    # -- internals -------------------------------------------------------------------------

    def _receipt(self, item: Pending) -> Any:
        for tx_hash in reversed(item.hashes):
            receipt = self.chain.receipt(tx_hash)
            if receipt is not None:
                return receipt
        return None

    def _rebroadcast(self, item: Pending, base: int, tip: int, now: int | None) -> None:
        """The node forgot ``item`` (dropped from its pool): send it again, with higher fees
        when its max fee is below the base fee now (nodes drop and refuse those)."""
        item.rebroadcasts += 1
        self.rebroadcasts += 1
        if base > item.max_fee:
            self._replace(item, base, tip, now)
            return
        try:
            tx_hash, _ = self.chain.broadcast(item.what, dict(item.tx))
        except NonceUsed:
            return  # the next tick sees the nonce used and finds out by whom
        except ChainError as exc:
            log.warning("%s: re-broadcast of nonce %d refused (%s); raising its fees",
                        item.what, item.nonce, exc)
            self._replace(item, base, tip, now)
            return
        log.warning("%s: nonce %d was dropped by the node; re-broadcast as 0x%s", item.what,
                    item.nonce, tx_hash.hex())
        if tx_hash not in item.hashes:
            item.hashes.append(tx_hash)
        item.sent_at = self.clock()

    def _replace(self, item: Pending, base: int, tip: int, now: int | None) -> None:
        left = None if item.deadline is None or now is None else item.deadline - now
        cap = self.policy.cap(left, item.window)
        new_tip = max(bumped(item.tip), tip)
        new_max = max(bumped(item.max_fee), 2 * base + new_tip)
        new_max = min(new_max, cap)
        if new_max <= base and not item.capped:
            item.capped = True
            self._alert("fee_cap", f"{item.what} nonce {item.nonce}: the base fee {base} is "
                        f"above its fee cap {cap}; it waits at the cap")
        if new_max < bumped(item.max_fee):
            if not item.capped:
                item.capped = True
                self._alert("fee_cap", f"{item.what} nonce {item.nonce}: pending at max fee "
                            f"{item.max_fee}, base fee {base}, cap {cap}: cannot bump further")
            item.sent_at = self.clock()
            return
        new_tip = min(new_tip, new_max)
        if new_tip < bumped(item.tip):
            new_tip = min(bumped(item.tip), new_max)
        body = {**item.tx, "maxFeePerGas": new_max, "maxPriorityFeePerGas": new_tip}
        try:
            tx_hash, _ = self.chain.broadcast(item.what, body)
        except NonceUsed:
            return  # mined meanwhile: the next tick collects the receipt
        except ChainError as exc:
            log.warning("%s: replacement of nonce %d refused: %s", item.what, item.nonce, exc)
            item.sent_at = self.clock()
            return
        item.tx = body
        item.hashes.append(tx_hash)
        item.replacements += 1
        self.replacements += 1
        item.sent_at = self.clock()
        log.info("%s: nonce %d replaced by 0x%s (max fee %d, tip %d; base fee %d)", item.what,
                 item.nonce, tx_hash.hex(), new_max, new_tip, base)

    def _alert(self, kind: str, message: str) -> None:
        log.error("watchtower alert (%s): %s", kind, message)
        if self.alert is not None:
            self.alert(kind, message)
