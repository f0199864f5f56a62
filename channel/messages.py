"""The five signed messages of protocol v2 (EIP-712), their domain, and input validation.

The EIP-712 type strings below are the only copy in Python; the Solidity contract holds the
other one (its public ``*_TYPEHASH`` constants) and tests prove both hash alike, and that the
fast path here equals eth-account's ``encode_typed_data``. ``Domain`` precomputes its separator
and each message type keeps its type hash, so hashing a voucher costs two keccak calls and no
dictionary walking.

Validation decisions (each raises a named ``InvalidInput`` subclass):

* ``parse_bytes32``: ``bytes`` of length 32, or ``0x`` + exactly 64 hex digits. Never padded
  (eth-account and cast right-pad ``0x1234`` silently; ethers/viem reject it, and so do we).
* ``parse_address``: ``0x`` + 40 hex digits. Mixed case must be a valid EIP-55 checksum;
  all-lowercase (or all-uppercase) is accepted as "no checksum given", like ethers'
  ``getAddress`` and viem's ``isAddress``. The result is always checksummed.
* ``parse_amount``: an ``int`` (not ``bool``) or a canonical decimal string (``"0"`` or no
  leading zero, digits only: no sign, ``+``, exponent, point or whitespace) in 0..2**256-1.
* ``parse_signature``: the *shape* only: 65 bytes, from ``bytes`` or ``0x`` + 130 hex digits
  (``MalformedSignature``). Whether those bytes are a valid signature by the right key (``v`` in
  {27, 28}, ``r``/``s`` in range, low ``s``, the signer) is decided later, at the signature
  step of the validation order (``channel.signing``, ``InvalidSignature``), so that a channel
  that does not exist is reported as such before its signature is looked at.
* ``parse_task_id``/``task_id_hash``: a ``str`` of 1 to 256 code points without control
  characters (Unicode category Cc) or lone surrogates; the hash is ``keccak256(utf8(task_id))``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from channel._keccak import keccak256 as keccak
from channel.errors import (
    InvalidAddress,
    InvalidAmount,
    InvalidBytes32,
    InvalidTaskId,
    MalformedSignature,
)

__all__ = [
    "ACCESS_TYPE",
    "CLOSE_CONSENT_TYPE",
    "CLOSE_REQUEST_TYPE",
    "DOMAIN_NAME",
    "DOMAIN_TYPE",
    "DOMAIN_VERSION",
    "MAX_ACCESS_AHEAD",
    "MAX_TASK_ID_LENGTH",
    "MAX_UINT64",
    "MAX_UINT256",
    "MESSAGE_TYPES",
    "RECEIPT_TYPE",
    "SECP256K1_N",
    "VOUCHER_TYPE",
    "ZERO_ADDRESS",
    "Access",
    "CloseConsent",
    "CloseRequest",
    "Domain",
    "Message",
    "Receipt",
    "Voucher",
    "format_access",
    "parse_access",
    "parse_address",
    "parse_amount",
    "parse_bytes32",
    "parse_message",
    "parse_signature",
    "parse_task_id",
    "parse_uint64",
    "task_id_hash",
    "to_checksum_address",
]

# --- the protocol's fixed strings (PROTOCOL.md) ---------------------------------------------

DOMAIN_NAME: Final = "PaymentChannels"
DOMAIN_VERSION: Final = "2"
DOMAIN_TYPE: Final = (
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
VOUCHER_TYPE: Final = "Voucher(bytes32 channelId,uint256 cumulativeAmount)"
RECEIPT_TYPE: Final = (
    "Receipt(bytes32 channelId,uint256 cumulativeAmount,uint256 amount,bytes32 taskId)"
)
CLOSE_CONSENT_TYPE: Final = (
    "CloseConsent(bytes32 channelId,uint256 cumulativeAmount,uint64 deadline)"
)
CLOSE_REQUEST_TYPE: Final = "CloseRequest(bytes32 channelId,uint256 cumulativeAmount)"
ACCESS_TYPE: Final = "Access(bytes32 channelId,uint64 expires)"

ZERO_ADDRESS: Final = "0x0000000000000000000000000000000000000000"
MAX_UINT256: Final = 2**256 - 1
MAX_UINT64: Final = 2**64 - 1
SECP256K1_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
MAX_TASK_ID_LENGTH: Final = 256
MAX_ACCESS_AHEAD: Final = 86_400
"""An ``Access`` signature may expire at most this many seconds after the service's now."""

_TYPE_STRING = re.compile(r"^(\w+)\(([^()]*)\)$")


