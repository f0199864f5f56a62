"""EIP-712 messages: the fast digests equal eth-account's ``encode_typed_data``; bad input is
rejected (also where eth-account would silently pad or wrap it)."""

from __future__ import annotations

import random
import sys
import unicodedata
from typing import Any

import pytest
from eth_account.messages import _hash_eip191_message, encode_typed_data
from eth_hash.auto import keccak

from channel.errors import (
    InvalidAddress,
    InvalidAmount,
    InvalidBytes32,
    InvalidTaskId,
    MalformedSignature,
)
from channel.messages import (
    MAX_TASK_ID_LENGTH,
    MAX_UINT64,
    MAX_UINT256,
    MESSAGE_TYPES,
    SECP256K1_N,
    Access,
    CloseConsent,
    CloseRequest,
    Domain,
    Message,
    Receipt,
    Voucher,
    format_access,
    parse_access,
    parse_address,
    parse_amount,
    parse_bytes32,
    parse_message,
    parse_signature,
    parse_task_id,
    parse_uint64,
    task_id_hash,
)

CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"


def test_type_strings_are_the_protocol_ones() -> None:
    # PROTOCOL.md v2, letter for letter; a change here breaks every wallet and the contract.
    assert Voucher.TYPE == "Voucher(bytes32 channelId,uint256 cumulativeAmount)"
    assert Receipt.TYPE == (
        "Receipt(bytes32 channelId,uint256 cumulativeAmount,uint256 amount,bytes32 taskId)"
    )
    assert CloseConsent.TYPE == (
        "CloseConsent(bytes32 channelId,uint256 cumulativeAmount,uint64 deadline)"
    )
    assert CloseRequest.TYPE == "CloseRequest(bytes32 channelId,uint256 cumulativeAmount)"
    assert Access.TYPE == "Access(bytes32 channelId,uint64 expires)"
    assert set(MESSAGE_TYPES) == {"Voucher", "Receipt", "CloseConsent", "CloseRequest", "Access"}
    for cls in MESSAGE_TYPES.values():
        assert keccak(cls.TYPE.encode()) == cls.TYPE_HASH


def _eth_account_digest(typed: dict[str, Any]) -> bytes:
    return bytes(_hash_eip191_message(encode_typed_data(full_message=typed)))


_EDGE_AMOUNTS = [0, 1, 2**53 + 1, 2**64, 2**255, MAX_UINT256]
_EDGE_U64 = [0, 1, 2**32, 2**63, MAX_UINT64]


def _random_messages(n: int) -> list[tuple[Domain, Message]]:
    rng = random.Random(712)
    out: list[tuple[Domain, Message]] = []
    for i in range(n):
        domain = Domain(rng.choice([1, 10, 31337, 2**64 - 1, MAX_UINT256]),
                        "0x" + rng.randbytes(20).hex())
        cid = rng.choice([bytes(32), b"\xff" * 32, rng.randbytes(32)])
        amount = _EDGE_AMOUNTS[i % 6] if i < 30 else rng.randrange(MAX_UINT256 + 1)
        u64 = _EDGE_U64[i % 5] if i < 30 else rng.randrange(MAX_UINT64 + 1)
        msg: Message
        match i % 5:
            case 0:
                msg = Voucher(cid, amount)
            case 1:
                msg = Receipt(cid, amount, rng.choice([0, amount, 1]), rng.randbytes(32))
            case 2:
                msg = CloseConsent(cid, amount, u64)
            case 3:
                msg = CloseRequest(cid, amount)
            case _:
                msg = Access(cid, u64)
        out.append((domain, msg))
    return out


@pytest.mark.parametrize(("domain", "message"), _random_messages(100))
def test_fast_digest_equals_eth_account(domain: Domain, message: Message) -> None:
    assert domain.digest(message) == _eth_account_digest(domain.typed_data(message))


@pytest.mark.parametrize(("domain", "message"), _random_messages(10))
def test_json_form_round_trips(domain: Domain, message: Message) -> None:
    fields = {
        k: str(v) if isinstance(v, int) else v for k, v in message.as_dict().items()
    }
    assert parse_message(type(message).__name__, fields) == message


