"""The watchtower's planning rules (channel.defence) and fee rules (channel.txsender), offline."""

from __future__ import annotations

from channel.defence import ETH, DefencePolicy, batch_runs, payable, plan_defence, worth_claiming
from channel.state import ChannelStatus, PayeeChannelState
from channel.txsender import GWEI, FeePolicy, bumped

TOKEN = "0x" + "ab" * 20
PAYEE = "0x" + "11" * 20
OTHER_PAYEE = "0x" + "22" * 20


def closing(n: int, accepted: int, *, token: str = ETH, payee: str = PAYEE,
            claimed: int = 0) -> PayeeChannelState:
    return PayeeChannelState(
        channel_id=n.to_bytes(32, "big"), payer="0x" + "99" * 20, payee=payee, token=token,
        deposit=10**30, claimed=claimed, challenge_period=120, closes_at=1_000 + n,
        status=ChannelStatus.CLOSING, accepted=accepted, voucher_signature=b"\x01" * 65)


def test_dust_is_set_aside_and_the_most_valuable_goes_first() -> None:
    fee = GWEI
    policy = DefencePolicy(fee_multiple=2, claim_gas=45_000)
    threshold = 2 * 45_000 * fee
    channels = [closing(1, threshold - 1), closing(2, 5 * 10**18), closing(3, threshold),
                closing(4, 10**17)]
    plan = plan_defence(channels, fee, policy)
    assert [c.channel_id[-1] for c in plan.dust] == [1]
    assert [[c.channel_id[-1] for c in b] for b in plan.batches] == [[2, 4, 3]]


def test_a_stale_voucher_is_never_worth_claiming() -> None:
    assert payable(closing(1, 100, claimed=100)) == 0
    assert not worth_claiming(0, ETH, 45_000, 0, 0)
    assert worth_claiming(1, ETH, 45_000, GWEI, 0)  # multiple 0: any positive amount
    assert worth_claiming(1, TOKEN, 45_000, GWEI, 2)  # no price for tokens: always


def test_batches_respect_the_gas_cap_and_tokens_come_after_eth() -> None:
    policy = DefencePolicy(max_gas=60_000 + 110_000 + 3 * 45_000, max_batch=60)
    assert policy.entries_per_tx() == 3
    channels = [closing(i, 10**18 + i) for i in range(1, 8)]
    channels.append(closing(20, 10**30, token=TOKEN))
    plan = plan_defence(channels, GWEI, policy)
    sizes = [len(b) for b in plan.batches]
    assert sizes == [3, 3, 1, 1]
    assert plan.batches[-1][0].token == TOKEN  # no common price: ETH first
    assert plan.batches[0][0].channel_id[-1] == 7  # largest first


def test_suspects_of_a_reverted_batch_go_alone() -> None:
    channels = [closing(i, 10**18) for i in range(1, 5)]
    alone = frozenset({channels[0].channel_id, channels[2].channel_id})
    plan = plan_defence(channels, GWEI, DefencePolicy(), alone=alone)
    assert sorted(len(b) for b in plan.batches) == [1, 1, 2]


def test_payouts_are_one_per_run_of_payee_and_token() -> None:
    assert batch_runs([closing(1, 1), closing(2, 1)]) == 1
    assert batch_runs([closing(1, 1), closing(2, 1, payee=OTHER_PAYEE), closing(3, 1)]) == 3
    assert batch_runs([closing(1, 1), closing(2, 1, token=TOKEN)]) == 2


def test_fee_cap_rises_as_the_deadline_nears() -> None:
    policy = FeePolicy(max_fee_per_gas=400 * GWEI, floor_share=0.25)
    assert policy.cap(None, None) == 100 * GWEI  # routine
    assert policy.cap(120, 120) == 100 * GWEI  # whole window left
    assert 100 * GWEI < policy.cap(90, 120) < 400 * GWEI
    assert policy.cap(60, 120) == 400 * GWEI  # half the window: all of it
    assert policy.cap(0, 120) == 400 * GWEI


def test_a_replacement_raises_fees_by_at_least_12_5_percent() -> None:
    for fee in (1, 7, GWEI, 3_341_659_254):
        assert bumped(fee) * 1000 >= fee * 1125
        assert bumped(fee) > fee
