"""Chain faults: the node goes down and comes back, reorgs remove a close or a claim, and a
claim loses a race against the payer's cooperative close.

The node-down test runs its own anvil (``--state`` dumps the chain on SIGTERM and loads it on
restart, same port), so stopping it never disturbs the session's node. The reorg and race
tests use the session node inside ``chain_snapshot`` with ``anvil_reorg`` / automine off.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from piecework_testnode import (
    ANVIL_KEYS,
    ARTIFACTS,
    CHAIN_ID,
    REPO_ROOT,
    Accounts,
    Deployment,
    mine,
    rpc,
)
from reliability_harness import (
    AUTH,
    PAYEE_KEY,
    PayClient,
    Service,
    domain_of,
    hx,
    record,
    service_env,
    store_for,
)
from web3 import Web3

from channel.chain import ChainClient, find_artifact, load_artifact
from channel.defence import DefencePolicy
from channel.devnet import ManagedProcess, Supervisor, find_anvil, free_port
from channel.messages import CloseConsent, Domain, Voucher
from channel.payee import PayeeService
from channel.signing import Signer
from channel.state import ChannelStatus, OnchainChannel
from channel.store import PayeeStore, make_engine, migrate
from channel.watcher import ClaimPolicy, Watcher

pytestmark = pytest.mark.integration

MakeClient = Callable[..., ChainClient]


# --- node down ---------------------------------------------------------------------------------


class StatefulAnvil:
    """An anvil of our own whose chain survives a stop/start on the same port."""

    def __init__(self, supervisor: Supervisor, state: Path) -> None:
        self.supervisor = supervisor
        self.state = state
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: ManagedProcess | None = None

    def start(self) -> None:
        argv = [str(find_anvil()), "--host", "127.0.0.1", "--port", str(self.port),
                "--chain-id", str(CHAIN_ID), "--silent", "--state", str(self.state)]
        self.process = self.supervisor.start("own-anvil", argv)
        w3 = Web3(Web3.HTTPProvider(self.url, request_kwargs={"timeout": 1}))
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(Exception):
                if w3.eth.chain_id == CHAIN_ID:
                    return
            if time.monotonic() > deadline or not self.process.alive():
                raise RuntimeError("own anvil did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM: anvil writes its state file on the way out."""
        assert self.process is not None
        self.process.stop()
        self.supervisor.processes.remove(self.process)
        self.process = None


@pytest.fixture
def own_anvil(supervisor: Supervisor, tmp_path: Path) -> Iterator[StatefulAnvil]:
    node = StatefulAnvil(supervisor, tmp_path / "anvil-state.json")
    node.start()
    yield node


def _client(url: str, key: str, address: str | None = None) -> ChainClient:
    from eth_account import Account

    art = load_artifact(find_artifact("PaymentChannels", REPO_ROOT))
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 5}))
    return ChainClient(w3, address or "0x" + "00" * 20, art, Account.from_key(key),
                       receipt_timeout=30)


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what} did not happen within {timeout}s")
        time.sleep(0.2)
    return time.monotonic() - started


def test_node_down_cached_channels_pay_uncached_503_claims_resume(
    own_anvil: StatefulAnvil, make_service: Callable[..., Service], tmp_path: Path,
) -> None:
    assert ARTIFACTS.is_dir()
    deployer = _client(own_anvil.url, ANVIL_KEYS[0])
    contract = deployer.deploy().contract_address
    assert contract is not None
    payer = _client(own_anvil.url, ANVIL_KEYS[1], contract)
    payee_address = Signer(PAYEE_KEY).address
    cached = payer.open(payee_address, 10**18, challenge_period=3600, salt=b"\x01" * 32)[0]
    database_url = f"sqlite:///{tmp_path / 'down.db'}"
    # Claim once 1000 units are unclaimed: below that nothing is sent before the outage.
    service = make_service(service_env(own_anvil.url, contract, database_url,
                                       PIECEWORK_CLAIM_MIN_UNCLAIMED="1000",
                                       PIECEWORK_CLAIM_MAX_AGE_SECONDS="0"))
    service.start()
    client = PayClient(service.url, Domain(CHAIN_ID, contract), ANVIL_KEYS[1], payee_address)
    try:
        assert client.pay(cached, "up-1", 10, 10).status_code == 201
        # Opened just before the outage: the watcher (2 s poll) has not mirrored it yet.
        uncached = payer.open(payee_address, 10**18, challenge_period=3600,
                              salt=b"\x02" * 32)[0]
        own_anvil.stop()
        store = store_for(database_url)
        fresh = [uncached] if store.channel(uncached) is None else []
        store.engine.dispose()
        never_opened = bytes(range(32))
        assert httpx.get(service.url + "/healthz", timeout=5).status_code == 503
        paid_down = 0
        for i in range(20):  # cached channel: the service needs no node to accept
            r = client.pay(cached, f"down-{i}", 100, 10 + 100 * (i + 1))
            assert r.status_code == 201, r.text
            paid_down += 1
        for cid in [never_opened, *fresh]:
            r = client.pay(cid, "down-new", 10, 10)
            assert r.status_code == 503, r.text
            assert r.headers["content-type"].startswith("application/problem+json")
            assert r.json()["code"] == "node_unavailable" and r.headers.get("Retry-After")
        r = httpx.post(f"{service.url}/v1/channels/{hx(cached)}/claim", headers=AUTH, timeout=10)
        assert r.status_code == 503 and r.json()["code"] == "node_unavailable"

        own_anvil.start()  # same port, same chain (state file)
        assert payer.get_channel(cached).deposit == 10**18
        waited = _wait(lambda: payer.get_channel(cached).claimed == 2010, 60,
                       "the queued claim of 2010")
        assert client.pay(uncached, "back-new", 10, 10).status_code == 201
        assert client.pay(never_opened, "back-new", 10, 10).status_code == 404
        store = store_for(database_url)
        state = store.channel(cached)
        assert state is not None and state.accepted == 2010
        store.engine.dispose()
    finally:
        client.close()
    record("chain/node-down", outages=1, paid_while_down=paid_down, uncached_503=1 + len(fresh),
           claim_after_restart_s=round(waited, 1))


