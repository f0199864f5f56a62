"""Helpers shared by the API tests: the app on an in-memory chain twin, and a real server.

``make_twin`` builds ``create_app`` with ``channel.payee.InMemoryChannelSource`` in place of
the node (unit-level cases: every status and code without a chain); ``serve`` runs any app
under a real uvicorn on a free 127.0.0.1 port, for concurrency over real HTTP and for the
integration tests against anvil.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from piecework_testnode import ANVIL_KEYS, CHAIN_ID

from channel.config import Settings
from channel.devnet import free_port
from channel.messages import (
    Access,
    CloseConsent,
    CloseRequest,
    Domain,
    Receipt,
    Voucher,
    format_access,
    task_id_hash,
)
from channel.payee import InMemoryChannelSource
from channel.signing import Signer, recover
from channel.state import ChannelStatus, OnchainChannel

CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
ETH = "0x" + "00" * 20
TOKEN = "operator-secret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PAYEE_KEY = ANVIL_KEYS[2]
PAYER_KEY = ANVIL_KEYS[1]


def hx(b: bytes) -> str:
    return "0x" + b.hex()


def settings_for(db_url: str, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": db_url,
        "operator_token": TOKEN,
        "private_key": PAYEE_KEY,
        "contract_address": CONTRACT,
        "chain_id": CHAIN_ID,
        "min_challenge_period": 3600,
        **extra,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@dataclass
class Twin:
    """The app over an in-memory chain; helpers open channels and sign vouchers."""

    client: TestClient
    source: InMemoryChannelSource
    payee: Signer = field(default_factory=lambda: Signer(PAYEE_KEY))
    payer: Signer = field(default_factory=lambda: Signer(PAYER_KEY))
    domain: Domain = field(default_factory=lambda: Domain(CHAIN_ID, CONTRACT))

    def open(
        self,
        deposit: int = 10**18,
        *,
        payer: Signer | None = None,
        payee: str | None = None,
        token: str = ETH,
        status: ChannelStatus = ChannelStatus.OPEN,
        challenge_period: int = 7200,
        claimed: int = 0,
        voucher_signer: str = ETH,
        channel_id: bytes | None = None,
    ) -> bytes:
        cid = channel_id or os.urandom(32)
        self.source.put(
            OnchainChannel(
                cid, (payer or self.payer).address, payee or self.payee.address, token,
                deposit, claimed, challenge_period, 0, status, voucher_signer,
            )
        )
        return cid

    def voucher(self, cid: bytes, cumulative: int, signer: Signer | None = None) -> str:
        return hx((signer or self.payer).sign(self.domain, Voucher(cid, cumulative)))

    def body(
        self, cid: bytes, task: str, amount: int, cumulative: int, signer: Signer | None = None
    ) -> dict[str, str]:
        return {
            "task_id": task,
            "amount": str(amount),
            "cumulative_amount": str(cumulative),
            "signature": self.voucher(cid, cumulative, signer),
        }

    def pay(
        self, cid: bytes, task: str, amount: int, cumulative: int, signer: Signer | None = None
    ) -> httpx.Response:
        body = self.body(cid, task, amount, cumulative, signer)
        return self.client.post(f"/v1/channels/{hx(cid)}/payments", json=body)


    def access(
        self, cid: bytes, *, signer: Signer | None = None, ahead: int = 300
    ) -> dict[str, str]:
        """The ``Authorization: Access`` header for the channel's payer side."""
        expires = int(time.time()) + ahead
        signature = (signer or self.payer).sign(self.domain, Access(cid, expires))
        return {"Authorization": f"Access {format_access(expires, signature)}"}

    def close(
        self, cid: bytes, cumulative: int, signer: Signer | None = None
    ) -> httpx.Response:
        """POST .../close with the payer side's CloseRequest for ``cumulative``."""
        signature = (signer or self.payer).sign(self.domain, CloseRequest(cid, cumulative))
        return self.client.post(
            f"/v1/channels/{hx(cid)}/close",
            json={"cumulative_amount": str(cumulative), "signature": hx(signature)},
        )


def receipt_signer(domain: Domain, receipt: dict[str, str]) -> str:
    """The address that signed a receipt JSON object."""
    message = Receipt(
        bytes.fromhex(receipt["channel_id"][2:]),
        int(receipt["cumulative_amount"]),
        int(receipt["amount"]),
        bytes.fromhex(receipt["task_id"][2:]),
    )
    return recover(domain, message, receipt["signature"])


def consent_signer(domain: Domain, cid: bytes, body: dict[str, Any]) -> str:
    consent = CloseConsent(cid, int(body["cumulative_amount"]), int(body["deadline"]))
    return recover(domain, consent, body["signature"])


def task_hex(task: str) -> str:
    return hx(task_id_hash(task))


@contextlib.contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Run ``app`` under uvicorn in a thread on a free loopback port; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)
