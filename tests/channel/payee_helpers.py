"""Shared test helpers for the payee: keys, domain, channels, and a retrying honest payer."""

from __future__ import annotations

import threading

from channel.errors import StaleVoucher
from channel.messages import Domain, Voucher
from channel.payee import PayeeService, SignedReceipt
from channel.signing import Signer
from channel.state import ChannelStatus, OnchainChannel

# Anvil's well-known development keys #1 and #2: public test data, never real secrets.
PAYER_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
PAYEE_KEY = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"
PAYER = Signer(PAYER_KEY).address
PAYEE = Signer(PAYEE_KEY).address
DOMAIN = Domain(31337, "0x5FbDB2315678afecb367f032d93F642f64180aa3")

_payer = Signer(PAYER_KEY)
_sign_lock = threading.Lock()


def make_onchain(channel_id: bytes, **kw: object) -> OnchainChannel:
    fields: dict[str, object] = {
        "channel_id": channel_id,
        "payer": PAYER,
        "payee": PAYEE,
        "token": "0x" + "00" * 20,
        "deposit": 10**30,
        "claimed": 0,
        "challenge_period": 3600,
        "closes_at": 0,
        "status": ChannelStatus.OPEN,
    }
    fields.update(kw)
    return OnchainChannel(**fields)  # type: ignore[arg-type]


def pay_until(service: PayeeService, channel_id: bytes, task_id: str, amount: int) -> SignedReceipt:
    """An honest payer racing others: on StaleVoucher it re-signs on top of ``current``."""
    current = service.latest(channel_id).accepted
    for _ in range(10_000):
        cumulative = current + amount
        sig = _payer.sign(DOMAIN, Voucher(channel_id, cumulative))
        try:
            return service.accept(channel_id, task_id, amount, cumulative, sig, now=1_000)
        except StaleVoucher as exc:
            current = exc.current
    raise AssertionError("never got through")