# --- reorgs and races on the session node ------------------------------------------------------


def _payee_side(
    make_client: MakeClient, deployment: Deployment, accounts: Accounts, tmp_path: Path,
    **kw: object,
) -> tuple[PayeeService, Watcher, list[str]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'watch.db'}")
    migrate(engine)
    store = PayeeStore(engine)
    reader = make_client()

    class Source:
        def get(self, cid: bytes) -> OnchainChannel | None:
            ch = reader.get_channel(cid)
            return None if ch.status is ChannelStatus.NONE else ch

    service = PayeeService(store, Signer(bytes(accounts.payee.key)), domain_of(deployment),
                           Source(), min_challenge_period=60)
    reports: list[str] = []
    # Toy amounts (wei): the worth-its-gas rule is off here (test_watchtower_attacks.py).
    options: dict[str, object] = {"payees": frozenset({accounts.payee.address}),
                                  "policy": ClaimPolicy(default_threshold=10**30),
                                  "report": reports.append,
                                  "defence": DefencePolicy(fee_multiple=0)}
    options.update(kw)
    watcher = Watcher(make_client(accounts.payee, receipt_timeout=15), store,
                      **options)  # type: ignore[arg-type]
    return service, watcher, reports


def _voucher(accounts: Accounts, deployment: Deployment, cid: bytes, amount: int) -> bytes:
    return Signer(bytes(accounts.payer.key)).sign(domain_of(deployment), Voucher(cid, amount))


def _accept(service: PayeeService, accounts: Accounts, deployment: Deployment, cid: bytes,
            amount: int) -> None:
    service.accept(cid, f"t-{amount}", amount, amount,
                   _voucher(accounts, deployment, cid, amount), int(time.time()))


def test_reorg_removing_start_close_and_its_defence(
    make_client: MakeClient, deployment: Deployment, accounts: Accounts, w3: Web3,
    tmp_path: Path,
) -> None:
    service, watcher, reports = _payee_side(make_client, deployment, accounts, tmp_path)
    payer = make_client(accounts.payer)
    cid = payer.open(accounts.payee.address, 10**18, challenge_period=3600,
                     salt=bytes(range(32)))[0]
    _accept(service, accounts, deployment, cid, 3000)
    assert watcher.poll_once().sent == ()
    payer.start_close(cid)
    (defend,) = watcher.poll_once().sent
    assert defend.ok and payer.get_channel(cid).claimed == 3000

    rpc(w3, "anvil_reorg", 2, [])  # both the startClose and the defending claim are gone
    assert payer.get_channel(cid).status is ChannelStatus.OPEN
    result = watcher.poll_once()
    assert result.reorg and result.sent == ()
    state = service.store.channel(cid)
    assert state is not None and (state.status, state.claimed) == (ChannelStatus.OPEN, 0)

    # The payer tries again on the new chain: the watcher defends again, with the same key.
    make_client(accounts.payer).start_close(cid)
    (again,) = watcher.poll_once().sent
    assert again.ok, again.error
    assert payer.get_channel(cid).claimed == 3000
    assert watcher.poll_once().sent == ()
    record("chain/reorg-start-close", reorgs=1, depth=2, defended_again=True,
           reports=len(reports))


