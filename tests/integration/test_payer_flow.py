"""The payer library against anvil and the real payee service app (in-process)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from payee_twin import SERVICE_URL, PayeeTwin
from piecework_testnode import CHAIN_ID, Accounts, Deployment
from web3 import Web3

from channel.chain import ChainClient
from channel.errors import AmountMismatch, ExceedsDeposit, InvalidSignature
from channel.messages import Domain, Receipt, Voucher, task_id_hash
from channel.payer import Payer, ServiceError, ServiceUnavailable, open_payer_store
from channel.signing import Signer, recover
from channel.state import ChannelStatus

pytestmark = pytest.mark.integration

MakeClient = Callable[..., ChainClient]


def make_payer(make_client: MakeClient, accounts: Accounts, twin: PayeeTwin, db: Path,
               http: httpx.Client | None = None) -> Payer:
    store = open_payer_store(f"sqlite:///{db}")
    return Payer(make_client(accounts.payer), Signer(bytes(accounts.payer.key)), store,
                 http=http or twin.client())


def test_pay_stores_verified_receipts(
    make_client: MakeClient, accounts: Accounts, payee_twin: PayeeTwin, tmp_path: Path,
) -> None:
    payer = make_payer(make_client, accounts, payee_twin, tmp_path / "payer.db")
    channel_id = payer.open_channel(accounts.payee.address, 10**6, challenge_period=3600)
    receipts = [payer.pay(SERVICE_URL, channel_id, f"task-{i}", 1000 * i) for i in (1, 2, 3)]
    assert [r.cumulative_amount for r in receipts] == [1000, 3000, 6000]
    # Each receipt is stored with the next voucher's commit; the last one at flush/close.
    assert [r["task_id"] for r in payer.store.receipts(channel_id)] == ["task-1", "task-2"]
    payer.flush()
    stored = payer.store.receipts(channel_id)
    assert [(r["task_id"], r["cumulative_amount"]) for r in stored] == [
        ("task-1", 1000), ("task-2", 3000), ("task-3", 6000)]
    latest = payer.store.latest_voucher(channel_id)
    assert latest is not None and latest[0] == 6000
    service_side = payee_twin.service.store.channel(channel_id)
    assert service_side is not None and service_side.accepted == 6000


def test_voucher_is_stored_before_sending_and_resent_after_an_outage(
    make_client: MakeClient, accounts: Accounts, payee_twin: PayeeTwin, tmp_path: Path,
) -> None:
    payer = make_payer(make_client, accounts, payee_twin, tmp_path / "payer.db")
    channel_id = payer.open_channel(accounts.payee.address, 10**6, challenge_period=3600)
    payee_twin.offline = True
    with pytest.raises(ServiceUnavailable):
        payer.pay(SERVICE_URL, channel_id, "task-1", 700)
    pending = payer.store.latest_voucher(channel_id)
    assert pending is not None and pending[0] == 700  # durable although never delivered
    payee_twin.offline = False
    receipt = payer.pay(SERVICE_URL, channel_id, "task-1", 700)
    # The same cumulative amount again: byte-identical voucher, not a second one.
    assert receipt.cumulative_amount == 700
    latest = payer.store.latest_voucher(channel_id)
    assert latest == pending


def test_conflict_resyncs_from_the_service(
    make_client: MakeClient, accounts: Accounts, payee_twin: PayeeTwin, tmp_path: Path,
) -> None:
    laptop = make_payer(make_client, accounts, payee_twin, tmp_path / "laptop.db")
    channel_id = laptop.open_channel(accounts.payee.address, 10**6, challenge_period=3600)
    laptop.pay(SERVICE_URL, channel_id, "from-laptop", 1000)
    # A second device with the same key and an empty store starts at zero: 409, resync, retry.
    phone = make_payer(make_client, accounts, payee_twin, tmp_path / "phone.db")
    receipt = phone.pay(SERVICE_URL, channel_id, "from-phone", 500)
    assert receipt.cumulative_amount == 1500
    assert ("GET", f"/v1/channels/0x{channel_id.hex()}") in payee_twin.requests
    # Receipts name tasks by their hash; the string is only known for the device's own tasks.
    phone.flush()  # its own receipt is stored with its next voucher, or here
    tasks = {r["task_id"] for r in phone.store.receipts(channel_id)}
    assert tasks == {"0x" + task_id_hash("from-laptop").hex(), "from-phone"}


def test_a_receipt_not_signed_by_the_payee_is_rejected(
    make_client: MakeClient, accounts: Accounts, payee_twin: PayeeTwin, tmp_path: Path,
    deployment: Deployment,
) -> None:
    forger = Signer(bytes(accounts.third.key))
    domain = Domain(CHAIN_ID, deployment.channels)

    def tampering(request: httpx.Request) -> httpx.Response:
        response = payee_twin.handler(request)
        if request.method == "POST" and request.url.path.endswith("/payments"):
            body = json.loads(response.content)
            r = body["receipt"]
            forged = forger.sign(domain, Receipt(bytes.fromhex(r["channel_id"][2:]),
                                                 int(r["cumulative_amount"]), int(r["amount"]),
                                                 bytes.fromhex(r["task_id"][2:])))
            r["signature"] = "0x" + forged.hex()
            return httpx.Response(201, json=body)
        return response

    http = httpx.Client(transport=httpx.MockTransport(tampering))
    payer = make_payer(make_client, accounts, payee_twin, tmp_path / "payer.db", http)
    channel_id = payer.open_channel(accounts.payee.address, 10**6, challenge_period=3600)
    with pytest.raises(InvalidSignature, match=accounts.third.address):
        payer.pay(SERVICE_URL, channel_id, "task-1", 10)
    assert payer.store.receipts(channel_id) == []


def test_exceeding_the_deposit_is_refused_before_signing(
    make_client: MakeClient, accounts: Accounts, payee_twin: PayeeTwin, tmp_path: Path,
) -> None:
    payer = make_payer(make_client, accounts, payee_twin, tmp_path / "payer.db")
    channel_id = payer.open_channel(accounts.payee.address, 1000, challenge_period=3600)
    with pytest.raises(ExceedsDeposit, match="1001"):
        payer.pay(SERVICE_URL, channel_id, "too-big", 1001)
    assert payer.store.latest_voucher(channel_id) is None
    assert payee_twin.requests == []


def test_cooperative_close_through_the_service(
    make_client: MakeClient, accounts: Accounts, payee_twin: PayeeTwin, tmp_path: Path,
    w3: Web3,
) -> None:
    payer = make_payer(make_client, accounts, payee_twin, tmp_path / "payer.db")
    channel_id = payer.open_channel(accounts.payee.address, 10**6, challenge_period=3600)
    payer.pay(SERVICE_URL, channel_id, "a", 1234)
    payer.pay(SERVICE_URL, channel_id, "b", 766)
    before = w3.eth.get_balance(accounts.payee.address)
    payer.cooperative_close(SERVICE_URL, channel_id)
    assert w3.eth.get_balance(accounts.payee.address) - before == 2000
    assert payer.chain.get_channel(channel_id).status is ChannelStatus.CLOSED
    assert ("POST", f"/v1/channels/0x{channel_id.hex()}/close") in payee_twin.requests


def test_a_receipt_for_another_amount_is_rejected(
    make_client: MakeClient, accounts: Accounts, payee_twin: PayeeTwin, tmp_path: Path,
) -> None:
    def inflating(request: httpx.Request) -> httpx.Response:
        response = payee_twin.handler(request)
        if request.method == "POST" and request.url.path.endswith("/payments"):
            body = json.loads(response.content)
            body["receipt"]["amount"] = "11"
            return httpx.Response(201, json=body)
        return response

    http = httpx.Client(transport=httpx.MockTransport(inflating))
    payer = make_payer(make_client, accounts, payee_twin, tmp_path / "payer.db", http)
    channel_id = payer.open_channel(accounts.payee.address, 10**6, challenge_period=3600)
    with pytest.raises(ServiceError, match="expected"):
        payer.pay(SERVICE_URL, channel_id, "task-1", 10)
    assert payer.store.receipts(channel_id) == []


def test_a_voucher_signer_pays_every_task_without_the_wallet(
    make_client: MakeClient, accounts: Accounts, payee_twin: PayeeTwin, tmp_path: Path, w3: Web3,
) -> None:
    payer = make_payer(make_client, accounts, payee_twin, tmp_path / "payer.db")
    signer = Signer.generate()
    channel_id = payer.open_channel(accounts.payee.address, 10**6, challenge_period=3600,
                                    voucher_signer=signer)
    assert payer.store.voucher_signer(channel_id) == (signer.address, None)
    nonce = w3.eth.get_transaction_count(accounts.payer.address)
    for i in range(1, 4):
        payer.pay(SERVICE_URL, channel_id, f"t{i}", 100)
    latest = payer.store.latest_voucher(channel_id)
    assert latest is not None and latest[0] == 300
    assert recover(payer.domain, Voucher(channel_id, 300), latest[1]) == signer.address
    assert w3.eth.get_transaction_count(accounts.payer.address) == nonce  # no wallet use
    # A second device without the signer's key resyncs onto the signer's voucher and pays on.
    phone = make_payer(make_client, accounts, payee_twin, tmp_path / "phone.db")
    assert phone.pay(SERVICE_URL, channel_id, "from-phone", 50).cumulative_amount == 350
    # The close request comes from the voucher signer too; the payee claims 350 on chain.
    before = w3.eth.get_balance(accounts.payee.address)
    payer.cooperative_close(SERVICE_URL, channel_id)
    assert w3.eth.get_balance(accounts.payee.address) - before == 350


def test_the_client_pays_what_the_freelancer_requested(
    make_client: MakeClient, accounts: Accounts, payee_twin: PayeeTwin, tmp_path: Path,
) -> None:
    payer = make_payer(make_client, accounts, payee_twin, tmp_path / "payer.db")
    channel_id = payer.open_channel(accounts.payee.address, 10**6, challenge_period=3600)
    path = f"/v1/channels/0x{channel_id.hex()}/tasks"
    for task, amount in (("logo", 700), ("banner", 300)):
        created = payee_twin.operator("POST", path, json={
            "task_id": task, "amount": str(amount), "description": f"the {task}"})
        assert created.status_code == 201, created.text
    with pytest.raises(AmountMismatch):
        payer.pay(SERVICE_URL, channel_id, "logo", 699)
    asked = payer.tasks(SERVICE_URL, channel_id, "requested")
    assert [(t.task_id, t.amount, t.description) for t in asked] == [
        ("logo", 700, "the logo"), ("banner", 300, "the banner")]
    receipts = payer.pay_requested(SERVICE_URL, channel_id)
    assert [(r.task_id, r.amount, r.cumulative_amount) for r in receipts] == [
        ("logo", 700, 700), ("banner", 300, 1000)]
    assert payer.tasks(SERVICE_URL, channel_id, "requested") == []
    assert [t.status for t in payer.tasks(SERVICE_URL, channel_id)] == ["paid", "paid"]
