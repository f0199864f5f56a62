"""A small generic EIP-712 encoder: the slow, plainly-correct reference for the hot path.

``channel.messages`` hashes its three fixed types with precomputed type hashes; this module
encodes arbitrary typed data (nested structs, ``string``/``bytes``, ``bytesN``, ``uintN``/``intN``,
``bool``, ``address`` and arrays) exactly as the EIP-712 specification describes, so tests can
prove the fast path equals the spec (and eth-account) for many inputs, and so the domain
separator is computed by one well-tested function.

Values are expected already validated (``channel.messages.parse_*``): this module does not
pad short ``bytesN`` values the way eth-account silently does; it rejects them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from eth_hash.auto import keccak

__all__ = ["encode_type", "hash_struct", "hash_typed_data", "type_hash"]

Types = Mapping[str, Sequence[Mapping[str, str]]]

_ARRAY = re.compile(r"^(.*)\[(\d*)\]$")
_UINT = re.compile(r"^uint(\d{1,3})$")
_INT = re.compile(r"^int(\d{1,3})$")
_BYTES_N = re.compile(r"^bytes(\d{1,2})$")


def _dependencies(primary: str, types: Types, found: set[str] | None = None) -> set[str]:
    found = set() if found is None else found
    if primary in found or primary not in types:
        return found
    found.add(primary)
    for field in types[primary]:
        base = _ARRAY.sub(r"\1", field["type"])
        while _ARRAY.match(base):
            base = _ARRAY.sub(r"\1", base)
        _dependencies(base, types, found)
    return found


def encode_type(primary: str, types: Types) -> str:
    """``Name(type1 name1,...)`` followed by referenced struct types sorted by name (spec)."""
    deps = _dependencies(primary, types) - {primary}
    return "".join(
        f"{name}({','.join(f['type'] + ' ' + f['name'] for f in types[name])})"
        for name in [primary, *sorted(deps)]
    )


def type_hash(primary: str, types: Types) -> bytes:
    return bytes(keccak(encode_type(primary, types).encode()))


def _int_word(value: int, bits: int, signed: bool) -> bytes:
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{value!r} is not an int{bits if signed else ''}/uint{bits} value")
    return value.to_bytes(32, "big", signed=signed)


def _encode_value(typ: str, value: Any, types: Types) -> bytes:
    if typ in types:
        return hash_struct(typ, value, types)
    array = _ARRAY.match(typ)
    if array:
        inner, length = array.group(1), array.group(2)
        if length and len(value) != int(length):
            raise ValueError(f"{typ} needs {length} items, got {len(value)}")
        return bytes(keccak(b"".join(_encode_value(inner, v, types) for v in value)))
    if typ == "string":
        return bytes(keccak(value.encode("utf-8")))
    if typ == "bytes":
        return bytes(keccak(bytes(value)))
    if typ == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{value!r} is not a bool")
        return int(value).to_bytes(32, "big")
    if typ == "address":
        raw = bytes.fromhex(value[2:]) if isinstance(value, str) else bytes(value)
        if len(raw) != 20:
            raise ValueError(f"{value!r} is not a 20-byte address")
        return raw.rjust(32, b"\0")
    if m := _BYTES_N.match(typ):
        raw = bytes.fromhex(value[2:]) if isinstance(value, str) else bytes(value)
        if len(raw) != int(m.group(1)):
            raise ValueError(f"{typ} needs exactly {m.group(1)} bytes, got {len(raw)}")
        return raw.ljust(32, b"\0")
    if m := _UINT.match(typ):
        return _int_word(value, int(m.group(1)), signed=False)
    if m := _INT.match(typ):
        return _int_word(value, int(m.group(1)), signed=True)
    raise ValueError(f"unsupported EIP-712 type {typ!r}")


def hash_struct(primary: str, data: Mapping[str, Any], types: Types) -> bytes:
    """``keccak256(typeHash || encodeData(data))``."""
    encoded = b"".join(_encode_value(f["type"], data[f["name"]], types) for f in types[primary])
    return bytes(keccak(type_hash(primary, types) + encoded))


def hash_typed_data(message: Mapping[str, Any]) -> bytes:
    """The digest ``eth_signTypedData_v4`` signs for ``{types, primaryType, domain, message}``."""
    types = message["types"]
    separator = hash_struct("EIP712Domain", message["domain"], types)
    body = hash_struct(message["primaryType"], message["message"], types)
    return bytes(keccak(b"\x19\x01" + separator + body))
