"""Issue 11, items 4, 8 and 9: what the watcher follows, and how far it trusts the node.

Real anvil throughout (the session node inside ``chain_snapshot``, ``anvil_reorg`` for reorgs).
Provider limits are emulated by :class:`CappedProxy`, a small JSON-RPC proxy in front of anvil
that refuses ``eth_getLogs`` answers with more than ``cap`` logs in the words Infura uses
(-32005 "query returned more than 10000 results"), or refuses every ``eth_getLogs``.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from piecework_testnode import (
    ANVIL_KEYS,
    CHAIN_ID,
    REPO_ROOT,
    Accounts,
    Deployment,
    Node,
    free_port,
    mine,
    rpc,
)
from reliability_harness import AUTH, PAYEE_KEY, Service, domain_of, record, service_env
from web3 import Web3

from api.main import ChainChannelSource, Overrides, _build
from channel.chain import ChainClient, connect, find_artifact, load_artifact
from channel.config import Settings
from channel.devnet import Supervisor, find_anvil
from channel.errors import ChainError, ConfigError, ExceedsDeposit
from channel.messages import Voucher
from channel.payee import PayeeService
from channel.signing import Signer
from channel.state import ChannelStatus
from channel.store import PayeeStore, make_engine, migrate
from channel.watcher import ClaimPolicy, Watcher

pytestmark = pytest.mark.integration

MakeClient = Callable[..., ChainClient]
DEPOSIT = 10**18
PERIOD = 86_400
# Worth defending: well above the watcher's dust rule (payable >= fee multiple x the claim's fee).
EARNED = 7 * 10**15


# --- a provider with a result cap -------------------------------------------------------------


class CappedProxy:
    """JSON-RPC proxy to ``upstream`` that caps ``eth_getLogs`` results like a provider does."""

    def __init__(self, upstream: str, cap: int) -> None:
        self.upstream = upstream
        self.cap = cap
        self.refuse_all_logs = False
        self.message = ("query returned more than 10000 results. Try with this block range "
                        "[0x0, 0x1].")
        self.refused = 0
        self.log_queries = 0
        self.requests = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                request = json.loads(body)
                proxy.requests += 1
                answer = httpx.post(proxy.upstream, content=body,
                                    headers={"Content-Type": "application/json"}).json()
                if request.get("method") == "eth_getLogs":
                    proxy.log_queries += 1
                    count = len(answer.get("result") or [])
                    if proxy.refuse_all_logs or count > proxy.cap:
                        proxy.refused += 1
                        answer = {"jsonrpc": "2.0", "id": request.get("id"), "error": {
                            "code": -32005, "message": proxy.message}}
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(anvil_node: Node) -> Iterator[CappedProxy]:
    p = CappedProxy(anvil_node.url, cap=3)
    try:
        yield p
    finally:
        p.close()


def _client_on(url: str, deployment: Deployment, account: Any = None) -> ChainClient:
    art = load_artifact(find_artifact("PaymentChannels", REPO_ROOT))
    return ChainClient(connect(url, timeout=5), deployment.channels, art, account,
                       receipt_timeout=15)


def _store(tmp_path: Path, name: str = "mirror") -> PayeeStore:
    engine = make_engine(f"sqlite:///{tmp_path / (name + '.db')}")
    migrate(engine)
    return PayeeStore(engine)


def _service(store: PayeeStore, accounts: Accounts, deployment: Deployment,
             reader: ChainClient, confirmations: int = 1) -> PayeeService:
    return PayeeService(store, Signer(bytes(accounts.payee.key)), domain_of(deployment),
                        ChainChannelSource(reader, confirmations) if confirmations > 1
                        else ChainChannelSource(reader),
                        min_challenge_period=60)


def _pay(service: PayeeService, accounts: Accounts, deployment: Deployment, cid: bytes,
         cumulative: int, *, amount: int | None = None) -> None:
    sig = Signer(bytes(accounts.payer.key)).sign(domain_of(deployment), Voucher(cid, cumulative))
    service.accept(cid, f"t-{cumulative}", amount if amount is not None else cumulative,
                   cumulative, sig, int(time.time()))


def _earning_channel(make_client: MakeClient, accounts: Accounts, deployment: Deployment,
                     tmp_path: Path) -> tuple[ChainClient, bytes, PayeeStore]:
    """A fresh channel to the payee with ``EARNED`` accepted in a new store: worth defending."""
    payer = make_client(accounts.payer)
    cid = payer.open(accounts.payee.address, DEPOSIT, challenge_period=PERIOD,
                     salt=os.urandom(32))[0]
    store = _store(tmp_path)
    _pay(_service(store, accounts, deployment, make_client()), accounts, deployment, cid, EARNED)
    return payer, cid, store


# --- item 4: getLogs ---------------------------------------------------------------------------


def test_get_logs_result_cap_is_split_and_filtered_by_payee(
    make_client: MakeClient, accounts: Accounts, deployment: Deployment, proxy: CappedProxy,
    tmp_path: Path,
) -> None:
    payer = make_client(accounts.payer)
    other = [payer.open(accounts.payee2.address, 1000, challenge_period=PERIOD,
                        salt=os.urandom(32))[0] for _ in range(8)]
    ours = [payer.open(accounts.payee.address, 1000, challenge_period=PERIOD,
                       salt=os.urandom(32))[0] for _ in range(2)]
    # Every channel of the contract, through a node that refuses > 3 logs per query: the
    # range is halved until each piece passes; nothing is lost.
    everything = _client_on(proxy.url, deployment).get_events(
        max(0, payer.block_number() - 20), payer.block_number())
    opened = {e.channel_id for e in everything if type(e).__name__ == "ChannelOpened"}
    assert set(other + ours) <= opened
    refused_unfiltered = proxy.refused
    assert refused_unfiltered > 0

    # The watcher asks only for this payee's channels (payee is an indexed topic).
    proxy.refused = proxy.log_queries = 0
    store = _store(tmp_path)
    watcher = Watcher(_client_on(proxy.url, deployment, accounts.payee), store,
                      frozenset({accounts.payee.address}),
                      policy=ClaimPolicy(default_threshold=10**30))
    result = watcher.poll_once()
    assert result.follow_error is None
    assert {c.channel_id for c in store.channels()} == set(ours)
    record("node-trust/getlogs-cap", cap=proxy.cap, channels=len(other) + len(ours),
           refused_unfiltered=refused_unfiltered, refused_filtered=proxy.refused,
           filtered_queries=proxy.log_queries, mirrored=len(ours))


def test_channel_history_splits_refused_ranges(
    make_client: MakeClient, accounts: Accounts, deployment: Deployment, proxy: CappedProxy,
) -> None:
    payer = make_client(accounts.payer)
    cid = payer.open(accounts.payee.address, 1000, challenge_period=PERIOD,
                     salt=os.urandom(32))[0]
    for _ in range(4):
        payer.top_up(cid, 10)
    history = _client_on(proxy.url, deployment).channel_history(cid)
    assert [type(e).__name__ for e in history] == ["ChannelOpened"] + ["ChannelToppedUp"] * 4
    assert proxy.refused > 0
    record("node-trust/channel-history-cap", cap=proxy.cap, events=len(history),
           refused=proxy.refused)


def test_a_rate_limit_is_not_mistaken_for_a_size_limit(
    anvil_node: Node, deployment: Deployment, chain_snapshot: None,
) -> None:
    """Infura answers a quota with the same -32005 code: halving would only spend more of it."""
    rate_limited = CappedProxy(anvil_node.url, cap=0)
    try:
        rate_limited.refuse_all_logs = True
        rate_limited.message = "daily request count exceeded, request rate limited"
        with pytest.raises(ChainError, match="rate limited"):
            _client_on(rate_limited.url, deployment).get_events(0, 5_000)
        assert rate_limited.log_queries == 1
    finally:
        rate_limited.close()
    record("node-trust/getlogs-rate-limit", range_blocks=5001, queries=1)


def test_following_error_does_not_stop_defence(
    make_client: MakeClient, accounts: Accounts, deployment: Deployment, proxy: CappedProxy,
    tmp_path: Path,
) -> None:
    payer, cid, store = _earning_channel(make_client, accounts, deployment, tmp_path)
    watcher = Watcher(_client_on(proxy.url, deployment, accounts.payee), store,
                      frozenset({accounts.payee.address}),
                      policy=ClaimPolicy(default_threshold=10**30))
    assert watcher.poll_once().sent == ()

    proxy.refuse_all_logs = True  # the provider now refuses every getLogs
    payer.start_close(cid)
    result = watcher.poll_once()
    assert result.follow_error is not None and "refused" in result.follow_error
    (defence,) = result.sent
    assert defence.ok, defence.error
    assert payer.get_channel(cid).claimed == EARNED
    record("node-trust/follow-error-still-defends", refused=proxy.refused, defended=True)


def test_a_long_catch_up_does_not_delay_defence(
    make_client: MakeClient, accounts: Accounts, deployment: Deployment, w3: Web3,
    tmp_path: Path,
) -> None:
    payer, cid, store = _earning_channel(make_client, accounts, deployment, tmp_path)
    watcher = Watcher(make_client(accounts.payee), store, frozenset({accounts.payee.address}),
                      policy=ClaimPolicy(default_threshold=10**30), max_range=5, max_chunks=2)
    while watcher.poll_once().to_block != w3.eth.block_number:
        pass  # caught up
    mine(w3, 60)  # the watcher was away for 60 blocks
    payer.start_close(cid)
    result = watcher.poll_once()
    assert result.to_block is not None and result.to_block < w3.eth.block_number - 40
    (defence,) = result.sent  # in the same poll, before the catch-up reached the close
    assert defence.ok, defence.error
    assert payer.get_channel(cid).claimed == EARNED
    record("node-trust/catch-up-bounded", blocks_behind=61, followed_this_poll=10,
           defended_same_poll=True)


def test_following_starts_at_the_deployment_block(
    *, make_client: MakeClient, accounts: Accounts, w3: Web3, chain_snapshot: None,
    tmp_path: Path, proxy: CappedProxy,
) -> None:
    mine(w3, 30)
    deployed = make_client(accounts.deployer).deploy()
    assert deployed.contract_address is not None
    mine(w3, 3)
    client = _client_on(proxy.url, Deployment(deployed.contract_address, ""), accounts.payee)
    watcher = Watcher(client, _store(tmp_path), frozenset({accounts.payee.address}))
    result = watcher.poll_once()
    assert result.from_block == deployed.block_number
    record("node-trust/start-at-deployment", deployment_block=deployed.block_number,
           first_followed=result.from_block, log_queries=proxy.log_queries)


# --- item 8: confirmed state and reorgs --------------------------------------------------------


def test_acceptance_uses_confirmed_deposit(
    make_client: MakeClient, accounts: Accounts, deployment: Deployment, w3: Web3,
    tmp_path: Path,
) -> None:
    payer = make_client(accounts.payer)
    cid = payer.open(accounts.payee.address, 1000, challenge_period=PERIOD,
                     salt=os.urandom(32))[0]
    mine(w3, 3)
    service = _service(_store(tmp_path), accounts, deployment, make_client(), confirmations=3)
    _pay(service, accounts, deployment, cid, 1000)
    payer.top_up(cid, 5000)  # one block deep: not confirmed at 3 confirmations
    with pytest.raises(ExceedsDeposit):
        _pay(service, accounts, deployment, cid, 4000, amount=3000)
    mine(w3, 2)  # now 3 deep
    _pay(service, accounts, deployment, cid, 4000, amount=3000)
    record("node-trust/confirmed-acceptance", confirmations=3, refused_unconfirmed=1,
           accepted_after=1)


def test_orphaned_top_up_drops_the_mirrors_deposit(
    make_client: MakeClient, accounts: Accounts, deployment: Deployment, w3: Web3,
    tmp_path: Path,
) -> None:
    payer = make_client(accounts.payer)
    cid = payer.open(accounts.payee.address, 1000, challenge_period=PERIOD,
                     salt=os.urandom(32))[0]
    store = _store(tmp_path)
    watcher = Watcher(make_client(accounts.payee), store, frozenset({accounts.payee.address}),
                      policy=ClaimPolicy(default_threshold=10**30))
    watcher.poll_once()
    mine(w3, 80)  # the open is now deeper than a fixed 64-block rewind would re-read
    watcher.poll_once()
    payer.top_up(cid, 5000)
    watcher.poll_once()
    mirrored = store.channel(cid)
    assert mirrored is not None and mirrored.deposit == 6000

    rpc(w3, "anvil_reorg", 1, [])  # the top-up's block is replaced by an empty one
    mine(w3, 1)
    assert payer.get_channel(cid).deposit == 1000
    result = watcher.poll_once()
    assert result.reorg
    after = store.channel(cid)
    assert after is not None and after.deposit == 1000
    record("node-trust/orphaned-top-up", reorg_depth=1, deposit_before=6000,
           deposit_after=after.deposit)


def test_reorg_resumes_after_the_common_ancestor(
    make_client: MakeClient, accounts: Accounts, deployment: Deployment, w3: Web3,
    tmp_path: Path,
) -> None:
    store = _store(tmp_path)
    watcher = Watcher(make_client(accounts.payee), store, frozenset({accounts.payee.address}),
                      rewind_depth=64)
    for _ in range(6):  # one poll per block: a checkpoint each
        mine(w3, 1)
        watcher.poll_once()
    head = w3.eth.block_number
    # Re-mined empty blocks could hash the same: the new branch's first block holds a tx.
    third = accounts.third.address
    rpc(w3, "anvil_reorg", 3, [[{"from": third, "to": third, "value": 1, "gas": 21_000,
                                 "nonce": w3.eth.get_transaction_count(third)}, 0]])
    result = watcher.poll_once()
    assert result.reorg
    # The last 3 blocks changed; the block before them is the common ancestor.
    assert result.from_block == head - 2
    record("node-trust/common-ancestor", reorg_depth=3, resumed_from=result.from_block,
           fixed_rewind_would_be=max(0, head - 64))


def test_a_reorg_while_following_cannot_hide_a_close(
    make_client: MakeClient, accounts: Accounts, deployment: Deployment, w3: Web3,
    tmp_path: Path,
) -> None:
    """The block hash is pinned before getLogs. Here the followed block is replaced, between
    the logs and the cursor write, by one holding the payer's ``startClose``: logs of the old
    branch must not be saved as the new branch's cursor (the close would never be seen)."""
    payer, cid, store = _earning_channel(make_client, accounts, deployment, tmp_path)
    reader = make_client(accounts.payee)
    watcher = Watcher(reader, store, frozenset({accounts.payee.address}),
                      policy=ClaimPolicy(default_threshold=10**30))
    assert watcher.poll_once().sent == ()
    mine(w3, 1)  # the block the next poll follows
    real_get_events = reader.get_events
    close = payer.contract.functions.startClose(cid)._encode_transaction_data()

    def get_events_then_reorg(*args: Any, **kwargs: Any) -> Any:
        events = real_get_events(*args, **kwargs)
        nonce = w3.eth.get_transaction_count(accounts.payer.address)
        rpc(w3, "anvil_reorg", 1, [[{"from": accounts.payer.address, "to": deployment.channels,
                                     "data": close, "nonce": nonce, "gas": 200_000}, 0]])
        return events

    reader.get_events = get_events_then_reorg  # type: ignore[method-assign]
    first = watcher.poll_once()
    reader.get_events = real_get_events  # type: ignore[method-assign]
    assert payer.get_channel(cid).status is ChannelStatus.CLOSING  # the hidden close
    watcher.poll_once()
    assert payer.get_channel(cid).claimed == EARNED
    record("node-trust/reorg-while-following", follow_error=first.follow_error is not None,
           defended=True)


