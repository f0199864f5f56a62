"""Loading and creating the signing key: encrypted JSON keystore, or a raw key for development.

The key never leaves a :class:`SigningKey` as text: ``repr``/``str`` show only the address, and
nothing here logs it. Sources, in order of precedence:

1. an explicit keystore path (password from the argument, ``PIECEWORK_KEYSTORE_PASSWORD``, or a
   prompt supplied by the caller);
2. ``PIECEWORK_PRIVATE_KEY`` (0x hex) — development only, and said so in the log.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from eth_account import Account
from eth_account.signers.local import LocalAccount

from channel.errors import ConfigError

__all__ = [
    "KEYSTORE_PASSWORD_ENV",
    "PRIVATE_KEY_ENV",
    "SigningKey",
    "load_key",
    "new_keystore",
]

log = logging.getLogger(__name__)

PRIVATE_KEY_ENV = "PIECEWORK_PRIVATE_KEY"
KEYSTORE_PASSWORD_ENV = "PIECEWORK_KEYSTORE_PASSWORD"  # noqa: S105 - a variable name
_KEY_HEX_LEN = 64


class SigningKey:
    """A secp256k1 private key with its address; prints as the address only."""

    __slots__ = ("_account",)

    def __init__(self, private_key: bytes) -> None:
        if len(private_key) != 32:
            # The length is not secret; the bytes are.
            raise ConfigError(f"private key must be 32 bytes, got {len(private_key)}")
        try:
            self._account: LocalAccount = Account.from_key(private_key)
        except (ValueError, TypeError) as exc:
            raise ConfigError("private key is not a valid secp256k1 key") from exc

    @classmethod
    def from_hex(cls, text: str) -> SigningKey:
        raw = text.strip()
        raw = raw[2:] if raw[:2] in ("0x", "0X") else raw
        if len(raw) != _KEY_HEX_LEN:
            raise ConfigError(f"private key must be {_KEY_HEX_LEN} hex digits, got {len(raw)}")
        try:
            return cls(bytes.fromhex(raw))
        except ValueError:
            raise ConfigError("private key is not hex") from None

    @property
    def address(self) -> str:
        """EIP-55 checksummed address."""
        return str(self._account.address)

    @property
    def account(self) -> LocalAccount:
        """The eth-account signer (for signing transactions and typed data)."""
        return self._account

    @property
    def private_key(self) -> bytes:
        """Raw key bytes, for the signing modules; never format this."""
        return bytes(self._account.key)

    def __repr__(self) -> str:
        return f"SigningKey(address={self.address}, key=<redacted>)"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        # Pickling would write the key somewhere we do not control.
        raise TypeError("SigningKey cannot be pickled")


def load_key(
    keystore: str | Path | None = None,
    password: str | None = None,
    *,
    prompt: Callable[[str], str] | None = None,
    environ: dict[str, str] | None = None,
) -> SigningKey:
    """Load the signing key from a keystore file, or ``PIECEWORK_PRIVATE_KEY`` if none is given."""
    env = os.environ if environ is None else environ
    if keystore is not None:
        path = Path(keystore).expanduser()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"keystore {path} does not exist") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"keystore {path} is not readable JSON: {exc}") from None
        secret = password if password is not None else env.get(KEYSTORE_PASSWORD_ENV)
        if secret is None:
            if prompt is None:
                raise ConfigError(
                    f"keystore {path} needs a password: set {KEYSTORE_PASSWORD_ENV} or pass one"
                )
            secret = prompt(f"Password for {path}")
        try:
            raw = Account.decrypt(data, secret)
        except ValueError:
            # eth-account says "MAC mismatch"; the user needs to know it is the password.
            raise ConfigError(f"wrong password for keystore {path}") from None
        return SigningKey(bytes(raw))
    hex_key = env.get(PRIVATE_KEY_ENV)
    if hex_key:
        log.info("using the development key from %s", PRIVATE_KEY_ENV)
        return SigningKey.from_hex(hex_key)
    raise ConfigError(f"no signing key: pass --keystore or set {PRIVATE_KEY_ENV} (development)")


def new_keystore(
    path: str | Path,
    password: str,
    *,
    overwrite: bool = False,
    kdf: Literal["scrypt", "pbkdf2"] = "scrypt",
    iterations: int | None = None,
) -> str:
    """Create a key, write it encrypted (scrypt) to ``path`` (mode 0600); return its address."""
    if not password:
        raise ConfigError("refusing to write a keystore with an empty password")
    target = Path(path).expanduser()
    if target.exists() and not overwrite:
        raise ConfigError(f"{target} already exists; refusing to overwrite a keystore")
    account = Account.create()
    # scrypt with eth-account's default cost; tests may pass a cheap pbkdf2 instead.
    encrypted = Account.encrypt(account.key, password, kdf=kdf, iterations=iterations)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Create with 0600 from the start so the file is never briefly world-readable.
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(encrypted, out)
    return str(account.address)
