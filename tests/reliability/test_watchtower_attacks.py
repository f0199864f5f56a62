"""Issue 11: a hostile payer must never beat a live watchtower (the acting side).

Each test reproduces one attack against a real anvil of this module's own (interval mining and
base-fee spikes would disturb the session's node) and the real PayeeStore (SQLite, and
PostgreSQL for the cross-worker nonce lock):

1. an estimate-dodging token makes a routine ``claimMany`` revert: closing channels are
   still defended, the failing channel is isolated, and with the payout gas headroom the batch
   does not revert at all;
2. + the scenario: 200 dust channels and one valuable channel all start closing, 1-second
   blocks, a base-fee spike: the valuable channel is paid in full before its ``closesAt``, no
   gas is spent on dust (``PIECEWORK_LONG_TESTS=1``: 2,000 dust channels);
3. gas per transaction is capped (batches split), the hot wallet is watched;
5. a stuck defence is replaced (same nonce, fees +12.5 % or more, never above the cap) and a
   dropped one is re-broadcast;
10. leader handover does not wait for (or overlap) an old watcher stuck in a long wait, and
    two workers signing with one key never pick the same nonce;
11. deferred payouts (``owed``) are withdrawn.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from piecework_testnode import (
    ANVIL_KEYS,
    CHAIN_ID,
    REPO_ROOT,
    Node,
    rpc,
    sqlalchemy_url,
    start_anvil,
    stop_process,
)
from reliability_harness import LONG, record
from web3 import Web3

from api.leader import FileLock, LeaderElector, nonce_lock
from channel.chain import (
    ZERO_ADDRESS,
    Artifact,
    ChainClient,
    channel_id_for,
    find_artifact,
    load_artifact,
)
from channel.defence import DefencePolicy
from channel.messages import Domain, Voucher
from channel.payee import PayeeService
from channel.signing import Signer
from channel.state import ChannelStatus, OnchainChannel
from channel.store import PayeeStore, make_engine, migrate
from channel.watcher import ClaimPolicy, Watcher

pytestmark = pytest.mark.integration

GWEI = 10**9
PAYER_KEY, PAYEE_KEY, THIRD_KEY = ANVIL_KEYS[1], ANVIL_KEYS[2], ANVIL_KEYS[3]


@dataclass
class Chain:
    node: Node
    w3: Web3
    channels: str
    art: Artifact
    dodger: str
    moody: str
    moody_art: Artifact
    extra_abis: list[Any] = field(default_factory=list)

    def client(self, key: str | None = None, **options: Any) -> ChainClient:
        account = Account.from_key(key) if key is not None else None
        client = ChainClient(self.w3, self.channels, self.art, account, **options)
        for abi in self.extra_abis:
            client.add_error_abi(abi)
        return client


@pytest.fixture(scope="module")
def chain() -> Iterator[Chain]:
    node, proc = start_anvil()
    try:
        w3 = Web3(Web3.HTTPProvider(node.url, request_kwargs={"timeout": 10}))
        art = load_artifact(find_artifact("PaymentChannels", REPO_ROOT))
        deployer = ChainClient(w3, "0x" + "00" * 20, art, Account.from_key(ANVIL_KEYS[0]))
        channels = deployer.deploy().contract_address
        dodger_art = load_artifact(find_artifact("EstimateDodgingToken", REPO_ROOT))
        moody_art = load_artifact(find_artifact("MoodyToken", REPO_ROOT))
        dodger = deployer.deploy_artifact(dodger_art).contract_address
        moody = deployer.deploy_artifact(moody_art).contract_address
        assert channels and dodger and moody
        for token, token_art in ((dodger, dodger_art), (moody, moody_art)):
            contract = w3.eth.contract(address=Web3.to_checksum_address(token),
                                       abi=token_art.abi)
            minter = ChainClient(w3, token, token_art, Account.from_key(ANVIL_KEYS[0]))
            minter._transact("mint", contract.functions.mint(
                Account.from_key(PAYER_KEY).address, 10**24))
        yield Chain(node, w3, channels, art, dodger, moody, moody_art)
    finally:
        stop_process(proc)


@pytest.fixture
def snap(chain: Chain) -> Iterator[None]:
    snapshot = rpc(chain.w3, "evm_snapshot")
    try:
        yield
    finally:
        rpc(chain.w3, "evm_setIntervalMining", 0)
        rpc(chain.w3, "evm_setAutomine", True)
        rpc(chain.w3, "evm_revert", snapshot)


@dataclass
class Payee:
    store: PayeeStore
    service: PayeeService
    domain: Domain
    reports: list[str]


def payee_side(chain: Chain, tmp_path: Path, db_url: str | None = None) -> Payee:
    engine = make_engine(db_url or f"sqlite:///{tmp_path / 'watch.db'}")
    migrate(engine)
    store = PayeeStore(engine)
    reader = chain.client()

    class Source:
        def get(self, cid: bytes) -> OnchainChannel | None:
            ch = reader.get_channel(cid)
            return None if ch.status is ChannelStatus.NONE else ch

    domain = Domain(CHAIN_ID, chain.channels)
    service = PayeeService(store, Signer(bytes.fromhex(PAYEE_KEY[2:])), domain, Source(),
                           min_challenge_period=60,
                           accepted_tokens={ZERO_ADDRESS: 0, chain.dodger: 0, chain.moody: 0})
    return Payee(store, service, domain, [])


def watcher(chain: Chain, payee: Payee, **kw: Any) -> Watcher:
    options: dict[str, Any] = {
        "payees": frozenset({Account.from_key(PAYEE_KEY).address}),
        "policy": ClaimPolicy(default_threshold=10**40),
        "report": payee.reports.append,
        "defence": DefencePolicy(act_wait=15.0, withdraw_interval=3600.0),
    }
    options.update(kw)
    return Watcher(chain.client(PAYEE_KEY), payee.store, **options)


def accept(payee: Payee, cid: bytes, cumulative: int, task: str = "t", *, prior: int = 0) -> None:
    sig = Signer(bytes.fromhex(PAYER_KEY[2:])).sign(payee.domain, Voucher(cid, cumulative))
    payee.service.accept(cid, task, cumulative - prior, cumulative, sig, int(time.time()))


def open_many(chain: Chain, deposits: list[int], *, token: str = ZERO_ADDRESS,
              period: int = 120) -> list[bytes]:
    """Open one channel per deposit from the payer, all sent before any receipt is awaited."""
    payer = chain.client(PAYER_KEY)
    payee = Account.from_key(PAYEE_KEY).address
    if token != ZERO_ADDRESS:
        payer._ensure_allowance(token, sum(deposits))
    ids: list[bytes] = []
    hashes: list[bytes] = []
    for deposit in deposits:
        salt = os.urandom(32)
        ids.append(channel_id_for(payer.sender, payee, token, salt))
        tx = payer.tx_data("open", payee, token, deposit, period, salt, ZERO_ADDRESS)
        tx["value"] = deposit if token == ZERO_ADDRESS else 0
        tx.update(gas=250_000, maxFeePerGas=100 * GWEI, maxPriorityFeePerGas=GWEI)
        hashes.append(payer.broadcast("open", tx)[0])
    for h in hashes:
        assert int(payer.wait_for_receipt(h)["status"]) == 1
    return ids


def start_closes(chain: Chain, ids: list[bytes]) -> int:
    """``startClose`` on every channel, all sent at once; returns the last block number."""
    payer = chain.client(PAYER_KEY)
    hashes = []
    for cid in ids:
        tx = payer.tx_data("startClose", cid)
        tx.update(gas=100_000, maxFeePerGas=1000 * GWEI, maxPriorityFeePerGas=2 * GWEI)
        hashes.append(payer.broadcast("startClose", tx)[0])
    last = 0
    for h in hashes:
        receipt = payer.wait_for_receipt(h)
        assert int(receipt["status"]) == 1
        last = max(last, int(receipt["blockNumber"]))
    return last


def poll_until(w: Watcher, done: Callable[[], bool], *, polls: int = 20) -> int:
    for i in range(polls):
        if done():
            return i
        w.poll_once()
    assert done(), "condition not reached"
    return polls


# --- 1: a reverted routine claimMany never disables defence ------------------------------------


def test_estimate_dodging_token_reverts_a_routine_batch_but_closing_channels_are_defended(
    chain: Chain, snap: None, tmp_path: Path,
) -> None:
    """The attack at full strength: no payout headroom (as if the token beat it), so the mined
    batch reverts with InsufficientGasForPayout. The honest channel of the batch is sent again
    without the hostile one, and its later close is defended."""
    payee = payee_side(chain, tmp_path)
    (hostile,) = open_many(chain, [10**21], token=chain.dodger)
    honest, other = open_many(chain, [10**18, 10**18])
    accept(payee, hostile, 5 * 10**20)
    accept(payee, honest, 4 * 10**17)
    accept(payee, other, 3 * 10**17)
    w = watcher(chain, payee, policy=ClaimPolicy(default_threshold=1),
                defence=DefencePolicy(payout_gas=0, act_wait=15.0, withdraw_interval=3600.0))
    first = w.poll_once().sent
    reverted = [s for s in first if not s.ok and s.kind == "claimMany"]
    assert reverted and "InsufficientGasForPayout" in (reverted[0].error or ""), first
    reader = chain.client()
    # Sent again without the hostile channel, in the same poll.
    assert reader.get_channel(honest).claimed == 4 * 10**17
    assert reader.get_channel(other).claimed == 3 * 10**17
    assert reader.get_channel(hostile).claimed == 0
    # The payer now closes after paying more off-chain... the watcher still defends: a newer
    # voucher on `other`, then startClose on it and on the hostile one.
    accept(payee, other, 6 * 10**17, task="t2", prior=3 * 10**17)
    closes_at_block = start_closes(chain, [other, hostile])
    assert closes_at_block
    poll_until(w, lambda: reader.get_channel(other).claimed == 6 * 10**17)
    ch = reader.get_channel(other)
    assert ch.status is ChannelStatus.CLOSING and reader.timestamp() < ch.closes_at
    rows = payee.store.transactions()
    shape = [(r["kind"], r["status"], len(json.loads(r["channel_ids"]))) for r in rows]
    # The batch reverted; replayed alone, the hostile channel was found and the other two went
    # again together; the closing `other` was defended; the closing hostile one got one try.
    assert shape[:2] == [("claimMany", "reverted", 3), ("claimMany", "mined", 2)], shape
    assert ("claim", "mined", 1) in shape[2:], shape
    assert w.alert_counts.get("defence_failed", 0) >= 1
    record("watchtower/1-dodging-token-revert", batch_reverted=True,
           honest_claimed_after_revert=True, closing_defended=True,
           txs=len(rows), reverted=[r["status"] for r in rows].count("reverted"))


def test_payout_headroom_keeps_a_dodging_token_from_reverting_the_batch(
    chain: Chain, snap: None, tmp_path: Path,
) -> None:
    """With the default headroom the same batch is mined: the hostile payout is deferred to
    ``owed`` (the contract's rule) and the honest channel is paid."""
    payee = payee_side(chain, tmp_path)
    (hostile,) = open_many(chain, [10**21], token=chain.dodger)
    (honest,) = open_many(chain, [10**18])
    accept(payee, hostile, 5 * 10**20)
    accept(payee, honest, 4 * 10**17)
    w = watcher(chain, payee, policy=ClaimPolicy(default_threshold=1))
    sent = w.poll_once().sent
    assert sent and all(s.ok for s in sent), [(s.kind, s.error) for s in sent]
    reader = chain.client()
    assert reader.get_channel(honest).claimed == 4 * 10**17
    assert reader.get_channel(hostile).claimed == 5 * 10**20
    me = Account.from_key(PAYEE_KEY).address
    assert reader.owed(me, chain.dodger) == 5 * 10**20  # deferred, not lost
    record("watchtower/1-dodging-token-headroom", batch_reverted=False,
           deferred=5 * 10**20, txs=len(sent))


# --- 2 + 5: the dust storm -------------------------------------------------------------------


def test_dust_storm_with_base_fee_spike_valuable_channel_paid_before_closes_at(
    chain: Chain, snap: None, tmp_path: Path,
) -> None:
    dust_count = 2_000 if LONG else 200
    period = 120
    payee = payee_side(chain, tmp_path)
    dust_deposit, dust_paid = 10**12, 10**11  # ~0.0000001 ETH: less than one claim's gas
    value = 5 * 10**18
    ids = open_many(chain, [10**19] + [dust_deposit] * dust_count, period=period)
    valuable, dust = ids[0], ids[1:]
    accept(payee, valuable, value)
    for i, cid in enumerate(dust):
        accept(payee, cid, dust_paid, task=f"d{i}")
    w = watcher(chain, payee, bump_after=2.0,
                defence=DefencePolicy(act_wait=3.0, withdraw_interval=3600.0))
    w.poll_once()  # caught up: everything mirrored, nothing due
    assert payee.store.transactions() == []

    spiked: list[int] = []

    def spike_when_defending(message: str) -> None:
        payee.reports.append(message)
        if message.startswith("defending") and not spiked:
            spiked.append(50 * GWEI)
            rpc(chain.w3, "anvil_setNextBlockBaseFeePerGas", hex(50 * GWEI))

    w.report = spike_when_defending
    rpc(chain.w3, "evm_setAutomine", False)
    rpc(chain.w3, "evm_setIntervalMining", 1)
    stop = threading.Event()
    thread = threading.Thread(target=w.run, args=(stop,), kwargs={"interval": 0.5}, daemon=True)
    # Dust first, the valuable one in the middle of the storm, more dust after it.
    half = len(dust) // 2
    thread.start()
    try:
        start_closes(chain, dust[:half] + [valuable] + dust[half:])
        reader = chain.client()
        closes_at = reader.get_channel(valuable).closes_at
        deadline = time.monotonic() + period
        while reader.get_channel(valuable).claimed < value and time.monotonic() < deadline:
            time.sleep(0.25)
        paid_at = reader.timestamp()
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    ch = reader.get_channel(valuable)
    assert ch.claimed == value, "the valuable channel was not paid"
    assert paid_at < closes_at
    rows = payee.store.transactions()
    dust_hex = {"0x" + c.hex() for c in dust}
    on_dust = [r for r in rows if dust_hex & set(json.loads(r["channel_ids"]))]
    gas_on_dust = sum(int(chain.w3.eth.get_transaction_receipt(r["tx_hash"])["gasUsed"])
                      for r in on_dust if r["tx_hash"])
    status = w.status()
    assert gas_on_dust == 0 and status.dust_skipped == dust_count
    assert spiked, "the spike never happened: the watcher did not defend"
    record("watchtower/2-dust-storm", dust=dust_count, period=period,
           seconds_before_closes_at=closes_at - paid_at,
           fee_replacements=status.replacements, gas_on_dust=gas_on_dust,
           base_fee_spike_gwei=50, txs=len(rows))
