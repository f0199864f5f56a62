"""Signing and recovery: wallet-identical signatures, roundtrips, and keys that never leak."""

from __future__ import annotations

import copy
import pickle

import pytest
from eth_account import Account

from channel.errors import ConfigError, InvalidSignature
from channel.messages import (
    MAX_UINT64,
    SECP256K1_N,
    Access,
    CloseConsent,
    CloseRequest,
    Domain,
    Message,
    Receipt,
    Voucher,
)
from channel.signing import Signer, recover, recover_address_bytes, require_signer

DOMAIN = Domain(31337, "0x5FbDB2315678afecb367f032d93F642f64180aa3")
# Anvil's first well-known development key: public test data, never a real secret.
ANVIL_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
ANVIL_ADDRESS = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"

MESSAGES = [
    Voucher(b"\x01" * 32, 0),
    Voucher(b"\x02" * 32, 10**18),
    Voucher(b"\xff" * 32, 2**256 - 1),
    Receipt(b"\x03" * 32, 5, 2, b"\x04" * 32),
    CloseConsent(b"\x05" * 32, 123_456_789, MAX_UINT64),
    CloseRequest(b"\x06" * 32, 10**18),
    Access(b"\x08" * 32, 1_700_000_000),
]


def test_signer_address_matches_eth_account() -> None:
    assert Signer(ANVIL_KEY).address == ANVIL_ADDRESS
    assert Signer(bytes.fromhex(ANVIL_KEY[2:])).address == ANVIL_ADDRESS


@pytest.mark.parametrize("message", MESSAGES)
def test_signature_is_byte_identical_to_eth_sign_typed_data(
    message: Message,
) -> None:
    ours = Signer(ANVIL_KEY).sign(DOMAIN, message)
    theirs = Account.sign_typed_data(ANVIL_KEY, full_message=DOMAIN.typed_data(message))
    assert ours == bytes(theirs.signature)
    assert ours[64] in (27, 28)


@pytest.mark.parametrize("message", MESSAGES)
def test_sign_recover_roundtrip(message: Message) -> None:
    signer = Signer.generate()
    sig = signer.sign(DOMAIN, message)
    assert recover(DOMAIN, message, sig) == signer.address
    assert recover(DOMAIN, message, "0x" + sig.hex()) == signer.address
    assert recover_address_bytes(DOMAIN, message, sig) == signer.address_bytes
    require_signer(DOMAIN, message, sig, signer.address_bytes)


def test_recover_of_eth_account_signature() -> None:
    voucher = Voucher(b"\x09" * 32, 77)
    signed = Account.sign_typed_data(ANVIL_KEY, full_message=DOMAIN.typed_data(voucher))
    assert recover(DOMAIN, voucher, bytes(signed.signature)) == ANVIL_ADDRESS


@pytest.mark.parametrize(
    "tamper",
    [
        lambda v: Voucher(v.channel_id, v.cumulative_amount + 1),
        lambda v: Voucher(b"\x00" * 32, v.cumulative_amount),
    ],
)
def test_changed_message_recovers_someone_else(tamper: object) -> None:
    signer = Signer.generate()
    voucher = Voucher(b"\x07" * 32, 100)
    sig = signer.sign(DOMAIN, voucher)
    other = tamper(voucher)  # type: ignore[operator]
    with pytest.raises(InvalidSignature):
        require_signer(DOMAIN, other, sig, signer.address_bytes)


def test_other_domain_recovers_someone_else() -> None:
    signer = Signer.generate()
    voucher = Voucher(b"\x07" * 32, 100)
    sig = signer.sign(DOMAIN, voucher)
    for domain in (Domain(1, DOMAIN.verifying_contract), Domain(31337, "0x" + "11" * 20)):
        assert recover(domain, voucher, sig) != signer.address


def test_high_s_twin_is_rejected() -> None:
    # (r, n - s, v ^ 1) is the same signature mathematically; EIP-2 and OpenZeppelin refuse it.
    sig = Signer.generate().sign(DOMAIN, MESSAGES[1])
    s = int.from_bytes(sig[32:64], "big")
    twin = sig[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - sig[64]])
    with pytest.raises(InvalidSignature, match="high-s"):
        recover(DOMAIN, MESSAGES[1], twin)


_R = (1).to_bytes(32, "big")
_S_LOW = (SECP256K1_N // 2).to_bytes(32, "big")
_S_HIGH = (SECP256K1_N // 2 + 1).to_bytes(32, "big")


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (_R + _S_LOW + b"\x00", "v=0 (ecrecover rejects it)"),
        (_R + _S_LOW + b"\x01", "v=1"),
        (_R + _S_LOW + b"\x1d", "v=29"),
        (_R + _S_HIGH + b"\x1b", "high s"),
        (b"\x00" * 32 + _S_LOW + b"\x1b", "r = 0"),
        (_R + b"\x00" * 32 + b"\x1b", "s = 0"),
        (SECP256K1_N.to_bytes(32, "big") + _S_LOW + b"\x1b", "r = n"),
    ],
)
def test_non_canonical_signatures_are_invalid(raw: bytes, why: str) -> None:
    with pytest.raises(InvalidSignature):
        recover(DOMAIN, MESSAGES[0], raw)


def test_unrecoverable_signature_is_invalid() -> None:
    # r = 5 has no point on the curve with that x for one of the recovery ids; try both.
    for v in (27, 28):
        sig = (5).to_bytes(32, "big") + (7).to_bytes(32, "big") + bytes([v])
        try:
            recover(DOMAIN, MESSAGES[0], sig)
        except InvalidSignature:
            return
    pytest.skip("both recovery ids happened to be valid for this r")


def test_key_never_shows() -> None:
    signer = Signer(ANVIL_KEY)
    for text in (repr(signer), str(signer), f"{signer}", f"{signer!r}"):
        assert ANVIL_KEY[2:] not in text.lower()
        assert ANVIL_ADDRESS in text
    with pytest.raises(TypeError):
        pickle.dumps(signer)
    with pytest.raises(TypeError):
        copy.copy(signer)


@pytest.mark.parametrize(
    "key", ["0x1234", "0x" + "zz" * 32, b"\x00" * 32, (SECP256K1_N).to_bytes(32, "big")]
)
def test_bad_key_is_config_error_without_the_key(key: str | bytes) -> None:
    with pytest.raises(ConfigError) as info:
        Signer(key)
    assert info.value.__cause__ is None
    shown = key if isinstance(key, str) else key.hex()
    assert shown.removeprefix("0x") not in str(info.value) or len(shown) < 8


def test_keystore_roundtrip(tmp_path: object) -> None:
    import json
    from pathlib import Path

    path = Path(str(tmp_path)) / "key.json"
    path.write_text(json.dumps(Account.encrypt(ANVIL_KEY, "pw", kdf="pbkdf2", iterations=2)))
    assert Signer.from_keystore(path, "pw").address == ANVIL_ADDRESS
    with pytest.raises(ConfigError):
        Signer.from_keystore(path, "wrong")
