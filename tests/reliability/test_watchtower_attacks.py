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

import httpx
import pytest
from eth_account import Account
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
from reliability_harness import AUTH, LONG, PayClient, Service, hx, record, service_env
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
        # anvil's fee state outlives a revert: start the next test from a calm base fee.
        rpc(chain.w3, "anvil_setNextBlockBaseFeePerGas", hex(GWEI))
        rpc(chain.w3, "evm_mine")


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
    # Withdrawing it would burn the gas again (the token only behaves under estimateGas): the
    # watcher replays the withdraw with real fees first and sends nothing.
    assert [r["kind"] for r in payee.store.transactions()] == ["claimMany"]
    assert w.sender is not None and not any(p.what == "withdraw" for p in w.sender.pending)
    assert not [d for d in w.status().defences if d.kind == "withdraw"]
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
        start_closes(chain, [*dust[:half], valuable, *dust[half:]])
        reader = chain.client()
        closes_at = reader.get_channel(valuable).closes_at
        deadline = time.monotonic() + period
        while reader.get_channel(valuable).claimed < value and time.monotonic() < deadline:
            time.sleep(0.25)
        paid_at = reader.timestamp()
        # Let the watcher finish seeing the whole storm (on a loaded machine the valuable
        # channel can be paid before every dust close has been followed).
        def seen_all() -> bool:
            status = w.status()
            return status.dust_skipped == dust_count and any(
                d.state == "mined" for d in status.defences)

        while not seen_all() and time.monotonic() < deadline:
            time.sleep(0.25)
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
    shown = json.loads(json.dumps(status.to_json()))  # what GET /v1/watchtower can serve
    assert [d["state"] for d in shown["defences"]] == ["mined"]
    assert shown["dust_skipped"] == dust_count
    assert {c["state"] for c in shown["closing"]} == {"dust", "defended"}
    assert spiked, "the spike never happened: the watcher did not defend"
    record("watchtower/2-dust-storm", dust=dust_count, period=period,
           seconds_before_closes_at=closes_at - paid_at,
           fee_replacements=status.replacements, gas_on_dust=gas_on_dust,
           base_fee_spike_gwei=50, txs=len(rows))


def test_a_defence_that_cannot_be_made_in_time_raises_an_alert(
    chain: Chain, snap: None, tmp_path: Path,
) -> None:
    """The watchtower was down for the whole challenge period: nothing can be sent any more,
    and the operator hears of it once (log, report, on_alert -> the alert counter)."""
    payee = payee_side(chain, tmp_path)
    (a,) = open_many(chain, [10**18])
    accept(payee, a, 5 * 10**17)
    alerts: list[tuple[str, str]] = []
    w = watcher(chain, payee, on_alert=lambda kind, message: alerts.append((kind, message)))
    w.poll_once()
    start_closes(chain, [a])
    rpc(chain.w3, "evm_increaseTime", 121)
    rpc(chain.w3, "evm_mine")
    assert w.poll_once().sent == () and w.poll_once().sent == ()
    assert [k for k, _ in alerts] == ["too_late"] and "5000000" in alerts[0][1]
    assert payee.store.transactions() == []
    (closing,) = w.status().closing
    assert closing.state == "too_late"
    record("watchtower/2-too-late-alert", alerts=len(alerts), sent=0)


# --- 5: stuck and dropped transactions --------------------------------------------------------


def _tx(chain: Chain, tx_hash: bytes) -> Any:
    return chain.w3.eth.get_transaction(tx_hash)


