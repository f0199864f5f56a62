"""The three signed messages of the protocol (EIP-712), their domain, and input validation.

The EIP-712 type strings below are the only copy in Python; the Solidity contract holds the
other one and a test proves both hash alike. ``Domain`` precomputes its separator and each
message type keeps its type hash, so hashing a voucher costs two keccak calls and no
dictionary walking (the generic encoder in ``channel.eip712`` is the reference in tests).

Validation decisions (each raises a named ``InvalidInput`` subclass):

* ``parse_bytes32``: ``bytes`` of length 32, or ``0x`` + exactly 64 hex digits. Never padded
  (eth-account and cast right-pad ``0x1234`` silently; ethers/viem reject it, and so do we).
* ``parse_address``: ``0x`` + 40 hex digits. Mixed case must be a valid EIP-55 checksum;
  all-lowercase (or all-uppercase) is accepted as "no checksum given", like ethers'
  ``getAddress`` and viem's ``isAddress``. The result is always checksummed.
* ``parse_amount``: an ``int`` (not ``bool``) or a canonical decimal string (``"0"`` or no
  leading zero, digits only: no sign, ``+``, exponent, point or whitespace) in 0..2**256-1.
* ``parse_signature``: 65 bytes ``r || s || v`` with ``v`` in {27, 28} only. ``v`` = 0/1 is
  rejected because ``eth_signTypedData_v4`` never produces it and the EVM ``ecrecover``
  precompile (used by OpenZeppelin's ECDSA in the contract) rejects it: a voucher the
  contract cannot redeem must not be accepted off-chain. ``r``/``s`` must be in 1..n-1 and
  ``s`` must be low (EIP-2), as OpenZeppelin requires.
* ``task_id_hash``: a non-empty ``str`` of at most ``MAX_TASK_ID_LENGTH`` characters that
  encodes as UTF-8; the hash is ``keccak256(utf8(task_id))``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from channel import eip712
from channel._keccak import keccak256 as keccak
from channel.errors import (
    InvalidAddress,
    InvalidAmount,
    InvalidBytes32,
    InvalidTaskId,
    MalformedSignature,
)

__all__ = [
    "CLOSE_CONSENT_TYPE",
    "DOMAIN_NAME",
    "DOMAIN_TYPE",
    "DOMAIN_VERSION",
    "MAX_TASK_ID_LENGTH",
    "MAX_UINT256",
    "RECEIPT_TYPE",
    "SECP256K1_N",
    "VOUCHER_TYPE",
    "CloseConsent",
    "Domain",
    "Message",
    "Receipt",
    "Voucher",
    "parse_address",
    "parse_amount",
    "parse_bytes32",
    "parse_signature",
    "task_id_hash",
    "to_checksum_address",
]

# --- the protocol's fixed strings (PROTOCOL.md) ---------------------------------------------

DOMAIN_NAME: Final = "PaymentChannels"
DOMAIN_VERSION: Final = "1"
DOMAIN_TYPE: Final = (
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
VOUCHER_TYPE: Final = "Voucher(bytes32 channelId,uint256 cumulativeAmount)"
RECEIPT_TYPE: Final = "Receipt(bytes32 channelId,uint256 cumulativeAmount,bytes32 taskId)"
CLOSE_CONSENT_TYPE: Final = "CloseConsent(bytes32 channelId,uint256 cumulativeAmount)"

MAX_UINT256: Final = 2**256 - 1
SECP256K1_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_HALF_N_BYTES: Final = (SECP256K1_N // 2).to_bytes(32, "big")
_N_BYTES: Final = SECP256K1_N.to_bytes(32, "big")
_ZERO32: Final = bytes(32)
MAX_TASK_ID_LENGTH: Final = 256

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


def parse_signature(value: object) -> bytes:
    """65 bytes ``r||s||v``, v in {27, 28}, low s (EIP-2); raises ``MalformedSignature``."""
    raw = _hex_bytes(value, 65, MalformedSignature, "signature")
    v = raw[64]
    if v not in (27, 28):
        raise MalformedSignature(f"signature v must be 27 or 28, got {v}", v=v)
    # Equal-length big-endian byte strings compare like the integers they encode.
    r, s = raw[0:32], raw[32:64]
    if not (_ZERO32 < r < _N_BYTES and _ZERO32 < s < _N_BYTES):
        raise MalformedSignature("signature r or s is out of range")
    if s > _HALF_N_BYTES:
        raise MalformedSignature("high-s signature rejected (EIP-2); normalise s to n - s")
    return raw


def task_id_hash(task_id: object) -> bytes:
    """``keccak256(utf8(task_id))`` for a non-empty task id string; raises ``InvalidTaskId``."""
    if not isinstance(task_id, str):
        raise InvalidTaskId(f"task id must be a string, got {_preview(task_id)}")
    if not task_id:
        raise InvalidTaskId("task id must not be empty")
    if len(task_id) > MAX_TASK_ID_LENGTH:
        raise InvalidTaskId(
            f"task id is {len(task_id)} characters, at most {MAX_TASK_ID_LENGTH} allowed",
            length=len(task_id),
        )
    try:
        encoded = task_id.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidTaskId("task id is not valid Unicode (lone surrogate)") from exc
    return keccak(encoded)


# --- domain ----------------------------------------------------------------------------------

_DOMAIN_NAME_T, _DOMAIN_FIELDS = _fields(DOMAIN_TYPE)


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
        object.__setattr__(self, "verifying_contract", parse_address(self.verifying_contract))
        separator = eip712.hash_struct(
            "EIP712Domain", self.as_dict(), {_DOMAIN_NAME_T: _DOMAIN_FIELDS}
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
        """The full typed-data JSON for wallets and eth-account (uint256 as int, bytes as hex)."""
        name, fields = _fields(message.TYPE)
        return {
            "types": {_DOMAIN_NAME_T: _DOMAIN_FIELDS, name: fields},
            "primaryType": name,
            "domain": self.as_dict(),
            "message": message.as_dict(),
        }


# --- messages --------------------------------------------------------------------------------


def _check_message(channel_id: object, amount: object) -> None:
    # Cheap structural checks so a malformed message cannot even be constructed; parsing of
    # untrusted text happens earlier, in parse_*.
    if not isinstance(channel_id, bytes) or len(channel_id) != 32:
        raise InvalidBytes32(f"channel id must be 32 bytes, got {_preview(channel_id)}")
    if isinstance(amount, bool) or not isinstance(amount, int) or not 0 <= amount <= MAX_UINT256:
        raise InvalidAmount(f"cumulative amount must be a uint256, got {_preview(amount)}")


@dataclass(frozen=True, slots=True)
class _ChannelAmount:
    """What Voucher and CloseConsent share: ``(bytes32 channelId, uint256 cumulativeAmount)``."""

    TYPE: ClassVar[str]
    TYPE_HASH: ClassVar[bytes]

    channel_id: bytes
    cumulative_amount: int

    def __post_init__(self) -> None:
        _check_message(self.channel_id, self.cumulative_amount)

    def struct_hash(self) -> bytes:
        return bytes(
            keccak(self.TYPE_HASH + self.channel_id + self.cumulative_amount.to_bytes(32, "big"))
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "channelId": "0x" + self.channel_id.hex(),
            "cumulativeAmount": self.cumulative_amount,
        }


@dataclass(frozen=True, slots=True)
class Voucher(_ChannelAmount):
    """Signed by the payer: the channel may pay the payee up to ``cumulative_amount`` in total."""

    TYPE: ClassVar[str] = VOUCHER_TYPE
    TYPE_HASH: ClassVar[bytes] = keccak(VOUCHER_TYPE.encode())


@dataclass(frozen=True, slots=True)
class Receipt:
    """Signed by the payee: it holds the voucher for ``cumulative_amount`` and it pays ``task_id``.

    ``task_id`` is the bytes32 ``keccak256(utf8(task id string))`` (see ``task_id_hash``).
    """

    TYPE: ClassVar[str] = RECEIPT_TYPE
    TYPE_HASH: ClassVar[bytes] = keccak(RECEIPT_TYPE.encode())

    channel_id: bytes
    cumulative_amount: int
    task_id: bytes

    def __post_init__(self) -> None:
        _check_message(self.channel_id, self.cumulative_amount)
        if not isinstance(self.task_id, bytes) or len(self.task_id) != 32:
            raise InvalidBytes32(f"receipt task id must be 32 bytes, got {_preview(self.task_id)}")

    def struct_hash(self) -> bytes:
        return bytes(
            keccak(
                self.TYPE_HASH
                + self.channel_id
                + self.cumulative_amount.to_bytes(32, "big")
                + self.task_id
            )
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "channelId": "0x" + self.channel_id.hex(),
            "cumulativeAmount": self.cumulative_amount,
            "taskId": "0x" + self.task_id.hex(),
        }


@dataclass(frozen=True, slots=True)
class CloseConsent(_ChannelAmount):
    """Signed by the payee: it agrees to close the channel now at ``cumulative_amount``."""

    TYPE: ClassVar[str] = CLOSE_CONSENT_TYPE
    TYPE_HASH: ClassVar[bytes] = keccak(CLOSE_CONSENT_TYPE.encode())


Message = Voucher | Receipt | CloseConsent