# Typed data eth-account accepts (silently padding or coercing) that the protocol refuses:
# each row is a JSON message, the error our parser raises, and whether eth-account hashes it.
_CID = "0x" + "11" * 32
INVALID = [
    ("Voucher", {"channelId": "0x1234", "cumulativeAmount": "1"}, InvalidBytes32, True),
    ("Voucher", {"channelId": _CID + "00", "cumulativeAmount": "1"}, InvalidBytes32, False),
    ("Voucher", {"channelId": _CID, "cumulativeAmount": "-1"}, InvalidAmount, False),
    ("Voucher", {"channelId": _CID, "cumulativeAmount": str(2**256)}, InvalidAmount, False),
    ("Voucher", {"channelId": _CID, "cumulativeAmount": "0x10"}, InvalidAmount, True),
    ("Voucher", {"channelId": _CID, "cumulativeAmount": "007"}, InvalidAmount, True),
    ("Receipt", {"channelId": _CID, "cumulativeAmount": "1", "amount": "1.5",
                 "taskId": _CID}, InvalidAmount, False),
    ("Receipt", {"channelId": _CID, "cumulativeAmount": "1", "amount": "1",
                 "taskId": "0xabcd"}, InvalidBytes32, True),
    ("CloseConsent", {"channelId": _CID, "cumulativeAmount": "1", "deadline": str(2**64)},
     InvalidAmount, False),
    ("Access", {"channelId": _CID, "expires": "-5"}, InvalidAmount, False),
    ("Access", {"channelId": _CID, "expires": str(2**64 + 7)}, InvalidAmount, False),
]


@pytest.mark.parametrize(("primary", "fields", "error", "eth_account_hashes"), INVALID)
def test_invalid_messages_are_refused(
    primary: str, fields: dict[str, Any], error: type[Exception], eth_account_hashes: bool
) -> None:
    with pytest.raises(error):
        parse_message(primary, fields)
    cls = MESSAGE_TYPES[primary]
    typed = Domain(31337, CONTRACT).typed_data(_placeholder(cls))
    typed["message"] = {k: _wallet_value(v) for k, v in fields.items()}
    if eth_account_hashes:
        # The reason the protocol validates itself: this is hashed without complaint.
        assert len(_eth_account_digest(typed)) == 32
    else:
        with pytest.raises(Exception):  # noqa: B017 - eth-account's errors vary
            _eth_account_digest(typed)


def _placeholder(cls: type[Message]) -> Message:
    fields = {"channelId": _CID, "cumulativeAmount": "0", "amount": "0", "taskId": _CID,
              "deadline": "0", "expires": "0"}
    names = [n for n in fields if n in cls.TYPE]
    return parse_message(cls.__name__, {n: fields[n] for n in names})


def _wallet_value(value: str) -> object:
    # What a careless client would pass on: numbers as Python ints where they parse.
    try:
        return int(value, 0) if not value.startswith("0x") or len(value) < 6 else value
    except ValueError:
        return value


def test_parse_message_wants_exactly_the_fields() -> None:
    with pytest.raises(ValueError, match="fields"):
        parse_message("Voucher", {"channelId": _CID})
    with pytest.raises(ValueError, match="fields"):
        parse_message("Voucher", {"channelId": _CID, "cumulativeAmount": "1", "extra": "1"})
    with pytest.raises(ValueError, match="unknown"):
        parse_message("Mail", {})


def test_domain_checksums_and_exposes_the_four_fields() -> None:
    domain = Domain(31337, CONTRACT.lower())
    assert domain.verifying_contract == CONTRACT
    assert list(domain.as_dict()) == ["name", "version", "chainId", "verifyingContract"]
    assert domain.as_dict()["name"] == "PaymentChannels"
    assert domain.as_dict()["version"] == "2"
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


