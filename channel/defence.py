"""Planning the watchtower's defence (issue 11, items 1-3): which closing channels to claim,
in which ``claimMany`` batches, in which order, and which are dust not worth their gas.

Pure functions over the store's channel states, so the rules are tested without a chain:

* a channel is worth claiming when its payable amount is at least ``fee_multiple`` times the
  gas its entry costs at the current fee (``ETH`` channels; a token has no price here, so token
  channels are always claimed when closing, and routinely by the claim policy's threshold);
* urgent channels are grouped per token, most payable first, into batches no larger than
  ``max_batch`` entries and the per-transaction gas cap; the ETH batches go first, then each
  token's, in the order of their largest channel;
* the gas limit of a batch is the node's estimate plus a margin plus ``payout_gas`` for every
  payout the contract makes (one per run of equal payee and token): the payout call gets a fixed
  budget the estimate does not reliably include (a token may behave differently under
  ``eth_estimateGas``), and a starved payout reverts the whole batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from channel.state import PayeeChannelState

__all__ = [
    "ETH",
    "Alert",
    "ClosingChannel",
    "DefencePlan",
    "DefencePolicy",
    "DefenceTx",
    "WalletStatus",
    "WatchtowerStatus",
    "batch_runs",
    "payable",
    "plan_defence",
    "worth_claiming",
]

ETH = "0x0000000000000000000000000000000000000000"


@dataclass(frozen=True)
class DefencePolicy:
    """Spending and batching rules of the watchtower's transactions."""

    fee_multiple: int = 2
    """Claim an ETH channel only when it pays at least this many times its gas cost."""
    claim_gas: int = 45_000
    """Gas one more ``claimMany`` entry costs (signature check and storage), for planning."""
    base_gas: int = 60_000
    """Fixed gas of a ``claimMany`` (intrinsic, calldata head, the loop), for planning."""
    payout_gas: int = 110_000
    """Gas kept above the estimate per payout (the contract's PAYOUT_GAS, 63/64 rule, call)."""
    margin_percent: int = 20
    """Margin on the node's estimate."""
    max_batch: int = 60
    """Most entries in one ``claimMany``."""
    max_gas: int = 3_000_000
    """Gas limit cap of one transaction (also the sender's)."""
    act_wait: float = 3.0
    """Seconds one poll waits for its new transactions (bumping fees) before it goes back to
    following the chain; what is still pending is checked and bumped by every later poll."""
    wallet_min_balance: int = 5 * 10**16
    """Below this many wei in the hot wallet the watchtower raises a ``wallet_low`` alert."""
    withdraw_interval: float = 60.0
    """Seconds between checks of deferred payouts (``owed``) to withdraw."""
    withdraw_gas: int = 60_000
    """Gas of a ``withdraw``, for the worth-it rule on ETH."""

    def entries_per_tx(self) -> int:
        room = (self.max_gas - self.base_gas - self.payout_gas) // max(1, self.claim_gas)
        return max(1, min(self.max_batch, room))


def payable(ch: PayeeChannelState) -> int:
    return min(ch.accepted, ch.deposit) - ch.claimed


def worth_claiming(amount: int, token: str, gas: int, fee_per_gas: int, multiple: int) -> bool:
    """ETH: ``amount`` >= ``multiple`` x the gas cost; tokens (no price known): any amount."""
    if amount <= 0:
        return False
    if token.lower() != ETH:
        return True
    return amount >= multiple * gas * fee_per_gas


@dataclass
class DefencePlan:
    batches: list[list[PayeeChannelState]] = field(default_factory=list)
    dust: list[PayeeChannelState] = field(default_factory=list)


