"""Integration helpers: opening channels quickly, signing vouchers, and a payee-service twin.

The twin answers the payee HTTP API (PROTOCOL.md) through ``httpx.MockTransport`` on top of the
core's real ``PayeeService`` and ``PayeeStore``, reading channels from the anvil node, so the
payer library is tested against the real payee rules without starting a server.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from piecework_testnode import CHAIN_ID, Accounts, Deployment

from channel.chain import ZERO_ADDRESS, ChainClient
from channel.errors import PieceworkError
from channel.messages import Domain, Voucher
from channel.payee import PayeeService
from channel.signing import Signer
from channel.state import ChannelStatus, OnchainChannel
from channel.store import PayeeStore, make_engine, metadata, migrate

SERVICE_URL = "http://payee.test"


def voucher_sig(account: LocalAccount, contract: str, channel_id: bytes, amount: int) -> bytes:
    return Signer(bytes(account.key)).sign(Domain(CHAIN_ID, contract), Voucher(channel_id, amount))


def open_eth(
    client: ChainClient, payee: str, amount: int = 10**18, period: int = 3600
) -> bytes:
    channel_id, _ = client.open(payee, amount, challenge_period=period, salt=os.urandom(32))
    return channel_id


def payee_store(db_url: str) -> PayeeStore:
    engine = make_engine(db_url)
    try:
        migrate(engine)
    except Exception:
        metadata.create_all(engine)
    return PayeeStore(engine)


class ChainSource:
    """``channel.payee.ChannelSource`` over the chain client (what the api will wire too)."""

    def __init__(self, client: ChainClient) -> None:
        self.client = client

    def get(self, channel_id: bytes) -> OnchainChannel | None:
        ch = self.client.get_channel(channel_id)
        return None if ch.status is ChannelStatus.NONE else ch


@dataclass
class PayeeTwin:
    """The payee service's HTTP contract, served in-process. ``offline`` simulates an outage."""

    service: PayeeService
    requests: list[tuple[str, str]] = field(default_factory=list)
    offline: bool = False

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, request.url.path))
        if self.offline:
            raise httpx.ConnectError("connection refused", request=request)
        parts = request.url.path.strip("/").split("/")
        try:
            if request.method == "POST" and parts[-1] == "payments":
                body = json.loads(request.content)
                receipt = self.service.accept(parts[2], body["task_id"], body["amount"],
                                              body["cumulative_amount"], body["signature"],
                                              int(time.time()))
                return httpx.Response(201, json={"receipt": {
                    "channel_id": "0x" + receipt.channel_id.hex(),
                    "cumulative_amount": str(receipt.cumulative_amount),
                    "task_id": body["task_id"],
                    "signature": "0x" + receipt.signature.hex(),
                }})
            if request.method == "POST" and parts[-1] == "close":
                amount, sig = self.service.close_consent(parts[2])
                return httpx.Response(200, json={"cumulative_amount": str(amount),
                                                 "signature": "0x" + sig.hex()})
            if request.method == "GET" and parts[-1] == "receipts":
                cid = bytes.fromhex(parts[2][2:])
                items = [{"channel_id": parts[2], "cumulative_amount": str(p.cumulative_amount),
                          "amount": str(p.amount), "task_hash": "0x" + p.task_hash.hex(),
                          "task_id": p.task_id, "signature": "0x" + p.receipt_signature.hex()}
                         for p in self.service.store.payments(cid)]
                return httpx.Response(200, json={"items": items, "next_cursor": None})
            if request.method == "GET" and len(parts) == 3:
                st = self.service.latest(parts[2])
                latest = None if st.voucher_signature is None else {
                    "cumulative_amount": str(st.accepted),
                    "signature": "0x" + st.voucher_signature.hex()}
                return httpx.Response(200, json={
                    "channel_id": parts[2], "payer": st.payer, "payee": st.payee,
                    "token": st.token, "deposit": str(st.deposit), "claimed": str(st.claimed),
                    "challenge_period": st.challenge_period, "closes_at": st.closes_at,
                    "status": st.status.name.lower(), "latest": latest})
        except PieceworkError as exc:
            status = {"stale_voucher": 409, "task_conflict": 409, "channel_not_open": 409,
                      "exceeds_deposit": 422}.get(exc.code, 422)
            problem: dict[str, Any] = {"type": "about:blank", "title": exc.code,
                                       "status": status, "detail": str(exc), "code": exc.code}
            if hasattr(exc, "current"):
                problem["current_cumulative_amount"] = str(exc.current)
            if hasattr(exc, "deposit"):
                problem["deposit"] = str(exc.deposit)
            return httpx.Response(status, json=problem,
                                  headers={"content-type": "application/problem+json"})
        return httpx.Response(404, json={"code": "not_found", "detail": request.url.path})

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handler), timeout=5)


@pytest.fixture
def payee_twin(
    make_client: Callable[..., ChainClient], accounts: Accounts, deployment: Deployment,
    db_url: str,
) -> Iterator[PayeeTwin]:
    """A payee service for ``accounts.payee`` on its own store (SQLite and PostgreSQL)."""
    store = payee_store(db_url)
    service = PayeeService(
        store, Signer(bytes(accounts.payee.key)), Domain(CHAIN_ID, deployment.channels),
        ChainSource(make_client()), min_challenge_period=60,
    )
    yield PayeeTwin(service)
    store.engine.dispose()


__all__ = ["SERVICE_URL", "ZERO_ADDRESS", "ChainSource", "PayeeTwin", "open_eth", "payee_store",
           "voucher_sig"]
