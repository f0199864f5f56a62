"""Signing and recovering EIP-712 messages with libsecp256k1 (coincurve): the payee's hot path.

Signatures are 65 bytes ``r || s || v`` with ``v`` = 27/28, byte-identical to what
``eth_signTypedData_v4`` (MetaMask, ethers, viem, eth-account) returns for the same typed data.
Recovery takes the 65 bytes ``messages.parse_signature`` let through (the shape) and decides
whether they are a signature at all, the way the contract's OpenZeppelin ECDSA does: ``v`` in
{27, 28} only (``eth_signTypedData_v4`` never produces 0/1 and the ``ecrecover`` precompile
rejects them: a voucher the contract cannot redeem must not be accepted off-chain), ``r`` and
``s`` in 1..n-1, ``s`` low (EIP-2). Anything else is ``InvalidSignature``.

Private keys live only inside ``Signer`` (``__slots__``, no key in ``repr``/``str``, not
picklable) so they cannot end up in logs, tracebacks or error messages by accident.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Final, NoReturn

import coincurve

from channel._keccak import keccak256
from channel.errors import ConfigError, InvalidSignature
from channel.messages import SECP256K1_N, Domain, Message, parse_signature, to_checksum_address

__all__ = [
    "Signer",
    "address_of_public_key",
    "check_canonical",
    "recover",
    "recover_address_bytes",
    "recover_digest",
    "require_signer",
]

_HALF_N_BYTES: Final = (SECP256K1_N // 2).to_bytes(32, "big")
_N_BYTES: Final = SECP256K1_N.to_bytes(32, "big")
_ZERO32: Final = bytes(32)

# Recovering gives a public key; hashing it to an address is another keccak (~5 us, a tenth of
# the whole check). A payee sees the same few payers again and again, so remembering
# pubkey -> address saves that hash on every voucher after a payer's first. Bounded: cleared
# when full rather than LRU, because a full table only costs one keccak per entry again.
_ADDRESS_CACHE: dict[bytes, bytes] = {}
_ADDRESS_CACHE_MAX: Final = 65_536


def address_of_public_key(public_key_uncompressed: bytes) -> bytes:
    """The 20-byte address of a 65-byte uncompressed public key (``0x04 || X || Y``)."""
    address = _ADDRESS_CACHE.get(public_key_uncompressed)
    if address is None:
        address = keccak256(public_key_uncompressed[1:])[12:]
        if len(_ADDRESS_CACHE) >= _ADDRESS_CACHE_MAX:
            _ADDRESS_CACHE.clear()
        _ADDRESS_CACHE[public_key_uncompressed] = address
    return address


def check_canonical(signature: bytes) -> None:
    """``InvalidSignature`` unless the 65 bytes are a signature OpenZeppelin's ECDSA accepts."""
    v = signature[64]
    if v not in (27, 28):
        raise InvalidSignature(f"signature v must be 27 or 28, got {v}", v=v)
    # Equal-length big-endian byte strings compare like the integers they encode.
    r, s = signature[0:32], signature[32:64]
    if not (_ZERO32 < r < _N_BYTES and _ZERO32 < s < _N_BYTES):
        raise InvalidSignature("signature r or s is out of range")
    if s > _HALF_N_BYTES:
        raise InvalidSignature("high-s signature rejected (EIP-2); normalise s to n - s")


def recover_digest(digest: bytes, signature: bytes) -> bytes:
    """The 20-byte address that signed ``digest``; ``signature`` is 65 bytes (its shape checked).

    Raises ``InvalidSignature`` for a non-canonical signature or when no public key matches
    (e.g. ``r`` is not an x coordinate).
    """
    check_canonical(signature)
    try:
        public_key = coincurve.PublicKey.from_signature_and_message(
            signature[:64] + bytes((signature[64] - 27,)), digest, hasher=None
        )
    except Exception as exc:  # coincurve raises plain Exception/ValueError here
        raise InvalidSignature("signature does not recover to any public key") from exc
    return address_of_public_key(public_key.format(compressed=False))


def recover_address_bytes(domain: Domain, message: Message, signature: bytes) -> bytes:
    """The 20-byte signer of ``message`` under ``domain``; checks ``signature``'s shape first."""
    return recover_digest(domain.digest(message), parse_signature(signature))


def recover(domain: Domain, message: Message, signature: bytes | str) -> str:
    """The EIP-55 checksummed signer of ``message``; validates ``signature`` first."""
    raw = parse_signature(signature)
    return to_checksum_address(recover_digest(domain.digest(message), raw))


def require_signer(domain: Domain, message: Message, signature: bytes, expected: bytes) -> None:
    """Raise ``InvalidSignature`` unless ``signature`` recovers to ``expected`` (20 bytes)."""
    got = recover_address_bytes(domain, message, signature)
    if got != expected:
        raise InvalidSignature(
            f"signature is by {to_checksum_address(got)}, expected {to_checksum_address(expected)}",
            got=to_checksum_address(got),
            expected=to_checksum_address(expected),
        )


class Signer:
    """Holds one secp256k1 private key, signs EIP-712 messages; ``repr`` shows the address only."""

    __slots__ = ("_key", "address", "address_bytes")

    _key: coincurve.PrivateKey
    address: str
    address_bytes: bytes

    def __init__(self, private_key: bytes | str) -> None:
        """``private_key`` is 32 raw bytes or 0x hex. Never logged, never in error messages."""
        if isinstance(private_key, str):
            text = private_key.removeprefix("0x")
            try:
                raw = bytes.fromhex(text)
            except ValueError:
                raise ConfigError("private key is not hex") from None
        else:
            raw = bytes(private_key)
        if len(raw) != 32:
            raise ConfigError(f"private key must be 32 bytes, got {len(raw)}")
        try:
            key = coincurve.PrivateKey(raw)
        except Exception:
            # `from None`: the chained exception could carry the key bytes in its message.
            raise ConfigError("private key is not a valid secp256k1 secret") from None
        self._key = key
        self.address_bytes = address_of_public_key(key.public_key.format(compressed=False))
        self.address = to_checksum_address(self.address_bytes)

    @classmethod
    def generate(cls) -> Signer:
        """A fresh random key (tests, demos)."""
        while True:
            try:
                return cls(os.urandom(32))
            except ConfigError:  # pragma: no cover - probability ~2**-128
                continue

    @classmethod
    def from_keystore(cls, path: str | Path, password: str) -> Signer:
        """Decrypt a Web3 Secret Storage (v3) keystore JSON file."""
        # Imported here: eth-account's import is slow and only keystore users need it.
        from eth_account import Account  # noqa: PLC0415

        try:
            raw = Account.decrypt(Path(path).read_text(), password)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot decrypt keystore {path}: {type(exc).__name__}") from None
        return cls(bytes(raw))

    def sign_digest(self, digest: bytes) -> bytes:
        """65-byte ``r || s || v`` (v = 27/28, low s) over a 32-byte digest."""
        sig = self._key.sign_recoverable(digest, hasher=None)
        return sig[:64] + bytes((sig[64] + 27,))

    def sign(self, domain: Domain, message: Message) -> bytes:
        """The ``eth_signTypedData_v4`` signature of ``message`` under ``domain``."""
        return self.sign_digest(domain.digest(message))

    def __repr__(self) -> str:
        return f"Signer(address={self.address})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("Signer holds a private key and cannot be pickled")

    def __getstate__(self) -> Any:
        raise TypeError("Signer holds a private key and cannot be copied")
