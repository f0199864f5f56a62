"""The receipts' claim_tx against anvil: the watcher records which transaction claimed what
(channel/claims.py), and a reorg that drops a claim drops its record."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from payee_twin import PayeeTwin, open_eth, voucher_sig
from piecework_testnode import Accounts, Deployment, rpc
from web3 import Web3

from channel.chain import ChainClient
from channel.claims import claim_transactions
from channel.watcher import ClaimPolicy, Watcher

pytestmark = pytest.mark.integration


def test_claim_transactions_follow_the_chain_through_a_reorg(
    make_client: Callable[..., ChainClient], accounts: Accounts, deployment: Deployment,
    payee_twin: PayeeTwin, w3: Web3,
) -> None:
    payer = make_client(accounts.payer)
    payee = make_client(accounts.payee)
    channel_id = open_eth(payer, accounts.payee.address)
    sigs = {}
    for i in range(1, 4):
        sigs[1000 * i] = voucher_sig(accounts.payer, deployment.channels, channel_id, 1000 * i)
        payee_twin.service.accept(channel_id, f"task-{i}", 1000, 1000 * i, sigs[1000 * i],
                                  int(time.time()))
    store = payee_twin.service.store
    watcher = Watcher(payee, store, frozenset({accounts.payee.address}),
                      policy=ClaimPolicy(default_threshold=10**30))
    watcher.poll_once()
    amounts = [1000, 2000, 3000]
    assert claim_transactions(store.engine, channel_id, amounts) == [None, None, None]

    first = "0x" + payee.claim(channel_id, 2000, sigs[2000]).tx_hash.hex()
    watcher.poll_once()
    assert claim_transactions(store.engine, channel_id, amounts) == [first, first, None]
    second = "0x" + payee.claim(channel_id, 3000, sigs[3000]).tx_hash.hex()
    watcher.poll_once()
    assert claim_transactions(store.engine, channel_id, amounts) == [first, first, second]

    rpc(w3, "anvil_reorg", 1, [])  # the second claim's block is replaced by an empty one
    assert payer.get_channel(channel_id).claimed == 2000
    assert watcher.poll_once().reorg
    assert claim_transactions(store.engine, channel_id, amounts) == [first, first, None]
