"""Node-free checks of the chain/keys/CLI helpers: revert decoding, key redaction, artifacts."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from eth_abi.abi import encode
from eth_utils.crypto import keccak
from piecework_testnode import ANVIL_KEYS, REPO_ROOT

from channel.chain import ErrorDecoder, NonceManager, find_artifact, load_artifact
from channel.errors import ConfigError
from channel.keys import SigningKey, load_key, new_keystore

ABI = [
    {"type": "error", "name": "NothingToClaim", "inputs": [
        {"name": "channelId", "type": "bytes32"}, {"name": "cumulativeAmount", "type": "uint256"},
        {"name": "claimed", "type": "uint256"}]},
    {"type": "error", "name": "NotPayer", "inputs": [
        {"name": "channelId", "type": "bytes32"}, {"name": "caller", "type": "address"},
        {"name": "payer", "type": "address"}]},
    {"type": "error", "name": "ZeroAmount", "inputs": []},
]
CID = bytes(range(32))
ALICE = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def _selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


@pytest.mark.parametrize(
    ("data", "name", "args"),
    [
        (_selector("NothingToClaim(bytes32,uint256,uint256)")
         + encode(["bytes32", "uint256", "uint256"], [CID, 5, 7]),
         "NothingToClaim", ("0x" + CID.hex(), 5, 7)),
        (_selector("NotPayer(bytes32,address,address)")
         + encode(["bytes32", "address", "address"], [CID, ALICE.lower(), ALICE.lower()]),
         "NotPayer", ("0x" + CID.hex(), ALICE, ALICE)),
        (_selector("ZeroAmount()"), "ZeroAmount", ()),
        (_selector("Error(string)") + encode(["string"], ["nope"]), "Error", ("nope",)),
        (_selector("Panic(uint256)") + encode(["uint256"], [0x11]), "Panic", (0x11,)),
        (b"\xde\xad\xbe\xef", "UnknownError", ("deadbeef",)),
        (b"", "Reverted", ()),
    ],
)
def test_revert_data_decodes_to_named_errors(
    data: bytes, name: str, args: tuple[object, ...]
) -> None:
    err = ErrorDecoder(ABI).decode(data)
    assert (err.name, err.revert_args) == (name, args)


def test_the_real_artifact_knows_every_protocol_error() -> None:
    abi = load_artifact(find_artifact("PaymentChannels", REPO_ROOT)).abi
    names = {item["name"] for item in abi if item["type"] == "error"}
    assert {"InvalidSignature", "ChannelNotOpen", "ChallengePeriodNotOver", "NotPayer",
            "ChannelIdUsed"} <= names


def test_missing_artifact_says_how_to_build(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="npm run build"):
        find_artifact("PaymentChannels", tmp_path)


def test_nonce_manager_hands_out_consecutive_nonces_and_resyncs() -> None:
    pending = [7]
    nonces = NonceManager(lambda: pending[0])
    assert [nonces.reserve() for _ in range(3)] == [7, 8, 9]
    nonces.release(9)
    assert nonces.reserve() == 9
    pending[0] = 20
    nonces.resync()
    assert nonces.reserve() == 20


def test_signing_key_never_shows_the_key(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    key = load_key(environ={"PIECEWORK_PRIVATE_KEY": ANVIL_KEYS[1]})
    secret = ANVIL_KEYS[1][2:]
    assert key.address == ALICE
    for shown in (repr(key), str(key), f"{key}", caplog.text):
        assert secret not in shown.lower()
    assert "redacted" in repr(key)
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(key)


def test_bad_keys_are_config_errors_without_the_value() -> None:
    with pytest.raises(ConfigError, match="64 hex digits") as info:
        SigningKey.from_hex("0x1234")
    assert "1234" not in str(info.value)
    with pytest.raises(ConfigError, match="no signing key"):
        load_key(environ={})


def test_keystore_round_trip_and_wrong_password(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    address = new_keystore(path, "pw", kdf="pbkdf2", iterations=1000)  # cheap for the test
    assert load_key(path, "pw").address == address
    assert load_key(path, environ={"PIECEWORK_KEYSTORE_PASSWORD": "pw"}).address == address
    assert load_key(path, prompt=lambda _: "pw").address == address
    with pytest.raises(ConfigError, match="wrong password"):
        load_key(path, "nope")
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        new_keystore(path, "pw", kdf="pbkdf2", iterations=1000)
