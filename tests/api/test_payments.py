"""Client -> service flows on the chain twin: receipts, idempotency, paging, privacy, races."""

from __future__ import annotations

import os
import re
import sys
import threading
import time
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
from api.routes import payments
from channel.messages import Domain
from channel.payee import InMemoryChannelSource
from channel.signing import Signer
from channel.state import ChannelStatus


def test_info_says_version_contract_minimum_and_tokens(twin: Twin) -> None:
    info = twin.client.get("/v1/info").json()
    assert info == {
        "version": "2",
        "chain_id": twin.domain.chain_id,
        "contract": twin.domain.verifying_contract,
        "payees": [twin.payee.address],
        "min_challenge_period": 3600,
        "tokens": [{"address": "0x" + "00" * 20, "symbol": "ETH", "decimals": 18,
                    "min_deposit": "0"}],
    }


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
            "task_id": task_hex(f"task-{i}"),
            "amount": str(amount),
            "cumulative_amount": str(total),
            "signature": receipt["signature"],
        }
        assert receipt_signer(domain, receipt) == twin.payee.address

    view = twin.client.get(f"/v1/channels/{hx(cid)}").json()
    assert view["status"] == "open"
    assert view["deposit"] == "1000"
    assert view["voucher_signer"] == "0x" + "00" * 20
    assert view["latest"] == {"cumulative_amount": "60", "signature": twin.voucher(cid, 60)}

    consent = twin.close(cid, 60)
    assert consent.status_code == 200
    body = consent.json()
    assert body["cumulative_amount"] == "60"
    assert body["deadline"] == twin.source.now + 900  # a JSON integer: block time + TTL
    assert consent_signer(domain, cid, body) == twin.payee.address

    # Until block time passes the deadline, 60 is final: a later voucher is refused rather
    # than receipted unpaid, and the same request gets the same consent.
    late = twin.pay(cid, "task-late", 5, 65)
    assert late.status_code == 409
    assert (late.json()["code"], late.json()["deadline"]) == ("channel_not_open", body["deadline"])
    assert twin.close(cid, 60).json() == body
    twin.source.now = body["deadline"] + 1
    time.sleep(1.1)  # the service reads block time at most once a second for frozen channels
    assert twin.pay(cid, "task-late", 5, 65).status_code == 201
    again = twin.close(cid, 65).json()
    assert (again["cumulative_amount"], again["deadline"]) == ("65", body["deadline"] + 901)


def test_a_voucher_signer_pays_and_closes(twin: Twin) -> None:
    signer = Signer.generate()
    cid = twin.open(voucher_signer=signer.address)
    assert twin.pay(cid, "t1", 5, 5, signer=signer).status_code == 201
    assert twin.pay(cid, "t2", 5, 10).status_code == 201  # the payer still may
    view = twin.client.get(f"/v1/channels/{hx(cid)}").json()
    assert view["voucher_signer"] == signer.address
    assert twin.close(cid, 10, signer=signer).status_code == 200


def test_requested_tasks_are_listed_paid_and_marked(twin: Twin) -> None:
    cid = twin.open()
    path = f"/v1/channels/{hx(cid)}/tasks"
    first = {"task_id": "logo ✏️", "amount": "40", "description": "Logo\nsecond round"}
    created = twin.client.post(path, json=first, headers=AUTH)
    assert created.status_code == 201
    task = created.json()["task"]
    assert (task["task_id"], task["task_hash"], task["status"], task["receipt"]) == (
        "logo ✏️", task_hex("logo ✏️"), "requested", None)
    assert isinstance(task["requested_at"], int)
    assert twin.client.post(path, json=first, headers=AUTH).json() == {"task": task}
    assert twin.client.post(path, json=first, headers=AUTH).status_code == 200
    twin.client.post(path, json={"task_id": "icon", "amount": "2", "description": ""},
                     headers=AUTH)
    listed = twin.client.get(path, headers=twin.access(cid)).json()["tasks"]
    assert [(t["task_id"], t["status"]) for t in listed] == [
        ("logo ✏️", "requested"), ("icon", "requested")]

    receipt = twin.pay(cid, "logo ✏️", 40, 40).json()["receipt"]
    paid = twin.client.get(path, params={"status": "paid"}, headers=twin.access(cid)).json()
    assert [t["task_id"] for t in paid["tasks"]] == ["logo ✏️"]
    assert paid["tasks"][0]["receipt"] == receipt
    still = twin.client.get(path, params={"status": "requested"}, headers=AUTH).json()
    assert [t["task_id"] for t in still["tasks"]] == ["icon"]
    # A paid request asked again is the same task, now paid.
    assert twin.client.post(path, json=first, headers=AUTH).json()["task"]["status"] == "paid"


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
    assert receipt["cumulative_amount"] == receipt["amount"] == str(big)
    page = twin.client.get(f"/v1/channels/{hx(cid)}/receipts", headers=twin.access(cid)).json()
    assert page["receipts"][0]["amount"] == str(big)


