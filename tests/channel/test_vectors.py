"""The shared vector file is current, and each case is right by eth-account's own reckoning."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import _hash_eip191_message, encode_typed_data
from eth_hash.auto import keccak

from channel.messages import MESSAGE_TYPES, parse_message
from channel.vectors import build_vectors, render

FILE = Path(__file__).resolve().parent.parent / "vectors" / "protocol_v2.json"
VECTORS: dict[str, Any] = json.loads(FILE.read_text(encoding="utf-8"))


def test_regenerating_gives_the_committed_file() -> None:
    assert render(build_vectors()) == FILE.read_text(encoding="utf-8"), (
        "tests/vectors/protocol_v2.json is stale: run scripts/make_vectors.py"
    )


def test_the_file_covers_every_type_signer_and_edge() -> None:
    cases = VECTORS["cases"]
    assert {c["type"] for c in cases} == set(MESSAGE_TYPES)
    assert {c["signer"] for c in cases} == {"payer", "voucher_signer", "payee"}
    values = {v for c in cases for v in c["message"].values()}
    assert {"0", str(2**256 - 1), str(2**64 - 1)} <= values
    tasks = [c["task_id"] for c in cases if c["type"] == "Receipt"]
    assert any(not t.isascii() for t in tasks) and max(map(len, tasks)) == 256


def _typed(case: dict[str, Any]) -> dict[str, Any]:
    """The wallet's typed data built from the case alone (not from channel.messages)."""
    name = case["type"]
    body = MESSAGE_TYPES[name].TYPE[len(name) + 1 : -1]
    fields = [dict(zip(("type", "name"), f.split(" "), strict=True)) for f in body.split(",")]
    message = {
        f["name"]: int(case["message"][f["name"]]) if f["type"].startswith("uint")
        else case["message"][f["name"]]
        for f in fields
    }
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            name: fields,
        },
        "primaryType": name,
        "domain": VECTORS["domain"],
        "message": message,
    }


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: f"{c['type']}-{c['signer']}")
def test_each_case_digest_and_signature_by_eth_account(case: dict[str, Any]) -> None:
    typed = _typed(case)
    digest = bytes(_hash_eip191_message(encode_typed_data(full_message=typed)))
    assert "0x" + digest.hex() == case["digest"]
    key = VECTORS["keys"][case["signer"]]
    signed = Account.sign_typed_data(key, full_message=typed)
    assert "0x" + bytes(signed.signature).hex() == case["signature"]
    recovered = Account._recover_hash(digest, signature=bytes.fromhex(case["signature"][2:]))
    assert recovered == VECTORS["addresses"][case["signer"]] == Account.from_key(key).address
    if case["type"] == "Receipt":
        assert case["message"]["taskId"] == "0x" + keccak(case["task_id"].encode()).hex()
    # And our own parser reads the JSON form back to the message that was hashed.
    parse_message(case["type"], case["message"])
