"""ChainClient against a real anvil: every channel path for ETH and ERC-20, reverts, nonces."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from payee_twin import open_eth, voucher_sig
from piecework_testnode import CHAIN_ID, Accounts, Deployment, advance_time
from web3 import Web3

from channel.chain import (
    ZERO_ADDRESS,
    ChainClient,
    ChannelClosed,
    ChannelOpened,
    ChannelToppedUp,
    Claim,
    Claimed,
    CloseStarted,
    PreconditionFailed,
    channel_id_for,
)
from channel.errors import ContractRevert, NodeUnavailable
from channel.messages import MAX_UINT64, MAX_UINT256, CloseConsent, Domain, Voucher
from channel.signing import Signer
from channel.state import ChannelStatus

pytestmark = pytest.mark.integration

MakeClient = Callable[..., ChainClient]


def test_channel_id_computed_locally_matches_the_contract(
    make_client: MakeClient, accounts: Accounts, deployment: Deployment
) -> None:
    client = make_client()
    for token in (ZERO_ADDRESS, deployment.stablecoin):
        salt = os.urandom(32)
        local = channel_id_for(accounts.payer.address, accounts.payee.address, token, salt)
        assert local == client.channel_id_onchain(
            accounts.payer.address, accounts.payee.address, token, salt)


@pytest.mark.parametrize(
    ("constant", "message"),
    [("VOUCHER_TYPEHASH", "Voucher"), ("RECEIPT_TYPEHASH", "Receipt"),
     ("CLOSE_CONSENT_TYPEHASH", "CloseConsent"), ("CLOSE_REQUEST_TYPEHASH", "CloseRequest"),
     ("ACCESS_TYPEHASH", "Access")],
)
def test_each_type_string_hashes_to_the_contracts_public_constant(
    make_client: MakeClient, constant: str, message: str
) -> None:
    from channel.messages import MESSAGE_TYPES

    assert make_client().type_hash(constant) == MESSAGE_TYPES[message].TYPE_HASH


@pytest.mark.parametrize(
    ("amount", "deadline"), [(0, 0), (123, 1_700_000_000), (MAX_UINT256, MAX_UINT64)]
)
def test_python_digests_equal_the_contracts(
    make_client: MakeClient, deployment: Deployment, amount: int, deadline: int
) -> None:
    client = make_client()
    domain = Domain(CHAIN_ID, deployment.channels)
    channel_id = os.urandom(32)
    assert domain.digest(Voucher(channel_id, amount)) == client.voucher_digest(channel_id, amount)
    assert domain.digest(CloseConsent(channel_id, amount, deadline)) == (
        client.close_consent_digest(channel_id, amount, deadline))
    assert client.eip712_domain() == {"name": "PaymentChannels", "version": "2",
                                      "chainId": CHAIN_ID,
                                      "verifyingContract": deployment.channels}


def test_python_signatures_are_accepted_on_chain(
    make_client: MakeClient, accounts: Accounts, deployment: Deployment
) -> None:
    payer = make_client(accounts.payer)
    channel_id = open_eth(payer, accounts.payee.address)
    sig = voucher_sig(accounts.payer, deployment.channels, channel_id, 10**17)
    result = make_client(accounts.payee).claim(channel_id, 10**17, sig)
    assert [type(e) for e in result.events] == [Claimed]
    assert payer.get_channel(channel_id).claimed == 10**17


def test_eth_lifecycle_open_top_up_claim_close_by_payee(
    make_client: MakeClient, accounts: Accounts, deployment: Deployment, w3: Web3
) -> None:
    payer = make_client(accounts.payer)
    payee = make_client(accounts.payee)
    salt = os.urandom(32)
    channel_id, opened = payer.open(accounts.payee.address, 10**18, challenge_period=3600,
                                    salt=salt)
    (ev,) = opened.events
    assert isinstance(ev, ChannelOpened)
    assert (ev.payer, ev.payee, ev.token, ev.deposit, ev.challenge_period, ev.voucher_signer) == (
        accounts.payer.address, accounts.payee.address, ZERO_ADDRESS, 10**18, 3600, ZERO_ADDRESS)
    topped = payer.top_up(channel_id, 5 * 10**17)
    assert isinstance(topped.events[0], ChannelToppedUp)
    assert topped.events[0].deposit == 15 * 10**17

    payee.claim(channel_id, 3 * 10**17,
                voucher_sig(accounts.payer, deployment.channels, channel_id, 3 * 10**17))
    before = w3.eth.get_balance(accounts.payer.address)
    final = 5 * 10**17
    closed = payee.close_by_payee(channel_id, final, voucher_sig(
        accounts.payer, deployment.channels, channel_id, final))
    end = next(e for e in closed.events if isinstance(e, ChannelClosed))
    assert (end.payee_total, end.payer_refund) == (final, 10**18)
    assert w3.eth.get_balance(accounts.payer.address) - before == 10**18
    assert payer.get_channel(channel_id).status is ChannelStatus.CLOSED


def test_claim_many_pays_several_channels_in_one_transaction(
    make_client: MakeClient, accounts: Accounts, deployment: Deployment
) -> None:
    p1, p2 = make_client(accounts.payer), make_client(accounts.payer2)
    ids = [open_eth(p1, accounts.payee.address), open_eth(p2, accounts.payee.address),
           open_eth(p1, accounts.payee.address)]
    payers = [accounts.payer, accounts.payer2, accounts.payer]
    claims = [Claim(cid, 1000 * (i + 1), voucher_sig(who, deployment.channels, cid, 1000 * (i + 1)))
              for i, (cid, who) in enumerate(zip(ids, payers, strict=True))]
    result = make_client(accounts.third).claim_many(claims)
    paid = {e.channel_id: e.paid for e in result.events if isinstance(e, Claimed)}
    assert paid == {ids[0]: 1000, ids[1]: 2000, ids[2]: 3000}
    # An entry that pays nothing is skipped, not fatal.
    extra = Claim(ids[1], 2500, voucher_sig(accounts.payer2, deployment.channels, ids[1], 2500))
    again = make_client(accounts.third).claim_many([claims[0], extra])
    assert [(e.channel_id, e.paid) for e in again.events if isinstance(e, Claimed)] == [
        (ids[1], 500)]


def test_voucher_signer_is_on_chain_and_its_vouchers_are_claimed(
    make_client: MakeClient, accounts: Accounts, deployment: Deployment
) -> None:
    payer = make_client(accounts.payer)
    signer = Signer.generate()
    channel_id, opened = payer.open(accounts.payee.address, 10**18, challenge_period=3600,
                                    salt=os.urandom(32), voucher_signer=signer.address)
    (ev,) = opened.events
    assert isinstance(ev, ChannelOpened) and ev.voucher_signer == signer.address
    assert payer.get_channel(channel_id).voucher_signer == signer.address
    domain = Domain(CHAIN_ID, deployment.channels)
    payee = make_client(accounts.payee)
    payee.claim(channel_id, 700, signer.sign(domain, Voucher(channel_id, 700)))
    # The payer's own key still signs too.
    payee.claim(channel_id, 900, voucher_sig(accounts.payer, deployment.channels, channel_id, 900))
    assert payer.get_channel(channel_id).claimed == 900


def _consent(accounts: Accounts, deployment: Deployment, channel_id: bytes, amount: int,
             deadline: int) -> bytes:
    domain = Domain(CHAIN_ID, deployment.channels)
    return Signer(bytes(accounts.payee.key)).sign(domain, CloseConsent(channel_id, amount,
                                                                       deadline))


def test_cooperative_close_with_both_signatures_before_the_deadline(
    make_client: MakeClient, accounts: Accounts, deployment: Deployment
) -> None:
    payer = make_client(accounts.payer)
    channel_id = open_eth(payer, accounts.payee.address)
    deadline = payer.timestamp() + 900
    consent = _consent(accounts, deployment, channel_id, 4000, deadline)
    result = make_client(accounts.third).cooperative_close(
        channel_id, 4000, deadline,
        voucher_sig(accounts.payer, deployment.channels, channel_id, 4000), consent)
    end = next(e for e in result.events if isinstance(e, ChannelClosed))
    assert (end.payee_total, end.payer_refund) == (4000, 10**18 - 4000)


def test_an_expired_consent_is_refused(
    make_client: MakeClient, accounts: Accounts, deployment: Deployment, w3: Web3
) -> None:
    payer = make_client(accounts.payer)
    channel_id = open_eth(payer, accounts.payee.address)
    deadline = payer.timestamp() + 60
    consent = _consent(accounts, deployment, channel_id, 4000, deadline)
    voucher = voucher_sig(accounts.payer, deployment.channels, channel_id, 4000)
    advance_time(w3, 61)
    with pytest.raises(PreconditionFailed, match="expired"):
        payer.cooperative_close(channel_id, 4000, deadline, voucher, consent)
    raw = make_client(accounts.payer, check_preconditions=False)
    with pytest.raises(ContractRevert) as info:
        raw.cooperative_close(channel_id, 4000, deadline, voucher, consent)
    assert info.value.name == "ConsentExpired"
    assert payer.get_channel(channel_id).status is ChannelStatus.OPEN


def test_start_close_then_settle_by_a_third_account(
    make_client: MakeClient, accounts: Accounts, w3: Web3
) -> None:
    payer = make_client(accounts.payer)
    channel_id = open_eth(payer, accounts.payee.address, period=600)
    started = payer.start_close(channel_id)
    assert isinstance(started.events[0], CloseStarted)
    third = make_client(accounts.third)
    with pytest.raises(PreconditionFailed, match=r"600s left"):
        third.settle(channel_id)
    advance_time(w3, 600)
    result = third.settle(channel_id)
    end = next(e for e in result.events if isinstance(e, ChannelClosed))
    assert (end.payee_total, end.payer_refund) == (0, 10**18)


def test_erc20_open_with_approve_and_with_permit(
    make_client: MakeClient, accounts: Accounts, deployment: Deployment
) -> None:
    payer = make_client(accounts.payer)
    coin = deployment.stablecoin
    start = payer.balance(accounts.payer.address, coin)
    approved, _ = payer.open(accounts.payee.address, 250 * 10**6, token=coin,
                             challenge_period=3600, salt=os.urandom(32))
    permitted, res = payer.open_with_permit(accounts.payee.address, 100 * 10**6, token=coin,
                                            challenge_period=3600, salt=os.urandom(32))
    assert isinstance(res.events[-1], ChannelOpened)
    assert payer.balance(accounts.payer.address, coin) == start - 350 * 10**6
    for cid, deposit in ((approved, 250 * 10**6), (permitted, 100 * 10**6)):
        ch = payer.get_channel(cid)
        assert (ch.token, ch.deposit, ch.status) == (coin, deposit, ChannelStatus.OPEN)
    payer.top_up(permitted, 10**6)  # ERC-20 top-up approves as needed
    sig = voucher_sig(accounts.payer, deployment.channels, permitted, 42 * 10**6)
    payee_before = payer.balance(accounts.payee.address, coin)
    make_client(accounts.payee).close_by_payee(permitted, 42 * 10**6, sig)
    assert payer.balance(accounts.payee.address, coin) - payee_before == 42 * 10**6


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("bad_signature", "InvalidSignature"),
        ("not_payer", "NotPayer"),
        ("id_used", "ChannelIdUsed"),
        ("nothing_to_claim", "NothingToClaim"),
        ("settle_early", "ChallengePeriodNotOver"),
    ],
)
def test_reverts_are_decoded_into_named_errors(
    make_client: MakeClient, accounts: Accounts, deployment: Deployment, case: str, error: str
) -> None:
    payer = make_client(accounts.payer, check_preconditions=False)
    salt = os.urandom(32)
    channel_id, _ = payer.open(accounts.payee.address, 10**18, challenge_period=3600, salt=salt)
    raw = make_client(accounts.payee, check_preconditions=False)
    with pytest.raises(ContractRevert) as info:
        if case == "bad_signature":
            raw.claim(channel_id, 10, voucher_sig(accounts.third, deployment.channels,
                                                  channel_id, 10))
        elif case == "not_payer":
            raw.start_close(channel_id)
        elif case == "id_used":
            payer.open(accounts.payee.address, 1, challenge_period=3600, salt=salt)
        elif case == "nothing_to_claim":
            raw.claim(channel_id, 0, voucher_sig(accounts.payer, deployment.channels,
                                                 channel_id, 0))
        else:
            payer.start_close(channel_id)
            raw.settle(channel_id)
    assert info.value.name == error
    if case == "bad_signature":
        assert info.value.revert_args[1] == accounts.payer.address
        assert info.value.revert_args[2] == accounts.third.address
    assert error in str(info.value)


def test_preconditions_refuse_before_sending(
    make_client: MakeClient, accounts: Accounts, w3: Web3
) -> None:
    payer = make_client(accounts.payer)
    channel_id = open_eth(payer, accounts.payee.address)
    nonce = w3.eth.get_transaction_count(accounts.payee.address)
    with pytest.raises(PreconditionFailed, match="must come from the payer"):
        make_client(accounts.payee).start_close(channel_id)
    assert w3.eth.get_transaction_count(accounts.payee.address) == nonce  # nothing was sent


def test_back_to_back_transactions_and_nonce_resync(
    make_client: MakeClient, accounts: Accounts, w3: Web3
) -> None:
    payer = make_client(accounts.payer)
    ids = [open_eth(payer, accounts.payee.address, amount=1000) for _ in range(5)]
    assert len(set(ids)) == 5
    # Another process uses the same account: our cached nonce is now too low.
    other = make_client(accounts.payer)
    open_eth(other, accounts.payee.address, amount=1000)
    channel_id = open_eth(payer, accounts.payee.address, amount=1000)
    assert payer.get_channel(channel_id).deposit == 1000


def test_dead_node_is_node_unavailable(deployment: Deployment) -> None:
    client = ChainClient.from_url("http://127.0.0.1:9", deployment.channels, rpc_timeout=1)
    with pytest.raises(NodeUnavailable, match=r"127\.0\.0\.1:9"):
        client.get_channel(b"\x00" * 32)
