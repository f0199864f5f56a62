"""The shared vectors against the contract on anvil: its digests, and a vector claimed on chain."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from piecework_testnode import Accounts, Deployment

from channel.chain import ZERO_ADDRESS, ChainClient, Claimed
from channel.vectors import CONTRACT

pytestmark = pytest.mark.integration

FILE = Path(__file__).resolve().parent.parent / "vectors" / "protocol_v2.json"
VECTORS: dict[str, Any] = json.loads(FILE.read_text(encoding="utf-8"))
MakeClient = Callable[..., ChainClient]


def _hex(value: str) -> bytes:
    return bytes.fromhex(value[2:])


@pytest.fixture
def vector_client(make_client: MakeClient, deployment: Deployment) -> ChainClient:
    # The vectors name the address anvil gives the first deployment of account 0.
    assert deployment.channels == CONTRACT == VECTORS["domain"]["verifyingContract"]
    return make_client()


@pytest.mark.parametrize(
    "case", [c for c in VECTORS["cases"] if c["type"] in ("Voucher", "CloseConsent")],
    ids=lambda c: f"{c['type']}-{c['message']['cumulativeAmount'][:8]}",
)
def test_contract_digests_equal_the_vectors(vector_client: ChainClient, case: Any) -> None:
    m = case["message"]
    cid, amount = _hex(m["channelId"]), int(m["cumulativeAmount"])
    if case["type"] == "Voucher":
        got = vector_client.voucher_digest(cid, amount)
    else:
        got = vector_client.close_consent_digest(cid, amount, int(m["deadline"]))
    assert "0x" + got.hex() == case["digest"]


def test_a_voucher_signer_vector_is_claimed_on_chain(
    vector_client: ChainClient, make_client: MakeClient, accounts: Accounts
) -> None:
    # The vectors' channel: payer -> payee in ETH with salt 1, opened here with the vectors'
    # voucher signer; its voucher for 1 ETH, signed by that signer, pays out.
    case = next(
        c for c in VECTORS["cases"]
        if c["type"] == "Voucher" and c["signer"] == "voucher_signer"
        and c["message"]["cumulativeAmount"] == str(10**18)
    )
    payer = make_client(accounts.payer)
    cid, _ = payer.open(accounts.payee.address, 2 * 10**18, challenge_period=3600,
                        salt=(1).to_bytes(32, "big"), token=ZERO_ADDRESS,
                        voucher_signer=VECTORS["addresses"]["voucher_signer"])
    assert "0x" + cid.hex() == case["message"]["channelId"]
    result = make_client(accounts.payee).claim(cid, 10**18, _hex(case["signature"]))
    assert [(e.channel_id, e.paid) for e in result.events if isinstance(e, Claimed)] == [
        (cid, 10**18)]