# --- item 9: several endpoints, a stalled node, the wrong chain --------------------------------


def test_rpc_urls_fail_over_in_order(
    anvil_node: Node, deployment: Deployment, accounts: Accounts, chain_snapshot: None,
) -> None:
    first = CappedProxy(anvil_node.url, cap=10**6)
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    client = _client_on(f"{dead},{first.url},{anvil_node.url}", deployment, accounts.payee)
    try:
        head = client.block_number()  # the dead one fails over to the proxy
        assert client.url == first.url
        first.close()  # now the proxy dies too: the node itself answers
        assert client.block_number() >= head
        assert client.url == anvil_node.url
        assert client.get_channel(b"\x01" * 32).status is ChannelStatus.NONE
    finally:
        with contextlib.suppress(Exception):
            first.close()
    record("node-trust/rpc-failover", endpoints=3, dead=2, answered_by="third")


def _settings(node_url: str, contract: str, tmp_path: Path, **extra: Any) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None, rpc_url=node_url, contract_address=contract,
        database_url=f"sqlite:///{tmp_path / 'svc.db'}", private_key=PAYEE_KEY,
        operator_token="t" * 20, min_challenge_period=60, **extra)


def test_start_refuses_a_chain_id_or_contract_mismatch(
    anvil_node: Node, deployment: Deployment, tmp_path: Path,
) -> None:
    refused = []
    for settings, words in [
        (_settings(anvil_node.url, deployment.channels, tmp_path, chain_id=1),
         "PIECEWORK_CHAIN_ID is chain 1 but the node"),
        (_settings(anvil_node.url, deployment.stablecoin, tmp_path), "EIP-712 domain"),
        (_settings(anvil_node.url, "0x" + "42" * 20, tmp_path), "no PaymentChannels contract"),
    ]:
        with pytest.raises(ConfigError, match=words):
            _build(settings, Overrides(start_watcher=False))
        refused.append(words)
    runtime, _ = _build(_settings(anvil_node.url, deployment.channels, tmp_path,
                                  chain_id=CHAIN_ID), Overrides(start_watcher=False))
    assert runtime.domain.chain_id == CHAIN_ID
    runtime.engine.dispose()
    record("node-trust/chain-id-mismatch", refused=len(refused), accepted_right_one=True)


