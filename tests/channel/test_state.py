"""The pure state machine: table of payee rules, and hypothesis properties over random runs."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from channel.errors import (
    ChallengePeriodTooShort,
    ChannelNotOpen,
    ExceedsDeposit,
    InvalidAmount,
    PaymentRejected,
    PieceworkError,
    StaleVoucher,
    TaskConflict,
    UnknownChannel,
    WrongSigner,
)
from channel.state import (
    ChannelClosed,
    ChannelOpened,
    ChannelStatus,
    ChannelToppedUp,
    Claimed,
    CloseStarted,
    MakePayment,
    OnchainChannel,
    PayeeChannelState,
    PayeeRules,
    PayerChannelState,
    PaymentAccepted,
    PaymentReceived,
    PaymentReplayed,
    PriorPayment,
    SignVoucher,
    StateChange,
    VoucherSigned,
    decode_change,
    encode_change,
    transition,
)

CID = b"\xc1" * 32
PAYER = "0x" + "aa" * 20
PAYER_BYTES = b"\xaa" * 20
TASK = b"\x7a" * 32
SIG = b"\x51" * 65


def make_channel(**kw: object) -> OnchainChannel:
    fields: dict[str, object] = {
        "channel_id": CID,
        "payer": PAYER,
        "payee": "0x" + "bb" * 20,
        "token": "0x" + "00" * 20,
        "deposit": 1000,
        "claimed": 0,
        "challenge_period": 3600,
        "closes_at": 0,
        "status": ChannelStatus.OPEN,
    }
    fields.update(kw)
    return OnchainChannel(**fields)  # type: ignore[arg-type]


def make_state(accepted: int = 0, **kw: object) -> PayeeChannelState:
    state = transition(None, ChannelOpened(make_channel(**kw))).new_state
    assert isinstance(state, PayeeChannelState)
    return dataclasses.replace(state, accepted=accepted)


def pay(amount: int, cumulative: int, **kw: object) -> PaymentReceived:
    fields: dict[str, object] = {
        "channel_id": CID,
        "task_hash": TASK,
        "amount": amount,
        "cumulative_amount": cumulative,
        "voucher_signature": SIG,
        "signer": PAYER_BYTES,
        "now": 1_000,
        "prior": None,
    }
    fields.update(kw)
    return PaymentReceived(**fields)  # type: ignore[arg-type]


def test_first_payment_is_accepted() -> None:
    result = transition(make_state(), pay(10, 10))
    assert result.new_state.accepted == 10
    assert result.new_state.voucher_signature == SIG
    assert result.events == (PaymentAccepted(CID, TASK, 10, 0, 10, SIG),)


@pytest.mark.parametrize(
    ("state", "change", "error"),
    [
        (make_state(status=ChannelStatus.CLOSING, closes_at=9_999), pay(1, 1), ChannelNotOpen),
        (make_state(status=ChannelStatus.CLOSED), pay(1, 1), ChannelNotOpen),
        (make_state(status=ChannelStatus.NONE), pay(1, 1), ChannelNotOpen),
        (make_state(challenge_period=3599), pay(1, 1), ChallengePeriodTooShort),
        (make_state(), pay(1, 1, signer=b"\xab" * 20), WrongSigner),
        (make_state(), pay(0, 0), InvalidAmount),
        (make_state(accepted=5), pay(1, 1), StaleVoucher),
        (make_state(accepted=5), pay(1, 7), StaleVoucher),
        (make_state(accepted=5), pay(1, 5), StaleVoucher),
        (make_state(accepted=5), pay(-1, 4), InvalidAmount),
        (make_state(), pay(1001, 1001), ExceedsDeposit),
        (make_state(accepted=5), pay(1, 1, prior=PriorPayment(5, b"\x00" * 65)), TaskConflict),
        (make_state(accepted=5), pay(5, 5, prior=PriorPayment(5, b"\x00" * 65)), TaskConflict),
        (None, pay(1, 1), UnknownChannel),
    ],
)
def test_payee_rejects(
    state: PayeeChannelState | None, change: PaymentReceived, error: type[PieceworkError]
) -> None:
    with pytest.raises(error):
        transition(state, change)


def test_stale_voucher_names_the_current_amount() -> None:
    with pytest.raises(StaleVoucher) as info:
        transition(make_state(accepted=5), pay(1, 3))
    assert info.value.current == 5
    assert "5" in str(info.value)


def test_exceeds_deposit_names_the_deposit() -> None:
    with pytest.raises(ExceedsDeposit) as info:
        transition(make_state(accepted=999), pay(2, 1001))
    assert info.value.deposit == 1000


def test_same_task_same_voucher_is_an_idempotent_replay() -> None:
    state = make_state(accepted=10)
    result = transition(state, pay(10, 10, prior=PriorPayment(10, SIG)))
    assert result.new_state == state
    assert result.events == (PaymentReplayed(CID, TASK, 10),)


def test_min_challenge_period_is_a_rule() -> None:
    transition(make_state(challenge_period=60), pay(1, 1), PayeeRules(min_challenge_period=60))


def test_chain_changes() -> None:
    state = make_state(accepted=50)
    state = transition(state, ChannelToppedUp(CID, 5000)).new_state
    assert state.deposit == 5000
    state = transition(state, Claimed(CID, 40, 40)).new_state
    assert (state.claimed, state.accepted) == (40, 50)
    state = transition(state, Claimed(CID, 80, 40)).new_state  # someone held a newer voucher
    assert (state.claimed, state.accepted) == (80, 80)
    state = transition(state, CloseStarted(CID, 7200)).new_state
    assert (state.status, state.closes_at) == (ChannelStatus.CLOSING, 7200)
    with pytest.raises(ChannelNotOpen):
        transition(state, pay(1, 81))
    state = transition(state, ChannelClosed(CID, 80, 4920)).new_state
    assert state.status == ChannelStatus.CLOSED


def test_refreshing_a_known_channel_keeps_the_accepted_amount() -> None:
    state = make_state(accepted=70)
    fresh = transition(state, ChannelOpened(make_channel(deposit=2000, claimed=30))).new_state
    assert (fresh.deposit, fresh.claimed, fresh.accepted) == (2000, 30, 70)


def test_payer_side() -> None:
    ch = make_channel()
    state = PayerChannelState(
        CID, ch.payer, ch.payee, ch.token, 100, ch.challenge_period, 0, ChannelStatus.OPEN
    )
    result = transition(state, MakePayment(CID, TASK, 30))
    assert result.events == (SignVoucher(CID, TASK, 30, 30),)
    state = transition(result.new_state, VoucherSigned(CID, 30, SIG)).new_state
    assert (state.signed, state.signature) == (30, SIG)
    with pytest.raises(ExceedsDeposit):
        transition(state, MakePayment(CID, TASK, 71))
    with pytest.raises(StaleVoucher):
        transition(state, VoucherSigned(CID, 29, SIG))


CHANGES: list[StateChange] = [
    ChannelOpened(make_channel(deposit=2**256 - 1)),
    ChannelToppedUp(CID, 2**200),
    Claimed(CID, 5, 5),
    CloseStarted(CID, 123),
    ChannelClosed(CID, 1, 2),
    pay(3, 3, prior=PriorPayment(3, SIG)),
    pay(3, 3),
    MakePayment(CID, TASK, 4),
    VoucherSigned(CID, 4, SIG),
]


@pytest.mark.parametrize("change", CHANGES)
def test_changes_roundtrip_through_json(change: StateChange) -> None:
    assert decode_change(json.loads(json.dumps(encode_change(change)))) == change


# --- properties --------------------------------------------------------------------------------


@settings(max_examples=200)
@given(
    deposit=st.integers(0, 2**256 - 1),
    amounts=st.lists(st.integers(-3, 2**255), max_size=20),
)
def test_accepted_only_rises_and_stays_within_deposit(deposit: int, amounts: list[int]) -> None:
    state = make_state(deposit=deposit)
    for i, amount in enumerate(amounts):
        change = pay(amount, state.accepted + amount, task_hash=i.to_bytes(32, "big"))
        try:
            new = transition(state, change).new_state
        except (PaymentRejected, InvalidAmount):
            continue
        assert new.accepted > state.accepted
        assert new.accepted <= deposit
        state = new


class PayeeMachine(RuleBasedStateMachine):
    """Random interleavings of chain events and (honest, stale, replayed, forged) payments."""

    @initialize(deposit=st.integers(0, 10**6))
    def open_channel(self, deposit: int) -> None:
        self.log: list[StateChange] = [ChannelOpened(make_channel(deposit=deposit))]
        self.state: PayeeChannelState = transition(None, self.log[0]).new_state
        self.paid: dict[bytes, tuple[int, bytes]] = {}
        self.total = 0
        self.now = 1_000

    def _apply(self, change: StateChange) -> bool:
        before = self.state
        try:
            result = transition(self.state, change)
        except (PaymentRejected, InvalidAmount):
            assert self.state is before
            return False
        assert result.new_state.accepted >= before.accepted  # only ever rises
        self.log.append(change)
        self.state = result.new_state
        return True

    @rule(amount=st.integers(-2, 10**5), task=st.integers(0, 30), honest=st.booleans())
    def pay(self, amount: int, task: int, honest: bool) -> None:
        task_hash = task.to_bytes(32, "big")
        cumulative = self.state.accepted + amount if honest else max(0, self.state.accepted - 1)
        sig = cumulative.to_bytes(65, "big", signed=True)
        prior = self.paid.get(task_hash)
        change = pay(
            amount,
            cumulative,
            task_hash=task_hash,
            voucher_signature=sig,
            now=self.now,
            prior=PriorPayment(*prior) if prior else None,
        )
        if self._apply(change) and prior is None:
            self.paid[task_hash] = (cumulative, sig)
            self.total += amount

    @rule(task=st.integers(0, 30))
    def replay(self, task: int) -> None:
        task_hash = task.to_bytes(32, "big")
        prior = self.paid.get(task_hash)
        if prior is None:
            return
        before = self.state
        change = pay(
            1,
            prior[0],
            task_hash=task_hash,
            voucher_signature=prior[1],
            prior=PriorPayment(*prior),
        )
        assert self._apply(change)
        assert self.state == before

    @rule(forger=st.binary(min_size=20, max_size=20))
    def forged(self, forger: bytes) -> None:
        if forger != PAYER_BYTES:
            assert not self._apply(pay(1, self.state.accepted + 1, signer=forger))

    @rule(extra=st.integers(0, 10**6))
    def top_up(self, extra: int) -> None:
        self._apply(ChannelToppedUp(CID, self.state.deposit + extra))

    @precondition(lambda self: self.state.accepted > self.state.claimed)
    @rule()
    def claim(self) -> None:
        self._apply(Claimed(CID, self.state.accepted, self.state.accepted - self.state.claimed))

    @precondition(lambda self: self.state.status == ChannelStatus.OPEN)
    @rule(delay=st.integers(0, 10**4))
    def start_close(self, delay: int) -> None:
        self._apply(CloseStarted(CID, self.now + delay))

    @rule(dt=st.integers(0, 100))
    def tick(self, dt: int) -> None:
        self.now += dt

    @invariant()
    def accepted_within_deposit_and_equals_sum_of_payments(self) -> None:
        assert self.state.accepted <= self.state.deposit
        assert self.state.accepted == self.total
        assert self.state.claimed <= self.state.accepted

    @invariant()
    def replaying_the_log_rebuilds_the_state(self) -> None:
        state = None
        for change in self.log:
            state = transition(state, decode_change(encode_change(change))).new_state
        assert state == self.state


TestPayeeMachine = PayeeMachine.TestCase
TestPayeeMachine.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)


def test_replay_is_answered_even_after_close_started() -> None:
    state = make_state(accepted=10, status=ChannelStatus.CLOSING, closes_at=5_000)
    result = transition(state, pay(10, 10, prior=PriorPayment(10, SIG)))
    assert result.events == (PaymentReplayed(CID, TASK, 10),)
