"""Keccak-256 for the hot path: pycryptodome's C core called directly, one state per thread.

``eth_hash``/``Crypto.Hash.keccak.new`` allocate and free a C state and build a Python
object for every hash (~5 us for 64 bytes here); resetting a per-thread state instead costs
three foreign calls (~2 us). Kept because it pays: scripts/bench_signing.py times the whole
voucher check (two hashes) with both, alternating in one run; through ``eth_hash`` it verified
22 % fewer vouchers per second (``eth_hash_vs_direct_keccak``: median 0.78 of ten runs, range
0.50-1.02, on the shared 2-core machine at load average 4-8), against a 5 % bar.

The C functions are private to pycryptodome, so every way this can break ends in the
``eth_hash`` fallback, never in an import error: pycryptodome missing, its raw library or a
symbol renamed, or any digest of the self-check differing. Arguments go through pycryptodome's
own ``_raw_api`` helpers, so either of its backends works (cffi, chosen whenever cffi is
installed, e.g. alongside ``cryptography``; else ctypes).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from eth_hash.auto import keccak as _eth_keccak

__all__ = ["keccak256"]

log = logging.getLogger(__name__)

# Inputs around the 136-byte rate of Keccak-256, where absorbing takes a second block.
_SELF_CHECK = (b"", b"\x01", bytes(range(135)), bytes(range(136)), bytes(range(137)) * 3)


def _fallback(data: bytes) -> bytes:
    return bytes(_eth_keccak(data))


def _pycryptodome() -> tuple[Any, Any]:
    """pycryptodome's keccak module (holding the raw library) and its foreign-call helpers."""
    from Crypto.Hash import keccak  # noqa: PLC0415 - optional fast path
    from Crypto.Util import _raw_api  # noqa: PLC0415

    return keccak, _raw_api


def _direct(module: Any, _raw_api: Any) -> Callable[[bytes], bytes]:
    """The per-thread-state function; raises if pycryptodome does not offer what it needs."""
    lib: Any = module._raw_keccak_lib
    init, reset = lib.keccak_init, lib.keccak_reset
    absorb, squeeze = lib.keccak_absorb, lib.keccak_digest
    c_size_t, get_raw_buffer = _raw_api.c_size_t, _raw_api.get_raw_buffer
    size32 = c_size_t(32)
    padding = _raw_api.c_ubyte(0x01)  # original Keccak padding, not SHA-3's 0x06
    local = threading.local()

    def _state() -> tuple[Any, Any]:
        pointer = _raw_api.VoidPointer()
        # capacity 512 bits (= 2 x 256-bit digest), 24 rounds: Keccak-256.
        if init(pointer.address_of(), c_size_t(64), _raw_api.c_ubyte(24)):
            raise RuntimeError("keccak_init failed")
        # The state lives as long as the thread (one small allocation per thread).
        local.state = pointer.get()
        local.buffer = _raw_api.create_string_buffer(32)
        return local.state, local.buffer

    def keccak256(data: bytes) -> bytes:
        try:
            state, buffer = local.state, local.buffer
        except AttributeError:
            state, buffer = _state()
        reset(state)
        absorb(state, data, c_size_t(len(data)))
        squeeze(state, buffer, size32, padding)
        raw: bytes = get_raw_buffer(buffer)
        return raw

    return keccak256


def _make(load: Callable[[], tuple[Any, Any]] = _pycryptodome) -> Callable[[bytes], bytes]:
    try:
        direct = _direct(*load())
        if all(direct(sample) == _fallback(sample) for sample in _SELF_CHECK):
            return direct
        reason = "a self-check digest differs"
    except Exception as exc:  # anything at all: this is an optimisation, never a failure
        reason = f"{type(exc).__name__}: {exc}"
    log.info("keccak256 uses eth_hash (pycryptodome's C core unusable: %s)", reason)
    return _fallback


keccak256: Callable[[bytes], bytes] = _make()