def _fields(type_string: str) -> tuple[str, list[dict[str, str]]]:
    """Split ``Name(t1 n1,t2 n2)`` into the JSON ``types`` entry wallets expect."""
    m = _TYPE_STRING.match(type_string)
    if m is None:  # pragma: no cover - the constants above are fixed
        raise ValueError(type_string)
    pairs = [p.split(" ") for p in m.group(2).split(",")]
    return m.group(1), [{"name": n, "type": t} for t, n in pairs]


# --- validation ------------------------------------------------------------------------------

_DECIMAL = re.compile(r"^(0|[1-9][0-9]{0,77})$")
# Unicode category Cc is exactly U+0000..U+001F and U+007F..U+009F (a test checks this against
# unicodedata over every code point); U+D800..U+DFFF can only appear in a str as lone halves.
_BAD_TASK_CHAR = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _hex_bytes(value: object, length: int, error: type[Exception], what: str) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
    elif isinstance(value, str) and value.startswith("0x") and value.isascii():
        if len(value) != 2 + 2 * length:
            raise error(f"{what} must be 0x + {2 * length} hex digits, got {len(value) - 2}")
        try:
            raw = bytes.fromhex(value[2:])
        except ValueError:
            raise error(f"{what} is not valid hex: {_preview(value)}") from None
    else:
        raise error(f"{what} must be 0x-prefixed hex, got {_preview(value)}")
    # fromhex skips whitespace, so a padded string comes out short and fails here.
    if len(raw) != length:
        raise error(f"{what} must be exactly {length} bytes, got {len(raw)}")
    return raw


def to_checksum_address(raw: bytes) -> str:
    """EIP-55: hex digit i is upper-cased when nibble i of keccak(lowercase hex) is >= 8."""
    digits = raw.hex()
    hashed = keccak(digits.encode()).hex()
    return "0x" + "".join(
        c.upper() if int(h, 16) >= 8 else c for c, h in zip(digits, hashed[:40], strict=True)
    )