def test_stuck_defence_is_replaced_same_nonce_and_a_dropped_claim_rebroadcast(
    chain: Chain, snap: None, tmp_path: Path,
) -> None:
    payee = payee_side(chain, tmp_path)
    a, b = open_many(chain, [10**18, 10**18])
    accept(payee, a, 5 * 10**17)
    accept(payee, b, 2 * 10**17)
    cap = 200 * GWEI
    w = watcher(chain, payee, bump_after=0.2, max_fee_per_gas=cap,
                defence=DefencePolicy(act_wait=0.0, withdraw_interval=3600.0))
    w.poll_once()
    start_closes(chain, [a])
    rpc(chain.w3, "evm_setAutomine", False)
    w.poll_once()  # the defence goes into the pool; act_wait 0: the poll returns at once
    assert w.sender is not None
    (item,) = w.sender.pending
    first_fee, nonce = item.max_fee, item.nonce
    # The payer's friend: a base-fee spike above the defence's max fee.
    rpc(chain.w3, "anvil_setNextBlockBaseFeePerGas", hex(60 * GWEI))
    rpc(chain.w3, "evm_mine")
    reader = chain.client()
    assert reader.get_channel(a).claimed == 0  # stuck
    polls = 0
    while reader.get_channel(a).claimed == 0 and polls < 20:
        time.sleep(0.25)
        w.poll_once()
        rpc(chain.w3, "evm_mine")
        polls += 1
    assert reader.get_channel(a).claimed == 5 * 10**17
    w.poll_once()  # collects the receipt
    assert item.state == "mined" and item.replacements >= 1
    versions = [_tx(chain, h) for h in item.hashes if chain.client().transaction_known(h)]
    assert all(int(v["nonce"]) == nonce for v in versions)
    fees = [int(v["maxFeePerGas"]) for v in versions]
    assert all(f <= cap for f in fees) and max(fees) > first_fee
    mined = chain.w3.eth.get_transaction_receipt(item.tx_hash)
    assert int(chain.w3.eth.get_block(mined["blockNumber"])["baseFeePerGas"]) <= item.max_fee

    # A routine claim dropped from the pool is sent again.
    w.policy = ClaimPolicy(default_threshold=1)
    w.poll_once()
    (routine,) = w.sender.pending
    rpc(chain.w3, "anvil_dropTransaction", "0x" + routine.tx_hash.hex())
    assert not chain.client().transaction_known(routine.tx_hash)
    w.poll_once()
    assert routine.rebroadcasts >= 1
    rpc(chain.w3, "evm_mine")
    w.poll_once()
    assert reader.get_channel(b).claimed == 2 * 10**17 and routine.state == "mined"
    record("watchtower/5-stuck-and-dropped", base_fee_spike_gwei=60,
           replacements=item.replacements, polls_until_mined=polls,
           first_max_fee=first_fee, final_max_fee=item.max_fee, cap=cap,
           rebroadcasts=routine.rebroadcasts)


def test_fee_cap_holds_during_a_spike_and_raises_an_alert(
    chain: Chain, snap: None, tmp_path: Path,
) -> None:
    payee = payee_side(chain, tmp_path)
    (a,) = open_many(chain, [10**18])
    accept(payee, a, 5 * 10**17)
    cap = 20 * GWEI
    w = watcher(chain, payee, bump_after=0.1, max_fee_per_gas=cap,
                defence=DefencePolicy(act_wait=0.0, withdraw_interval=3600.0))
    w.poll_once()
    start_closes(chain, [a])
    rpc(chain.w3, "evm_setAutomine", False)
    rpc(chain.w3, "anvil_setNextBlockBaseFeePerGas", hex(100 * GWEI))
    rpc(chain.w3, "evm_mine")
    reader = chain.client()
    for _ in range(5):
        time.sleep(0.15)
        w.poll_once()
    # anvil refuses a transaction below the base fee (geth would keep it waiting): either way
    # nothing above the cap is ever signed, and the operator hears of it.
    assert w.alert_counts.get("fee_cap", 0) >= 1
    assert reader.get_channel(a).claimed == 0
    # The spike passes (empty blocks lower the base fee 12.5 % each): the defence lands.
    polls = 0
    while reader.get_channel(a).claimed == 0 and polls < 40:
        rpc(chain.w3, "evm_mine")
        w.poll_once()
        polls += 1
    assert reader.get_channel(a).claimed == 5 * 10**17
    sent = [_tx(chain, r["tx_hash"]) for r in payee.store.transactions() if r["tx_hash"]]
    assert sent and all(int(t["maxFeePerGas"]) <= cap for t in sent)
    record("watchtower/5-fee-cap", cap_gwei=20, spike_gwei=100,
           alerts=w.alert_counts.get("fee_cap", 0), blocks_until_mined=polls)


