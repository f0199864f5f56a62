"""Client -> service flows on the chain twin: receipts, idempotency, paging, privacy, races."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from api_support import (
    AUTH,
    Twin,
    consent_signer,
    hx,
    receipt_signer,
    serve,
    settings_for,
    task_hex,
)

from api.main import Overrides, create_app
from channel.messages import Domain
from channel.payee import InMemoryChannelSource
from channel.signing import Signer
from channel.state import ChannelStatus


def test_pay_receipt_and_close_flow(twin: Twin) -> None:
    cid = twin.open(deposit=1000)
    info = twin.client.get("/v1/info").json()
    assert info["payees"] == [twin.payee.address]
    domain = Domain(info["chain_id"], info["contract"])

    total = 0
    for i, amount in enumerate([10, 20, 30]):
        total += amount
        response = twin.pay(cid, f"task-{i}", amount, total)
        assert response.status_code == 201
        assert response.headers["content-type"] == "application/json"
        receipt = response.json()["receipt"]
        assert receipt == {
            "channel_id": hx(cid),
            "cumulative_amount": str(total),
            "task_id": task_hex(f"task-{i}"),
            "signature": receipt["signature"],
        }
        assert receipt_signer(domain, receipt) == twin.payee.address

    view = twin.client.get(f"/v1/channels/{hx(cid)}").json()
    assert view["status"] == "open"
    assert view["deposit"] == "1000"
    assert view["latest"] == {"cumulative_amount": "60", "signature": twin.voucher(cid, 60)}

    consent = twin.client.post(f"/v1/channels/{hx(cid)}/close")
    assert consent.status_code == 200
    assert consent.json()["cumulative_amount"] == "60"
    assert consent_signer(domain, cid, consent.json()) == twin.payee.address

    # The consent makes 60 final: a later voucher is refused rather than receipted unpaid.
    late = twin.pay(cid, "task-late", 5, 65)
    assert late.status_code == 409
    assert late.json()["code"] == "channel_not_open"
    assert twin.client.post(f"/v1/channels/{hx(cid)}/close").json()["cumulative_amount"] == "60"


def test_same_task_and_voucher_again_returns_the_same_receipt(twin: Twin) -> None:
    cid = twin.open()
    first = twin.pay(cid, "t1", 7, 7)
    again = twin.pay(cid, "t1", 7, 7)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    # Still counted once.
    assert twin.client.get(f"/v1/channels/{hx(cid)}").json()["latest"]["cumulative_amount"] == "7"


def test_amounts_above_2_pow_53_survive_exactly(twin: Twin) -> None:
    big = 2**200 + 1
    cid = twin.open(deposit=2**255)
    receipt = twin.pay(cid, "big", big, big).json()["receipt"]
    assert receipt["cumulative_amount"] == str(big)
    page = twin.client.get(f"/v1/channels/{hx(cid)}/receipts").json()
    assert page["items"][0]["amount"] == str(big)


def test_receipts_page_and_hide_task_names_from_the_public(twin: Twin) -> None:
    cid = twin.open()
    for i in range(7):
        assert twin.pay(cid, f"secret-task-{i}", 1, i + 1).status_code == 201
    seen: list[dict[str, str | None]] = []
    cursor = None
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        page = twin.client.get(f"/v1/channels/{hx(cid)}/receipts", params=params).json()
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [r["cumulative_amount"] for r in seen] == [str(i) for i in range(1, 8)]
    assert all(r["task_id"] is None for r in seen)
    assert [r["task_hash"] for r in seen] == [task_hex(f"secret-task-{i}") for i in range(7)]
    for item in seen:
        receipt = {k: item[k] for k in ("channel_id", "cumulative_amount", "signature")}
        receipt["task_id"] = item["task_hash"]
        assert receipt_signer(twin.domain, receipt) == twin.payee.address  # type: ignore[arg-type]
    operator = twin.client.get(f"/v1/channels/{hx(cid)}/receipts", headers=AUTH).json()
    assert operator["items"][0]["task_id"] == "secret-task-0"


def test_channel_listing_pages_and_filters(twin: Twin) -> None:
    other_payer = Signer.generate()
    opened = [twin.open() for _ in range(4)] + [twin.open(payer=other_payer)]
    closing = twin.open(status=ChannelStatus.CLOSING)
    foreign = twin.open(payee="0x" + "22" * 20)
    for cid in [*opened, closing, foreign]:
        twin.client.get(f"/v1/channels/{hx(cid)}")  # mirror them
    ids: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = twin.client.get("/v1/channels", params=params, headers=AUTH).json()
        ids += [c["channel_id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert ids == sorted(hx(c) for c in [*opened, closing])  # never another payee's
    by_status = twin.client.get("/v1/channels?status=closing", headers=AUTH).json()
    assert [c["channel_id"] for c in by_status["items"]] == [hx(closing)]
    by_payer = twin.client.get(
        "/v1/channels", params={"payer": other_payer.address}, headers=AUTH
    ).json()
    assert [c["channel_id"] for c in by_payer["items"]] == [hx(opened[-1])]


def test_healthz_ok(twin: Twin) -> None:
    assert twin.client.get("/healthz").json() == {"status": "ok", "database": "ok", "node": "ok"}


# --- concurrency over real HTTP, on SQLite and PostgreSQL ---------------------------------------


def _pay_until_accepted(
    http: httpx.Client, twin: Twin, cid: bytes, task: str, amount: int
) -> dict[str, str]:
    """Pay ``amount``, moving to the current cumulative amount after each 409 (a racing payer)."""
    current = 0
    for _ in range(500):
        body = twin.body(cid, task, amount, current + amount)
        response = http.post(f"/v1/channels/{hx(cid)}/payments", json=body)
        if response.status_code == 201:
            receipt: dict[str, str] = response.json()["receipt"]
            return receipt
        assert response.status_code == 409, response.text
        assert response.json()["code"] == "stale_voucher"
        current = int(response.json()["current_cumulative_amount"])
    raise AssertionError("never accepted")


@pytest.mark.parametrize("group_commit", [False, True], ids=["direct", "group-commit"])
def test_fifty_racing_payers_on_one_channel_never_double_count(
    db_url: str, group_commit: bool
) -> None:
    source = InMemoryChannelSource()
    app = create_app(settings_for(db_url), Overrides(source=source, group_commit=group_commit))
    twin = Twin(None, source)  # type: ignore[arg-type]
    cid = twin.open(deposit=10**6)
    amounts = list(range(1, 51))
    start = threading.Barrier(len(amounts))
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        # The service has seen the channel before the crowd arrives (as after the payer's
        # first payment), so the race is on the payment path itself.
        assert http.get(f"/v1/channels/{hx(cid)}").status_code == 200

        def payer(i: int) -> dict[str, str]:
            # One client per payer, as separate payers have (one shared by 50 threads once
            # failed with a ReadError inside httpx's pool).
            with httpx.Client(base_url=url, timeout=30) as own:
                start.wait()
                return _pay_until_accepted(own, twin, cid, f"t{i}", amounts[i])

        with ThreadPoolExecutor(len(amounts)) as pool:
            receipts = list(pool.map(payer, range(len(amounts))))
        stored = http.get(f"/v1/channels/{hx(cid)}/receipts", params={"limit": 500}).json()
        view = http.get(f"/v1/channels/{hx(cid)}").json()

    cumulative = sorted(int(r["cumulative_amount"]) for r in receipts)
    assert len(set(cumulative)) == len(amounts)  # strictly increasing, no two alike
    assert cumulative[-1] == sum(amounts)
    assert int(view["latest"]["cumulative_amount"]) == sum(amounts)
    items = stored["items"]
    assert len(items) == len(amounts)
    assert sum(int(i["amount"]) for i in items) == sum(amounts)
    running = 0
    for item in items:  # in commit order every payment extends the previous by its amount
        running += int(item["amount"])
        assert int(item["cumulative_amount"]) == running


def test_fifty_payers_on_fifty_channels(db_url: str) -> None:
    source = InMemoryChannelSource()
    app = create_app(settings_for(db_url), Overrides(source=source))
    twin = Twin(None, source)  # type: ignore[arg-type]
    payers = [Signer.generate() for _ in range(50)]
    channels = [twin.open(deposit=10**6, payer=p) for p in payers]
    rounds = 5
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        for cid in channels:
            assert http.get(f"/v1/channels/{hx(cid)}").status_code == 200

        def payer(i: int) -> int:
            cid, total = channels[i], 0
            with httpx.Client(base_url=url, timeout=30) as own:
                for n in range(rounds):
                    total += n + 1
                    body = twin.body(cid, f"t{n}", n + 1, total, payers[i])
                    response = own.post(f"/v1/channels/{hx(cid)}/payments", json=body)
                    assert response.status_code == 201, response.text
            return total

        with ThreadPoolExecutor(50) as pool:
            totals = list(pool.map(payer, range(50)))
        views = [http.get(f"/v1/channels/{hx(c)}").json() for c in channels]
    expected = sum(range(1, rounds + 1))
    assert totals == [expected] * 50
    assert [int(v["latest"]["cumulative_amount"]) for v in views] == [expected] * 50


def test_group_commit_gives_the_same_answers(make_twin: Callable[..., Twin]) -> None:
    twin = make_twin(group_commit=True)
    cid = twin.open(deposit=100)
    assert twin.pay(cid, "t1", 5, 5).status_code == 201
    assert twin.pay(cid, "t1", 5, 5).status_code == 201
    assert twin.pay(cid, "t2", 5, 5).json()["code"] == "stale_voucher"
    assert twin.pay(cid, "t2", 500, 505).json()["code"] == "exceeds_deposit"
