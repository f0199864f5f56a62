"""GET /healthz: is the database answering, and the Ethereum node?"""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.responses import Response

from api.deps import RuntimeDep
from api.problems import problem_response
from api.schemas import Health, problem_docs
from channel.errors import PieceworkError

router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    response_model=Health,
    responses=problem_docs(503),
    summary="Database and node check",
)
def healthz(runtime: RuntimeDep) -> Response:
    """200 when both answer; 503 ``unhealthy`` (problem+json naming which one) otherwise."""
    try:
        with runtime.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        database = "ok"
    except Exception:  # any failure means "down"; the reason is in the server log
        database = "down"
    try:
        runtime.node_check()
        node = "ok"
    except PieceworkError:
        node = "down"
    wallet = None
    if runtime.wallet is not None and node == "ok":
        try:
            wallet = runtime.wallet()
        except PieceworkError:
            wallet = None
    if database == "ok" and node == "ok":
        body: dict[str, object] = {"status": "ok", "database": database, "node": node}
        return JSONResponse(body if wallet is None else {**body, "wallet": wallet})
    return problem_response(
        503,
        "unhealthy",
        f"database {database}, node {node}",
        headers={"Retry-After": "5"},
        database=database,
        node=node,
    )
