"""Keccak-256 for the hot path: pycryptodome's C core called directly, one state per thread.

``eth_hash``/``Crypto.Hash.keccak.new`` allocate and free a C state and build a Python
object for every hash (~5 us for 64 bytes here); resetting a per-thread state instead costs
three ctypes calls (~2 us). With two hashes per voucher that is ~15% of the whole check.
Falls back to ``eth_hash`` if pycryptodome's raw library is missing.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from typing import Any

from eth_hash.auto import keccak as _eth_keccak

__all__ = ["keccak256"]


def _fallback(data: bytes) -> bytes:
    return bytes(_eth_keccak(data))


def _make() -> Callable[[bytes], bytes]:
    try:
        from Crypto.Hash import keccak as _mod  # noqa: PLC0415 - optional fast path
        from Crypto.Util._raw_api import VoidPointer  # noqa: PLC0415
    except ImportError:  # pragma: no cover
        return _fallback
    lib: Any = getattr(_mod, "_raw_keccak_lib", None)
    if lib is None or not hasattr(lib, "keccak_reset"):  # pragma: no cover
        return _fallback
    reset, absorb, squeeze = lib.keccak_reset, lib.keccak_absorb, lib.keccak_digest
    size32 = ctypes.c_size_t(32)
    padding = ctypes.c_ubyte(0x01)  # original Keccak padding, not SHA-3's 0x06
    local = threading.local()

    def _state() -> tuple[Any, Any]:
        pointer = VoidPointer()
        # capacity 512 bits (= 2 x 256-bit digest), 24 rounds: Keccak-256.
        if lib.keccak_init(pointer.address_of(), ctypes.c_size_t(64), ctypes.c_ubyte(24)):
            raise RuntimeError("keccak_init failed")
        # The state lives as long as the thread (one small allocation per thread).
        local.state = pointer.get()
        local.buffer = ctypes.create_string_buffer(32)
        return local.state, local.buffer

    def keccak256(data: bytes) -> bytes:
        try:
            state, buffer = local.state, local.buffer
        except AttributeError:
            state, buffer = _state()
        reset(state)
        absorb(state, data, ctypes.c_size_t(len(data)))
        squeeze(state, buffer, size32, padding)
        raw: bytes = buffer.raw
        return raw

    if keccak256(b"") != _fallback(b""):  # pragma: no cover - self-check at import
        return _fallback
    return keccak256


keccak256: Callable[[bytes], bytes] = _make()