@pytest.mark.parametrize("raw", [_R + _S_LOW + b"\x1b", b"\x00" * 65, b"\xff" * 65])
def test_parse_signature_checks_the_shape_only(raw: bytes) -> None:
    # Whether 65 bytes are a valid signature is decided at the signature step (signing.py).
    assert parse_signature(raw) == raw
    assert parse_signature("0x" + raw.hex()) == raw


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (_R + _S_LOW, "64 bytes"),
        (_R + _S_LOW + b"\x1b\x00", "66 bytes"),
        ("0x" + (_R + _S_LOW).hex() + "1", "odd hex"),
        ("0x" + "zz" * 65, "not hex"),
        ((_R + _S_LOW + b"\x1b").hex(), "no 0x"),
        (None, "None"),
        (27, "a number"),
    ],
)
def test_parse_signature_rejects(value: object, why: str) -> None:
    with pytest.raises(MalformedSignature):
        parse_signature(value)


@pytest.mark.parametrize(
    "task_id",
    ["t", "task-42", "ünïcødé 🚀", "x" * MAX_TASK_ID_LENGTH, "🚀" * MAX_TASK_ID_LENGTH,
     "עברית\u202e", "tab\u00a0nbsp", "\u200b"],
)
def test_task_id_hash_is_keccak_of_utf8(task_id: str) -> None:
    assert task_id_hash(task_id) == keccak(task_id.encode("utf-8"))
    assert parse_task_id(task_id) == task_id


@pytest.mark.parametrize(
    "task_id",
    ["", "x" * (MAX_TASK_ID_LENGTH + 1), "🚀" * (MAX_TASK_ID_LENGTH + 1), "\ud800",
     "a\udfffb", "nul\x00", "tab\tx", "new\nline", "del\x7f", "c1\x85", "\x9f",
     b"t", None, 5],
)
def test_task_id_hash_rejects(task_id: object) -> None:
    with pytest.raises(InvalidTaskId):
        task_id_hash(task_id)


def test_task_id_character_rule_is_unicode_category_cc_and_surrogates() -> None:
    # The regex in channel.messages must reject exactly category Cc and Cs, nothing else.
    for cp in range(sys.maxunicode + 1):
        char = chr(cp)
        refused = unicodedata.category(char) in ("Cc", "Cs")
        try:
            parse_task_id(char)
            ok = True
        except InvalidTaskId:
            ok = False
        assert ok is not refused, f"U+{cp:04X}"


def test_access_credential_round_trip_and_shape() -> None:
    sig = _R + _S_LOW + b"\x1b"
    text = format_access(1_700_000_000, sig)
    assert text == "1700000000.0x" + sig.hex()
    assert parse_access(text) == (1_700_000_000, sig)
    for bad in ("", "1700000000", "x.0x" + sig.hex(), "01.0x" + sig.hex(),
                f"{2**64}.0x" + sig.hex(), "1.0x12"):
        with pytest.raises((InvalidAmount, MalformedSignature)):
            parse_access(bad)


def test_parse_uint64() -> None:
    assert parse_uint64(str(MAX_UINT64)) == MAX_UINT64
    with pytest.raises(InvalidAmount):
        parse_uint64(str(MAX_UINT64 + 1))


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: Voucher(b"\x00" * 31, 1), InvalidBytes32),
        (lambda: Voucher(b"\x00" * 32, -1), InvalidAmount),
        (lambda: Voucher(b"\x00" * 32, MAX_UINT256 + 1), InvalidAmount),
        (lambda: Voucher(b"\x00" * 32, True), InvalidAmount),
        (lambda: Receipt(b"\x00" * 32, 1, 1, b"\x00"), InvalidBytes32),
        (lambda: Receipt(b"\x00" * 32, 1, -1, b"\x00" * 32), InvalidAmount),
        (lambda: CloseConsent("0x" + "00" * 32, 1, 1), InvalidBytes32),  # type: ignore[arg-type]
        (lambda: CloseConsent(b"\x00" * 32, 1, MAX_UINT64 + 1), InvalidAmount),
        (lambda: Access(b"\x00" * 32, -1), InvalidAmount),
        (lambda: CloseRequest(b"\x00" * 32, MAX_UINT256 + 1), InvalidAmount),
        (lambda: Domain(0, CONTRACT), InvalidAmount),
        (lambda: Domain(1, "0x5fbDB2315678afecb367f032d93F642f64180aa3"), InvalidAddress),
    ],
)
def test_messages_cannot_be_built_malformed(make: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        make()  # type: ignore[operator]
