"""Integration helpers: opening channels quickly, signing vouchers, and the payee service.

``PayeeTwin`` is the real service app (``api.main.create_app``: routes, problem+json, group
committer, ``PayeeService``, ``PayeeStore``) run in-process through Starlette's TestClient and
reading channels from the anvil node, behind an ``httpx.MockTransport`` that records requests
and can simulate an outage, so the payer library is tested against the real HTTP contract
without starting a server.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient
from piecework_testnode import CHAIN_ID, Accounts, Deployment

from api.main import ChainChannelSource, Overrides, create_app
from channel.chain import ZERO_ADDRESS, ChainClient
from channel.config import Settings
from channel.messages import Domain, Voucher
from channel.payee import PayeeService
from channel.signing import Signer
from channel.store import PayeeStore, make_engine, metadata, migrate

OPERATOR_TOKEN = "integration-operator-token"
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


@dataclass
class PayeeTwin:
    """The payee service app in-process. ``offline`` simulates an outage."""

    app: TestClient
    requests: list[tuple[str, str]] = field(default_factory=list)
    offline: bool = False

    @property
    def service(self) -> PayeeService:
        service: PayeeService = self.app.app.state.runtime.service  # type: ignore[attr-defined]
        return service

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, request.url.path))
        if self.offline:
            raise httpx.ConnectError("connection refused", request=request)
        response = self.app.request(
            request.method, request.url.path, params=request.url.params,
            content=request.content, headers=dict(request.headers),
        )
        return httpx.Response(response.status_code, headers=response.headers,
                              content=response.content)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handler), timeout=5)

    def operator(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        """A request with the operator's bearer token (task requests, listings)."""
        return self.app.request(method, path, headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
                                **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def payee_twin(
    make_client: Callable[..., ChainClient], accounts: Accounts, deployment: Deployment,
    db_url: str,
) -> Iterator[PayeeTwin]:
    """The payee service for ``accounts.payee`` on its own store (SQLite and PostgreSQL)."""
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        database_url=db_url,
        operator_token=OPERATOR_TOKEN,
        private_key="0x" + bytes(accounts.payee.key).hex(),
        contract_address=deployment.channels,
        chain_id=CHAIN_ID,
        min_challenge_period=60,
        accepted_tokens=f"ETH,{deployment.stablecoin}",
    )
    source = ChainChannelSource(make_client())
    app = create_app(settings, Overrides(source=source, start_watcher=False))
    with TestClient(app, base_url=SERVICE_URL, raise_server_exceptions=False) as client:
        yield PayeeTwin(client)


__all__ = ["OPERATOR_TOKEN", "SERVICE_URL", "ZERO_ADDRESS", "PayeeTwin", "open_eth",
           "payee_store", "voucher_sig"]
