"""GET /metrics: Prometheus text format (operator only: volumes and balances are private)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from api.deps import OperatorDep, RuntimeDep
from api.queries import unclaimed_by_token
from api.schemas import problem_docs

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={
        200: {"content": {"text/plain": {"example": "piecework_payments_accepted_total 42\n"}}},
        **problem_docs(401),
    },
    summary="Prometheus metrics",
)
def metrics(runtime: RuntimeDep, _: OperatorDep) -> PlainTextResponse:
    """Payments accepted, rejected by code, latency histogram, unclaimed amount per token.

    Counters are per worker process; the unclaimed gauge is read from the database.
    """
    text = runtime.metrics.render(lambda: unclaimed_by_token(runtime.engine, runtime.payees))
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")