def test_a_routine_claim_stuck_under_its_cap_becomes_the_defence_when_the_channel_closes(
    chain: Chain, snap: None, tmp_path: Path,
) -> None:
    """Routine claims may spend a quarter of the cap; the payer spikes the base fee above
    that, then starts closing. The pending claim (same nonce) is promoted to a defence and
    its fees may rise to the defence's cap."""
    payee = payee_side(chain, tmp_path)
    (a,) = open_many(chain, [10**18])
    accept(payee, a, 2 * 10**17)
    w = watcher(chain, payee, policy=ClaimPolicy(default_threshold=1), bump_after=0.1,
                max_fee_per_gas=400 * GWEI,
                defence=DefencePolicy(act_wait=0.0, withdraw_interval=3600.0))
    rpc(chain.w3, "evm_setAutomine", False)
    w.poll_once()
    assert w.sender is not None
    (item,) = w.sender.pending
    rpc(chain.w3, "anvil_setNextBlockBaseFeePerGas", hex(150 * GWEI))
    rpc(chain.w3, "evm_mine")
    for _ in range(4):
        time.sleep(0.12)
        w.poll_once()
    reader = chain.client()
    assert reader.get_channel(a).claimed == 0 and item.max_fee <= 100 * GWEI
    assert w.alert_counts.get("fee_cap", 0) >= 1
    payer = chain.client(PAYER_KEY)
    close = payer.tx_data("startClose", a)
    close.update(gas=100_000, maxFeePerGas=2000 * GWEI, maxPriorityFeePerGas=2 * GWEI)
    payer.broadcast("startClose", close)
    rpc(chain.w3, "evm_mine")
    rpc(chain.w3, "evm_increaseTime", 50)  # 70 of 120 s left: the defence cap is 350 gwei
    polls = 0
    while reader.get_channel(a).claimed == 0 and polls < 10:
        rpc(chain.w3, "evm_mine")
        time.sleep(0.12)
        w.poll_once()
        polls += 1
    ch = reader.get_channel(a)
    assert ch.status is ChannelStatus.CLOSING and ch.claimed == 2 * 10**17
    assert item.deadline == ch.closes_at and item.max_fee > 150 * GWEI * 7 // 8
    assert [r["kind"] for r in payee.store.transactions()] == ["claim"]  # one nonce, one row
    record("watchtower/5-routine-promoted", spike_gwei=150, routine_cap_gwei=100,
           final_max_fee_gwei=item.max_fee // GWEI, replacements=item.replacements,
           polls_after_close=polls)


# --- 3: gas cap, worth-its-gas rule, wallet -------------------------------------------------


def test_gas_cap_splits_batches_and_dust_is_never_claimed(
    chain: Chain, snap: None, tmp_path: Path,
) -> None:
    payee = payee_side(chain, tmp_path)
    worth = open_many(chain, [10**18] * 20)
    dust = open_many(chain, [10**12] * 10)
    for cid in worth:
        accept(payee, cid, 10**17)
    for cid in dust:
        accept(payee, cid, 10**11)
    cap = 400_000
    w = watcher(chain, payee, policy=ClaimPolicy(default_threshold=1),
                defence=DefencePolicy(max_gas=cap, withdraw_interval=3600.0))
    sent = w.poll_once().sent
    assert sent and all(s.ok for s in sent), [(s.kind, s.error) for s in sent]
    reader = chain.client()
    assert all(reader.get_channel(c).claimed == 10**17 for c in worth)
    assert all(reader.get_channel(c).claimed == 0 for c in dust)
    limits = [int(_tx(chain, s.tx_hash)["gas"]) for s in sent if s.tx_hash]
    assert len(limits) >= 2 and max(limits) <= cap, limits
    claimed_ids = {c for s in sent for c in s.channel_ids}
    assert not claimed_ids & set(dust)
    record("watchtower/3-gas-cap", channels=20, dust=10, gas_cap=cap, txs=len(limits),
           max_gas_limit=max(limits), dust_claimed=0)


