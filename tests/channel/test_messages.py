"""EIP-712 messages: the fast digests equal the spec's and eth-account's; bad input is rejected."""

from __future__ import annotations

import random

import pytest
from eth_account.messages import _hash_eip191_message, encode_typed_data
from eth_hash.auto import keccak

from channel import eip712
from channel.errors import (
    InvalidAddress,
    InvalidAmount,
    InvalidBytes32,
    InvalidTaskId,
    MalformedSignature,
)
from channel.messages import (
    MAX_TASK_ID_LENGTH,
    MAX_UINT256,
    SECP256K1_N,
    CloseConsent,
    Domain,
    Receipt,
    Voucher,
    parse_address,
    parse_amount,
    parse_bytes32,
    parse_signature,
    task_id_hash,
)

CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"

# The example of the EIP-712 specification, with its published digest.
MAIL = {
    "types": {
        "EIP712Domain": [
            {"name": "name", "type": "string"},
            {"name": "version", "type": "string"},
            {"name": "chainId", "type": "uint256"},
            {"name": "verifyingContract", "type": "address"},
        ],
        "Person": [{"name": "name", "type": "string"}, {"name": "wallet", "type": "address"}],
        "Mail": [
            {"name": "from", "type": "Person"},
            {"name": "to", "type": "Person"},
            {"name": "contents", "type": "string"},
        ],
    },
    "primaryType": "Mail",
    "domain": {
        "name": "Ether Mail",
        "version": "1",
        "chainId": 1,
        "verifyingContract": "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC",
    },
    "message": {
        "from": {"name": "Cow", "wallet": "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"},
        "to": {"name": "Bob", "wallet": "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"},
        "contents": "Hello, Bob!",
    },
}
MAIL_DIGEST = "be609aee343fb3c4b28e1df9e632fca64fcfaede20f02e86244efddf30957bd2"


def test_generic_encoder_reproduces_the_spec_example() -> None:
    assert eip712.encode_type("Mail", MAIL["types"]) == (
        "Mail(Person from,Person to,string contents)Person(string name,address wallet)"
    )
    assert eip712.hash_typed_data(MAIL).hex() == MAIL_DIGEST


def test_type_strings_are_the_protocol_ones() -> None:
    # PROTOCOL.md, letter for letter; a change here breaks every wallet and the contract.
    assert Voucher.TYPE == "Voucher(bytes32 channelId,uint256 cumulativeAmount)"
    assert Receipt.TYPE == "Receipt(bytes32 channelId,uint256 cumulativeAmount,bytes32 taskId)"
    assert CloseConsent.TYPE == "CloseConsent(bytes32 channelId,uint256 cumulativeAmount)"
    for cls in (Voucher, Receipt, CloseConsent):
        assert keccak(cls.TYPE.encode()) == cls.TYPE_HASH


def _random_messages(n: int) -> list[tuple[Domain, Voucher | Receipt | CloseConsent]]:
    rng = random.Random(712)
    amounts = [0, 1, 2**53 + 1, 2**64, 2**255, MAX_UINT256]
    out: list[tuple[Domain, Voucher | Receipt | CloseConsent]] = []
    for i in range(n):
        domain = Domain(rng.choice([1, 10, 31337, 2**64 - 1]), "0x" + rng.randbytes(20).hex())
        channel_id = rng.randbytes(32)
        amount = amounts[i] if i < len(amounts) else rng.randrange(MAX_UINT256 + 1)
        kind = i % 3
        msg: Voucher | Receipt | CloseConsent
        if kind == 0:
            msg = Voucher(channel_id, amount)
        elif kind == 1:
            msg = Receipt(channel_id, amount, rng.randbytes(32))
        else:
            msg = CloseConsent(channel_id, amount)
        out.append((domain, msg))
    return out


@pytest.mark.parametrize(("domain", "message"), _random_messages(60))
def test_fast_digest_equals_generic_and_eth_account(
    domain: Domain, message: Voucher | Receipt | CloseConsent
) -> None:
    typed = domain.typed_data(message)
    fast = domain.digest(message)
    assert fast == eip712.hash_typed_data(typed)
    assert fast == _hash_eip191_message(encode_typed_data(full_message=typed))


def test_domain_checksums_and_exposes_the_four_fields() -> None:
    domain = Domain(31337, CONTRACT.lower())
    assert domain.verifying_contract == CONTRACT
    assert list(domain.as_dict()) == ["name", "version", "chainId", "verifyingContract"]
    assert domain.as_dict()["name"] == "PaymentChannels"
    assert domain.as_dict()["version"] == "1"
    assert domain == Domain(31337, CONTRACT)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0x" + "ab" * 32, bytes.fromhex("ab" * 32)),
        ("0x" + "AB" * 32, bytes.fromhex("ab" * 32)),
        (b"\x01" * 32, b"\x01" * 32),
    ],
)
def test_parse_bytes32_accepts(value: object, expected: bytes) -> None:
    assert parse_bytes32(value) == expected