def test_the_watcher_follows_through_its_own_endpoint(
    anvil_node: Node, deployment: Deployment, proxy: CappedProxy, tmp_path: Path,
    chain_snapshot: None,
) -> None:
    settings = _settings(anvil_node.url, deployment.channels, tmp_path, chain_id=CHAIN_ID,
                         watcher_rpc_url=proxy.url)
    runtime, elector = _build(settings, Overrides())
    assert elector is not None
    watcher = elector._lead.__self__  # type: ignore[attr-defined]  # the bound Watcher.run
    assert isinstance(watcher, Watcher)
    assert watcher.chain.url == proxy.url
    before = proxy.log_queries
    watcher.poll_once()
    assert proxy.log_queries > before  # following went to the watcher's endpoint
    seen = proxy.requests
    runtime.node_check()  # the service's own reads stay on PIECEWORK_RPC_URL
    assert proxy.requests == seen
    runtime.engine.dispose()
    record("node-trust/watcher-endpoint", watcher_log_queries=proxy.log_queries - before)


def test_healthz_and_metrics_report_head_age_and_lag(
    supervisor: Supervisor, make_service: Callable[..., Service], tmp_path: Path,
) -> None:
    node = _OwnAnvil(supervisor)
    w3 = Web3(Web3.HTTPProvider(node.url))
    deployer = _client_on(node.url, Deployment("0x" + "00" * 20, ""),
                          Account.from_key(ANVIL_KEYS[0]))
    contract = deployer.deploy().contract_address
    assert contract is not None
    env = service_env(node.url, contract, f"sqlite:///{tmp_path / 'h.db'}",
                      PIECEWORK_MAX_HEAD_AGE="3", PIECEWORK_CONFIRMATIONS="3",
                      PIECEWORK_CLOSING_MARGIN="60")
    service = make_service(env)
    service.start(wait="/v1/info")
    with httpx.Client(base_url=service.url, timeout=5) as http:
        # A node that stops making blocks still answers; only the head's age shows it.
        deadline = time.monotonic() + 20
        while (body := http.get("/healthz").json()).get("head_age_seconds", 0) <= 3:
            assert time.monotonic() < deadline, body
            time.sleep(0.2)
        stale = http.get("/healthz")
        assert stale.status_code == 503 and "node stale" in stale.json()["detail"]
        # Blocks 100 s of block time apart; 3 confirmations keep the watcher 2 blocks behind:
        # 200 s of lag is more than the 60 s closing margin.
        for _ in range(4):
            rpc(w3, "evm_increaseTime", 100)
            mine(w3, 1)
        deadline = time.monotonic() + 20
        while str((lagging := http.get("/healthz")).json().get("mirror_lag_blocks")) != "2":
            assert time.monotonic() < deadline, lagging.text
            time.sleep(0.2)
        assert lagging.status_code == 503, lagging.text
        assert "watcher lagging" in lagging.json()["detail"]
        assert int(lagging.json()["mirror_lag_seconds"]) >= 200
        text = http.get("/metrics", headers=AUTH).text
        assert "piecework_head_age_seconds" in text
        assert "piecework_mirror_lag_blocks 2.0" in text
    record("node-trust/healthz-head-age-lag", max_head_age=3, stale_503=True,
           lag_blocks=2, lag_seconds=lagging.json()["mirror_lag_seconds"], lagging_503=True)


class _OwnAnvil:
    """An anvil of this test's own (its blocks are not shared with other tests)."""

    def __init__(self, supervisor: Supervisor) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        supervisor.start("anvil-h", [str(find_anvil()), "--host", "127.0.0.1", "--port",
                                     str(port), "--chain-id", str(CHAIN_ID), "--silent"])
        w3 = Web3(Web3.HTTPProvider(self.url, request_kwargs={"timeout": 1}))
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(Exception):
                if w3.eth.chain_id == CHAIN_ID:
                    return
            assert time.monotonic() < deadline, "own anvil did not start"
            time.sleep(0.05)