def test_low_hot_wallet_is_reported_in_status_metrics_hook_and_healthz(
    chain: Chain, snap: None, tmp_path: Path,
) -> None:
    from fastapi.testclient import TestClient

    from api.main import Overrides, create_app
    from channel.config import Settings

    payee_address = Account.from_key(PAYEE_KEY).address
    rpc(chain.w3, "anvil_setBalance", payee_address, hex(10**16))  # 0.01 ETH
    payee = payee_side(chain, tmp_path)
    seen: list[tuple[int, bool]] = []
    w = watcher(chain, payee, on_wallet=lambda b, low: seen.append((b, low)),
                defence=DefencePolicy(wallet_min_balance=5 * 10**16, withdraw_interval=3600.0))
    w.poll_once()
    w.poll_once()
    status = w.status()
    assert status.wallet is not None and status.wallet.low and status.wallet.balance == 10**16
    assert w.alert_counts == {"wallet_low": 1}  # once, not every poll
    assert seen[-1] == (10**16, True)
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, rpc_url=chain.node.url, contract_address=chain.channels,
        database_url=f"sqlite:///{tmp_path / 'api.db'}", private_key=PAYEE_KEY,
        operator_token="watchtower-test-token", min_challenge_period=60,
        wallet_min_balance=5 * 10**16)
    with TestClient(create_app(settings, Overrides(start_watcher=False))) as client:
        body = client.get("/healthz").json()
    assert body["wallet"] == {"address": payee_address, "balance": str(10**16), "low": True}
    # The service's own watcher (leader of one worker) raises the alert into /metrics.
    with TestClient(create_app(settings)) as client:
        auth = {"Authorization": "Bearer watchtower-test-token"}
        deadline = time.monotonic() + 30
        text = ""
        while time.monotonic() < deadline:
            text = client.get("/metrics", headers=auth).text
            if 'piecework_watchtower_alerts_total{kind="wallet_low"}' in text:
                break
            time.sleep(0.2)
    assert 'piecework_watchtower_alerts_total{kind="wallet_low"}' in text, text[-2000:]
    assert "piecework_wallet_low 1.0" in text
    assert f"piecework_wallet_balance_wei {float(10**16)}" in text
    record("watchtower/3-wallet-low", balance=10**16, minimum=5 * 10**16, alerts=1,
           healthz_low=True)


# --- 10: one nonce owner per payee key --------------------------------------------------------


def _watcher_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "piecework-watcher" and t.is_alive()]


def test_leader_handover_stops_a_watcher_stuck_waiting_for_its_defence(
    chain: Chain, snap: None, tmp_path: Path,
) -> None:
    payee = payee_side(chain, tmp_path)
    (a,) = open_many(chain, [10**18])
    accept(payee, a, 5 * 10**17)
    old = watcher(chain, payee, defence=DefencePolicy(act_wait=120.0, withdraw_interval=3600.0))
    old.poll_once()
    start_closes(chain, [a])
    rpc(chain.w3, "evm_setAutomine", False)  # the defence will sit in the pool
    lock = tmp_path / "leader.lock"
    first = LeaderElector(FileLock(lock), old.run, retry_seconds=0.2)
    first.start()
    deadline = time.monotonic() + 30
    while not (old.sender is not None and old.sender.pending) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert old.sender is not None and old.sender.pending, "the old watcher never sent"
    started = time.monotonic()
    first.stop(timeout=60)
    took = time.monotonic() - started
    assert not _watcher_threads(), "the old watcher still runs after the handover"
    # The next leader takes over the same key: its defence replaces or follows the old one.
    new = watcher(chain, payee, defence=DefencePolicy(act_wait=2.0, withdraw_interval=3600.0))
    second = LeaderElector(FileLock(lock), new.run, retry_seconds=0.2)
    second.start()
    try:
        rpc(chain.w3, "evm_setIntervalMining", 1)
        reader = chain.client()
        deadline = time.monotonic() + 60
        while reader.get_channel(a).claimed == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert reader.get_channel(a).claimed == 5 * 10**17
    finally:
        second.stop(timeout=60)
    assert not _watcher_threads()
    record("watchtower/10-handover", old_watcher_stopped=True, handover_seconds=round(took, 2))


def test_two_workers_signing_with_one_key_never_pick_the_same_nonce(
    chain: Chain, snap: None, tmp_path: Path, pg_url: str,
) -> None:
    """Two workers' chain clients (as api.main builds them) send operator claims at the same
    time while blocks come every second: the shared PostgreSQL lock makes each ask the node
    for the next nonce, so none collides and every claim is mined."""
    ids = open_many(chain, [10**18] * 12)
    domain = Domain(CHAIN_ID, chain.channels)
    signer = Signer(bytes.fromhex(PAYER_KEY[2:]))
    db_url = sqlalchemy_url(pg_url)
    workers = [chain.client(PAYEE_KEY, nonce_lock=nonce_lock(db_url)) for _ in range(2)]
    rpc(chain.w3, "evm_setAutomine", False)
    rpc(chain.w3, "evm_setIntervalMining", 1)
    errors: list[str] = []
    nonces: list[int] = []

    def claim(worker: ChainClient, cid: bytes) -> None:
        try:
            sig = signer.sign(domain, Voucher(cid, 10**17))
            with worker.sent_hook(lambda _h, n: nonces.append(n)):
                worker.claim(cid, 10**17, sig)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=claim, args=(workers[i % 2], cid))
               for i, cid in enumerate(ids)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert len(nonces) == len(set(nonces)) == len(ids)
    reader = chain.client()
    assert all(reader.get_channel(c).claimed == 10**17 for c in ids)
    record("watchtower/10-two-workers-one-key", workers=2, claims=len(ids), collisions=0)


