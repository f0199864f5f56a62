"""Issue #11 item 7: a value PostgreSQL refuses must fail its own payment only.

The group committer writes concurrent payments in one transaction. psycopg refuses a NUL byte
in a text column with ``DataError``, which is not a race: in v1 that error escaped the batch,
answered every honest payment that shared it with a 500, and left the batch's channel states
in the committer's overlay, so later payments on those channels were decided on a state that
never reached the database. The protocol now refuses such task ids up front
(``invalid_task_id``); this test lets one through on purpose, because the next value a
database refuses will not be a NUL.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from eth_hash.auto import keccak
from piecework_testnode import ANVIL_KEYS, CHAIN_ID, sqlalchemy_url
from reliability_harness import record
from sqlalchemy.engine import Engine

import channel.payee
from channel.errors import StoreError
from channel.messages import Domain, Receipt, Voucher
from channel.payee import GroupCommitter, InMemoryChannelSource, PayeeService, PaymentRequest
from channel.signing import Signer, recover
from channel.state import ChannelStatus, OnchainChannel
from channel.store import PayeeStore, make_engine, migrate

pytestmark = pytest.mark.postgres

DOMAIN = Domain(CHAIN_ID, "0x5FbDB2315678afecb367f032d93F642f64180aa3")
PAYER = Signer(ANVIL_KEYS[1])
PAYEE = Signer(ANVIL_KEYS[2])
A, B, C = (bytes([n]) * 32 for n in (0xA1, 0xB2, 0xC3))


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[Engine]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    engine = make_engine(sqlalchemy_url(pg_url) + f"?options=-csearch_path%3D{schema}")
    migrate(engine)
    yield engine
    engine.dispose()


def _request(cid: bytes, task: str, amount: int, cumulative: int) -> PaymentRequest:
    signature = PAYER.sign(DOMAIN, Voucher(cid, cumulative))
    return PaymentRequest(cid, task, amount, cumulative, signature, 1)


def test_a_refused_row_fails_only_its_own_payment(
    pg_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    channels = [
        OnchainChannel(c, PAYER.address, PAYEE.address, "0x" + "00" * 20, 10**30, 0, 3600, 0,
                       ChannelStatus.OPEN)
        for c in (A, B, C)
    ]
    service = PayeeService(PayeeStore(pg_engine), PAYEE, DOMAIN, InMemoryChannelSource(channels),
                           min_challenge_period=3600)
    for c in (A, B, C):
        service.latest(c)  # mirrored before the batch, as the watcher would have
    # Let the NUL byte past the protocol's task id check (see the module docstring).
    monkeypatch.setattr(channel.payee, "task_id_hash", lambda task: keccak(task.encode()))
    committer = GroupCommitter(service, max_batch=64, max_wait=0.5)
    try:
        batch = [
            _request(A, "honest-a1", 3, 3),
            _request(B, "honest-b1", 5, 5),
            _request(C, "bad\x00task", 7, 7),
            _request(A, "honest-a2", 4, 7),
        ]
        futures = [committer.submit(r) for r in batch]
        outcomes: list[object] = []
        for future in futures:
            try:
                outcomes.append(future.result(timeout=60))
            except Exception as exc:  # the outcome is what is checked
                outcomes.append(exc)
        assert committer.batches == 1, "the four payments must share one batch for this test"

        honest = [outcomes[i] for i in (0, 1, 3)]
        assert all(isinstance(r, channel.payee.SignedReceipt) for r in honest), outcomes
        assert isinstance(outcomes[2], StoreError), outcomes[2]
        for request, receipt in zip((batch[0], batch[1], batch[3]), honest, strict=True):
            assert isinstance(receipt, channel.payee.SignedReceipt)
            message = Receipt(receipt.channel_id, receipt.cumulative_amount, receipt.amount,
                              receipt.task_id)
            assert recover(DOMAIN, message, receipt.signature) == PAYEE.address
            stored = service.store.payment(receipt.channel_id, receipt.task_id)
            assert stored is not None and stored.receipt_signature == receipt.signature
            assert request.cumulative_amount == receipt.cumulative_amount
        assert [service.store.channel(c).accepted for c in (A, B, C)] == [7, 5, 0]  # type: ignore[union-attr]

        # Nothing of the batch is left in the committer's overlay ...
        assert committer._overlay == {}
        assert committer._inflight_tasks == {}
        # ... so the refused payment's channel is decided on what the database holds.
        again = committer.accept(_request(C, "honest-c1", 7, 7))
        assert again.cumulative_amount == 7
        record("batch/refused-row-postgres", batch=len(batch), honest_receipts=len(honest),
               refused=1, overlay_left=len(committer._overlay))
    finally:
        committer.close()
