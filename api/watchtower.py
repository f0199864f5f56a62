"""The watchtower's state for the dashboard (web/SERVICE-NEEDS.md item 5).

``watchtower_state(runtime)`` is the one function that builds it: the closing channels of the
store's mirror, the defences the watcher sent (its outgoing transactions for a channel after
that channel's close started), the service wallet's balance against what claims and defences
need, and warnings in plain words. When the watcher grows its own report
(``Watcher.status()``, live only in the worker that leads and runs it) adds the defences still
pending with their fees and replacements, and its alerts as warnings; the JSON shape stays:

    {"closing": [{"channel_id", "closes_at", "defended", "tx_hash"}],
     "defences": [{"channel_id", "tx_hash", "at"}],
     "warnings": [{"kind", "message"}],
     "wallet": {"address", "balance", "needed"} | null}
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Final

from api.deps import Runtime
from channel.errors import PieceworkError
from channel.messages import ZERO_ADDRESS
from channel.state import ChannelStatus
from channel.units import eth_units, format_amount

__all__ = ["GAS_PER_CHANNEL", "watchtower_state"]

log = logging.getLogger(__name__)

GAS_PER_CHANNEL: Final = 150_000
"""Gas reserved per open or closing channel: one claim or defence each (claim ~70k, with
margin for a busy token's transfer)."""
ALERT_SHOWN_SECONDS: Final = 3600
"""A watcher alert stays on the dashboard this long (its count stays in /metrics)."""
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
    if chain is not None:
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
    for pending in _pending_defences(runtime):
        defences.append(pending)
    warnings.extend(_alerts(runtime))
    if runtime.watcher is None:
        warnings.append({"kind": "no_watcher",
                         "message": "This service runs without a chain watcher: nobody "
                                    "defends closing channels from here."})
    return {
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


def _live_status(runtime: Runtime) -> Any:
    """The watcher's own snapshot (``channel.defence.WatchtowerStatus``), or None. A worker
    that does not lead never polled: its snapshot has no pending defence and no alert."""
    if runtime.watcher is None:
        return None
    try:
        return runtime.watcher.status()
    except PieceworkError:
        return None


def _pending_defences(runtime: Runtime) -> list[dict[str, Any]]:
    """Defences sent and not yet mined: one entry per channel, with the fee-bumping state."""
    status = _live_status(runtime)
    if status is None:
        return []
    return [{"channel_id": cid, "tx_hash": tx.tx_hash, "at": None, "state": tx.state,
             "nonce": tx.nonce, "max_fee_per_gas": str(tx.max_fee_per_gas),
             "replacements": tx.replacements}
            for tx in status.defences for cid in tx.channel_ids]


def _alerts(runtime: Runtime) -> list[dict[str, str]]:
    """The watcher's recent alerts (a defence that cannot be made in time, a low wallet...)."""
    status = _live_status(runtime)
    if status is None:
        return []
    latest: dict[str, str] = {}  # one warning per kind (the dashboard keys them by kind)
    for alert in status.alerts:
        if time.time() - alert.at < ALERT_SHOWN_SECONDS:
            latest[alert.kind] = alert.message
    return [{"kind": kind, "message": message} for kind, message in latest.items()]
