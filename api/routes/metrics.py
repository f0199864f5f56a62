"""GET /metrics: Prometheus text format (operator only: volumes and balances are private)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api import telemetry
from api.chainstatus import ChainStatusMetrics
from api.deps import OperatorDep, RuntimeDep
from api.queries import unclaimed_by_token
from api.schemas import problem_docs

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"example": "piecework_payments_accepted_total 42.0\n"}}},
        **problem_docs(401),
    },
    summary="Prometheus metrics",
)
def metrics(runtime: RuntimeDep, _: OperatorDep) -> Response:
    """Payments accepted, rejected by code, latency histogram, unclaimed amount per token,
    and process metrics.

    With several workers the counters and the histogram are the sum over every worker,
    whichever worker answers; the unclaimed gauge is read from the database.
    """
    unclaimed = telemetry.UnclaimedAmounts(
        lambda: unclaimed_by_token(runtime.engine, runtime.payees)
    )
    chain = ChainStatusMetrics(runtime.chain_status)
    return Response(telemetry.exposition(unclaimed, chain), media_type=telemetry.CONTENT_TYPE)
