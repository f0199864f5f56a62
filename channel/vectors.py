"""The shared protocol v2 test vectors (``tests/vectors/protocol_v2.json``), built reproducibly.

Every implementation (this package, the contract's interop tests, the web SDK) checks the same
file: each case is a message in its JSON form (integers as decimal strings, bytes32 and
addresses as 0x hex), the EIP-712 digest and the signature of the named role's key. ECDSA
signatures here are RFC 6979 (deterministic), so building the file twice gives the same bytes;
``scripts/make_vectors.py`` writes it and a test proves the committed file is current.

The keys are anvil's public development keys: never hold value with them.
"""

from __future__ import annotations

import json
from typing import Any, Final

from channel.devnet import ANVIL_KEYS
from channel.messages import (
    MAX_UINT64,
    MAX_UINT256,
    ZERO_ADDRESS,
    Access,
    CloseConsent,
    CloseRequest,
    Domain,
    Message,
    Receipt,
    Voucher,
    task_id_hash,
)
from channel.signing import Signer

__all__ = ["CHAIN_ID", "CONTRACT", "KEYS", "build_vectors", "render"]

CHAIN_ID: Final = 31337
# PaymentChannels as the first deployment of anvil's account 0 (nonce 0) lands.
CONTRACT: Final = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
KEYS: Final = {"payer": ANVIL_KEYS[1], "voucher_signer": ANVIL_KEYS[3], "payee": ANVIL_KEYS[2]}

_TASK_IDS: Final = (
    "task-1",
    "a",
    "ünïcødé 🚀",
    "日本語のタスク",
    "עברית \u202e RTL override",
    "zero\u200bwidth",
    "🚀" * 256,  # 256 code points, 1,024 UTF-8 bytes
    "x" * 256,
)


def _channel_id(salt: int) -> bytes:
    from channel.chain import channel_id_for  # noqa: PLC0415 - web3 is slow to import

    payer = Signer(KEYS["payer"]).address
    payee = Signer(KEYS["payee"]).address
    return channel_id_for(payer, payee, ZERO_ADDRESS, salt.to_bytes(32, "big"))


def _json_value(value: object) -> object:
    if isinstance(value, int):
        return str(value)
    return value


def _cases() -> list[tuple[Message, str, str | None]]:
    """(message, signer role, task id string for receipts)."""
    cid = _channel_id(1)
    edges = (bytes(32), b"\xff" * 32, cid)
    cases: list[tuple[Message, str, str | None]] = []
    for amount in (0, 1, 10**18, 2**53 + 1, MAX_UINT256):
        cases.append((Voucher(cid, amount), "payer", None))
        cases.append((Voucher(cid, amount), "voucher_signer", None))
    cases += [(Voucher(c, 5), "payer", None) for c in edges[:2]]
    cumulative = 0
    for i, task in enumerate(_TASK_IDS):
        amount = [1, 10**15, MAX_UINT256 // 4, 7][i % 4]
        cumulative += amount
        cases.append((Receipt(cid, cumulative, amount, task_id_hash(task)), "payee", task))
    cases.append((Receipt(cid, MAX_UINT256, MAX_UINT256, task_id_hash("max")), "payee", "max"))
    cases.append((Receipt(cid, 0, 0, task_id_hash("zero")), "payee", "zero"))
    for amount, deadline in ((0, 0), (10**18, 1_700_000_900), (MAX_UINT256, MAX_UINT64)):
        cases.append((CloseConsent(cid, amount, deadline), "payee", None))
    for amount in (0, 10**18, MAX_UINT256):
        cases.append((CloseRequest(cid, amount), "payer", None))
        cases.append((CloseRequest(cid, amount), "voucher_signer", None))
    for expires in (0, 1_700_000_000, MAX_UINT64):
        cases.append((Access(cid, expires), "payer", None))
        cases.append((Access(cid, expires), "voucher_signer", None))
    cases.append((Access(edges[1], 1_700_000_000), "payer", None))
    return cases


def build_vectors() -> dict[str, Any]:
    """The vector file's content (see the module docstring for the format)."""
    domain = Domain(CHAIN_ID, CONTRACT)
    signers = {role: Signer(key) for role, key in KEYS.items()}
    cases = []
    for message, role, task in _cases():
        case: dict[str, Any] = {
            "type": type(message).__name__,
            "signer": role,
            "message": {k: _json_value(v) for k, v in message.as_dict().items()},
        }
        if task is not None:
            case["task_id"] = task
        case["digest"] = "0x" + domain.digest(message).hex()
        case["signature"] = "0x" + signers[role].sign(domain, message).hex()
        cases.append(case)
    return {
        "domain": domain.as_dict(),
        "keys": dict(KEYS),
        "addresses": {role: s.address for role, s in signers.items()},
        "cases": cases,
    }


def render(vectors: dict[str, Any]) -> str:
    """The file's exact text: stable key order, UTF-8 as is, a final newline."""
    return json.dumps(vectors, indent=2, ensure_ascii=False) + "\n"
