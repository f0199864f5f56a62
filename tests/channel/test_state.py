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
    AmountMismatch,
    ChallengePeriodTooShort,
    ChannelNotOpen,
    ExceedsDeposit,
    InvalidAmount,
    InvalidSignature,
    PaymentRejected,
    PieceworkError,
    StaleVoucher,
    TaskConflict,
    TokenNotAccepted,
    UnknownChannel,
)
from channel.messages import ZERO_ADDRESS
from channel.state import (
    ChannelClosed,
    ChannelOpened,
    ChannelStatus,
    ChannelToppedUp,
    Claimed,
    CloseStarted,
    ConsentGiven,
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
SIGNER = "0x" + "cc" * 20
SIGNER_BYTES = b"\xcc" * 20
TOKEN = "0x" + "70" * 20
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
        # The contract's maximum (30 days): above any service minimum, whatever its default.
        "challenge_period": 30 * 86_400,
        "closes_at": 0,
        "status": ChannelStatus.OPEN,
    }
    fields.update(kw)
    return OnchainChannel(**fields)  # type: ignore[arg-type]


def make_state(
    accepted: int = 0, consent_deadline: int | None = None, **kw: object
) -> PayeeChannelState:
    state = transition(None, ChannelOpened(make_channel(**kw))).new_state
    assert isinstance(state, PayeeChannelState)
    return dataclasses.replace(state, accepted=accepted, consent_deadline=consent_deadline)


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


def test_voucher_signer_may_sign_and_the_payer_still_may() -> None:
    state = make_state(voucher_signer=SIGNER)
    state = transition(state, pay(10, 10, signer=SIGNER_BYTES)).new_state
    state = transition(state, pay(5, 15, signer=PAYER_BYTES, task_hash=b"\x01" * 32)).new_state
    assert state.accepted == 15


def test_requested_task_paid_at_its_amount_is_marked_requested() -> None:
    state = dataclasses.replace(make_state(), revision=3)
    result = transition(state, pay(10, 10, requested_amount=10))
    # The revision the decision saw travels with it to the store's compare-and-set.
    assert result.events == (PaymentAccepted(CID, TASK, 10, 0, 10, SIG, 3, True),)


def test_frozen_until_block_time_passes_the_deadline() -> None:
    state = make_state(accepted=5, consent_deadline=2_000)
    for chain_time in (0, 1_999, 2_000):
        with pytest.raises(ChannelNotOpen, match="frozen") as info:
            transition(state, pay(1, 6, chain_time=chain_time))
        assert info.value.details["deadline"] == 2_000
    assert transition(state, pay(1, 6, chain_time=2_001)).new_state.accepted == 6


def test_consent_is_for_the_latest_amount_and_bumps_the_revision() -> None:
    state = make_state(accepted=5)
    frozen = transition(state, ConsentGiven(CID, 5, 2_000)).new_state
    assert (frozen.consent_deadline, frozen.revision) == (2_000, state.revision + 1)
    # A second consent never shortens the freeze of the first (found by PayeeMachine).
    again = transition(frozen, ConsentGiven(CID, 5, 1_000)).new_state
    assert again.consent_deadline == 2_000
    with pytest.raises(StaleVoucher) as info:
        transition(state, ConsentGiven(CID, 4, 2_000))
    assert info.value.current == 5
    transition(make_state(status=ChannelStatus.CLOSING), ConsentGiven(CID, 0, 1))
    with pytest.raises(ChannelNotOpen):
        transition(make_state(status=ChannelStatus.CLOSED), ConsentGiven(CID, 0, 1))


_ERC20_RULES = PayeeRules(accepted_tokens={ZERO_ADDRESS: 0, TOKEN: 500})


@pytest.mark.parametrize(
    ("state", "change", "error"),
    [
        # One problem per row, in PROTOCOL.md's order: each row also breaks every later rule
        # (a wrong signer, a stale amount), and the first one must be the one reported.
        (make_state(status=ChannelStatus.CLOSING), pay(1, 9, signer=b"\x01" * 20),
         ChannelNotOpen),
        (make_state(consent_deadline=10**9), pay(1, 9, signer=b"\x01" * 20), ChannelNotOpen),
        (make_state(token="0x" + "99" * 20), pay(1, 9, signer=b"\x01" * 20), TokenNotAccepted),
        (make_state(token=TOKEN, deposit=499), pay(1, 9, signer=b"\x01" * 20),
         TokenNotAccepted),
        (make_state(challenge_period=3599), pay(1, 9, signer=b"\x01" * 20),
         ChallengePeriodTooShort),
        (make_state(), pay(1, 9, signer=b"\x01" * 20), InvalidSignature),
        (make_state(), pay(2, 9, requested_amount=1), AmountMismatch),
    ],
)
def test_validation_order(
    state: PayeeChannelState, change: PaymentReceived, error: type[PieceworkError]
) -> None:
    with pytest.raises(error):
        transition(state, change, _ERC20_RULES)