def _preview(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def parse_bytes32(value: object) -> bytes:
    """Exactly 32 bytes from ``bytes`` or ``0x`` + 64 hex digits; raises ``InvalidBytes32``."""
    return _hex_bytes(value, 32, InvalidBytes32, "bytes32")


def parse_address(value: object) -> str:
    """A 20-byte address, returned EIP-55 checksummed; raises ``InvalidAddress``.

    Mixed-case input must carry a valid checksum; all-lowercase/all-uppercase is accepted.
    """
    raw = _hex_bytes(value, 20, InvalidAddress, "address")
    checksummed = to_checksum_address(raw)
    if isinstance(value, str):
        digits = value[2:]
        if digits != digits.lower() and digits != digits.upper() and value != checksummed:
            raise InvalidAddress(
                f"bad EIP-55 checksum: got {value}, expected {checksummed}",
                got=value,
                expected=checksummed,
            )
    return checksummed


def parse_amount(value: object) -> int:
    """An int in 0..2**256-1 from an int or canonical decimal string; raises ``InvalidAmount``."""
    if isinstance(value, bool):
        raise InvalidAmount(f"amount must be an integer, got {value!r}")
    if isinstance(value, int):
        amount = value
    elif isinstance(value, str) and _DECIMAL.match(value):
        amount = int(value)
    else:
        raise InvalidAmount(
            f"amount must be an integer or a decimal string without sign, exponent or "
            f"leading zeros, got {_preview(value)}"
        )
    if not 0 <= amount <= MAX_UINT256:
        raise InvalidAmount(f"amount {amount} is outside 0..2**256-1", got=amount)
    return amount


def parse_uint64(value: object, what: str = "value") -> int:
    """An int in 0..2**64-1 (deadlines, expiry times); same syntax as ``parse_amount``."""
    number = parse_amount(value)
    if number > MAX_UINT64:
        raise InvalidAmount(f"{what} {number} is outside 0..2**64-1", got=number)
    return number


def parse_signature(value: object) -> bytes:
    """65 bytes ``r||s||v`` from bytes or 0x hex; raises ``MalformedSignature`` (shape only)."""
    return _hex_bytes(value, 65, MalformedSignature, "signature")


def parse_task_id(task_id: object) -> str:
    """The task id itself if it is 1..256 code points without Cc or lone surrogates."""
    if not isinstance(task_id, str):
        raise InvalidTaskId(f"task id must be a string, got {_preview(task_id)}")
    if not task_id:
        raise InvalidTaskId("task id must not be empty")
    if len(task_id) > MAX_TASK_ID_LENGTH:
        raise InvalidTaskId(
            f"task id is {len(task_id)} code points, at most {MAX_TASK_ID_LENGTH} allowed",
            length=len(task_id),
        )
    bad = _BAD_TASK_CHAR.search(task_id)
    if bad is not None:
        char = ord(bad.group())
        kind = "a lone surrogate" if 0xD800 <= char <= 0xDFFF else "a control character"
        raise InvalidTaskId(
            f"task id contains {kind} (U+{char:04X}) at position {bad.start()}",
            position=bad.start(),
        )
    return task_id


def format_access(expires: int, signature: bytes) -> str:
    """The credential ``<expires>.<signature>`` of ``Authorization: Access ...``/``?access=``."""
    return f"{expires}.0x{signature.hex()}"


def parse_access(text: str) -> tuple[int, bytes]:
    """``(expires, signature)`` of an ``<expires>.<signature>`` credential (its shape only)."""
    expires, dot, signature = text.partition(".")
    if not dot:
        raise MalformedSignature("access must be <expires>.<signature>")
    return parse_uint64(expires, "expires"), parse_signature(signature)


def task_id_hash(task_id: object) -> bytes:
    """``keccak256(utf8(task_id))`` for a valid task id; raises ``InvalidTaskId``."""
    return keccak(parse_task_id(task_id).encode("utf-8"))


# --- domain ----------------------------------------------------------------------------------

_DOMAIN_NAME_T, _DOMAIN_FIELDS = _fields(DOMAIN_TYPE)
_DOMAIN_TYPE_HASH: Final = keccak(DOMAIN_TYPE.encode())


@dataclass(frozen=True)
class Domain:
    """The EIP-712 domain ``{name, version, chainId, verifyingContract}``; separator precomputed."""

    chain_id: int
    verifying_contract: str
    separator: bytes = field(init=False, repr=False, compare=False)
    _prefix: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.chain_id, bool) or not isinstance(self.chain_id, int):
            raise InvalidAmount(f"chain id must be an int, got {self.chain_id!r}")
        if not 0 < self.chain_id <= MAX_UINT256:
            raise InvalidAmount(f"chain id {self.chain_id} out of range")
        contract = parse_address(self.verifying_contract)
        object.__setattr__(self, "verifying_contract", contract)
        # hashStruct(EIP712Domain): string fields are hashed, the address is left-padded.
        separator = keccak(
            _DOMAIN_TYPE_HASH
            + keccak(DOMAIN_NAME.encode())
            + keccak(DOMAIN_VERSION.encode())
            + self.chain_id.to_bytes(32, "big")
            + bytes.fromhex(contract[2:]).rjust(32, b"\0")
        )
        object.__setattr__(self, "separator", separator)
        object.__setattr__(self, "_prefix", b"\x19\x01" + separator)

    def as_dict(self) -> dict[str, Any]:
        """The domain as the JSON object wallets take (``eth_signTypedData_v4``)."""
        return {
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": self.chain_id,
            "verifyingContract": self.verifying_contract,
        }

    def digest(self, message: Message) -> bytes:
        """``keccak256(0x1901 || domainSeparator || hashStruct(message))``: what is signed."""
        return keccak(self._prefix + message.struct_hash())

    def typed_data(self, message: Message) -> dict[str, Any]:
        """The full typed-data JSON for wallets and eth-account (integers as int, bytes as hex)."""
        name, fields = _fields(message.TYPE)
        return {
            "types": {_DOMAIN_NAME_T: _DOMAIN_FIELDS, name: fields},
            "primaryType": name,
            "domain": self.as_dict(),
            "message": message.as_dict(),
        }


# --- messages --------------------------------------------------------------------------------
# Cheap structural checks in __post_init__ so a malformed message cannot even be constructed;
# parsing of untrusted text happens earlier, in parse_*.


