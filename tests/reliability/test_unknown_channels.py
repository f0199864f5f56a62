"""Issue 11 item 6: unauthenticated payments for unknown channel ids must not drive chain reads.

A payment for a channel id the store does not have used to make the group committer's decider
call ``getChannel`` synchronously, before any signature check: a payer sending random ids
stalled every honest payment queued behind them, and each request cost a node read. Here the
node is real (anvil, the real ``ChainClient``), the honest channel is really opened on it,
and the ``getChannel`` calls for the hostile ids are made to hang (a stalled or rate-limited
node) until the honest payments have been answered: before the fix they could not be.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from piecework_testnode import CHAIN_ID, Accounts, Deployment
from reliability_harness import open_channels, record

from api.main import ChainChannelSource
from channel.chain import ChainClient
from channel.errors import UnknownChannel
from channel.messages import Domain, Voucher
from channel.payee import GroupCommitter, PayeeService, PaymentRequest
from channel.signing import Signer
from channel.state import OnchainChannel
from channel.store import PayeeStore, make_engine, migrate

pytestmark = pytest.mark.integration

MakeClient = Callable[..., ChainClient]


class _StallingSource(ChainChannelSource):
    """The real chain source; reads of ids in ``hostile`` wait for ``release`` and are counted."""

    def __init__(self, chain: ChainClient, hostile: set[bytes]) -> None:
        super().__init__(chain)
        self.hostile = hostile
        self.release = threading.Event()
        self.hostile_reads = 0
        self._lock = threading.Lock()

    def get(self, channel_id: bytes) -> OnchainChannel | None:
        if channel_id in self.hostile:
            with self._lock:
                self.hostile_reads += 1
            self.release.wait(60)
        return super().get(channel_id)


def test_random_channel_ids_neither_stall_honest_payments_nor_repeat_node_reads(
    deployment: Deployment, accounts: Accounts, make_client: MakeClient, tmp_path: Path,
) -> None:
    chain = make_client(accounts.payee)
    (honest,) = open_channels(make_client(accounts.payer), accounts.payee.address, 1)
    hostile_ids = [os.urandom(32) for _ in range(8)]
    source = _StallingSource(chain, set(hostile_ids))
    engine = make_engine(f"sqlite:///{tmp_path / 'payee.db'}")
    migrate(engine)
    payee = Signer(bytes(accounts.payee.key))
    payer = Signer(bytes(accounts.payer.key))
    domain = Domain(CHAIN_ID, deployment.channels)
    service = PayeeService(PayeeStore(engine), payee, domain, source, min_challenge_period=3600)
    service.latest(honest)  # mirrored, as the watcher does for every channel of ours
    committer = GroupCommitter(service)
    try:
        # 8 random ids, each sent 5 times, interleaved with 20 honest payments.
        hostile = [committer.submit(PaymentRequest(
            cid, f"h{k}", 1, 1, payer.sign(domain, Voucher(cid, 1)), 1))
            for k in range(5) for cid in hostile_ids]
        receipts = []
        for i in range(1, 21):
            request = PaymentRequest(honest, f"t{i}", 1, i, payer.sign(domain, Voucher(honest, i)),
                                     1)
            # Answered while every hostile lookup is still hanging on the node.
            receipts.append(committer.submit(request).result(30))
        assert not source.release.is_set()
        assert [r.cumulative_amount for r in receipts] == list(range(1, 21))
        source.release.set()
        for future in hostile:
            with pytest.raises(UnknownChannel):
                future.result(60)
        reads = source.hostile_reads
        # The same ids again: answered from memory, no node read.
        again = [committer.submit(PaymentRequest(
            cid, "again", 1, 1, payer.sign(domain, Voucher(cid, 1)), 1)) for cid in hostile_ids]
        for future in again:
            with pytest.raises(UnknownChannel):
                future.result(30)
        assert source.hostile_reads == reads
        # Each distinct id is read at most once per request that reached a lookup thread
        # before the first answer; never once per request afterwards.
        assert reads <= len(hostile)
        assert service.latest(honest).accepted == 20
    finally:
        source.release.set()
        committer.close()
        engine.dispose()
    record("unknown-channels/flood", hostile_requests=len(hostile) + len(again),
           distinct_ids=len(hostile_ids), node_reads=reads, honest_paid=len(receipts))