def test_receipts_page_by_cumulative_amount(twin: Twin) -> None:
    cid = twin.open()
    for i in range(7):
        assert twin.pay(cid, f"secret-task-{i}", i + 1, (i + 1) * (i + 2) // 2).status_code == 201
    seen: list[dict[str, str]] = []
    after = None
    pages = 0
    while True:
        params = {"limit": "3", **({"after": after} if after else {})}
        page = twin.client.get(f"/v1/channels/{hx(cid)}/receipts", params=params,
                               headers=twin.access(cid)).json()
        pages += 1
        seen += page["receipts"]
        after = page["next"]
        if after is None:
            break
    assert pages == 3
    assert [r["cumulative_amount"] for r in seen] == [str(n * (n + 1) // 2) for n in range(1, 8)]
    assert [r["task_id"] for r in seen] == [task_hex(f"secret-task-{i}") for i in range(7)]
    for receipt in seen:
        assert set(receipt) == {"channel_id", "task_id", "amount", "cumulative_amount",
                                "signature"}
        assert receipt_signer(twin.domain, receipt) == twin.payee.address
    # `after` is exclusive; a full default page is at most 500.
    rest = twin.client.get(f"/v1/channels/{hx(cid)}/receipts", params={"after": "21"},
                           headers=AUTH).json()
    assert [r["cumulative_amount"] for r in rest["receipts"]] == ["28"] and rest["next"] is None


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
        stored = http.get(f"/v1/channels/{hx(cid)}/receipts", headers=AUTH).json()
        view = http.get(f"/v1/channels/{hx(cid)}").json()

    cumulative = sorted(int(r["cumulative_amount"]) for r in receipts)
    assert len(set(cumulative)) == len(amounts)  # strictly increasing, no two alike
    assert cumulative[-1] == sum(amounts)
    assert int(view["latest"]["cumulative_amount"]) == sum(amounts)
    items = stored["receipts"]
    assert len(items) == len(amounts)
    assert sum(int(i["amount"]) for i in items) == sum(amounts)
    running = 0
    for item in items:  # in cumulative order each payment extends the previous by its amount
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


def test_lean_door_answers_like_the_fastapi_route(
    twin: Twin, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every payment answer (201, replay, each refusal, each malformed body) is the same byte
    for byte whether the lean ASGI door in front of FastAPI or the declared route gives it;
    a well-formed payment is answered by the lean door, a malformed one by the route."""
    doors: list[str] = []
    real_accept = payments.accept

    async def spy(*args: object) -> object:
        doors.append(sys._getframe(1).f_code.co_name)
        return await real_accept(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(payments, "accept", spy)

    def exchange(cid: bytes, other: bytes) -> list[tuple[int, str, str]]:
        path = f"/v1/channels/{hx(cid)}/payments"
        good = twin.body(cid, "a", 5, 5)
        bodies: list[object] = [
            good, good,  # accepted, then an idempotent replay
            twin.body(cid, "b", 5, 5),  # stale
            twin.body(cid, "c", 10**18, 10**18 + 5),  # above the deposit
            {**twin.body(cid, "d", 1, 6), "extra": "x"},  # extra field
            {**twin.body(cid, "e", 1, 6), "amount": 1},  # not a string
            {**twin.body(cid, "f", 1, 6), "signature": "0x12"},  # malformed signature
            "not an object",
        ]
        out = []
        for body in bodies:
            r = twin.client.post(path, json=body)
            text = r.text.replace(hx(cid), "CID").replace(hx(other), "CID")
            out.append((r.status_code, r.headers["content-type"],
                        re.sub("0x[0-9a-f]{130}", "SIG", text)))  # per-channel signatures
        r = twin.client.post(f"/v1/channels/{hx(os.urandom(32))}/payments",
                             json=twin.body(cid, "g", 1, 1))
        out.append((r.status_code, r.headers["content-type"], r.json()["code"]))
        return out

    lean_cid, route_cid = twin.open(deposit=10**18), twin.open(deposit=10**18)
    lean = exchange(lean_cid, route_cid)
    lean_doors = list(doors)
    doors.clear()
    monkeypatch.setattr(payments, "_PAYMENT_PATH", re.compile(r"(?!)"))  # lean door off
    route = exchange(route_cid, lean_cid)
    assert lean == route
    assert [s for s, _, _ in lean] == [201, 201, 409, 422, 422, 422, 422, 422, 404]
    assert set(lean_doors) == {"__call__"} and len(lean_doors) == 6
    assert set(doors) == {"create_payment"}


def test_channel_view_is_served_from_the_mirror(
    twin: Twin, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 11 item 6: GET /v1/channels/{id} is unauthenticated, so it reads the store's
    mirror, not the node: a channel seen once costs no chain read, and an unknown id is read
    from the chain once for a while, however often it is asked for."""
    cid = twin.open(deposit=1000)
    reads: list[bytes] = []
    real_get = twin.source.get

    def counting_get(channel_id: bytes) -> object:
        reads.append(channel_id)
        return real_get(channel_id)

    monkeypatch.setattr(twin.source, "get", counting_get)
    for _ in range(5):
        assert twin.client.get(f"/v1/channels/{hx(cid)}").status_code == 200
    assert reads == [cid]  # the first sight mirrors it; later views read the store
    unknown = os.urandom(32)
    for _ in range(5):
        r = twin.client.get(f"/v1/channels/{hx(unknown)}")
        assert r.status_code == 404 and r.json()["code"] == "unknown_channel"
    assert reads == [cid, unknown]
