"""channel._keccak: the direct calls into pycryptodome's C core give eth_hash's digests, on
both pycryptodome backends and from many threads, and every way they can break falls back."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import types
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from Crypto.Hash import keccak as crypto_keccak
from Crypto.Util import _raw_api

from channel import _keccak

KNOWN = [  # Keccak-256 (original padding), as Ethereum uses it
    (b"", "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"),
    (b"abc", "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45"),
]


def test_the_direct_path_is_in_use() -> None:
    # scripts/bench_signing.py measured it worth keeping; it must not fall back silently here.
    assert _keccak.keccak256 is not _keccak._fallback


@pytest.mark.parametrize(("data", "digest"), KNOWN)
@pytest.mark.parametrize("fn", [_keccak.keccak256, _keccak._fallback], ids=["direct", "eth_hash"])
def test_known_digests(fn: Callable[[bytes], bytes], data: bytes, digest: str) -> None:
    assert fn(data).hex() == digest


def test_direct_equals_eth_hash_for_every_length_across_two_blocks() -> None:
    for n in range(0, 300):
        data = bytes((i * 7 + n) % 256 for i in range(n))
        assert _keccak.keccak256(data) == _keccak._fallback(data), n


def test_each_thread_hashes_with_its_own_state() -> None:
    inputs = [i.to_bytes(4, "big") * (i % 50) for i in range(4000)]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(_keccak.keccak256, inputs, chunksize=16))
    assert got == [_keccak._fallback(x) for x in inputs]


class _Lib:
    """pycryptodome's raw library with some functions removed or replaced."""

    def __init__(self, real: Any, missing: str = "", **replaced: Callable[..., Any]) -> None:
        self._real, self._missing, self._replaced = real, missing, replaced

    def __getattr__(self, name: str) -> Any:
        if name == self._missing:
            raise AttributeError(name)
        return self._replaced.get(name, getattr(self._real, name))


REAL_LIB = crypto_keccak._raw_keccak_lib  # type: ignore[attr-defined]


def _with_lib(lib: object) -> Callable[[], tuple[Any, Any]]:
    """A loader handing _make this library in place of pycryptodome's (which eth_hash, the
    fallback, keeps using untouched)."""
    return lambda: (types.SimpleNamespace(_raw_keccak_lib=lib), _raw_api)


def _sha3_padding(state: Any, buffer: Any, size: Any, _padding: Any) -> Any:
    return REAL_LIB.keccak_digest(state, buffer, size, _raw_api.c_ubyte(0x06))


def _no_pycryptodome() -> tuple[Any, Any]:
    raise ImportError("No module named 'Crypto'")


BROKEN: dict[str, Callable[[], tuple[Any, Any]]] = {
    "pycryptodome missing": _no_pycryptodome,
    "private library gone": lambda: (types.SimpleNamespace(), _raw_api),
    "symbol renamed": _with_lib(_Lib(REAL_LIB, missing="keccak_reset")),
    "wrong digests (SHA-3 padding)": _with_lib(_Lib(REAL_LIB, keccak_digest=_sha3_padding)),
    "init fails": _with_lib(_Lib(REAL_LIB, keccak_init=lambda *_: 1)),
}


@pytest.mark.parametrize("load", BROKEN.values(), ids=BROKEN.keys())
def test_falls_back_to_eth_hash_whatever_breaks(
    load: Callable[[], tuple[Any, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO", logger="channel._keccak"):
        made = _keccak._make(load)
    assert made is _keccak._fallback
    assert "keccak256 uses eth_hash" in caplog.text
    assert made(b"abc").hex() == KNOWN[1][1]


def test_the_same_check_keeps_a_working_library() -> None:
    # The wrapper changes nothing by itself: the breakages above are what makes _make fall back.
    made = _keccak._make(_with_lib(_Lib(REAL_LIB)))
    assert made is not _keccak._fallback
    assert made(b"abc").hex() == KNOWN[1][1]


_ON_BACKEND = textwrap.dedent("""
    import json, sys
    if sys.argv[1] == "ctypes":
        sys.modules["cffi"] = None  # pycryptodome then takes its ctypes backend
    from Crypto.Util import _raw_api
    from channel import _keccak
    samples = [bytes(range(n % 256)) * (1 + n // 256) for n in range(0, 600, 7)]
    print(json.dumps({
        "backend": _raw_api.backend,
        "direct": _keccak.keccak256 is not _keccak._fallback,
        "equal": all(_keccak.keccak256(s) == _keccak._fallback(s) for s in samples),
    }))
""")


@pytest.mark.parametrize("backend", ["cffi", "ctypes"])
def test_direct_path_on_both_pycryptodome_backends(backend: str) -> None:
    """pycryptodome picks cffi whenever it is importable; a ctypes-only version of this module
    crashed every import of channel.messages there (a TypeError in its self-check)."""
    done = subprocess.run([sys.executable, "-c", _ON_BACKEND, backend], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"backend": backend, "direct": True, "equal": True}