def test_token_minimum_deposit_is_inclusive() -> None:
    transition(make_state(token=TOKEN, deposit=500), pay(1, 1), _ERC20_RULES)


@pytest.mark.parametrize(
    ("state", "change", "error"),
    [
        (make_state(status=ChannelStatus.CLOSING, closes_at=9_999), pay(1, 1), ChannelNotOpen),
        (make_state(status=ChannelStatus.CLOSED), pay(1, 1), ChannelNotOpen),
        (make_state(status=ChannelStatus.NONE), pay(1, 1), ChannelNotOpen),
        (make_state(challenge_period=3599), pay(1, 1), ChallengePeriodTooShort),
        (make_state(token=TOKEN), pay(1, 1), TokenNotAccepted),
        (make_state(), pay(1, 1, signer=b"\xab" * 20), InvalidSignature),
        (make_state(), pay(1, 1, signer=SIGNER_BYTES), InvalidSignature),
        # The zero address stands for "no voucher signer": a zero signer is never let through.
        (make_state(), pay(1, 1, signer=bytes(20)), InvalidSignature),
        (make_state(voucher_signer=SIGNER), pay(1, 1, signer=bytes(20)), InvalidSignature),
        (make_state(), pay(1, 1, requested_amount=2), AmountMismatch),
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
    pay(3, 3, chain_time=77, requested_amount=3),
    ConsentGiven(CID, 3, 2**64 - 1),
    ChannelOpened(make_channel(voucher_signer=SIGNER)),
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
    """Random interleavings of chain events, (honest, stale, replayed, forged) payments by the
    payer or the voucher signer, requested tasks, and close consents with their deadlines."""

    @initialize(deposit=st.integers(0, 10**6), with_signer=st.booleans())
    def open_channel(self, deposit: int, with_signer: bool) -> None:
        signer = SIGNER if with_signer else ZERO_ADDRESS
        self.log: list[StateChange] = [
            ChannelOpened(make_channel(deposit=deposit, voucher_signer=signer))
        ]
        self.state: PayeeChannelState = transition(None, self.log[0]).new_state
        self.paid: dict[bytes, tuple[int, bytes]] = {}
        self.requested: dict[bytes, int] = {}
        self.consents: list[tuple[int, int]] = []  # (amount, deadline)
        self.total = 0
        self.now = 1_000
        self.chain_time = 1_000

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

    @rule(amount=st.integers(-2, 10**5), task=st.integers(0, 30), honest=st.booleans(),
          by_signer=st.booleans())
    def pay(self, amount: int, task: int, honest: bool, by_signer: bool) -> None:
        task_hash = task.to_bytes(32, "big")
        cumulative = self.state.accepted + amount if honest else max(0, self.state.accepted - 1)
        sig = cumulative.to_bytes(65, "big", signed=True)
        prior = self.paid.get(task_hash)
        change = pay(
            amount,
            cumulative,
            task_hash=task_hash,
            voucher_signature=sig,
            signer=SIGNER_BYTES if by_signer else PAYER_BYTES,
            now=self.now,
            prior=PriorPayment(*prior) if prior else None,
            chain_time=self.chain_time,
            requested_amount=self.requested.get(task_hash),
        )
        accepted = self._apply(change)
        if accepted and prior is None:
            # Never while a consent is outstanding, never by a signer the channel lacks, and a
            # requested task only at its requested amount.
            assert all(self.chain_time > deadline for _, deadline in self.consents)
            assert not by_signer or self.state.voucher_signer == SIGNER
            assert self.requested.get(task_hash, amount) == amount
            self.paid[task_hash] = (cumulative, sig)
            self.total += amount

    @rule(task=st.integers(0, 30), amount=st.integers(1, 10**4))
    def request(self, task: int, amount: int) -> None:
        task_hash = task.to_bytes(32, "big")
        if task_hash not in self.paid:
            self.requested.setdefault(task_hash, amount)

    @rule(ttl=st.integers(0, 200), stale=st.booleans())
    def consent(self, ttl: int, stale: bool) -> None:
        amount = self.state.accepted - 1 if stale else self.state.accepted
        deadline = self.chain_time + ttl
        if self._apply(ConsentGiven(CID, amount, deadline)):
            assert amount == self.state.accepted and not stale
            self.consents.append((amount, deadline))

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
        if forger not in (PAYER_BYTES, SIGNER_BYTES):
            assert not self._apply(
                pay(1, self.state.accepted + 1, signer=forger, chain_time=self.chain_time)
            )

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

    @rule(dt=st.integers(0, 100), blocks=st.integers(0, 100))
    def tick(self, dt: int, blocks: int) -> None:
        self.now += dt
        self.chain_time += blocks

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
