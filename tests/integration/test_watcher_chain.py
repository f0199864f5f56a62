"""The watchtower against anvil and a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import time
from collections.abc import Callable
from os import urandom

import pytest
from payee_twin import PayeeTwin, open_eth, voucher_sig
from piecework_testnode import CHAIN_ID, Accounts, Deployment, mine, rpc
from web3 import Web3

from channel.chain import ChainClient
from channel.defence import DefencePolicy
from channel.messages import Domain, Voucher, task_id_hash
from channel.signing import Signer
from channel.state import ChannelStatus, PaymentAccepted
from channel.store import PendingPayment
from channel.watcher import ClaimPolicy, PollResult, Watcher

pytestmark = pytest.mark.integration

MakeClient = Callable[..., ChainClient]


def pay(twin: PayeeTwin, accounts: Accounts, deployment: Deployment, channel_id: bytes,
        task: str, *, amount: int, cumulative: int) -> None:
    sig = voucher_sig(accounts.payer, deployment.channels, channel_id, cumulative)
    twin.service.accept(channel_id, task, amount, cumulative, sig, int(time.time()))


def watcher_for(client: ChainClient, twin: PayeeTwin, accounts: Accounts, **kw: object) -> Watcher:
    # Toy amounts (wei) are far below any gas cost: turn the worth-its-gas rule off here
    # (tests/reliability/test_watchtower_attacks.py tests that rule).
    options: dict[str, object] = {"payees": frozenset({accounts.payee.address}),
                                  "policy": ClaimPolicy(default_threshold=10**30),
                                  "defence": DefencePolicy(fee_multiple=0)}
    options.update(kw)
    return Watcher(client, twin.service.store, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("who", "close_on_defend", "kind"),
    [("payee", False, "claim"), ("payee", True, "closeByPayee"), ("third", True, "claim")],
)
def test_stale_start_close_is_defeated_before_closes_at(
    *, make_client: MakeClient, accounts: Accounts, deployment: Deployment,
    payee_twin: PayeeTwin, w3: Web3, who: str, close_on_defend: bool, kind: str,
) -> None:
    payer = make_client(accounts.payer)
    channel_id = open_eth(payer, accounts.payee.address, period=3600)
    for i in range(1, 4):
        pay(payee_twin, accounts, deployment, channel_id, f"task-{i}",
            amount=1000, cumulative=1000 * i)
    watcher = watcher_for(make_client(getattr(accounts, who)), payee_twin, accounts,
                          close_on_defend=close_on_defend)
    assert watcher.poll_once().sent == ()  # open channel below threshold: nothing to do

    payer.start_close(channel_id)  # the payer hopes the payee is asleep
    payee_before = w3.eth.get_balance(accounts.payee.address)
    result = watcher.poll_once()
    (sent,) = result.sent
    assert sent.ok and sent.kind == kind
    assert sent.cumulative_amounts == (3000,)
    ch = payer.get_channel(channel_id)
    if kind == "closeByPayee":
        assert ch.status is ChannelStatus.CLOSED
    else:
        assert (ch.status, ch.claimed) == (ChannelStatus.CLOSING, 3000)
    if who == "third":  # a watchtower pays the gas, the payee gets the money
        assert w3.eth.get_balance(accounts.payee.address) - payee_before == 3000
    txs = payee_twin.service.store.transactions()
    assert [(t["kind"], t["status"]) for t in txs] == [(sent.kind, "mined")]
    assert txs[0]["tx_hash"] == "0x" + (sent.tx_hash or b"").hex()
    # The mirror catches up on the next poll and nothing is sent again.
    assert watcher.poll_once().sent == ()
    stored = payee_twin.service.store.channel(channel_id)
    assert stored is not None and stored.claimed == 3000


def test_routine_claims_are_batched_by_threshold_and_age(
    make_client: MakeClient, accounts: Accounts, deployment: Deployment, payee_twin: PayeeTwin,
) -> None:
    payer = make_client(accounts.payer)
    big = [open_eth(payer, accounts.payee.address) for _ in range(3)]
    small = open_eth(payer, accounts.payee.address)
    for cid in big:
        pay(payee_twin, accounts, deployment, cid, "t", amount=5000, cumulative=5000)
    pay(payee_twin, accounts, deployment, small, "t", amount=10, cumulative=10)
    clock = [time.time()]
    watcher = watcher_for(make_client(accounts.payee), payee_twin, accounts,
                          policy=ClaimPolicy(default_threshold=1000, max_age=3600),
                          clock=lambda: clock[0])
    (batch,) = watcher.poll_once().sent
    assert batch.kind == "claimMany" and set(batch.channel_ids) == set(big)
    assert all(payer.get_channel(cid).claimed == 5000 for cid in big)
    assert payer.get_channel(small).claimed == 0
    assert watcher.poll_once().sent == ()
    clock[0] += 3601  # the small voucher is now older than max_age
    (late,) = watcher.poll_once().sent
    assert (late.kind, late.channel_ids) == ("claim", (small,))


def test_reorg_at_the_cursor_rewinds_and_corrects_the_mirror(
    make_client: MakeClient, accounts: Accounts, payee_twin: PayeeTwin, w3: Web3,
) -> None:
    payer = make_client(accounts.payer)
    channel_id = open_eth(payer, accounts.payee.address, amount=1000)
    watcher = watcher_for(make_client(accounts.payee), payee_twin, accounts)
    watcher.poll_once()
    payer.top_up(channel_id, 500)
    assert not watcher.poll_once().reorg
    stored = payee_twin.service.store.channel(channel_id)
    assert stored is not None and stored.deposit == 1500

    rpc(w3, "anvil_reorg", 1, [])  # the top-up's block is replaced by an empty one
    assert payer.get_channel(channel_id).deposit == 1000
    result: PollResult = watcher.poll_once()
    assert result.reorg
    stored = payee_twin.service.store.channel(channel_id)
    assert stored is not None and stored.deposit == 1000
    cursor = payee_twin.service.store.cursor("watcher")
    assert cursor is not None
    assert cursor[1] == "0x" + bytes(w3.eth.get_block(cursor[0])["hash"]).hex()


def test_only_blocks_confirmations_deep_are_acted_on(
    make_client: MakeClient, accounts: Accounts, payee_twin: PayeeTwin, w3: Web3,
) -> None:
    payer = make_client(accounts.payer)
    watcher = watcher_for(make_client(accounts.payee), payee_twin, accounts, confirmations=3)
    watcher.poll_once()
    channel_id = open_eth(payer, accounts.payee.address, amount=777)
    watcher.poll_once()
    assert payee_twin.service.store.channel(channel_id) is None  # 1 deep: not yet
    mine(w3, 2)
    watcher.poll_once()
    stored = payee_twin.service.store.channel(channel_id)
    assert stored is not None and stored.deposit == 777


def test_a_restarted_watcher_resumes_from_its_cursor(
    make_client: MakeClient, accounts: Accounts, payee_twin: PayeeTwin, w3: Web3,
) -> None:
    payer = make_client(accounts.payer)
    first = watcher_for(make_client(accounts.payee), payee_twin, accounts)
    open_eth(payer, accounts.payee.address)
    done = first.poll_once()
    assert done.to_block == w3.eth.block_number
    later = open_eth(payer, accounts.payee.address, amount=4242)

    restarted = watcher_for(make_client(accounts.payee), payee_twin, accounts)
    result = restarted.poll_once()
    assert result.from_block == (done.to_block or 0) + 1
    assert [getattr(e, "channel_id", None) for e in result.events] == [later]
    stored = payee_twin.service.store.channel(later)
    assert stored is not None and stored.deposit == 4242


def test_a_reverted_transaction_is_recorded_and_not_retried(
    make_client: MakeClient, accounts: Accounts, deployment: Deployment, payee_twin: PayeeTwin,
) -> None:
    payer = make_client(accounts.payer)
    channel_id = open_eth(payer, accounts.payee.address)
    store = payee_twin.service.store
    watcher = watcher_for(make_client(accounts.payee), payee_twin, accounts)
    watcher.poll_once()
    # A corrupted voucher in the store (signed by the wrong key): the contract will refuse it.
    bad = voucher_sig(accounts.third, deployment.channels, channel_id, 900)
    event = PaymentAccepted(channel_id, task_id_hash("x"), 900, 0, 900, bad)
    assert store.accept_payment(PendingPayment(event, "x", b"\x00" * 65))
    payer.start_close(channel_id)

    (sent,) = watcher.poll_once().sent
    assert not sent.ok and "InvalidSignature" in (sent.error or "")
    assert watcher.poll_once().sent == ()  # no loop on the same voucher
    rows = store.transactions()
    assert [(r["kind"], r["status"]) for r in rows] == [("claim", "reverted")]
    assert "InvalidSignature" in rows[0]["last_error"]


def test_a_follower_without_the_lock_does_nothing(
    make_client: MakeClient, accounts: Accounts, payee_twin: PayeeTwin,
) -> None:
    class Taken:
        def try_acquire(self) -> bool:
            return False

        def held(self) -> bool:
            return False

        def release(self) -> None:
            return None

    watcher = watcher_for(make_client(accounts.payee), payee_twin, accounts, lock=Taken())
    assert watcher.poll_once() == PollResult(leader=False)
    assert payee_twin.service.store.cursor("watcher") is None


def test_the_mirror_holds_the_voucher_signer_from_chain(
    make_client: MakeClient, accounts: Accounts, payee_twin: PayeeTwin, deployment: Deployment,
) -> None:
    signer = Signer.generate()
    channel_id, _ = make_client(accounts.payer).open(
        accounts.payee.address, 10**18, challenge_period=3600, salt=urandom(32),
        voucher_signer=signer.address)
    assert payee_twin.service.store.channel(channel_id) is None
    watcher_for(make_client(accounts.payee), payee_twin, accounts).poll_once()
    mirrored = payee_twin.service.store.channel(channel_id)
    assert mirrored is not None and mirrored.voucher_signer == signer.address
    # The watcher can claim what the voucher signer signed.
    sig = signer.sign(Domain(CHAIN_ID, deployment.channels), Voucher(channel_id, 900))
    payee_twin.service.accept(channel_id, "t", 900, 900, sig, int(time.time()))
    sent = watcher_for(make_client(accounts.payee), payee_twin, accounts,
                       policy=ClaimPolicy(default_threshold=1)).poll_once().sent
    assert [s.ok for s in sent] == [True]
    assert make_client().get_channel(channel_id).claimed == 900
