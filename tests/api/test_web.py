"""What the web pages need from the service (web/SERVICE-NEEDS.md): the pages at /, rpc_url,
payer-side CORS, the operator event stream and watchtower, and the receipts' accounting fields.

Over the in-memory chain twin (statuses and codes) and, for the event stream, a real uvicorn
server read with httpx's streaming client. The whole flow against anvil runs in the browser
suite (web/e2e/service.spec.ts).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_support import AUTH, Twin, hx, serve, settings_for, task_hex
from test_errors import assert_problem

import api.web
from api.main import Overrides, create_app
from api.routes.events import MirrorFollower
from channel.chain import ChannelClosed, Claimed, LogMeta
from channel.claims import claim_transactions, record_claims
from channel.payee import InMemoryChannelSource
from channel.state import ChannelStatus, OnchainChannel
from channel.store import PayeeStore, make_engine

ORIGIN = "https://pay.example.org"


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in for the built pages (the real bundle is checked by the browser suite)."""
    web = tmp_path / "web"
    (web / "assets").mkdir(parents=True)
    for page in ("index.html", "dashboard.html", "settle.html"):
        (web / page).write_text(f"<!doctype html><title>{page}</title>")
    (web / "assets" / "client-ABC123.js").write_text("console.log(1)")
    (web / "assets" / "style.css").write_text("body{}")
    (tmp_path / "secret.html").write_text("outside")
    monkeypatch.setattr(api.web, "WEB_DIR", web)
    return web


