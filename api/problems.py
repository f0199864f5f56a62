"""The one place that turns errors into RFC 9457 ``application/problem+json`` responses.

Every error the service answers with, ours (``channel.errors``), FastAPI's request validation
and Starlette's own 404/405, carries a stable machine-readable ``code``; clients branch on
``code``, never on ``title`` or ``detail``. Amounts in extension members are decimal strings,
like everywhere else in the API.

    status  code(s)
    401     unauthorized                    (operator endpoints: no bearer token)
            access_required                 (payer-side reads: no Access / bearer credential)
    403     forbidden                       (operator endpoints: wrong bearer token)
            access_denied                   (wrong signer/channel, expired, too far ahead)
            close_not_authorized            (a CloseRequest not by the payer side)
    404     unknown_channel, not_found
    405     method_not_allowed
    409     stale_voucher (+ current_cumulative_amount), task_conflict, channel_not_open
            (+ deadline while frozen by a consent), channel_closing_soon, nothing_to_claim,
            precondition_failed (the chain state makes the transaction pointless; nothing was
            sent), contract_revert (+ revert)
    413     payload_too_large
    415     unsupported_media_type
    422     validation_error (+ errors), invalid_* / malformed_signature, invalid_signature,
            token_not_accepted, challenge_period_too_short, amount_mismatch
            (+ requested_amount), exceeds_deposit (+ deposit)
    502     chain_error
    503     node_unavailable, store_error, unhealthy (Retry-After set)
    504     transaction_timeout
    500     internal_error, config_error    (detail never shows internals)
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from channel import errors as E  # noqa: N812 - reads as a namespace of error classes
from channel.chain import PreconditionFailed

__all__ = [
    "PROBLEM_JSON",
    "ProblemError",
    "install_problem_handlers",
    "problem_response",
    "status_for",
    "to_problem",
]

log = logging.getLogger(__name__)

PROBLEM_JSON: Final = "application/problem+json"
TYPE_PREFIX: Final = "urn:piecework:problem:"

# Most specific class first: lookup walks the MRO, so a subclass added to channel.errors
# later falls back to its parent's status instead of a 500.
_STATUS: Final[Mapping[type[E.PieceworkError], int]] = {
    E.InvalidInput: 422,
    E.UnknownChannel: 404,
    E.ChannelNotOpen: 409,
    E.ChannelClosingSoon: 409,
    E.ChallengePeriodTooShort: 422,
    E.TokenNotAccepted: 422,
    E.InvalidSignature: 422,
    E.StaleVoucher: 409,
    E.TaskConflict: 409,
    E.AmountMismatch: 422,
    E.ExceedsDeposit: 422,
    E.PaymentRejected: 422,
    E.AccessRequired: 401,
    E.AccessDenied: 403,
    E.CloseNotAuthorized: 403,
    E.NotAuthorized: 403,
    E.NodeUnavailable: 503,
    PreconditionFailed: 409,
    E.ContractRevert: 409,
    E.TransactionTimeout: 504,
    E.ChainError: 502,
    E.StoreError: 503,
    E.ConfigError: 500,
    E.PieceworkError: 500,
}

# Codes for errors raised by Starlette/FastAPI themselves (routing, auth, our middleware).
_HTTP_CODES: Final[Mapping[int, str]] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    500: "internal_error",
    503: "service_unavailable",
}

# Detail keys of channel errors that are safe and useful to show; anything else stays server-side.
_EXPOSED_DETAILS: Final = frozenset(
    {"got", "expected", "length", "v", "name", "current", "deposit", "position", "min_deposit",
     "token"}
)
# Extension members PROTOCOL.md makes JSON integers (unix seconds), not decimal strings.
_INTEGER_MEMBERS: Final = frozenset({"deadline"})


class ProblemError(Exception):
    """Raised by the API layer itself (auth, paging) for a problem that is not a domain error."""

    def __init__(self, status: int, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.extra = extra


def status_for(exc: E.PieceworkError) -> int:
    for cls in type(exc).__mro__:
        status = _STATUS.get(cls)
        if status is not None:
            return status
    return 500


def _jsonable(value: Any) -> Any:
    # Amounts are ints internally and must leave as decimal strings (they exceed 2**53).
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def problem_response(
    status: int,
    code: str,
    detail: str,
    *,
    title: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
    """Build the problem+json response; ``extra`` become RFC 9457 extension members."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + code,
        "title": title or phrase,
        "status": status,
        "detail": detail,
        "code": code,
    }
    body.update(
        {
            k: v if k in _INTEGER_MEMBERS and isinstance(v, int) else _jsonable(v)
            for k, v in extra.items()
            if k not in body
        }
    )
    return Response(
        content=json.dumps(body, separators=(",", ":"), ensure_ascii=False),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=dict(headers) if headers else None,
    )


