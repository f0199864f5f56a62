"""Shared fixtures for integration tests: a native anvil node, deployed contracts, databases.

The node is started once per session on a free 127.0.0.1 port and killed by PID at teardown
(even when tests fail). Contracts are deployed once; each test that uses ``chain_snapshot``
runs inside an ``evm_snapshot``/``evm_revert`` pair so tests never see each other's channels.
Nothing is compiled here: run ``npm run build`` first.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from piecework_testnode import (
    ANVIL_KEYS,
    ARTIFACTS,
    REPO_ROOT,
    Accounts,
    Deployment,
    Node,
    sqlalchemy_url,
    start_anvil,
    stop_process,
)
from web3 import Web3


@pytest.fixture(scope="session")
def anvil_node() -> Iterator[Node]:
    node, proc = start_anvil()
    try:
        yield node
    finally:
        stop_process(proc)


@pytest.fixture(scope="session")
def w3(anvil_node: Node) -> Web3:
    return Web3(Web3.HTTPProvider(anvil_node.url, request_kwargs={"timeout": 10}))


@pytest.fixture(scope="session")
def accounts() -> Accounts:
    keys = [Account.from_key(k) for k in ANVIL_KEYS]
    return Accounts(
        deployer=keys[0], payer=keys[1], payee=keys[2], third=keys[3],
        payer2=keys[4], payee2=keys[5],
    )


def _require_artifact(name: str) -> Path:
    from channel.chain import find_artifact
    from channel.errors import ConfigError

    try:
        return find_artifact(name, REPO_ROOT)
    except ConfigError:
        pytest.fail(f"no compiled {name} under {ARTIFACTS}: run `npm run build` first")


@pytest.fixture(scope="session")
def deployment(w3: Web3, accounts: Accounts) -> Deployment:
    """PaymentChannels and TestStablecoin, deployed once; payers get stablecoins to spend."""
    from channel.chain import ChainClient, load_artifact

    channels_art = load_artifact(_require_artifact("PaymentChannels"))
    coin_art = load_artifact(_require_artifact("TestStablecoin"))
    # A client needs a contract address to exist; deploy through a throwaway one at address 0.
    bootstrap = ChainClient(w3, "0x" + "00" * 20, channels_art, accounts.deployer)
    channels = bootstrap.deploy().contract_address
    coin = bootstrap.deploy_artifact(coin_art).contract_address
    assert channels is not None and coin is not None
    token = w3.eth.contract(address=Web3.to_checksum_address(coin), abi=coin_art.abi)
    minter = ChainClient(w3, coin, coin_art, accounts.deployer)
    for who in (accounts.payer, accounts.payer2, accounts.third):
        minter._transact("mint", token.functions.mint(who.address, 1_000_000 * 10**6))
    return Deployment(channels=channels, stablecoin=coin)


@pytest.fixture
def chain_snapshot(w3: Web3, deployment: Deployment) -> Iterator[None]:
    """Revert every chain change the test made (channels, balances, time)."""
    snap = w3.provider.make_request("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    try:
        yield
    finally:
        w3.provider.make_request("evm_revert", [snap])  # type: ignore[arg-type]


@pytest.fixture
def make_client(
    w3: Web3, deployment: Deployment, chain_snapshot: None
) -> Callable[..., Any]:
    """``make_client(account, **options)`` → a ChainClient on PaymentChannels for this test.

    Function-scoped on purpose: a client's nonce cache must not survive an evm_revert.
    """
    from channel.chain import ChainClient, load_artifact

    art = load_artifact(_require_artifact("PaymentChannels"))
    coin_abi = load_artifact(_require_artifact("TestStablecoin")).abi

    def make(account: LocalAccount | None = None, **options: Any) -> ChainClient:
        client = ChainClient(w3, deployment.channels, art, account, **options)
        client.add_error_abi(coin_abi)
        return client

    return make


# --- databases ---------------------------------------------------------------------------------

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this session (libpq URL); dropped afterwards.

    Skips when the server is unreachable, except under CI=true where that is a failure.
    """
    base = os.environ.get("PIECEWORK_TEST_POSTGRES_URL", DEFAULT_PG_URL)
    try:
        import psycopg

        admin = psycopg.connect(base, autocommit=True, connect_timeout=3)
    except Exception as exc:
        message = f"PostgreSQL at {base} unreachable: {type(exc).__name__}: {exc}"
        if _ci():
            pytest.fail(message)
        pytest.skip(message)
    name = f"piecework_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield base.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(base, autocommit=True, connect_timeout=3) as again:
            again.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A SQLAlchemy URL of an empty database: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'piecework.db'}"
    base: str = request.getfixturevalue("pg_url")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    import psycopg

    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    # Tables land in the per-test schema through the connection's search_path.
    return sqlalchemy_url(base) + f"?options=-csearch_path%3D{schema}"
