"""Signing and recovering EIP-712 messages with libsecp256k1 (coincurve): the payee's hot path.

Signatures are 65 bytes ``r || s || v`` with ``v`` = 27/28, byte-identical to what
``eth_signTypedData_v4`` (MetaMask, ethers, viem, eth-account) returns for the same typed data.
Recovery expects a signature already checked by ``messages.parse_signature`` (length, v,
low-s), so it only has to turn ``v`` into a recovery id and call libsecp256k1.

Private keys live only inside ``Signer`` (``__slots__``, no key in ``repr``/``str``, not
picklable) so they cannot end up in logs, tracebacks or error messages by accident.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Final, NoReturn

import coincurve

from channel._keccak import keccak256
from channel.errors import ConfigError, MalformedSignature, WrongSigner
from channel.messages import Domain, Message, parse_signature, to_checksum_address

__all__ = [
    "Signer",
    "address_of_public_key",
    "recover",
    "recover_address_bytes",
    "recover_digest",
    "require_signer",
]

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


def recover_digest(digest: bytes, signature: bytes) -> bytes:
    """The 20-byte address that signed ``digest``; ``signature`` must be pre-validated.

    Raises ``MalformedSignature`` when no public key matches (e.g. ``r`` is not an x coordinate).
    """
    try:
        public_key = coincurve.PublicKey.from_signature_and_message(
            signature[:64] + bytes((signature[64] - 27,)), digest, hasher=None
        )
    except Exception as exc:  # coincurve raises plain Exception/ValueError here
        raise MalformedSignature("signature does not recover to any public key") from exc
    return address_of_public_key(public_key.format(compressed=False))


def recover_address_bytes(domain: Domain, message: Message, signature: bytes) -> bytes:
    """The 20-byte signer of ``message`` under ``domain``; validates ``signature`` first."""
    return recover_digest(domain.digest(message), parse_signature(signature))


def recover(domain: Domain, message: Message, signature: bytes | str) -> str:
    """The EIP-55 checksummed signer of ``message``; validates ``signature`` first."""
    raw = parse_signature(signature)
    return to_checksum_address(recover_digest(domain.digest(message), raw))


def require_signer(domain: Domain, message: Message, signature: bytes, expected: bytes) -> None:
    """Raise ``WrongSigner`` unless ``signature`` recovers to ``expected`` (20-byte address)."""
    got = recover_address_bytes(domain, message, signature)
    if got != expected:
        raise WrongSigner(
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
