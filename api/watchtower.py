"""The watchtower's state for the dashboard (web/SERVICE-NEEDS.md item 5).

``watchtower_state(runtime)`` is the one function that builds it: the closing channels of the
store's mirror, the defences the watcher sent (its outgoing transactions for a channel after
that channel's close started), the service wallet's balance against what claims and defences
need, and warnings in plain words. The watcher's own report (``Watcher.status()``,
``channel.defence.WatchtowerStatus``) is merged in: its per-channel state, its defences in
flight, its alerts as warnings and its wallet reading (only the leading worker's watcher has
run; the others fall back to the store and the node).
The JSON shape stays as below.

    {"closing": [{"channel_id", "closes_at", "defended", "tx_hash"}],
     "defences": [{"channel_id", "tx_hash", "at"}],
     "warnings": [{"kind", "message"}],
     "wallet": {"address", "balance", "needed"} | null}
"""

from __future__ import annotations

import json
import logging
from typing import Any, Final

from api.deps import Runtime
from channel.defence import WatchtowerStatus
from channel.errors import PieceworkError
from channel.messages import ZERO_ADDRESS
from channel.state import ChannelStatus
from channel.units import eth_units, format_amount

__all__ = ["GAS_PER_CHANNEL", "watchtower_state"]

log = logging.getLogger(__name__)

GAS_PER_CHANNEL: Final = 150_000
"""Gas reserved per open or closing channel: one claim or defence each (claim ~70k, with
margin for a busy token's transfer)."""
_DEFENCE_KINDS: Final = frozenset({"claim", "claimMany", "closeByPayee"})


def _eth(wei: int) -> str:
    return format_amount(wei, eth_units())


def watchtower_state(runtime: Runtime) -> dict[str, Any]:
    """The watchtower object of ``GET /v1/watchtower`` and the ``watchtower`` event."""
    ours = [c for c in runtime.store.channels() if c.payee in runtime.payees]
    closing = [c for c in ours if c.status is ChannelStatus.CLOSING]
    active = sum(1 for c in ours if c.status in (ChannelStatus.OPEN, ChannelStatus.CLOSING))
    started = {"0x" + c.channel_id.hex(): c.closes_at - c.challenge_period for c in closing}

    defences: list[dict[str, Any]] = []
    defended: dict[str, str] = {}
    for tx in runtime.store.transactions():
        if tx["kind"] not in _DEFENCE_KINDS or tx["status"] != "mined" or not tx["tx_hash"]:
            continue
        for cid in json.loads(tx["channel_ids"]):
            began = started.get(cid)
            if began is None or tx["created_at"] < began:
                continue
            defences.append({"channel_id": cid, "tx_hash": tx["tx_hash"],
                             "at": int(tx["updated_at"])})
            defended.setdefault(cid, tx["tx_hash"])

    warnings: list[dict[str, str]] = []
    wallet: dict[str, str] | None = None
    chain = runtime.chain
    # The leading worker's watcher has read the wallet already: its reading replaces this one
    # (below), so the node is asked only where there is no such report.
    report: WatchtowerStatus | None = (
        runtime.watcher.status() if runtime.watcher is not None else None)
    if chain is not None and (report is None or report.wallet is None):
        address = runtime.payees[0]
        try:
            balance = int(chain.balance(address, ZERO_ADDRESS))
            gas_price = int(chain.w3.eth.gas_price)
        except (PieceworkError, OSError, ValueError) as exc:
            warnings.append({"kind": "node_unavailable",
                             "message": f"The service cannot read its wallet from the chain "
                                        f"node now ({type(exc).__name__}); claims and "
                                        "defences wait for it."})
        else:
            needed = gas_price * GAS_PER_CHANNEL * max(1, active)
            wallet = {"address": address, "balance": str(balance), "needed": str(needed)}
            if balance < needed:
                warnings.append({"kind": "low_balance",
                                 "message": f"The service's wallet {address} holds "
                                            f"{_eth(balance)}; claims and defences need "
                                            f"about {_eth(needed)}."})
    if runtime.watcher is None:
        warnings.append({"kind": "no_watcher",
                         "message": "This service runs without a chain watcher: nobody "
                                    "defends closing channels from here."})
    state = {
        "closing": [
            {"channel_id": cid, "closes_at": c.closes_at, "defended": cid in defended,
             "tx_hash": defended.get(cid)}
            for c in closing
            for cid in ["0x" + c.channel_id.hex()]
        ],
        "defences": defences,
        "warnings": warnings,
        "wallet": wallet,
    }
    if report is not None:
        _merge_report(state, report)
    return state


def _merge_report(state: dict[str, Any], report: WatchtowerStatus) -> None:
    """Fold the watcher's own report into ``state``: each closing channel's state, defences in
    flight, alerts as warnings, and its wallet reading."""
    by_id = {c["channel_id"]: c for c in state["closing"]}
    for tx in report.defences:
        for cid in tx.channel_ids:
            if not any(d["tx_hash"] == tx.tx_hash and d["channel_id"] == cid
                       for d in state["defences"]):
                state["defences"].append({"channel_id": cid, "tx_hash": tx.tx_hash, "at": None,
                                          "state": tx.state})
            if cid in by_id and by_id[cid]["tx_hash"] is None:
                by_id[cid]["tx_hash"] = tx.tx_hash
    for ch in report.closing:
        entry = by_id.get(ch.channel_id)
        if entry is not None:
            entry["state"] = ch.state
            entry["defended"] = entry["defended"] or ch.state == "defended"
    kinds = {w["kind"] for w in state["warnings"]}
    for alert in report.alerts:
        if alert.kind not in kinds:
            state["warnings"].append({"kind": alert.kind, "message": alert.message})
            kinds.add(alert.kind)
    wallet = report.wallet
    if wallet is not None:
        state["wallet"] = {"address": wallet.address, "balance": str(wallet.balance),
                           "needed": str(wallet.min_balance)}
        state["warnings"] = [w for w in state["warnings"] if w["kind"] != "low_balance"]
        if wallet.low:
            state["warnings"].append({
                "kind": "low_balance",
                "message": f"The service's wallet {wallet.address} holds "
                           f"{_eth(wallet.balance)}; claims and defences need at least "
                           f"{_eth(wallet.min_balance)}.",
            })
