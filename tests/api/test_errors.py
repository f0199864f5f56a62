"""Every error the API answers is RFC 9457 problem+json with the documented status and code."""

from __future__ import annotations

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


def test_voucher_by_someone_else_is_wrong_signer(twin: Twin) -> None:
    cid = twin.open()
    assert_problem(twin.pay(cid, "t1", 1, 1, signer=Signer.generate()), 422, "wrong_signer")


def test_unknown_channel_is_404(twin: Twin) -> None:
    cid = bytes(32)
    assert_problem(twin.pay(cid, "t1", 1, 1), 404, "unknown_channel")
    assert_problem(twin.client.get(f"/v1/channels/{hx(cid)}"), 404, "unknown_channel")
    assert_problem(twin.client.post(f"/v1/channels/{hx(cid)}/close"), 404, "unknown_channel")
    assert_problem(twin.client.get(f"/v1/channels/{hx(cid)}/receipts"), 404, "unknown_channel")


def _good(twin: Twin) -> tuple[bytes, dict[str, str]]:
    cid = twin.open()
    return cid, twin.body(cid, "t1", 1, 1)


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("signature", "0x1234", "malformed_signature"),
        ("signature", "1b" * 65, "malformed_signature"),
        ("signature", "0x" + "ff" * 65, "malformed_signature"),  # bad v, high s
        ("amount", "-1", "invalid_amount"),
        ("amount", "01", "invalid_amount"),
        ("amount", "1e3", "invalid_amount"),
        ("cumulative_amount", str(2**256), "invalid_amount"),
        ("cumulative_amount", " 1", "invalid_amount"),
        ("amount", "0", "invalid_amount"),
        ("task_id", "x" * 257, "validation_error"),
        ("task_id", "", "validation_error"),
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
    assert_problem(twin.client.post(f"/v1/channels/{hx(cid)}/payments", json=body), 422, code)


@pytest.mark.parametrize(
    "channel_id",
    ["0x1234", "0x" + "zz" * 32, "1" * 64, "0x" + "00" * 33, "0X" + "00" * 32],
)
def test_malformed_channel_ids_are_422_invalid_bytes32(twin: Twin, channel_id: str) -> None:
    _, body = _good(twin)
    for response in (
        twin.client.post(f"/v1/channels/{channel_id}/payments", json=body),
        twin.client.get(f"/v1/channels/{channel_id}"),
        twin.client.post(f"/v1/channels/{channel_id}/close"),
    ):
        assert_problem(response, 422, "invalid_bytes32")


def test_framework_errors_are_problems_too(twin: Twin) -> None:
    cid, body = _good(twin)
    path = f"/v1/channels/{hx(cid)}/payments"
    assert_problem(twin.client.get("/nowhere"), 404, "not_found")
    assert_problem(twin.client.put(path, json=body), 405, "method_not_allowed")
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


def test_operator_endpoints_need_the_token(twin: Twin) -> None:
    cid = twin.open()
    assert twin.pay(cid, "t1", 1, 1).status_code == 201
    for method, path in (
        ("GET", "/v1/channels"),
        ("GET", "/metrics"),
        ("POST", f"/v1/channels/{hx(cid)}/claim"),
    ):
        response = twin.client.request(method, path)
        assert_problem(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"
        wrong = {"Authorization": f"Bearer {TOKEN}x"}
        assert_problem(twin.client.request(method, path, headers=wrong), 401, "unauthorized")
    # A wrong token on an endpoint where it is optional is refused, not silently ignored.
    wrong = {"Authorization": "Bearer nope"}
    receipts = twin.client.get(f"/v1/channels/{hx(cid)}/receipts", headers=wrong)
    assert_problem(receipts, 401, "unauthorized")


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
        (f"/v1/channels/{hx(cid)}/receipts?cursor=-1", "invalid_cursor"),
        (f"/v1/channels/{hx(cid)}/receipts?cursor=abc", "invalid_cursor"),
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


def test_no_cors_headers(twin: Twin) -> None:
    response = twin.client.options(
        "/v1/info",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in response.headers
    assert twin.client.get("/v1/info").json()["contract"] == CONTRACT
    assert ETH not in twin.client.get("/v1/info").json()["payees"]