def test_reorg_removing_a_claim_reclaims_exactly_once(
    make_client: MakeClient, deployment: Deployment, accounts: Accounts, w3: Web3,
    tmp_path: Path,
) -> None:
    service, watcher, _ = _payee_side(make_client, deployment, accounts, tmp_path,
                                      policy=ClaimPolicy(default_threshold=1))
    payer = make_client(accounts.payer)
    cid = payer.open(accounts.payee.address, 10**18, challenge_period=3600,
                     salt=bytes(range(1, 33)))[0]
    _accept(service, accounts, deployment, cid, 5000)
    balance = w3.eth.get_balance(accounts.payee.address)
    (first,) = watcher.poll_once().sent
    assert first.ok
    rpc(w3, "anvil_reorg", 1, [])  # the claim's block is replaced by an empty one
    assert payer.get_channel(cid).claimed == 0
    polls = 0
    while payer.get_channel(cid).claimed == 0 and polls < 5:
        watcher.poll_once()
        polls += 1
    mine(w3, 2)
    for _ in range(3):
        sent = watcher.poll_once().sent
        assert all(s.ok for s in sent), [(s.kind, s.error) for s in sent]
    assert payer.get_channel(cid).claimed == 5000
    received = w3.eth.get_balance(accounts.payee.address) - balance
    gas_paid = 5000 - received
    assert gas_paid > 0  # net of gas: paid once, fees for the lost and the new claim only
    txs = [t for t in service.store.transactions() if t["status"] == "mined"]
    assert len(txs) == 2  # the lost claim and its replacement, nothing more
    record("chain/reorg-claim", reorgs=1, depth=1, reclaimed_after_polls=polls,
           mined_claims=len(txs))


@pytest.mark.parametrize("preconditions", [True, False], ids=["checked", "raw-revert"])
def test_claim_raced_by_cooperative_close_is_reported_not_looped(  # noqa: PLR0917 - fixtures
    preconditions: bool, make_client: MakeClient, deployment: Deployment,
    accounts: Accounts, w3: Web3, tmp_path: Path,
) -> None:
    service, watcher, reports = _payee_side(
        make_client, deployment, accounts, tmp_path, policy=ClaimPolicy(default_threshold=1),
        confirmations=2)
    watcher.chain.check_preconditions = preconditions
    payer = make_client(accounts.payer)
    cid = payer.open(accounts.payee.address, 10**18, challenge_period=3600,
                     salt=bytes(range(2, 34)))[0]
    mine(w3, 2)
    _accept(service, accounts, deployment, cid, 4000)
    deadline = payer.timestamp() + 900
    consent = Signer(bytes(accounts.payee.key)).sign(domain_of(deployment),
                                                     CloseConsent(cid, 4000, deadline))
    voucher = _voucher(accounts, deployment, cid, 4000)
    rpc(w3, "evm_setAutomine", False)
    try:
        # The watcher's claim goes into the pool; the payer's cooperative close, with a far
        # higher tip, is mined ahead of it in the same block.
        done = threading.Event()
        results: list[object] = []

        def poll() -> None:
            results.append(watcher.poll_once())
            done.set()

        thread = threading.Thread(target=poll, daemon=True)
        if preconditions:
            rpc(w3, "evm_setAutomine", True)
            # lands before the watcher acts
            payer.cooperative_close(cid, 4000, deadline, voucher, consent)
            thread.start()
        else:
            thread.start()
            _wait(lambda: any(t["status"] == "sent" for t in service.store.transactions()), 30,
                  "the watcher's claim to reach the pool")
            fn = payer.contract.functions.cooperativeClose(cid, 4000, deadline, voucher, consent)
            fn.transact({"from": accounts.payer.address, "maxPriorityFeePerGas": 10**11,
                         "maxFeePerGas": 10**12, "gas": 300_000})
            rpc(w3, "evm_mine")
            rpc(w3, "evm_setAutomine", True)
        assert done.wait(30)
    finally:
        rpc(w3, "evm_setAutomine", True)
    (first,) = results[0].sent  # type: ignore[attr-defined]
    assert not first.ok
    for _ in range(3):
        mine(w3)
        assert watcher.poll_once().sent == ()  # reported once, never resent
    txs = service.store.transactions()
    assert [t["status"] for t in txs] == ["skipped" if preconditions else "reverted"]
    assert any("claim" in r and ("reverted" in r or "skipped" in r) for r in reports), reports
    if not preconditions:  # the mined revert is named, not a bare "Reverted"
        assert "ChannelNotOpen" in (first.error or ""), first.error
    ch = payer.get_channel(cid)
    assert ch.status is ChannelStatus.CLOSED
    state = service.store.channel(cid)
    assert state is not None and state.status is ChannelStatus.CLOSED
    record(f"chain/claim-race-{'checked' if preconditions else 'mined-revert'}", races=1,
           status=txs[0]["status"], error=(first.error or "")[:80], resent=0)