def plan_defence(
    urgent: Sequence[PayeeChannelState], fee_per_gas: int, policy: DefencePolicy,
    *, alone: frozenset[bytes] = frozenset(),
) -> DefencePlan:
    """Batches for the urgent channels, most valuable first; dust set aside.

    Channels in ``alone`` (suspects of a batch that reverted) each get a transaction of their
    own, after the batches, so one hostile channel cannot take the others down with it."""
    plan = DefencePlan()
    by_token: dict[str, list[PayeeChannelState]] = {}
    singles: list[PayeeChannelState] = []
    for ch in urgent:
        if not worth_claiming(payable(ch), ch.token, policy.claim_gas, fee_per_gas,
                              policy.fee_multiple):
            plan.dust.append(ch)
        elif ch.channel_id in alone:
            singles.append(ch)
        else:
            by_token.setdefault(ch.token.lower(), []).append(ch)
    size = policy.entries_per_tx()
    groups = sorted(
        by_token.items(),
        key=lambda kv: (kv[0] != ETH, -max(payable(c) for c in kv[1])),
    )
    for _, channels in groups:
        channels.sort(key=lambda c: (-payable(c), c.closes_at))
        plan.batches.extend(channels[i:i + size] for i in range(0, len(channels), size))
    singles.sort(key=lambda c: (c.token.lower() != ETH, -payable(c)))
    plan.batches.extend([c] for c in singles)
    return plan


def batch_runs(batch: Sequence[PayeeChannelState]) -> int:
    """Payouts ``claimMany`` makes for ``batch`` in this order: one per run of (payee, token)."""
    runs = 0
    last: tuple[str, str] | None = None
    for ch in batch:
        key = (ch.payee.lower(), ch.token.lower())
        if key != last:
            runs += 1
            last = key
    return runs


# --- the status the dashboard shows (GET /v1/watchtower) ---------------------------------------


@dataclass(frozen=True)
class ClosingChannel:
    channel_id: str
    closes_at: int
    payable: int
    token: str
    state: str
    """``defending`` (a claim is pending), ``defended``, ``dust`` (worth less than its gas),
    ``failed`` (its claim reverted on its own), ``too_late`` or ``waiting``."""


@dataclass(frozen=True)
class DefenceTx:
    kind: str
    channel_ids: tuple[str, ...]
    tx_hash: str
    nonce: int
    max_fee_per_gas: int
    max_priority_fee_per_gas: int
    gas: int
    replacements: int
    state: str
    deadline: int | None


@dataclass(frozen=True)
class WalletStatus:
    address: str
    balance: int
    min_balance: int
    low: bool


@dataclass(frozen=True)
class Alert:
    kind: str
    message: str
    at: float


@dataclass(frozen=True)
class WatchtowerStatus:
    closing: tuple[ClosingChannel, ...]
    defences: tuple[DefenceTx, ...]
    wallet: WalletStatus | None
    alerts: tuple[Alert, ...]
    alert_counts: dict[str, int]
    replacements: int
    dust_skipped: int

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (amounts, fees and balances as decimal strings: wei exceed 2^53)."""
        return {
            "closing": [{"channel_id": c.channel_id, "closes_at": c.closes_at,
                         "payable": str(c.payable), "token": c.token, "state": c.state}
                        for c in self.closing],
            "defences": [{"kind": d.kind, "channel_ids": list(d.channel_ids),
                          "tx_hash": d.tx_hash, "nonce": d.nonce,
                          "max_fee_per_gas": str(d.max_fee_per_gas),
                          "max_priority_fee_per_gas": str(d.max_priority_fee_per_gas),
                          "gas": d.gas, "replacements": d.replacements, "state": d.state,
                          "deadline": d.deadline} for d in self.defences],
            "wallet": None if self.wallet is None else {
                "address": self.wallet.address, "balance": str(self.wallet.balance),
                "min_balance": str(self.wallet.min_balance), "low": self.wallet.low},
            "alerts": [{"kind": a.kind, "message": a.message, "at": a.at} for a in self.alerts],
            "alert_counts": dict(self.alert_counts),
            "replacements": self.replacements,
            "dust_skipped": self.dust_skipped,
        }