def test_pages_are_served_at_the_root_with_a_strict_csp(twin: Twin, site: Path) -> None:
    root = twin.client.get("/")
    assert root.status_code == 200
    assert root.text == "<!doctype html><title>index.html</title>"
    assert root.headers["content-type"] == "text/html; charset=utf-8"
    assert root.headers["cache-control"] == "no-cache"
    assert root.headers["content-security-policy"] == api.web.CSP
    assert "frame-ancestors 'none'" in root.headers["content-security-policy"]
    assert root.headers["x-content-type-options"] == "nosniff"
    assert root.headers["referrer-policy"] == "no-referrer"
    dashboard = twin.client.get("/dashboard.html")
    assert dashboard.status_code == 200 and "dashboard.html" in dashboard.text
    script = twin.client.get("/assets/client-ABC123.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert script.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert "content-security-policy" not in script.headers
    head = twin.client.head("/settle.html")
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len("<!doctype html><title>settle.html</title>")


@pytest.mark.parametrize("path", [
    "/nowhere.html", "/assets/", "/assets", "/..%2Fsecret.html", "/assets/..%2F..%2Fsecret.html",
    "/%2e%2e/secret.html", "/assets/missing.js", "/.hidden.html", "/build-report.txt",
])
def test_nothing_outside_the_built_files_is_served(twin: Twin, site: Path, path: str) -> None:
    response = twin.client.get(path)
    assert response.status_code in (404, 405), (path, response.status_code)
    assert "outside" not in response.text
    assert response.headers["content-type"].startswith("application/problem+json")


def test_pages_take_get_and_head_only(twin: Twin, site: Path) -> None:
    assert_problem(twin.client.post("/", json={}), 405, "method_not_allowed")
    assert_problem(twin.client.delete("/index.html"), 405, "method_not_allowed")


def test_a_missing_build_says_how_to_build_it(
    twin: Twin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api.web, "WEB_DIR", tmp_path / "not-built")
    body = assert_problem(twin.client.get("/"), 404, "web_not_built")
    assert "npm run build:web" in body["detail"]
    assert_problem(twin.client.get("/dashboard.html"), 404, "web_not_built")
    assert_problem(twin.client.get("/nowhere"), 404, "not_found")


def test_info_carries_the_public_rpc_url_only_when_set(make_twin: Callable[..., Twin],
                                                       tmp_path: Path) -> None:
    plain = make_twin(f"sqlite:///{tmp_path / 'a.db'}").client.get("/v1/info").json()
    assert "rpc_url" not in plain
    withurl = make_twin(f"sqlite:///{tmp_path / 'b.db'}",
                        public_rpc_url="https://rpc.sepolia.example").client.get("/v1/info")
    assert withurl.json()["rpc_url"] == "https://rpc.sepolia.example"


def test_a_public_rpc_url_must_be_http(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="http"):
        settings_for(f"sqlite:///{tmp_path / 'x.db'}", public_rpc_url="ws://node:8546")


# --- CORS ------------------------------------------------------------------------------------


@pytest.fixture
def cors(make_twin: Callable[..., Twin]) -> Twin:
    return make_twin(cors_origins=f"{ORIGIN}, http://127.0.0.1:5173")


def _allows(response: httpx.Response, origin: str = ORIGIN) -> bool:
    return response.headers.get("access-control-allow-origin") == origin


def test_payer_side_endpoints_answer_cors_for_listed_origins_errors_included(cors: Twin) -> None:
    cid = cors.open()
    hdr = {"Origin": ORIGIN}
    info = cors.client.get("/v1/info", headers=hdr)
    assert _allows(info) and "Origin" in info.headers["vary"]
    assert info.headers["access-control-expose-headers"] == "Retry-After"
    assert "access-control-allow-credentials" not in info.headers
    paid = cors.client.post(f"/v1/channels/{hx(cid)}/payments", json=cors.body(cid, "t", 5, 5),
                            headers=hdr)
    assert paid.status_code == 201 and _allows(paid)
    # Errors too: the page branches on the problem's code.
    stale = cors.client.post(f"/v1/channels/{hx(cid)}/payments",
                             json=cors.body(cid, "u", 5, 5), headers=hdr)
    assert stale.status_code == 409 and _allows(stale)
    unknown = cors.client.get(f"/v1/channels/{hx(os.urandom(32))}", headers=hdr)
    assert unknown.status_code == 404 and _allows(unknown)
    denied = cors.client.get(f"/v1/channels/{hx(cid)}/receipts", headers=hdr)
    assert denied.status_code == 401 and _allows(denied)
    too_big = cors.client.post(f"/v1/channels/{hx(cid)}/payments", content=b"x" * 20_000,
                               headers={**hdr, "content-type": "application/json"})
    assert too_big.status_code == 413 and _allows(too_big)
    for path in ("tasks", "receipts"):
        ok = cors.client.get(f"/v1/channels/{hx(cid)}/{path}",
                             headers={**hdr, **cors.access(cid)})
        assert ok.status_code == 200 and _allows(ok), path
    second = cors.client.get("/v1/info", headers={"Origin": "http://127.0.0.1:5173"})
    assert _allows(second, "http://127.0.0.1:5173")


def test_preflight_is_answered_for_payer_side_methods_only(cors: Twin) -> None:
    cid = cors.open()
    pre = cors.client.options(f"/v1/channels/{hx(cid)}/payments", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert pre.status_code == 204 and _allows(pre)
    assert pre.headers["access-control-allow-methods"] == "GET, POST"
    assert pre.headers["access-control-allow-headers"] == "authorization, content-type"
    assert pre.headers["access-control-max-age"] == "600"
    assert pre.headers["vary"] == "Origin"
    assert "access-control-allow-credentials" not in pre.headers
    # POST .../tasks is the operator's: no preflight, whatever the origin.
    task = cors.client.options(f"/v1/channels/{hx(cid)}/tasks", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in task.headers


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v1/channels"), ("POST", "/v1/channels/{cid}/tasks"),
    ("POST", "/v1/channels/{cid}/claim"), ("GET", "/v1/events"), ("GET", "/v1/watchtower"),
    ("GET", "/metrics"), ("GET", "/healthz"), ("GET", "/"),
])
def test_operator_endpoints_never_answer_cors(cors: Twin, method: str, path: str) -> None:
    cid = cors.open()
    url = path.format(cid=hx(cid))
    response = cors.client.request(method, url, headers={"Origin": ORIGIN})
    assert "access-control-allow-origin" not in response.headers, url
    pre = cors.client.options(url, headers={"Origin": ORIGIN,
                                            "Access-Control-Request-Method": method})
    assert "access-control-allow-origin" not in pre.headers, url


def test_unlisted_origins_and_the_default_get_no_cors(cors: Twin, twin: Twin) -> None:
    other = cors.client.get("/v1/info", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    pre = cors.client.options("/v1/info", headers={"Origin": "https://evil.example",
                                                   "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in pre.headers
    default = twin.client.get("/v1/info", headers={"Origin": ORIGIN})
    assert not any(h.startswith("access-control-") for h in default.headers)


@pytest.mark.parametrize("value", ["*", "https://*.example.org", "https://a.example/",
                                   "pay.example.org", "https://a.example/path"])
def test_cors_origins_refuse_wildcards_and_non_origins(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("PIECEWORK_CORS_ORIGINS", value)
    with pytest.raises(SystemExit, match="PIECEWORK_CORS_ORIGINS"):
        create_app(None, Overrides(source=InMemoryChannelSource()))


# --- operator receipts (CSV) -----------------------------------------------------------------


def _meta(block: int, index: int = 0, tx: bytes = b"\x01" * 32) -> LogMeta:
    return LogMeta(block, b"\x00" * 32, tx, index)


def test_operator_receipts_carry_task_time_and_claim_tx(twin: Twin) -> None:
    cid = twin.open()
    for i, task in enumerate(["logo-1", "logo-2", "logo-3"], start=1):
        assert twin.pay(cid, task, 10, 10 * i).status_code == 201
    url = f"/v1/channels/{hx(cid)}/receipts"
    payer = twin.client.get(url, headers=twin.access(cid)).json()["receipts"]
    assert set(payer[0]) == {"channel_id", "task_id", "amount", "cumulative_amount", "signature"}

    engine = make_engine(str(twin.client.app.state.runtime.settings.database_url))  # type: ignore[attr-defined]
    # One claim covered 20 (two receipts) in block 7; a cooperative close paid 30 in block 9.
    record_claims(engine, 5, 7, [Claimed(cid, 20, 20, _meta(7, tx=b"\xaa" * 32))])
    record_claims(engine, 8, 9, [ChannelClosed(cid, 30, 0, _meta(9, tx=b"\xbb" * 32))])
    operator = twin.client.get(url, headers=AUTH).json()["receipts"]
    assert [r["task"] for r in operator] == ["logo-1", "logo-2", "logo-3"]
    assert [r["task_id"] for r in operator] == [task_hex(t) for t in ("logo-1", "logo-2",
                                                                       "logo-3")]
    assert all(isinstance(r["created_at"], int) and r["created_at"] > 1.7e9 for r in operator)
    assert [r["claim_tx"] for r in operator] == ["0x" + "aa" * 32] * 2 + ["0x" + "bb" * 32]
    assert {k: operator[0][k] for k in payer[0]} == payer[0]


def test_claims_of_a_reprocessed_range_are_replaced(tmp_path: Path, twin: Twin) -> None:
    cid = twin.open()
    assert twin.pay(cid, "a", 10, 10).status_code == 201
    engine = make_engine(str(twin.client.app.state.runtime.settings.database_url))  # type: ignore[attr-defined]
    record_claims(engine, 1, 10, [Claimed(cid, 10, 10, _meta(4, tx=b"\x01" * 32)),
                                  Claimed(os.urandom(32), 10, 10, _meta(4, 1))])
    assert claim_transactions(engine, cid, [10, 11]) == ["0x" + "01" * 32, None]
    # A reorg: blocks 3..10 again, the claim now in block 6 by another transaction.
    record_claims(engine, 3, 10, [Claimed(cid, 10, 10, _meta(6, tx=b"\x02" * 32))])
    assert claim_transactions(engine, cid, [10]) == ["0x" + "02" * 32]
    record_claims(engine, 3, 10, [])
    assert claim_transactions(engine, cid, [10]) == [None]


# --- watchtower and the event stream --------------------------------------------------------


def test_watchtower_lists_closing_channels_and_needs_the_operator(twin: Twin) -> None:
    assert_problem(twin.client.get("/v1/watchtower"), 401, "unauthorized")
    cid = twin.open(status=ChannelStatus.CLOSING)
    assert twin.client.get(f"/v1/channels/{hx(cid)}").json()["status"] == "closing"
    state = twin.client.get("/v1/watchtower", headers=AUTH).json()
    assert [c["channel_id"] for c in state["closing"]] == [hx(cid)]
    assert state["closing"][0]["defended"] is False
    assert state["defences"] == []
    assert state["wallet"] is None  # no chain in the twin
    assert [w["kind"] for w in state["warnings"]] == ["no_watcher"]


class _Stream:
    """Reads SSE events from a live response in a thread, so the test can act meanwhile."""

    def __init__(self, response: httpx.Response) -> None:
        self.events: list[dict[str, Any]] = []
        self.comments: list[str] = []
        self._cv = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(response,), daemon=True)
        self._thread.start()

    def _read(self, response: httpx.Response) -> None:
        event: dict[str, Any] = {}
        try:
            for line in response.iter_lines():
                if line.startswith(":"):
                    self.comments.append(line)
                elif line.startswith("id: "):
                    event["id"] = int(line[4:])
                elif line.startswith("event: "):
                    event["event"] = line[7:]
                elif line.startswith("data: "):
                    event["data"] = json.loads(line[6:])
                elif line == "" and event:
                    with self._cv:
                        self.events.append(event)
                        self._cv.notify_all()
                    event = {}
        except httpx.HTTPError:
            pass

    def wait(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        with self._cv:
            self._cv.wait_for(lambda: len(self.events) >= count, timeout)
            return list(self.events)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[str, InMemoryChannelSource, Twin]]:
    source = InMemoryChannelSource()
    app = create_app(settings_for(f"sqlite:///{tmp_path / 'live.db'}"), Overrides(source=source))
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        yield url, source, Twin(http, source)  # type: ignore[arg-type]


def test_the_event_stream_starts_with_a_snapshot_then_shows_tasks_and_payments_live(
    live: tuple[str, InMemoryChannelSource, Twin],
) -> None:
    url, _source, twin = live
    cid = twin.open()
    assert twin.client.get(f"/v1/channels/{hx(cid)}").status_code == 200  # mirrored
    with httpx.Client(base_url=url, timeout=30) as http:
        assert_problem(http.get("/v1/events"), 401, "unauthorized")
        with http.stream("GET", "/v1/events", headers=AUTH) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-store"
            assert response.headers["x-accel-buffering"] == "no"
            stream = _Stream(response)
            (snap,) = stream.wait(1)
            assert snap["event"] == "snapshot"
            assert [c["channel_id"] for c in snap["data"]["channels"]] == [hx(cid)]
            assert "closing" in snap["data"]["watchtower"]

            asked = twin.client.post(f"/v1/channels/{hx(cid)}/tasks", headers=AUTH,
                                     json={"task_id": "logo-1", "amount": "7",
                                           "description": "Logo sketch"})
            assert asked.status_code == 201
            assert twin.pay(cid, "logo-1", 7, 7).status_code == 201
            events = stream.wait(4)
            named = {e["event"]: e for e in events[1:]}
            tasks = [e["data"] for e in events if e["event"] == "task"]
            # Requested, then paid (with its receipt), as the payment event's neighbour.
            assert [(t["channel_id"], t["task"]["task_id"], t["task"]["status"]) for t in tasks
                    ] == [(hx(cid), "logo-1", "requested"), (hx(cid), "logo-1", "paid")]
            assert tasks[1]["task"]["receipt"]["cumulative_amount"] == "7"
            assert named["payment"]["data"] == {
                "channel_id": hx(cid), "task_id": "logo-1", "task_hash": task_hex("logo-1"),
                "amount": "7", "cumulative_amount": "7",
                "created_at": named["payment"]["data"]["created_at"],
            }
            ids = [e["id"] for e in events]
            assert ids == sorted(ids) and len(set(ids)) == len(ids)
            # The payment changed the mirror's row: a channel event follows within seconds.
            stream.wait(len(events) + 1)
            assert any(e["event"] == "channel" and e["data"]["latest"]["cumulative_amount"]
                       == "7" for e in stream.events)
            last_payment = named["payment"]["id"]

        # A reconnect with Last-Event-ID gets what came after, not a new snapshot.
        assert twin.pay(cid, "logo-2", 3, 10).status_code == 201
        resume = {**AUTH, "Last-Event-ID": str(last_payment)}
        with http.stream("GET", "/v1/events", headers=resume) as response:
            stream = _Stream(response)
            events = stream.wait(1)
            assert events[0]["event"] != "snapshot"
            assert any(e["event"] == "payment" and e["data"]["task_id"] == "logo-2"
                       for e in stream.wait(2, timeout=3))
        # An id this process never issued: start over with a snapshot.
        with http.stream("GET", "/v1/events",
                         headers={**AUTH, "Last-Event-ID": "999999"}) as response:
            assert _Stream(response).wait(1)[0]["event"] == "snapshot"


class _Report:
    """A stand-in for ``Watcher.status()`` (``channel.defence.WatchtowerStatus``), with only
    the fields ``api.watchtower`` reads."""

    def __init__(self, cid: str) -> None:
        ns = __import__("types").SimpleNamespace
        self.closing = (ns(channel_id=cid, closes_at=1, payable=5, token="0x" + "00" * 20,
                           state="defending"),)
        self.defences = (ns(kind="claim", channel_ids=(cid,), tx_hash="0x" + "ef" * 32,
                            state="pending"),)
        self.alerts = (ns(kind="fee_cap", message="Gas is above the fee cap.", at=1.0),)
        self.wallet = ns(address="0x70997970C51812dc3A010C7d01b50e0d17dc79C8", balance=4 * 10**15,
                         min_balance=10**16, low=True)


def test_a_watcher_report_is_merged_into_the_watchtower(twin: Twin) -> None:
    cid = twin.open(status=ChannelStatus.CLOSING)
    twin.client.get(f"/v1/channels/{hx(cid)}")
    runtime = twin.client.app.state.runtime  # type: ignore[attr-defined]
    runtime.watcher = type("W", (), {"status": lambda self: _Report(hx(cid))})()
    state = twin.client.get("/v1/watchtower", headers=AUTH).json()
    assert state["closing"] == [{"channel_id": hx(cid), "closes_at": 0, "defended": False,
                                 "tx_hash": "0x" + "ef" * 32, "state": "defending"}]
    assert state["defences"] == [{"channel_id": hx(cid), "tx_hash": "0x" + "ef" * 32,
                                  "at": None, "state": "pending"}]
    assert state["wallet"] == {"address": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
                               "balance": "4000000000000000", "needed": "10000000000000000"}
    assert {w["kind"]: w["message"] for w in state["warnings"]} == {
        "fee_cap": "Gas is above the fee cap.",
        "low_balance": "The service's wallet 0x70997970C51812dc3A010C7d01b50e0d17dc79C8 holds "
                       "0.004 ETH; claims and defences need at least 0.01 ETH.",
    }


def test_the_mirror_follower_streams_changes_written_by_another_worker(twin: Twin) -> None:
    """The leader's watcher may run in another process: its writes to the shared mirror become
    ``channel`` events here; the watchtower is published when it changes."""
    runtime = twin.client.app.state.runtime  # type: ignore[attr-defined]
    cid = twin.open()
    assert twin.client.get(f"/v1/channels/{hx(cid)}").status_code == 200
    seen: list[tuple[str, dict[str, Any]]] = []
    runtime.events.listen(lambda e: seen.append((e.name, e.data)))
    follower = MirrorFollower(runtime, watchtower_interval=0)
    follower.poll(1000.0)
    assert [n for n, _ in seen].count("watchtower") == 1
    seen.clear()
    follower.poll(1001.0)
    assert seen == []  # nothing changed: nothing published

    other = PayeeStore(make_engine(str(runtime.settings.database_url)))  # another worker
    other.upsert_channel(OnchainChannel(cid, twin.payer.address, twin.payee.address,
                                        "0x" + "00" * 20, 10**18, 0, 7200, 99_999,
                                        ChannelStatus.CLOSING))
    follower.poll(1002.0)
    channel = [d for n, d in seen if n == "channel"]
    assert [(c["channel_id"], c["status"], c["closes_at"]) for c in channel] == [
        (hx(cid), "closing", 99_999)]
    (tower,) = [d for n, d in seen if n == "watchtower"]
    assert [c["channel_id"] for c in tower["closing"]] == [hx(cid)]