def test_operator_claims_answered_by_two_worker_processes_never_share_a_nonce(
    chain: Chain, snap: None, make_service: Callable[..., Service], pg_sqlalchemy_url: str,
) -> None:
    """``piecework serve --workers 2`` on PostgreSQL: concurrent ``POST /claim`` requests (the
    kernel spreads them over both workers, one of which also runs the watcher) all succeed with
    distinct nonces while blocks come every second."""
    ids = open_many(chain, [10**18] * 8, period=3600)
    service = make_service(service_env(chain.node.url, chain.channels, pg_sqlalchemy_url),
                           workers=2)
    service.start()
    payee_address = Account.from_key(PAYEE_KEY).address
    client = PayClient(service.url, Domain(CHAIN_ID, chain.channels), PAYER_KEY, payee_address)
    try:
        for cid in ids:
            response = client.pay(cid, "t", 10**17, 10**17)
            assert response.status_code == 201, response.text
        rpc(chain.w3, "evm_setAutomine", False)
        rpc(chain.w3, "evm_setIntervalMining", 1)
        answers: list[tuple[int, str]] = []

        def claim(cid: bytes) -> None:
            r = httpx.post(f"{service.url}/v1/channels/{hx(cid)}/claim", headers=AUTH,
                           timeout=120)
            answers.append((r.status_code, r.text))

        threads = [threading.Thread(target=claim, args=(cid,)) for cid in ids]
        for t in threads:
            t.start()
        for t in threads:
            t.join(150)
    finally:
        client.close()
    assert [code for code, _ in answers] == [200] * len(ids), answers
    hashes = [json.loads(text)["tx_hash"] for _, text in answers]
    nonces = {int(chain.w3.eth.get_transaction(h)["nonce"]) for h in hashes}
    assert len(nonces) == len(ids)
    reader = chain.client()
    assert all(reader.get_channel(c).claimed == 10**17 for c in ids)
    record("watchtower/10-two-worker-processes", workers=2, claims=len(ids), distinct_nonces=
           len(nonces), errors=0)


# --- 11: deferred payouts ----------------------------------------------------------------------


def test_deferred_payouts_are_withdrawn_by_the_watcher(
    chain: Chain, snap: None, tmp_path: Path,
) -> None:
    payee = payee_side(chain, tmp_path)
    (cid,) = open_many(chain, [10**21], token=chain.moody)
    accept(payee, cid, 4 * 10**20)
    moody = chain.w3.eth.contract(address=Web3.to_checksum_address(chain.moody),
                                  abi=chain.moody_art.abi)
    owner = ChainClient(chain.w3, chain.moody, chain.moody_art, Account.from_key(ANVIL_KEYS[0]))
    owner._transact("setMood", moody.functions.setMood(1))  # Revert: payouts are deferred
    w = watcher(chain, payee, policy=ClaimPolicy(default_threshold=1),
                defence=DefencePolicy(withdraw_interval=0.0))
    w.poll_once()
    me = Account.from_key(PAYEE_KEY).address
    reader = chain.client()
    assert reader.get_channel(cid).claimed == 4 * 10**20
    assert reader.owed(me, chain.moody) == 4 * 10**20  # deferred; withdrawing fails for now
    owner._transact("setMood", moody.functions.setMood(0))  # the token behaves again
    polls = poll_until(w, lambda: reader.owed(me, chain.moody) == 0, polls=5)
    assert int(moody.functions.balanceOf(me).call()) == 4 * 10**20
    withdrawn = [r for r in w.status().defences if r.kind == "withdraw" and r.state == "mined"]
    assert len(withdrawn) == 1
    record("watchtower/11-withdraw-owed", owed=4 * 10**20, polls_until_withdrawn=polls,
           withdraws=len(withdrawn))
