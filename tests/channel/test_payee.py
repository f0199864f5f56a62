"""PayeeService end to end on SQLite with the in-memory chain twin; GroupCommitter; Settings."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from payee_helpers import DOMAIN, PAYEE, PAYEE_KEY, PAYER_KEY, make_onchain

from channel.config import Settings
from channel.errors import (
    ChallengePeriodTooShort,
    ChannelNotOpen,
    ExceedsDeposit,
    InvalidAmount,
    InvalidBytes32,
    InvalidTaskId,
    MalformedSignature,
    PieceworkError,
    StaleVoucher,
    TaskConflict,
    UnknownChannel,
    WrongSigner,
)
from channel.messages import CloseConsent, Receipt, Voucher, task_id_hash
from channel.payee import GroupCommitter, InMemoryChannelSource, PayeeService, PaymentRequest
from channel.signing import Signer, recover
from channel.state import ChannelStatus, PaymentAccepted
from channel.store import PayeeStore, PendingPayment, make_engine, migrate

CID = b"\xc1" * 32
PAYER_SIGNER = Signer(PAYER_KEY)


def sig(cumulative: int, channel_id: bytes = CID, signer: Signer = PAYER_SIGNER) -> bytes:
    return signer.sign(DOMAIN, Voucher(channel_id, cumulative))


@pytest.fixture
def source() -> InMemoryChannelSource:
    return InMemoryChannelSource([make_onchain(CID, deposit=100)])


@pytest.fixture
def service(tmp_path: Path, source: InMemoryChannelSource) -> Iterator[PayeeService]:
    engine = make_engine(f"sqlite:///{tmp_path}/payee.db")
    migrate(engine)
    yield PayeeService(PayeeStore(engine), Signer(PAYEE_KEY), DOMAIN, source)
    engine.dispose()


def test_accept_fetches_the_channel_and_returns_a_verifiable_receipt(
    service: PayeeService,
) -> None:
    receipt = service.accept("0x" + CID.hex(), "task-1", "7", "7", "0x" + sig(7).hex(), 1)
    assert (receipt.channel_id, receipt.cumulative_amount) == (CID, 7)
    assert receipt.task_id == task_id_hash("task-1")
    assert recover(DOMAIN, Receipt(CID, 7, receipt.task_id), receipt.signature) == PAYEE
    assert receipt.as_json() == {
        "channel_id": "0x" + CID.hex(),
        "cumulative_amount": "7",
        "task_id": "0x" + receipt.task_id.hex(),
        "signature": "0x" + receipt.signature.hex(),
    }
    assert service.latest(CID).accepted == 7


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((b"\x01" * 31, "t", 1, 1, sig(1)), InvalidBytes32),
        ((CID, "", 1, 1, sig(1)), InvalidTaskId),
        ((CID, "t", "01", 1, sig(1)), InvalidAmount),
        ((CID, "t", 1, -1, sig(1)), InvalidAmount),
        ((CID, "t", 0, 0, sig(0)), InvalidAmount),
        ((CID, "t", 1, 1, sig(1)[:64] + b"\x00"), MalformedSignature),
        ((CID, "t", 1, 1, sig(2)), WrongSigner),
        ((CID, "t", 1, 1, sig(1, signer=Signer(PAYEE_KEY))), WrongSigner),
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


def test_close_consent_is_for_the_latest_voucher(service: PayeeService) -> None:
    service.accept(CID, "a", 30, 30, sig(30), now=1)
    amount, signature = service.close_consent(CID)
    assert amount == 30
    assert recover(DOMAIN, CloseConsent(CID, 30), signature) == PAYEE
    with pytest.raises(UnknownChannel):
        service.close_consent(b"\x09" * 32)


def test_close_consent_freezes_the_accepted_amount(service: PayeeService) -> None:
    # A payer holding a consent for 30 could close at 30 any time: accepting a voucher for 40
    # afterwards would hand out a receipt that is never paid.
    service.accept(CID, "a", 30, 30, sig(30), now=1)
    assert service.close_consent(CID)[0] == 30
    with pytest.raises(ChannelNotOpen, match="consented to close it at 30"):
        service.accept(CID, "b", 10, 40, sig(40), now=1)
    # A retry of an already-receipted task still gets its receipt; the consent stays at 30.
    assert service.accept(CID, "a", 30, 30, sig(30), now=1).cumulative_amount == 30
    assert service.close_consent(CID)[0] == 30
    assert service.latest(CID).accepted == 30


def test_close_consent_freezes_payments_decided_before_it(service: PayeeService) -> None:
    # A payment verified before the consent but committed after it must lose the race.
    service.accept(CID, "a", 30, 30, sig(30), now=1)
    state, stored = service.store.load(CID, task_id_hash("b"))
    service.close_consent(CID)
    assert state is not None and stored is None
    event = PaymentAccepted(CID, task_id_hash("b"), 10, 30, 40, sig(40))
    assert service.store.accept_payment(PendingPayment(event, "b", b"\x01" * 65)) is False
    assert service.latest(CID).accepted == 30


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


def test_settings_defaults_env_and_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PIECEWORK_PRIVATE_KEY", PAYEE_KEY)
    monkeypatch.setenv("PIECEWORK_CONTRACT_ADDRESS", DOMAIN.verifying_contract.lower())
    monkeypatch.setenv("PIECEWORK_PORT", "9000")
    settings = Settings()
    assert settings.port == 9000
    assert settings.host == "127.0.0.1"
    assert settings.min_challenge_period == 3600
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