def _domain_problem(exc: E.PieceworkError) -> Response:
    status = status_for(exc)
    extra: dict[str, Any] = {
        k: v for k, v in exc.details.items() if k in _EXPOSED_DETAILS and k != "args"
    }
    headers: dict[str, str] = {}
    if isinstance(exc, E.StaleVoucher):
        extra.pop("current", None)
        extra["current_cumulative_amount"] = exc.current
    elif isinstance(exc, E.ExceedsDeposit):
        extra["deposit"] = exc.deposit
    elif isinstance(exc, E.AmountMismatch):
        extra["requested_amount"] = exc.details.get("requested")
    elif isinstance(exc, E.ChannelNotOpen) and exc.details.get("deadline") is not None:
        extra["deadline"] = exc.details["deadline"]
    elif isinstance(exc, E.AccessRequired):
        headers["WWW-Authenticate"] = 'Access, Bearer realm="piecework"'
    elif isinstance(exc, E.ContractRevert):
        extra.pop("name", None)
        extra["revert"] = exc.name
    message = exc.message
    if isinstance(exc, E.NodeUnavailable | E.TransactionTimeout):
        # The message names the RPC URL, which may embed a provider API key: log it, show a
        # fixed sentence.
        log.warning("%s", exc.message)
        message = "the Ethereum node is unreachable or too slow; retry later"
    if status == 503:
        headers["Retry-After"] = "1"
    if status == 500:
        # Config errors are operator problems: log them, show the client nothing internal.
        log.error("server error: %r", exc)
        return problem_response(500, exc.code, "the service is misconfigured or failed")
    return problem_response(status, exc.code, message, headers=headers, **extra)


def _validation_problem(exc: RequestValidationError) -> Response:
    # Only loc/msg/type: pydantic's ``input`` and ``ctx`` can echo huge or binary input back.
    problems = [
        {
            "loc": [str(p) for p in err.get("loc", ())],
            "msg": str(err.get("msg", "")),
            "type": str(err.get("type", "")),
        }
        for err in exc.errors()[:20]
    ]
    first = problems[0] if problems else {"loc": [], "msg": "invalid request"}
    where = ".".join(first["loc"][1:]) or "request"
    return problem_response(422, "validation_error", f"{where}: {first['msg']}", errors=problems)


def to_problem(exc: Exception) -> Response:
    """The problem+json response for any exception (used by the handlers and the middleware)."""
    if isinstance(exc, E.PieceworkError):
        return _domain_problem(exc)
    if isinstance(exc, ProblemError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return problem_response(exc.status, exc.code, exc.detail, headers=headers, **exc.extra)
    if isinstance(exc, RequestValidationError):
        return _validation_problem(exc)
    if isinstance(exc, OperationalError):
        # The database is down, or (SQLite) locked past busy_timeout: transient, not a bug in
        # the request. The store wraps most of these in StoreError; this catches the rest.
        log.warning("database operational error: %s", exc.orig)
        return problem_response(
            503, E.StoreError.code, "the database is busy or unreachable; retry later",
            headers={"Retry-After": "1"},
        )
    if isinstance(exc, StarletteHTTPException):
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        return problem_response(exc.status_code, code, detail, headers=exc.headers)
    log.error("unhandled error", exc_info=exc)
    return problem_response(500, "internal_error", "internal server error")


def _allowed_methods(request: Request) -> set[str]:
    """Every method the API documents at this path: Starlette's 405 names only the methods of
    the first route matching the path, not those of routes declared elsewhere for it."""
    allowed: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        if _template(template).fullmatch(request.url.path):
            allowed |= {method.upper() for method in operations}
    return allowed


@functools.cache
def _template(path: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path)))


async def _handle(request: Request, exc: Exception) -> Response:
    response = to_problem(exc)
    if isinstance(exc, StarletteHTTPException) and exc.status_code == 405:
        allowed = _allowed_methods(request)
        if allowed:
            response.headers["Allow"] = ", ".join(sorted(allowed))
    return response


def install_problem_handlers(app: FastAPI) -> None:
    """Register the handlers so no error leaves the app as anything but problem+json."""
    for cls in (
        E.PieceworkError,
        ProblemError,
        StarletteHTTPException,
        RequestValidationError,
        OperationalError,
    ):
        app.add_exception_handler(cls, _handle)
    # Exception goes to ServerErrorMiddleware, which still answers through this handler.
    app.add_exception_handler(Exception, _handle)