@pytest.mark.parametrize(
    "value",
    ["0x1234", "ab" * 32, "0x" + "ab" * 33, "0x" + "zz" * 32, b"\x01" * 31, 5, None, "", "0x"],
)
def test_parse_bytes32_rejects(value: object) -> None:
    with pytest.raises(InvalidBytes32):
        parse_bytes32(value)


@pytest.mark.parametrize(
    "value",
    [CONTRACT, CONTRACT.lower(), "0x" + CONTRACT[2:].upper(), bytes.fromhex(CONTRACT[2:])],
)
def test_parse_address_accepts_and_checksums(value: object) -> None:
    assert parse_address(value) == CONTRACT


@pytest.mark.parametrize(
    "value",
    [
        "0x5fbDB2315678afecb367f032d93F642f64180aa3",  # one letter's case flipped
        CONTRACT[2:],
        CONTRACT + "00",
        CONTRACT[:-2],
        "0x" + "g" * 40,
        b"\x00" * 19,
        None,
        12,
    ],
)
def test_parse_address_rejects(value: object) -> None:
    with pytest.raises(InvalidAddress):
        parse_address(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0),
        ("0", 0),
        ("7", 7),
        (MAX_UINT256, MAX_UINT256),
        (str(MAX_UINT256), MAX_UINT256),
        ("9007199254740993", 2**53 + 1),
    ],
)
def test_parse_amount_accepts(value: object, expected: int) -> None:
    assert parse_amount(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        -1,
        "-1",
        "+1",
        "1e3",
        "007",
        "00",
        "1.0",
        1.0,
        True,
        False,
        " 1",
        "1 ",
        "",
        "0x10",
        MAX_UINT256 + 1,
        str(MAX_UINT256 + 1),
        "9" * 79,
        "١٢",  # Arabic-Indic digits: int() accepts them, the protocol does not
        None,
    ],
)
def test_parse_amount_rejects(value: object) -> None:
    with pytest.raises(InvalidAmount):
        parse_amount(value)


_R = (1).to_bytes(32, "big")
_S_LOW = (SECP256K1_N // 2).to_bytes(32, "big")
_S_HIGH = (SECP256K1_N // 2 + 1).to_bytes(32, "big")


@pytest.mark.parametrize("v", [27, 28])
def test_parse_signature_accepts(v: int) -> None:
    raw = _R + _S_LOW + bytes([v])
    assert parse_signature(raw) == raw
    assert parse_signature("0x" + raw.hex()) == raw


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (_R + _S_LOW + b"\x00", "v=0 (ecrecover rejects it)"),
        (_R + _S_LOW + b"\x01", "v=1"),
        (_R + _S_LOW + b"\x1d", "v=29"),
        (_R + _S_HIGH + b"\x1b", "high s"),
        (b"\x00" * 32 + _S_LOW + b"\x1b", "r = 0"),
        (_R + b"\x00" * 32 + b"\x1b", "s = 0"),
        (SECP256K1_N.to_bytes(32, "big") + _S_LOW + b"\x1b", "r = n"),
        (_R + _S_LOW, "64 bytes"),
        (_R + _S_LOW + b"\x1b\x00", "66 bytes"),
        ("0x" + (_R + _S_LOW).hex() + "1", "odd hex"),
        ((_R + _S_LOW + b"\x1b").hex(), "no 0x"),
        (None, "None"),
    ],
)
def test_parse_signature_rejects(value: object, why: str) -> None:
    with pytest.raises(MalformedSignature):
        parse_signature(value)


@pytest.mark.parametrize("task_id", ["t", "task-42", "ünïcødé 🚀", "x" * MAX_TASK_ID_LENGTH])
def test_task_id_hash_is_keccak_of_utf8(task_id: str) -> None:
    assert task_id_hash(task_id) == keccak(task_id.encode("utf-8"))


@pytest.mark.parametrize("task_id", ["", "x" * (MAX_TASK_ID_LENGTH + 1), "\ud800", b"t", None, 5])
def test_task_id_hash_rejects(task_id: object) -> None:
    with pytest.raises(InvalidTaskId):
        task_id_hash(task_id)


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: Voucher(b"\x00" * 31, 1), InvalidBytes32),
        (lambda: Voucher(b"\x00" * 32, -1), InvalidAmount),
        (lambda: Voucher(b"\x00" * 32, MAX_UINT256 + 1), InvalidAmount),
        (lambda: Voucher(b"\x00" * 32, True), InvalidAmount),
        (lambda: Receipt(b"\x00" * 32, 1, b"\x00"), InvalidBytes32),
        (lambda: CloseConsent("0x" + "00" * 32, 1), InvalidBytes32),  # type: ignore[arg-type]
        (lambda: Domain(0, CONTRACT), InvalidAmount),
        (lambda: Domain(1, "0x5fbDB2315678afecb367f032d93F642f64180aa3"), InvalidAddress),
    ],
)
def test_messages_cannot_be_built_malformed(make: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        make()  # type: ignore[operator]
