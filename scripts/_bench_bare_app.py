"""Bench baseline: a bare FastAPI payment endpoint (pydantic body + one coincurve recover).

The same route and body as the real service's ``POST /v1/channels/{id}/payments`` but no
EIP-712 hashing, no state, no database: what FastAPI + uvicorn + pydantic + one libsecp256k1
recovery cost on this machine, measured in the same run as the service (scripts/bench_http.py).
``BENCH_BARE_SYNC=1`` makes the handler a sync ``def`` (run in the threadpool like the real
one) instead of ``async def``.

Run: uvicorn --factory scripts._bench_bare_app:create_app  (or --app-dir scripts)
"""

from __future__ import annotations

import json
import os

import coincurve
from fastapi import FastAPI, Response
from pydantic import BaseModel, ConfigDict, Field


class NewPayment(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    task_id: str = Field(min_length=1, max_length=1024)
    amount: str = Field(pattern=r"^(0|[1-9][0-9]{0,77})$")
    cumulative_amount: str = Field(pattern=r"^(0|[1-9][0-9]{0,77})$")
    signature: str = Field(pattern=r"^0x[0-9a-fA-F]{130}$")


def _pay(channel_id: str, body: NewPayment) -> Response:
    sig = bytes.fromhex(body.signature[2:])
    digest = bytes.fromhex(channel_id[2:])  # any 32 bytes: one recovery is what is measured
    key = coincurve.PublicKey.from_signature_and_message(
        sig[:64] + bytes((sig[64] - 27,)), digest, hasher=None
    )
    receipt = {"channel_id": channel_id, "cumulative_amount": body.cumulative_amount,
               "task_id": key.format(compressed=True)[1:].hex(), "signature": body.signature}
    return Response(json.dumps({"receipt": receipt}, separators=(",", ":")), status_code=201,
                    media_type="application/json")


def create_app() -> FastAPI:
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    if os.environ.get("BENCH_BARE_SYNC") == "1":

        @app.post("/v1/channels/{channel_id}/payments", status_code=201)
        def pay_sync(channel_id: str, body: NewPayment) -> Response:
            return _pay(channel_id, body)

    else:

        @app.post("/v1/channels/{channel_id}/payments", status_code=201)
        async def pay(channel_id: str, body: NewPayment) -> Response:
            return _pay(channel_id, body)

    return app