def _check_bytes32(value: object, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != 32:
        raise InvalidBytes32(f"{what} must be 32 bytes, got {_preview(value)}")


def _check_uint(value: object, bits: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << bits:
        raise InvalidAmount(f"{what} must be a uint{bits}, got {_preview(value)}")


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


@dataclass(frozen=True, slots=True)
class _ChannelAmount:
    """What Voucher and CloseRequest share: ``(bytes32 channelId, uint256 cumulativeAmount)``."""

    TYPE: ClassVar[str]
    TYPE_HASH: ClassVar[bytes]

    channel_id: bytes
    cumulative_amount: int

    def __post_init__(self) -> None:
        _check_bytes32(self.channel_id, "channel id")
        _check_uint(self.cumulative_amount, 256, "cumulative amount")

    def struct_hash(self) -> bytes:
        return keccak(self.TYPE_HASH + self.channel_id + _word(self.cumulative_amount))

    def as_dict(self) -> dict[str, Any]:
        return {"channelId": _hex(self.channel_id), "cumulativeAmount": self.cumulative_amount}


@dataclass(frozen=True, slots=True)
class Voucher(_ChannelAmount):
    """Signed by the payer or the voucher signer: the channel may pay up to this in total."""

    TYPE: ClassVar[str] = VOUCHER_TYPE
    TYPE_HASH: ClassVar[bytes] = keccak(VOUCHER_TYPE.encode())


@dataclass(frozen=True, slots=True)
class CloseRequest(_ChannelAmount):
    """Signed by the payer or the voucher signer: asks the service for a ``CloseConsent``."""

    TYPE: ClassVar[str] = CLOSE_REQUEST_TYPE
    TYPE_HASH: ClassVar[bytes] = keccak(CLOSE_REQUEST_TYPE.encode())


@dataclass(frozen=True, slots=True)
class Receipt:
    """Signed by the payee: it holds the voucher for ``cumulative_amount``, and ``amount`` of
    it pays ``task_id`` (the bytes32 ``keccak256(utf8(task id string))``, see ``task_id_hash``)."""

    TYPE: ClassVar[str] = RECEIPT_TYPE
    TYPE_HASH: ClassVar[bytes] = keccak(RECEIPT_TYPE.encode())

    channel_id: bytes
    cumulative_amount: int
    amount: int
    task_id: bytes

    def __post_init__(self) -> None:
        _check_bytes32(self.channel_id, "channel id")
        _check_uint(self.cumulative_amount, 256, "cumulative amount")
        _check_uint(self.amount, 256, "amount")
        _check_bytes32(self.task_id, "receipt task id")

    def struct_hash(self) -> bytes:
        return keccak(
            self.TYPE_HASH
            + self.channel_id
            + _word(self.cumulative_amount)
            + _word(self.amount)
            + self.task_id
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "channelId": _hex(self.channel_id),
            "cumulativeAmount": self.cumulative_amount,
            "amount": self.amount,
            "taskId": _hex(self.task_id),
        }


@dataclass(frozen=True, slots=True)
class CloseConsent:
    """Signed by the payee: it agrees to close at ``cumulative_amount`` if that happens in a
    block whose timestamp is at most ``deadline``."""

    TYPE: ClassVar[str] = CLOSE_CONSENT_TYPE
    TYPE_HASH: ClassVar[bytes] = keccak(CLOSE_CONSENT_TYPE.encode())

    channel_id: bytes
    cumulative_amount: int
    deadline: int

    def __post_init__(self) -> None:
        _check_bytes32(self.channel_id, "channel id")
        _check_uint(self.cumulative_amount, 256, "cumulative amount")
        _check_uint(self.deadline, 64, "deadline")

    def struct_hash(self) -> bytes:
        return keccak(
            self.TYPE_HASH + self.channel_id + _word(self.cumulative_amount) + _word(self.deadline)
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "channelId": _hex(self.channel_id),
            "cumulativeAmount": self.cumulative_amount,
            "deadline": self.deadline,
        }


@dataclass(frozen=True, slots=True)
class Access:
    """Signed by the payer or the voucher signer: the bearer reads the channel's private data
    at the service until ``expires`` (unix seconds, the service's clock)."""

    TYPE: ClassVar[str] = ACCESS_TYPE
    TYPE_HASH: ClassVar[bytes] = keccak(ACCESS_TYPE.encode())

    channel_id: bytes
    expires: int

    def __post_init__(self) -> None:
        _check_bytes32(self.channel_id, "channel id")
        _check_uint(self.expires, 64, "expires")

    def struct_hash(self) -> bytes:
        return keccak(self.TYPE_HASH + self.channel_id + _word(self.expires))

    def as_dict(self) -> dict[str, Any]:
        return {"channelId": _hex(self.channel_id), "expires": self.expires}


Message = Voucher | Receipt | CloseConsent | CloseRequest | Access

MESSAGE_TYPES: Final[dict[str, type[Message]]] = {
    cls.__name__: cls for cls in (Voucher, Receipt, CloseConsent, CloseRequest, Access)
}
"""Every protocol message class by its EIP-712 primary type name."""

# How each EIP-712 field type of the protocol is read from JSON (decimal strings or ints, hex).
_FIELD_PARSERS: Final[dict[str, Callable[[object], Any]]] = {
    "bytes32": parse_bytes32,
    "uint256": parse_amount,
    "uint64": lambda value: parse_uint64(value, "uint64"),
}


def parse_message(primary_type: str, fields: dict[str, Any]) -> Message:
    """A protocol message from its JSON form (``{"channelId": "0x..", "cumulativeAmount":
    "12"}``): exactly the type's fields, each validated like any other input."""
    cls = MESSAGE_TYPES.get(primary_type)
    if cls is None:
        raise ValueError(f"unknown message type {primary_type!r}")
    _, spec = _fields(cls.TYPE)
    names = [f["name"] for f in spec]
    if sorted(fields) != sorted(names):
        raise ValueError(f"{primary_type} has fields {names}, got {sorted(fields)}")
    values = [_FIELD_PARSERS[f["type"]](fields[f["name"]]) for f in spec]
    return cls(*values)
