"""GET /healthz: is the database answering, and the Ethereum node?"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.responses import Response

from api.deps import Runtime, RuntimeDep
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
    """200 when both answer; 503 ``unhealthy`` (problem+json naming which one) otherwise.

    Also reports the latest block's age and the watcher's lag behind it; 503 when the node is
    stale (``PIECEWORK_MAX_HEAD_AGE``) or the watcher lags more than
    ``PIECEWORK_CLOSING_MARGIN`` seconds of block time.
    """
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
    extra, trouble = _chain_fields(runtime) if node == "ok" else ({}, [])
    wallet = None
    if runtime.wallet is not None and node == "ok":
        try:
            wallet = runtime.wallet()
        except PieceworkError:
            wallet = None
    if wallet is not None:
        extra["wallet"] = wallet
    if database == "ok" and node == "ok" and not trouble:
        return JSONResponse({"status": "ok", "database": database, "node": node, **extra})
    return problem_response(
        503,
        "unhealthy",
        "; ".join([f"database {database}, node {node}", *trouble]),
        headers={"Retry-After": "5"},
        database=database,
        node=node,
        **extra,
    )


def _chain_fields(runtime: Runtime) -> tuple[dict[str, Any], list[str]]:
    """Head age and mirror lag, and what is wrong with them (empty: nothing)."""
    if runtime.chain_status is None:
        return {}, []
    try:
        st = runtime.chain_status()
    except PieceworkError:
        return {}, ["node status unreadable"]
    fields: dict[str, Any] = {"head_block": st.head, "head_age_seconds": round(st.head_age, 1),
                              "mirror_block": st.mirror, "mirror_lag_blocks": st.lag_blocks,
                              "mirror_lag_seconds": st.lag_seconds}
    trouble = []
    settings = runtime.settings
    if settings.max_head_age and st.head_age > settings.max_head_age:
        trouble.append(f"node stale: latest block is {st.head_age:.0f}s old "
                       f"(PIECEWORK_MAX_HEAD_AGE={settings.max_head_age})")
    if st.lag_seconds is not None and st.lag_seconds > settings.closing_margin:
        trouble.append(f"watcher lagging: {st.lag_blocks} blocks, {st.lag_seconds}s of block "
                       f"time behind (PIECEWORK_CLOSING_MARGIN={settings.closing_margin})")
    return fields, trouble
