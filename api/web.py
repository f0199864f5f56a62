"""The web app at ``/``: the built pages (web/SERVICE-NEEDS.md item 1).

``npm run build:web`` writes ``web/dist`` and copies it into this package's ``web/`` directory
(``scripts/package_data.js``), so the wheel carries the pages. Only files that exist in that
directory are served, by exact name (top-level files and ``assets/*``): no listing, no path
walking, GET and HEAD only. A missing build answers 404 ``web_not_built``.

Every page carries a strict Content-Security-Policy in a header (the header can forbid framing,
which a ``<meta>`` CSP cannot: the payment page holds the voucher signer's key and must not be
framed), ``nosniff`` and ``no-referrer``. HTML is revalidated on every load; assets have
content-hashed names and are cached for a year.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from fastapi import APIRouter, Request
from starlette.responses import Response

from api.problems import ProblemError

__all__ = ["CSP", "PAGES", "WEB_DIR", "router"]

WEB_DIR: Final = Path(__file__).resolve().parent / "web"

CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}
PAGES: Final = frozenset({"index.html", "dashboard.html", "settle.html"})
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")

router = APIRouter(include_in_schema=False)


def _file(directory: Path, name: str) -> Path:
    """The file ``name`` directly inside ``directory``, or 404 (never anything outside it)."""
    if not WEB_DIR.is_dir() and name in PAGES:
        raise ProblemError(
            404, "web_not_built",
            "the web app is not built into this installation: run npm run build:web",
        )
    if not _NAME.fullmatch(name) or ".." in name:
        raise ProblemError(404, "not_found", "no such page")
    path = directory / name
    if path.suffix not in _TYPES or not path.is_file() or path.parent != directory:
        raise ProblemError(404, "not_found", "no such page")
    return path


def _serve(request: Request, path: Path, *, immutable: bool) -> Response:
    body = path.read_bytes()
    headers = {
        "Cache-Control": "public, max-age=31536000, immutable" if immutable else "no-cache",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    if path.suffix == ".html":
        headers["Content-Security-Policy"] = CSP
    response = Response(
        content=b"" if request.method == "HEAD" else body,
        media_type=_TYPES[path.suffix],
        headers=headers,
    )
    if request.method == "HEAD":
        response.headers["content-length"] = str(len(body))
    return response


@router.api_route("/", methods=["GET", "HEAD"])
def index(request: Request) -> Response:
    return _serve(request, _file(WEB_DIR, "index.html"), immutable=False)


@router.api_route("/assets/{name}", methods=["GET", "HEAD"])
def asset(name: str, request: Request) -> Response:
    return _serve(request, _file(WEB_DIR / "assets", name), immutable=True)


@router.api_route("/{name}", methods=["GET", "HEAD"])
def page(name: str, request: Request) -> Response:
    """``index.html``, ``dashboard.html``, ``settle.html`` and the build report."""
    return _serve(request, _file(WEB_DIR, name), immutable=False)
