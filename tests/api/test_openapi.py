"""The OpenAPI document: examples for every body, and a bounded schemathesis run against it.

Schemathesis generates valid and invalid requests from /openapi.json and checks that no
answer is a 5xx, that each one matches its documented schema and content type, and (our own
check) that every error is problem+json with a ``code``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from api_support import AUTH, serve, settings_for
from hypothesis import HealthCheck, settings

from api.main import Overrides, create_app
from channel.payee import InMemoryChannelSource

_DB = Path(tempfile.mkdtemp(prefix="piecework-openapi-")) / "api.db"
APP = create_app(settings_for(f"sqlite:///{_DB}"), Overrides(source=InMemoryChannelSource()))
# GET /v1/events is a never-ending stream (checked in test_web.py), not a request/response.
schema = schemathesis.openapi.from_dict(APP.openapi()).exclude(path="/v1/events")


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serve(APP) as url:
        yield url


def _schemas(document: dict[str, Any]) -> dict[str, Any]:
    return dict(document["components"]["schemas"])


def test_every_request_and_response_body_has_an_example() -> None:
    document = APP.openapi()
    components = _schemas(document)
    missing = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            bodies = [operation.get("requestBody", {}).get("content", {})]
            bodies += [r.get("content", {}) for r in operation["responses"].values()]
            for content in bodies:
                for media, spec in content.items():
                    ref = spec.get("schema", {}).get("$ref", "")
                    target = components.get(ref.rsplit("/", 1)[-1], spec.get("schema", {}))
                    if not (spec.get("example") or spec.get("examples") or target.get("examples")
                            or media.startswith("text/")):
                        missing.append(f"{method.upper()} {path} {media}")
            if media_free := [p["name"] for p in operation.get("parameters", [])
                              if p["in"] == "path" and not p.get("schema", {}).get("examples")]:
                missing.append(f"{method.upper()} {path} path params {media_free}")
    assert missing == []


def test_docs_are_served() -> None:
    from fastapi.testclient import TestClient

    with TestClient(APP) as client:
        assert client.get("/docs").status_code == 200
        assert client.get("/openapi.json").json()["info"]["title"] == "Piecework payee service"


def _problem_with_code(ctx: Any, response: Any, case: Any) -> bool | None:
    if response.status_code >= 400:
        assert response.headers["content-type"][0].startswith("application/problem+json"), (
            response.headers
        )
        body = response.json()
        assert isinstance(body.get("code"), str) and body["code"]
        assert body["status"] == response.status_code
    return None


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_conforms_and_never_5xx(case: Any, base_url: str) -> None:
    case.call_and_validate(
        base_url=base_url,
        headers=AUTH,
        additional_checks=[_problem_with_code],
        # Unknown query parameters are ignored (FastAPI's and most APIs' behaviour), which the
        # first check counts as "accepted invalid data"; and a schema cannot say "a valid
        # secp256k1 signature by this payer", so schema-valid vouchers are rightly refused
        # (422), which the second counts as "rejected valid data". Malformed values are
        # covered field by field in test_errors.py.
        excluded_checks=[
            schemathesis.checks.negative_data_rejection,
            schemathesis.checks.positive_data_acceptance,
        ],
    )
