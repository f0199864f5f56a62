"""Every error the API answers is RFC 9457 problem+json with the documented status and code."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from api_support import AUTH, CONTRACT, ETH, TOKEN, Twin, hx, settings_for

from api.main import Overrides, create_app
from channel.errors import NodeUnavailable
from channel.payee import InMemoryChannelSource
from channel.signing import Signer
from channel.state import ChannelStatus


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"].endswith(code)
    assert body["title"] and body["detail"]
    return body


def test_stale_voucher_is_409_with_the_current_amount(twin: Twin) -> None:
    cid = twin.open()
    assert twin.pay(cid, "t1", 5, 5).status_code == 201
    body = assert_problem(twin.pay(cid, "t2", 5, 5), 409, "stale_voucher")
    assert body["current_cumulative_amount"] == "5"
    # Skipping ahead is as stale as going back: cumulative must be exactly previous + amount.
    body = assert_problem(twin.pay(cid, "t2", 5, 20), 409, "stale_voucher")
    assert body["current_cumulative_amount"] == "5"


def test_above_deposit_is_422_with_the_deposit(twin: Twin) -> None:
    cid = twin.open(deposit=100)
    body = assert_problem(twin.pay(cid, "t1", 101, 101), 422, "exceeds_deposit")
    assert body["deposit"] == "100"


def test_same_task_with_another_voucher_is_task_conflict(twin: Twin) -> None:
    cid = twin.open()
    assert twin.pay(cid, "t1", 5, 5).status_code == 201
    assert_problem(twin.pay(cid, "t1", 6, 11), 409, "task_conflict")


@pytest.mark.parametrize(
    ("channel", "status", "code"),
    [
        ({"status": ChannelStatus.CLOSING}, 409, "channel_not_open"),
        ({"status": ChannelStatus.CLOSED}, 409, "channel_not_open"),
        ({"challenge_period": 60}, 422, "challenge_period_too_short"),
        ({"payee": "0x" + "11" * 20}, 404, "unknown_channel"),
    ],
)
def test_channels_the_payee_must_not_take_payments_on(
    twin: Twin, channel: dict[str, Any], status: int, code: str
) -> None:
    cid = twin.open(**channel)
    assert_problem(twin.pay(cid, "t1", 1, 1), status, code)


def test_voucher_by_someone_else_is_invalid_signature(twin: Twin) -> None:
    cid = twin.open()
    assert_problem(twin.pay(cid, "t1", 1, 1, signer=Signer.generate()), 422, "invalid_signature")


def test_a_token_the_service_does_not_take_is_refused(twin: Twin) -> None:
    cid = twin.open(token="0x" + "70" * 20)
    assert_problem(twin.pay(cid, "t1", 1, 1), 422, "token_not_accepted")


def test_validation_order_reports_the_first_problem(twin: Twin) -> None:
    # A high-s signature on a channel that does not exist: the channel (404) comes first.
    good = twin.body(twin.open(), "t1", 1, 1)
    raw = bytes.fromhex(good["signature"][2:])
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    high_s = raw[:32] + (n - int.from_bytes(raw[32:64], "big")).to_bytes(32, "big") + bytes(
        [55 - raw[64]])
    body = {**good, "signature": hx(high_s)}
    assert_problem(twin.client.post(f"/v1/channels/{hx(bytes(32))}/payments", json=body), 404,
                   "unknown_channel")
    # On a closing channel: 409 before the signature.
    closing = twin.open(status=ChannelStatus.CLOSING)
    assert_problem(twin.client.post(f"/v1/channels/{hx(closing)}/payments", json=body), 409,
                   "channel_not_open")
    # Terms before the signature; the signature (high s) before the amounts.
    short = twin.open(challenge_period=60)
    assert_problem(twin.client.post(f"/v1/channels/{hx(short)}/payments", json=body), 422,
                   "challenge_period_too_short")
    fine = twin.open()
    stale = {**body, "cumulative_amount": "9"}
    assert_problem(twin.client.post(f"/v1/channels/{hx(fine)}/payments", json=stale), 422,
                   "invalid_signature")
    # A body of the wrong shape is refused before anything is looked up.
    assert_problem(twin.client.post(f"/v1/channels/{hx(bytes(32))}/payments",
                                    json={**good, "signature": "0x12"}), 422,
                   "malformed_signature")


def test_unknown_channel_is_404(twin: Twin) -> None:
    cid = bytes(32)
    assert_problem(twin.pay(cid, "t1", 1, 1), 404, "unknown_channel")
    assert_problem(twin.client.get(f"/v1/channels/{hx(cid)}"), 404, "unknown_channel")
    assert_problem(twin.close(cid, 0), 404, "unknown_channel")
    for path in ("receipts", "tasks"):
        response = twin.client.get(f"/v1/channels/{hx(cid)}/{path}", headers=twin.access(cid))
        assert_problem(response, 404, "unknown_channel")
    assert_problem(twin.client.post(f"/v1/channels/{hx(cid)}/tasks", headers=AUTH, json={
        "task_id": "t", "amount": "1", "description": ""}), 404, "unknown_channel")


def _good(twin: Twin) -> tuple[bytes, dict[str, str]]:
    cid = twin.open()
    return cid, twin.body(cid, "t1", 1, 1)


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("signature", "0x1234", "malformed_signature"),
        ("signature", "1b" * 65, "malformed_signature"),
        ("signature", "0x" + "ff" * 65, "invalid_signature"),  # 65 bytes, but bad v, high s
        ("amount", "-1", "invalid_amount"),
        ("amount", "01", "invalid_amount"),
        ("amount", "1e3", "invalid_amount"),
        ("cumulative_amount", str(2**256), "invalid_amount"),
        ("cumulative_amount", " 1", "invalid_amount"),
        ("amount", "0", "invalid_amount"),
        ("task_id", "x" * 257, "invalid_task_id"),
        ("task_id", "", "invalid_task_id"),
        ("task_id", "nul\x00", "invalid_task_id"),
        ("task_id", "line\nbreak", "invalid_task_id"),
        ("task_id", "\ud800", "invalid_task_id"),
        ("amount", 1, "validation_error"),  # numbers would round above 2**53: strings only
        ("task_id", None, "validation_error"),
        ("extra", "field", "validation_error"),
    ],
)
def test_malformed_fields_are_422_with_a_specific_code(
    twin: Twin, field: str, value: Any, code: str
) -> None:
    cid, body = _good(twin)
    body[field] = value
    # json.dumps escapes non-ASCII (a lone surrogate travels as \ud800, as JSON allows).
    response = twin.client.post(f"/v1/channels/{hx(cid)}/payments", content=json.dumps(body),
                                headers={"content-type": "application/json"})
    assert_problem(response, 422, code)


@pytest.mark.parametrize(
    "channel_id",
    ["0x1234", "0x" + "zz" * 32, "1" * 64, "0x" + "00" * 33, "0X" + "00" * 32],
)
def test_malformed_channel_ids_are_422_invalid_bytes32(twin: Twin, channel_id: str) -> None:
    cid, body = _good(twin)
    close = {"cumulative_amount": "0", "signature": body["signature"]}
    for response in (
        twin.client.post(f"/v1/channels/{channel_id}/payments", json=body),
        twin.client.get(f"/v1/channels/{channel_id}"),
        twin.client.post(f"/v1/channels/{channel_id}/close", json=close),
        twin.client.get(f"/v1/channels/{channel_id}/receipts", headers=AUTH),
        twin.client.get(f"/v1/channels/{channel_id}/tasks", headers=twin.access(cid)),
    ):
        assert_problem(response, 422, "invalid_bytes32")


def test_framework_errors_are_problems_too(twin: Twin) -> None:
    cid, body = _good(twin)
    path = f"/v1/channels/{hx(cid)}/payments"
    assert_problem(twin.client.get("/nowhere"), 404, "not_found")
    assert_problem(twin.client.put(path, json=body), 405, "method_not_allowed")
    # Allow names every method of the path, also those of routes declared in another router.
    tasks = twin.client.put(f"/v1/channels/{hx(cid)}/tasks")
    assert_problem(tasks, 405, "method_not_allowed")
    assert tasks.headers["allow"] == "GET, POST"
    assert_problem(
        twin.client.post(path, content=b"{", headers={"content-type": "application/json"}),
        422,
        "validation_error",
    )
    assert_problem(twin.client.post(path, json=[1, 2]), 422, "validation_error")
    assert_problem(
        twin.client.post(path, content=b"task_id=x", headers={"content-type": "text/plain"}),
        415,
        "unsupported_media_type",
    )
    assert_problem(
        twin.client.post(
            path, content=b"{}", headers={"content-type": "application/x-www-form-urlencoded"}
        ),
        415,
        "unsupported_media_type",
    )


def test_bodies_over_the_limit_are_413_declared_or_streamed(twin: Twin) -> None:
    cid = twin.open()
    path = f"/v1/channels/{hx(cid)}/payments"
    big = b'{"task_id": "' + b"x" * 20_000 + b'"}'
    assert_problem(
        twin.client.post(path, content=big, headers={"content-type": "application/json"}),
        413,
        "payload_too_large",
    )

    def chunks() -> Any:
        # No Content-Length: the guard must count what actually arrives.
        for _ in range(40):
            yield b" " * 1000

    assert_problem(
        twin.client.post(path, content=chunks(), headers={"content-type": "application/json"}),
        413,
        "payload_too_large",
    )


def test_operator_endpoints_are_401_without_and_403_with_a_wrong_token(twin: Twin) -> None:
    cid = twin.open()
    assert twin.pay(cid, "t1", 1, 1).status_code == 201
    task = {"task_id": "t9", "amount": "1", "description": "d"}
    for method, path, body in (
        ("GET", "/v1/channels", None),
        ("GET", "/metrics", None),
        ("POST", f"/v1/channels/{hx(cid)}/claim", None),
        ("POST", f"/v1/channels/{hx(cid)}/tasks", task),
    ):
        response = twin.client.request(method, path, json=body)
        assert_problem(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"
        for wrong in (f"Bearer {TOKEN}x", "Bearer nope", f"Bearer {TOKEN[:-1]}"):
            refused = twin.client.request(method, path, json=body, headers={"Authorization": wrong})
            assert_problem(refused, 403, "forbidden")
        # The payer side's Access does not open operator endpoints either.
        access = twin.access(cid)
        assert_problem(twin.client.request(method, path, json=body, headers=access), 401,
                       "unauthorized")
    assert twin.client.get(f"/v1/channels/{hx(cid)}/tasks", headers=AUTH).json() == {"tasks": []}


@pytest.mark.parametrize("path", ["receipts", "tasks"])
def test_payer_side_reads_need_access(twin: Twin, path: str) -> None:
    cid = twin.open(voucher_signer=(voucher_signer := Signer.generate()).address)
    other = twin.open()
    url = f"/v1/channels/{hx(cid)}/{path}"
    response = twin.client.get(url)
    assert_problem(response, 401, "access_required")
    assert response.headers["www-authenticate"].startswith("Access")
    assert_problem(twin.client.get(url, headers={"Authorization": "Basic eDp5"}), 401,
                   "access_required")
    for header in (
        twin.access(cid, signer=Signer.generate()),  # a stranger
        twin.access(cid, signer=twin.payee),  # the payee is not the payer side
        twin.access(other),  # the payer's access to another channel
        twin.access(cid, ahead=-5),  # expired
        twin.access(cid, ahead=86_400 + 60),  # expiring too far ahead
        {"Authorization": "Access 123"},  # malformed
        {"Authorization": "Bearer wrong-token"},  # a wrong operator token is not ignored
    ):
        assert_problem(twin.client.get(url, headers=header), 403, "access_denied")
    for header in (twin.access(cid), twin.access(cid, signer=voucher_signer), AUTH):
        assert twin.client.get(url, headers=header).status_code == 200
    # ?access= where a header cannot be set (EventSource).
    credential = twin.access(cid)["Authorization"].removeprefix("Access ")
    assert twin.client.get(url, params={"access": credential}).status_code == 200
    assert_problem(twin.client.get(url, params={"access": "1.0x12"}), 403, "access_denied")


def test_claim_without_a_voucher_above_claimed_is_409(twin: Twin) -> None:
    cid = twin.open()
    twin.client.get(f"/v1/channels/{hx(cid)}")  # first sight mirrors the channel
    assert_problem(
        twin.client.post(f"/v1/channels/{hx(cid)}/claim", headers=AUTH), 409, "nothing_to_claim"
    )


def test_bad_paging_parameters_are_422(twin: Twin) -> None:
    cid = twin.open()
    twin.pay(cid, "t1", 1, 1)
    for path, code in (
        ("/v1/channels?limit=0", "validation_error"),
        ("/v1/channels?limit=501", "validation_error"),
        ("/v1/channels?status=bogus", "validation_error"),
        ("/v1/channels?cursor=0x12", "invalid_bytes32"),
        ("/v1/channels?payer=0x12", "invalid_address"),
        ("/v1/channels?payer=0x70997970c51812dc3a010c7d01b50e0d17dc79C8", "invalid_address"),
        (f"/v1/channels/{hx(cid)}/receipts?after=-1", "invalid_amount"),
        (f"/v1/channels/{hx(cid)}/receipts?after=abc", "invalid_amount"),
        (f"/v1/channels/{hx(cid)}/receipts?after=01", "invalid_amount"),
        (f"/v1/channels/{hx(cid)}/receipts?limit=501", "validation_error"),
        (f"/v1/channels/{hx(cid)}/tasks?status=bogus", "validation_error"),
    ):
        assert_problem(twin.client.get(path, headers=AUTH), 422, code)


class _DownSource(InMemoryChannelSource):
    def get(self, channel_id: bytes) -> Any:
        raise NodeUnavailable("node at http://127.0.0.1:1 unavailable during getChannel")


def test_node_down_is_503_for_an_uncached_channel_only(make_twin: Callable[..., Twin]) -> None:
    twin = make_twin()
    cached = twin.open()
    assert twin.pay(cached, "t1", 1, 1).status_code == 201
    twin.source.__class__ = _DownSource  # the node goes away
    body = assert_problem(twin.pay(bytes(range(32)), "t1", 1, 1), 503, "node_unavailable")
    assert "127.0.0.1" not in body["detail"]  # node URLs can hold API keys
    assert twin.pay(cached, "t2", 1, 2).status_code == 201
    # The channel view falls back to the store's mirror when the node is down.
    view = twin.client.get(f"/v1/channels/{hx(cached)}").json()
    assert view["latest"]["cumulative_amount"] == "2"


def test_healthz_is_503_problem_when_the_node_is_down(make_twin: Callable[..., Twin]) -> None:
    def down() -> None:
        raise NodeUnavailable("node unavailable")

    twin = make_twin(node_check=down)
    body = assert_problem(twin.client.get("/healthz"), 503, "unhealthy")
    assert body["node"] == "down"
    assert body["database"] == "ok"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"operator_token": None}, "PIECEWORK_OPERATOR_TOKEN"),
        ({"operator_token": "  "}, "PIECEWORK_OPERATOR_TOKEN"),
        ({"private_key": None}, "PIECEWORK_KEYSTORE"),
        ({"contract_address": None}, "PIECEWORK_CONTRACT_ADDRESS"),
    ],
)
def test_refuses_to_start_with_one_line_naming_the_setting(
    tmp_path: Any, extra: dict[str, Any], message: str
) -> None:
    settings = settings_for(f"sqlite:///{tmp_path / 'x.db'}", **extra)
    with pytest.raises(SystemExit) as exited:
        create_app(settings, Overrides(source=InMemoryChannelSource()))
    text = str(exited.value.code)
    assert message in text
    assert "\n" not in text
    assert "0x" + "5de4111a" not in text  # never the key


def test_close_problems(twin: Twin) -> None:
    cid = twin.open()
    assert twin.pay(cid, "t1", 5, 5).status_code == 201
    assert_problem(twin.close(cid, 5, signer=Signer.generate()), 403, "close_not_authorized")
    assert_problem(twin.close(cid, 5, signer=twin.payee), 403, "close_not_authorized")
    body = assert_problem(twin.close(cid, 4), 409, "stale_voucher")
    assert body["current_cumulative_amount"] == "5"
    path = f"/v1/channels/{hx(cid)}/close"
    for bad in (None, {}, {"cumulative_amount": "5"}, {"cumulative_amount": 5, "signature": "0x"},
                {"cumulative_amount": "5", "signature": "0x12"}):
        response = twin.client.post(path, json=bad)
        assert response.status_code == 422, response.text
    # Nothing of that changed anything: payments still go through.
    assert twin.pay(cid, "t2", 1, 6).status_code == 201


def test_task_problems(twin: Twin) -> None:
    cid = twin.open()
    path = f"/v1/channels/{hx(cid)}/tasks"
    task = {"task_id": "logo", "amount": "10", "description": "a logo"}
    assert twin.client.post(path, json=task, headers=AUTH).status_code == 201
    for change, status, code in (
        ({"amount": "11"}, 409, "task_conflict"),
        ({"description": "other"}, 409, "task_conflict"),
        ({"task_id": "bell\x07"}, 422, "invalid_task_id"),
        ({"amount": "0"}, 422, "invalid_amount"),
        ({"amount": 10}, 422, "validation_error"),
        ({"description": "x" * 2001}, 422, "invalid_description"),
        ({"description": "esc\x1b[2J"}, 422, "invalid_description"),
    ):
        assert_problem(twin.client.post(path, json={**task, **change}, headers=AUTH), status,
                       code)
    body = assert_problem(twin.pay(cid, "logo", 9, 9), 422, "amount_mismatch")
    assert body["requested_amount"] == "10"
    closed = twin.open(status=ChannelStatus.CLOSED)
    assert_problem(twin.client.post(f"/v1/channels/{hx(closed)}/tasks", json=task, headers=AUTH),
                   409, "channel_not_open")


def test_no_cors_headers(twin: Twin) -> None:
    response = twin.client.options(
        "/v1/info",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in response.headers
    assert twin.client.get("/v1/info").json()["contract"] == CONTRACT
    assert ETH not in twin.client.get("/v1/info").json()["payees"]


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PIECEWORK_ACCEPTED_TOKENS", "ETH,0x12", "PIECEWORK_ACCEPTED_TOKENS"),
        ("PIECEWORK_ACCEPTED_TOKENS", "ETH:1.5", "PIECEWORK_ACCEPTED_TOKENS"),
        ("PIECEWORK_ACCEPTED_TOKENS", "ETH,eth", "twice"),
        ("PIECEWORK_CONSENT_TTL_SECONDS", "3601", "PIECEWORK_CONSENT_TTL_SECONDS"),
        ("PIECEWORK_CONSENT_TTL_SECONDS", "0", "PIECEWORK_CONSENT_TTL_SECONDS"),
    ],
)
def test_a_bad_setting_stops_the_service_with_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, variable: str, value: str, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as exited:
        create_app()
    text = str(exited.value.code)
    assert message in text and "\n" not in text, text


def test_accepted_tokens_parse() -> None:
    from channel.config import parse_accepted_tokens

    coin = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
    assert parse_accepted_tokens("ETH") == {ETH: 0}
    assert parse_accepted_tokens(f" eth:10 , {coin.lower()}:5000000") == {ETH: 10, coin: 5_000_000}
