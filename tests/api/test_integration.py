"""The real service on a real anvil node: the core's payer client pays over HTTP, closes on chain.

The app (``create_app`` with no overrides: chain client, watcher, leader lock) runs under
uvicorn in a thread; the payer is ``channel.payer.Payer``, which verifies every receipt and
the close consent itself. Balances are read from the chain after ``cooperativeClose``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_support import AUTH, TOKEN, hx, serve
from eth_account.signers.local import LocalAccount
from piecework_testnode import Accounts, Deployment, Node

from api.main import create_app
from channel.chain import ZERO_ADDRESS, ChainClient
from channel.config import Settings
from channel.payer import Payer, open_payer_store
from channel.signing import Signer
from channel.state import ChannelStatus

pytestmark = pytest.mark.integration


def service_settings(node_url: str, contract: str, db_url: str, payee: LocalAccount,
                     **extra: Any) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        rpc_url=node_url,
        contract_address=contract,
        database_url=db_url,
        private_key=hx(bytes(payee.key)),
        operator_token=TOKEN,
        min_challenge_period=60,
        **extra,
    )


@pytest.fixture
def service_url(
    anvil_node: Node, deployment: Deployment, accounts: Accounts, db_url: str,
    chain_snapshot: None,
) -> Iterator[str]:
    app = create_app(service_settings(anvil_node.url, deployment.channels, db_url, accounts.payee,
                                      accepted_tokens=f"ETH,{deployment.stablecoin}:1000000"))
    with serve(app) as url:
        yield url


def test_info_reads_token_symbol_and_decimals_from_chain(
    service_url: str, deployment: Deployment
) -> None:
    info = httpx.get(f"{service_url}/v1/info").json()
    assert info["version"] == "2"
    # TestStablecoin is ERC20("Test Stablecoin", "TUSD") with 6 decimals (contracts/test/mocks).
    assert info["tokens"] == [
        {"address": ZERO_ADDRESS, "symbol": "ETH", "decimals": 18, "min_deposit": "0"},
        {"address": deployment.stablecoin, "symbol": "TUSD", "decimals": 6,
         "min_deposit": "1000000"},
    ]


@pytest.fixture
def payer(
    make_client: Callable[..., ChainClient], accounts: Accounts, tmp_path: Path
) -> Payer:
    store = open_payer_store(f"sqlite:///{tmp_path / 'payer.db'}")
    return Payer(make_client(accounts.payer), Signer(bytes(accounts.payer.key)), store)


def _gas_cost(client: ChainClient, tx_hash: bytes) -> int:
    receipt = client.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
    return int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])


@pytest.mark.parametrize("token", ["eth", "erc20"])
def test_pay_then_cooperative_close_settles_the_right_balances(
    service_url: str, payer: Payer, accounts: Accounts, *, deployment: Deployment,
    make_client: Callable[..., ChainClient], token: str,
) -> None:
    asset = ZERO_ADDRESS if token == "eth" else deployment.stablecoin
    deposit = 10**18 if token == "eth" else 1_000 * 10**6
    reader = make_client()
    payee_before = reader.balance(accounts.payee.address, asset)
    cid = payer.open_channel(
        accounts.payee.address, deposit, token=asset, challenge_period=3600,
        permit=token == "erc20",
    )
    payer_before = reader.balance(accounts.payer.address, asset)

    info = httpx.get(f"{service_url}/v1/info").json()
    assert info["contract"] == deployment.channels
    assert info["payees"] == [accounts.payee.address]

    prices = [deposit // 100, deposit // 50, deposit // 20]
    receipts = [payer.pay(service_url, cid, f"task-{i}", p) for i, p in enumerate(prices)]
    assert [r.cumulative_amount for r in receipts] == [
        sum(prices[: i + 1]) for i in range(len(prices))
    ]
    total = sum(prices)

    view = httpx.get(f"{service_url}/v1/channels/{hx(cid)}").json()
    assert view["status"] == "open"
    assert view["deposit"] == str(deposit)
    assert view["token"] == asset
    assert view["latest"]["cumulative_amount"] == str(total)

    result = payer.cooperative_close(service_url, cid)
    assert reader.get_channel(cid).status is ChannelStatus.CLOSED
    assert reader.balance(accounts.payee.address, asset) - payee_before == total
    refund = reader.balance(accounts.payer.address, asset) - payer_before
    if token == "eth":
        refund += _gas_cost(reader, result.tx_hash)
    assert refund == deposit - total

    # Once the watcher has mirrored the close, the channel takes no more payments. (Until then
    # the mirror is behind: cooperativeClose needs no challenge period.)
    _wait_mirrored_closed(service_url, cid)
    again = httpx.post(
        f"{service_url}/v1/channels/{hx(cid)}/payments",
        json={"task_id": "late", "amount": "1", "cumulative_amount": str(total + 1),
              "signature": hx(payer.signer.sign(payer.domain, _voucher(cid, total + 1)))},
    )
    assert again.status_code == 409
    assert again.json()["code"] == "channel_not_open"


def _wait_mirrored_closed(service_url: str, cid: bytes, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page = httpx.get(f"{service_url}/v1/channels?status=closed", headers=AUTH).json()
        if hx(cid) in [c["channel_id"] for c in page["items"]]:
            return
        time.sleep(0.1)
    raise AssertionError("the watcher never mirrored the close")


def _voucher(cid: bytes, amount: int) -> Any:
    from channel.messages import Voucher

    return Voucher(cid, amount)


def test_operator_claim_pays_the_payee_and_keeps_the_channel_open(
    service_url: str, payer: Payer, accounts: Accounts, deployment: Deployment,
    make_client: Callable[..., ChainClient],
) -> None:
    coin = deployment.stablecoin
    reader = make_client()
    cid = payer.open_channel(accounts.payee.address, 500 * 10**6, token=coin,
                             challenge_period=3600)
    before = reader.balance(accounts.payee.address, coin)
    payer.pay(service_url, cid, "a", 7 * 10**6)
    payer.pay(service_url, cid, "b", 5 * 10**6)
    response = httpx.post(f"{service_url}/v1/channels/{hx(cid)}/claim", headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["cumulative_amount"] == str(12 * 10**6)
    assert reader.balance(accounts.payee.address, coin) - before == 12 * 10**6
    channel = reader.get_channel(cid)
    assert channel.status is ChannelStatus.OPEN
    assert channel.claimed == 12 * 10**6
    # Nothing new to claim now.
    again = httpx.post(f"{service_url}/v1/channels/{hx(cid)}/claim", headers=AUTH, timeout=30)
    assert again.status_code == 409
    assert again.json()["code"] in ("nothing_to_claim", "precondition_failed")


def test_error_statuses_against_the_node(
    service_url: str, payer: Payer, accounts: Accounts,
) -> None:
    cid = payer.open_channel(accounts.payee.address, 1000, challenge_period=3600)

    def post(task: str, amount: int, cumulative: int) -> httpx.Response:
        sig = payer.signer.sign(payer.domain, _voucher(cid, cumulative))
        return httpx.post(
            f"{service_url}/v1/channels/{hx(cid)}/payments",
            json={"task_id": task, "amount": str(amount), "cumulative_amount": str(cumulative),
                  "signature": hx(sig)},
        )

    assert post("t1", 10, 10).status_code == 201
    stale = post("t2", 10, 10)
    assert (stale.status_code, stale.json()["current_cumulative_amount"]) == (409, "10")
    over = post("t2", 991, 1001)
    assert (over.status_code, over.json()["code"], over.json()["deposit"]) == (
        422, "exceeds_deposit", "1000"
    )
    unknown = httpx.post(
        f"{service_url}/v1/channels/{hx(os.urandom(32))}/payments",
        json={"task_id": "t", "amount": "1", "cumulative_amount": "1",
              "signature": hx(payer.signer.sign(payer.domain, _voucher(cid, 1)))},
    )
    assert (unknown.status_code, unknown.json()["code"]) == (404, "unknown_channel")
    assert httpx.get(f"{service_url}/healthz").json()["node"] == "ok"


def test_unreachable_node_is_503_for_an_uncached_channel(
    deployment: Deployment, accounts: Accounts, tmp_path: Path,
) -> None:
    dead = "http://127.0.0.1:9"  # discard port: nothing listens
    settings = service_settings(dead, deployment.channels, f"sqlite:///{tmp_path / 's.db'}",
                                accounts.payee, chain_id=31337)
    with serve(create_app(settings)) as url:
        signer = Signer(bytes(accounts.payer.key))
        from channel.messages import Domain

        cid = os.urandom(32)
        sig = signer.sign(Domain(31337, deployment.channels), _voucher(cid, 1))
        response = httpx.post(
            f"{url}/v1/channels/{hx(cid)}/payments",
            json={"task_id": "t", "amount": "1", "cumulative_amount": "1", "signature": hx(sig)},
            timeout=30,
        )
        assert response.status_code == 503
        assert response.json()["code"] == "node_unavailable"
        assert response.headers["retry-after"]
        health = httpx.get(f"{url}/healthz", timeout=30)
        assert health.status_code == 503
        assert health.json()["node"] == "down"
