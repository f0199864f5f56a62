"""PayeeService end to end on SQLite with the in-memory chain twin; GroupCommitter; Settings."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from payee_helpers import DOMAIN, PAYEE, PAYEE_KEY, PAYER_KEY, make_onchain

from channel import payee as payee_module
from channel.config import Settings
from channel.errors import (
    AccessDenied,
    AmountMismatch,
    ChallengePeriodTooShort,
    ChannelNotOpen,
    CloseNotAuthorized,
    ExceedsDeposit,
    InvalidAmount,
    InvalidBytes32,
    InvalidDescription,
    InvalidSignature,
    InvalidTaskId,
    MalformedSignature,
    PieceworkError,
    StaleVoucher,
    TaskConflict,
    TokenNotAccepted,
    UnknownChannel,
)
from channel.messages import (
    MAX_ACCESS_AHEAD,
    ZERO_ADDRESS,
    Access,
    CloseConsent,
    CloseRequest,
    Receipt,
    Voucher,
    format_access,
    task_id_hash,
)
from channel.payee import GroupCommitter, InMemoryChannelSource, PayeeService, PaymentRequest
from channel.signing import Signer, recover
from channel.state import ChannelStatus, PaymentAccepted
from channel.store import PayeeStore, PendingPayment, make_engine, migrate

CID = b"\xc1" * 32
PAYER_SIGNER = Signer(PAYER_KEY)
VOUCHER_SIGNER = Signer("0x" + "5e" * 32)
STRANGER = Signer("0x" + "5f" * 32)
TOKEN = "0x" + "70" * 20
NOW = 1_700_000_000  # the service's clock in these tests


def sig(cumulative: int, channel_id: bytes = CID, signer: Signer = PAYER_SIGNER) -> bytes:
    return signer.sign(DOMAIN, Voucher(channel_id, cumulative))


def close_request(cumulative: int, signer: Signer = PAYER_SIGNER) -> bytes:
    return signer.sign(DOMAIN, CloseRequest(CID, cumulative))


def access(expires: int, signer: Signer = PAYER_SIGNER, channel_id: bytes = CID) -> str:
    return format_access(expires, signer.sign(DOMAIN, Access(channel_id, expires)))


@pytest.fixture
def source() -> InMemoryChannelSource:
    return InMemoryChannelSource(
        [make_onchain(CID, deposit=100, voucher_signer=VOUCHER_SIGNER.address)], now=10_000
    )


@pytest.fixture
def service(tmp_path: Path, source: InMemoryChannelSource) -> Iterator[PayeeService]:
    engine = make_engine(f"sqlite:///{tmp_path}/payee.db")
    migrate(engine)
    yield PayeeService(PayeeStore(engine), Signer(PAYEE_KEY), DOMAIN, source,
                       min_challenge_period=3600)
    engine.dispose()


def test_accept_fetches_the_channel_and_returns_a_verifiable_receipt(
    service: PayeeService,
) -> None:
    receipt = service.accept("0x" + CID.hex(), "task-1", "7", "7", "0x" + sig(7).hex(), 1)
    assert (receipt.channel_id, receipt.cumulative_amount, receipt.amount) == (CID, 7, 7)
    assert receipt.task_id == task_id_hash("task-1")
    assert recover(DOMAIN, Receipt(CID, 7, 7, receipt.task_id), receipt.signature) == PAYEE
    assert receipt.as_json() == {
        "channel_id": "0x" + CID.hex(),
        "task_id": "0x" + receipt.task_id.hex(),
        "amount": "7",
        "cumulative_amount": "7",
        "signature": "0x" + receipt.signature.hex(),
    }
    assert service.latest(CID).accepted == 7
    # The next receipt proves its own task's amount, not the running total.
    second = service.accept(CID, "task-2", 5, 12, sig(12), 1)
    assert recover(DOMAIN, Receipt(CID, 12, 5, task_id_hash("task-2")), second.signature) == PAYEE


def test_the_voucher_signer_pays_without_the_payer(service: PayeeService) -> None:
    receipt = service.accept(CID, "t", 9, 9, sig(9, signer=VOUCHER_SIGNER), 1)
    assert receipt.cumulative_amount == 9
    assert service.latest(CID).voucher_signature == sig(9, signer=VOUCHER_SIGNER)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((b"\x01" * 31, "t", 1, 1, sig(1)), InvalidBytes32),
        ((CID, "", 1, 1, sig(1)), InvalidTaskId),
        ((CID, "t", "01", 1, sig(1)), InvalidAmount),
        ((CID, "t", 1, -1, sig(1)), InvalidAmount),
        ((CID, "t", 0, 0, sig(0)), InvalidAmount),
        ((CID, "\x00", 1, 1, sig(1)), InvalidTaskId),
        ((CID, "t", 1, 1, sig(1)[:64]), MalformedSignature),
        ((CID, "t", 1, 1, sig(1)[:64] + b"\x00"), InvalidSignature),
        ((CID, "t", 1, 1, sig(2)), InvalidSignature),
        ((CID, "t", 1, 1, sig(1, signer=Signer(PAYEE_KEY))), InvalidSignature),
        ((CID, "t", 1, 1, sig(1, signer=STRANGER)), InvalidSignature),
        ((CID, "t", 2, 3, sig(3)), StaleVoucher),
        ((CID, "t", 101, 101, sig(101)), ExceedsDeposit),
        ((b"\x02" * 32, "t", 1, 1, sig(1, b"\x02" * 32)), UnknownChannel),
    ],
)
def test_accept_rejects(
    service: PayeeService, args: tuple[object, ...], error: type[PieceworkError]
) -> None:
    with pytest.raises(error):
        service.accept(*args, now=1)  # type: ignore[arg-type]
    state = service.store.channel(CID)
    assert state is None or state.accepted == 0


@pytest.mark.parametrize(
    ("onchain", "error"),
    [
        (make_onchain(CID, payee="0x" + "ee" * 20), UnknownChannel),
        (make_onchain(CID, status=ChannelStatus.CLOSING, closes_at=10_000), ChannelNotOpen),
        (make_onchain(CID, status=ChannelStatus.CLOSED), ChannelNotOpen),
        (make_onchain(CID, challenge_period=600), ChallengePeriodTooShort),
        (make_onchain(CID, token=TOKEN), TokenNotAccepted),
    ],
)
def test_channels_we_must_not_serve(
    service: PayeeService, source: InMemoryChannelSource, onchain: object, error: type[Exception]
) -> None:
    source.put(onchain)  # type: ignore[arg-type]
    with pytest.raises(error):
        service.accept(CID, "t", 1, 1, sig(1), now=1)


def test_stale_voucher_tells_the_current_amount(service: PayeeService) -> None:
    service.accept(CID, "a", 5, 5, sig(5), now=1)
    with pytest.raises(StaleVoucher) as info:
        service.accept(CID, "b", 1, 1, sig(1), now=1)
    assert info.value.current == 5


def test_same_task_other_voucher_conflicts(service: PayeeService) -> None:
    service.accept(CID, "a", 5, 5, sig(5), now=1)
    with pytest.raises(TaskConflict):
        service.accept(CID, "a", 1, 6, sig(6), now=1)


def test_missed_top_up_is_fetched_before_refusing(
    service: PayeeService, source: InMemoryChannelSource
) -> None:
    service.accept(CID, "a", 100, 100, sig(100), now=1)
    source.put(make_onchain(CID, deposit=150))
    assert service.accept(CID, "b", 50, 150, sig(150), now=1).cumulative_amount == 150
    with pytest.raises(ExceedsDeposit) as info:
        service.accept(CID, "c", 1, 151, sig(151), now=1)
    assert info.value.deposit == 150


def test_deposit_below_the_token_minimum_is_refused_until_topped_up(
    tmp_path: Path, source: InMemoryChannelSource
) -> None:
    source.put(make_onchain(CID, token=TOKEN, deposit=99))
    engine = make_engine(f"sqlite:///{tmp_path}/tokens.db")
    migrate(engine)
    service = PayeeService(PayeeStore(engine), Signer(PAYEE_KEY), DOMAIN, source,
                           accepted_tokens={ZERO_ADDRESS: 0, TOKEN: 100},
                           min_challenge_period=3600)
    with pytest.raises(TokenNotAccepted, match="at least 100"):
        service.accept(CID, "t", 1, 1, sig(1), now=1)
    source.put(make_onchain(CID, token=TOKEN, deposit=100))  # a top-up the mirror missed
    assert service.accept(CID, "t", 1, 1, sig(1), now=1).cumulative_amount == 1
    engine.dispose()


# --- close ----------------------------------------------------------------------------------------


def test_close_consent_is_for_the_latest_voucher(
    service: PayeeService, source: InMemoryChannelSource
) -> None:
    service.accept(CID, "a", 30, 30, sig(30), now=1)
    consent = service.close(CID, 30, close_request(30))
    assert (consent.cumulative_amount, consent.deadline) == (30, 10_000 + 900)
    message = CloseConsent(CID, 30, consent.deadline)
    assert recover(DOMAIN, message, consent.signature) == PAYEE
    # The voucher signer may ask too, for the same consent.
    assert service.close(CID, 30, close_request(30, VOUCHER_SIGNER)) == consent
    with pytest.raises(UnknownChannel):
        service.close(b"\x09" * 32, 0, close_request(0))


@pytest.mark.parametrize(
    "signature",
    [close_request(30, STRANGER), close_request(31), close_request(30, Signer(PAYEE_KEY)),
     sig(30), close_request(30)[:64] + b"\x1d"],
    ids=["stranger", "other amount", "payee", "a voucher", "bad v"],
)
def test_close_not_signed_by_the_payer_side_changes_nothing(
    service: PayeeService, signature: bytes
) -> None:
    service.accept(CID, "a", 30, 30, sig(30), now=1)
    with pytest.raises(CloseNotAuthorized):
        service.close(CID, 30, signature)
    assert service.latest(CID).consent_deadline is None
    assert service.store.consent(CID) is None
    assert service.accept(CID, "b", 1, 31, sig(31), now=1).cumulative_amount == 31


def test_close_at_another_amount_is_stale(service: PayeeService) -> None:
    service.accept(CID, "a", 30, 30, sig(30), now=1)
    with pytest.raises(StaleVoucher) as info:
        service.close(CID, 20, close_request(20))
    assert info.value.current == 30
    assert service.store.consent(CID) is None


def test_consent_freezes_until_block_time_passes_its_deadline(
    service: PayeeService, source: InMemoryChannelSource
) -> None:
    # While the payer may close at 30, a voucher for 40 would buy a receipt never paid.
    service.accept(CID, "a", 30, 30, sig(30), now=1)
    consent = service.close(CID, 30, close_request(30))
    for block_time in (10_000, consent.deadline):
        source.now = block_time
        with pytest.raises(ChannelNotOpen, match="frozen"):
            service.accept(CID, "b", 10, 40, sig(40), now=1)
        # The same request during the freeze gets the same consent back.
        assert service.close(CID, 30, close_request(30)) == consent
    with pytest.raises(StaleVoucher):
        service.close(CID, 40, close_request(40))
    # A retry of an already-receipted task still gets its receipt.
    assert service.accept(CID, "a", 30, 30, sig(30), now=1).cumulative_amount == 30
    source.now = consent.deadline + 1
    time.sleep(1.1)  # the service reads block time at most once a second for frozen channels
    assert service.accept(CID, "b", 10, 40, sig(40), now=1).cumulative_amount == 40
    fresh = service.close(CID, 40, close_request(40))
    assert (fresh.cumulative_amount, fresh.deadline) == (40, consent.deadline + 1 + 900)


def test_a_frozen_channel_reads_block_time_at_most_once_a_second(
    service: PayeeService, source: InMemoryChannelSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    service.accept(CID, "a", 30, 30, sig(30), now=1)
    service.close(CID, 30, close_request(30))
    reads = {"n": 0}
    real = source.chain_time

    def counted() -> int:
        reads["n"] += 1
        return real()

    monkeypatch.setattr(source, "chain_time", counted)
    time.sleep(1.1)
    for i in range(20):  # a payer hammering the frozen channel
        with pytest.raises(ChannelNotOpen):
            service.accept(CID, f"b{i}", 10, 40, sig(40), now=1)
    assert reads["n"] == 1


def test_consent_freezes_payments_decided_before_it(service: PayeeService) -> None:
    # A payment verified before the consent but committed after it must lose the race.
    service.accept(CID, "a", 30, 30, sig(30), now=1)
    snap = service.store.load(CID, task_id_hash("b"))
    service.close(CID, 30, close_request(30))
    state = snap.state(CID)
    assert state is not None
    event = PaymentAccepted(CID, task_id_hash("b"), 10, 30, 40, sig(40), state.revision)
    assert service.store.accept_payment(PendingPayment(event, "b", b"\x01" * 65)) is False
    assert service.latest(CID).accepted == 30


def test_consent_of_a_closed_channel_is_refused(
    service: PayeeService, source: InMemoryChannelSource
) -> None:
    source.put(make_onchain(CID, deposit=100, status=ChannelStatus.CLOSED))
    with pytest.raises(ChannelNotOpen):
        service.close(CID, 0, close_request(0))


def test_consent_ttl_is_bounded() -> None:
    with pytest.raises(ValueError, match="consent_ttl"):
        PayeeService(None, Signer(PAYEE_KEY), DOMAIN, consent_ttl=3601)  # type: ignore[arg-type]


# --- tasks ----------------------------------------------------------------------------------------


def test_requested_task_is_paid_at_its_amount_and_marked_paid(service: PayeeService) -> None:
    task, created = service.request_task(CID, "logo", "25", "Logo draft\n\tsecond round", NOW)
    assert created and (task.status, task.amount, task.requested_at) == ("requested", 25, NOW)
    with pytest.raises(AmountMismatch) as info:
        service.accept(CID, "logo", 24, 24, sig(24), now=1)
    assert info.value.details["requested"] == 25
    receipt = service.accept(CID, "logo", 25, 25, sig(25), now=1)
    (paid,) = service.tasks(CID)
    assert paid.status == "paid" and paid.receipt is not None
    assert paid.receipt.receipt_signature == receipt.signature
    # Unrequested task ids are still paid (metered use).
    assert service.accept(CID, "metered", 3, 28, sig(28), now=1).cumulative_amount == 28
    assert [t.task_id for t in service.tasks(CID)] == ["logo"]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((CID, "", 1, "d"), InvalidTaskId),
        ((CID, "x" * 257, 1, "d"), InvalidTaskId),
        ((CID, "bell\x07", 1, "d"), InvalidTaskId),
        ((CID, "t", 0, "d"), InvalidAmount),
        ((CID, "t", "1.5", "d"), InvalidAmount),
        ((CID, "t", 1, "x" * 2001), InvalidDescription),
        ((CID, "t", 1, "escape \x1b[31m"), InvalidDescription),
        ((CID, "t", 1, "lone \ud800"), InvalidDescription),
        ((b"\x09" * 32, "t", 1, "d"), UnknownChannel),
    ],
)
def test_task_requests_refuse(
    service: PayeeService, args: tuple[object, ...], error: type[PieceworkError]
) -> None:
    with pytest.raises(error):
        service.request_task(*args, now=NOW)  # type: ignore[arg-type]
    assert service.store.channel(CID) is None or service.tasks(CID) == []


def test_tasks_on_a_closing_channel_are_refused(
    service: PayeeService, source: InMemoryChannelSource
) -> None:
    source.put(make_onchain(CID, status=ChannelStatus.CLOSING, closes_at=20_000))
    with pytest.raises(ChannelNotOpen):
        service.request_task(CID, "t", 1, "", NOW)


def test_the_same_request_is_idempotent_another_conflicts(service: PayeeService) -> None:
    first, _ = service.request_task(CID, "t", 5, "d", NOW)
    again, created = service.request_task(CID, "t", 5, "d", NOW + 60)
    assert not created and again == first
    with pytest.raises(TaskConflict):
        service.request_task(CID, "t", 6, "d", NOW)


# --- access ---------------------------------------------------------------------------------------


def test_access_by_the_payer_side(service: PayeeService) -> None:
    service.check_access(CID, access(NOW + 60), NOW)
    service.check_access(CID, access(NOW + 60, VOUCHER_SIGNER), NOW)
    service.check_access(CID, access(NOW), NOW)
    service.check_access(CID, access(NOW + MAX_ACCESS_AHEAD), NOW)


@pytest.mark.parametrize(
    ("credential", "why"),
    [
        (access(NOW + 60, STRANGER), "signer"),
        (access(NOW + 60, Signer(PAYEE_KEY)), "signer"),
        (access(NOW + 60, channel_id=b"\x09" * 32), "signer"),
        (access(NOW - 1), "expired"),
        (access(NOW + MAX_ACCESS_AHEAD + 1), "more than"),
        (f"{NOW + 60}", "malformed"),
        ("soon.0x" + "11" * 65, "malformed"),
        (access(NOW + 60)[:-2] + "1d", "signature"),
    ],
)
def test_access_denied(service: PayeeService, credential: str, why: str) -> None:
    with pytest.raises(AccessDenied, match=why):
        service.check_access(CID, credential, NOW)


def test_group_committer_under_threads(
    service: PayeeService, source: InMemoryChannelSource
) -> None:
    channels = [bytes([i]) * 32 for i in range(1, 5)]
    for c in channels:
        source.put(make_onchain(c, deposit=10**6))
        service.latest(c)
    committer = GroupCommitter(service, max_batch=16)
    errors: list[BaseException] = []

    def payer(k: int) -> None:
        c = channels[k % len(channels)]
        try:
            for step in range(25):
                request_cumulative = None
                current = service.latest(c).accepted
                while True:
                    request_cumulative = current + 1
                    req = PaymentRequest(
                        c, f"{k}-{step}", 1, request_cumulative, sig(request_cumulative, c), 1
                    )
                    try:
                        committer.accept(req)
                        break
                    except StaleVoucher as exc:
                        current = exc.current
            again = committer.accept(req)  # idempotent through the committer too
            assert again.cumulative_amount == request_cumulative
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=payer, args=(k,)) for k in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    committer.close()
    assert errors == []
    for c in channels:
        payments = service.store.payments(c)
        assert len(payments) == 3 * 25
        assert service.latest(c).accepted == sum(p.amount for p in payments) == 75


def test_a_batch_that_fails_oddly_is_redone_alone_and_leaves_no_overlay(
    service: PayeeService, source: InMemoryChannelSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    service.latest(CID)
    real = service.store.accept_payments
    calls = {"n": 0}

    def fail_the_first_batch(batch: list[PendingPayment], now: float | None = None) -> bool:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("not a StoreError")
        return real(batch, now)

    monkeypatch.setattr(service.store, "accept_payments", fail_the_first_batch)
    committer = GroupCommitter(service, max_batch=8, max_wait=0.3)
    try:
        futures = [committer.submit(PaymentRequest(CID, f"t{i}", 1, i, sig(i), 1))
                   for i in (1, 2, 3)]
        assert [f.result(30).cumulative_amount for f in futures] == [1, 2, 3]
        assert committer._overlay == {} and committer._inflight_tasks == {}
        assert service.latest(CID).accepted == 3
    finally:
        committer.close()


def test_settings_defaults_env_and_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PIECEWORK_PRIVATE_KEY", PAYEE_KEY)
    monkeypatch.setenv("PIECEWORK_CONTRACT_ADDRESS", DOMAIN.verifying_contract.lower())
    monkeypatch.setenv("PIECEWORK_PORT", "9000")
    settings = Settings()
    assert settings.port == 9000
    assert settings.host == "127.0.0.1"
    assert settings.min_challenge_period == 86_400  # 24 h: survives an L2 sequencer outage
    assert settings.contract_address == DOMAIN.verifying_contract
    assert settings.database_url == "sqlite:///./.piecework/piecework.db"
    assert (tmp_path / ".piecework").is_dir()
    assert PAYEE_KEY[2:] not in repr(settings) + str(settings)
    assert settings.private_key is not None
    assert settings.private_key.get_secret_value() == PAYEE_KEY


def test_settings_reject_a_bad_checksum(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = "0x5fbDB2315678afecb367f032d93F642f64180aa3"
    monkeypatch.setenv("PIECEWORK_CONTRACT_ADDRESS", bad)
    with pytest.raises(ValueError, match="checksum"):
        Settings()


def test_an_unknown_channel_is_remembered_for_a_while_then_asked_again(
    service: PayeeService, source: InMemoryChannelSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 11 item 6: a channel id the chain does not know costs one node read per
    UNKNOWN_CHANNEL_TTL, not one per request; a channel opened meanwhile is found after it."""
    other = b"\x0e" * 32
    reads: list[bytes] = []
    real_get = source.get

    def counting_get(channel_id: bytes) -> object:
        reads.append(channel_id)
        return real_get(channel_id)

    monkeypatch.setattr(source, "get", counting_get)
    clock = [1_000.0]
    monkeypatch.setattr(payee_module.time, "monotonic", lambda: clock[0])
    for _ in range(3):
        with pytest.raises(UnknownChannel):
            service.accept(other, "t", 1, 1, sig(1, other), 1)
    assert reads == [other]
    source.put(make_onchain(other, deposit=100))  # opened meanwhile
    clock[0] += payee_module.UNKNOWN_CHANNEL_TTL - 0.5
    with pytest.raises(UnknownChannel):
        service.accept(other, "t", 1, 1, sig(1, other), 1)
    assert reads == [other]
    clock[0] += 1.0
    assert service.accept(other, "t", 1, 1, sig(1, other), 1).cumulative_amount == 1
    assert reads == [other, other]
