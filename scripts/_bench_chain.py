"""Bench helper: a local anvil with PaymentChannels deployed, and many real channels opened fast.

Channels are opened on chain for real (``open`` transactions, mined, status checked). To open
hundreds in seconds the transactions go out as batched JSON-RPC ``eth_sendTransaction`` calls
from anvil's unlocked development account, with a fixed gas limit (no per-transaction
estimate); ``ChainClient`` would spend ~20 ms per channel on estimate + receipt polling.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from channel.chain import ZERO_ADDRESS, ChainClient, channel_id_for, load_artifact
from channel.devnet import ANVIL_KEYS, Supervisor
from channel.keys import SigningKey

REPO = Path(__file__).resolve().parent.parent

# anvil's well-known development accounts: never real money.
DEV_KEYS = dict(zip(("deployer", "payee", "payer", "payer2"), ANVIL_KEYS, strict=False))
CHALLENGE_PERIOD = 3_600
CHAIN_ID = 31337


@dataclass
class Devnet:
    rpc_url: str
    contract: str
    keys: dict[str, SigningKey]

    def client(self, who: str) -> ChainClient:
        return ChainClient.from_url(self.rpc_url, self.contract, account=self.keys[who].account)

    def rpc(self, method: str, params: list[Any]) -> Any:
        reply = httpx.post(self.rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": method,
                                               "params": params}, timeout=30).json()
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]


def start_devnet(sup: Supervisor) -> Devnet:
    """anvil (by PID, under ``sup``) with PaymentChannels deployed by the deployer key."""
    rpc_url, _ = sup.start_anvil(chain_id=CHAIN_ID)
    keys = {name: SigningKey.from_hex(k) for name, k in DEV_KEYS.items()}
    artifact = load_artifact("PaymentChannels", REPO)
    deployer = ChainClient.from_url(rpc_url, "0x" + "00" * 19 + "01",
                                    account=keys["deployer"].account, artifact=artifact)
    address = deployer.deploy().contract_address
    if address is None:
        raise RuntimeError("PaymentChannels deployment returned no address")
    return Devnet(rpc_url, address, keys)


def open_channels(net: Devnet, n: int, deposit: int, *, payer: str = "payer",
                  chunk: int = 200) -> list[bytes]:
    """Open ``n`` ETH channels payer -> payee with ``deposit`` wei each; their ids, in order."""
    payer_addr = net.keys[payer].address
    payee_addr = net.keys["payee"].address
    client = net.client("deployer")
    nonce = int(net.rpc("eth_getTransactionCount", [payer_addr, "pending"]), 16)
    ids: list[bytes] = []
    calls: list[dict[str, Any]] = []
    for _ in range(n):
        salt = os.urandom(32)
        ids.append(bytes(channel_id_for(payer_addr, payee_addr, ZERO_ADDRESS, salt)))
        data = client.contract.functions.open(
            payee_addr, ZERO_ADDRESS, deposit, CHALLENGE_PERIOD, salt, ZERO_ADDRESS
        )._encode_transaction_data()
        calls.append({"from": payer_addr, "to": net.contract, "data": data,
                      "value": hex(deposit), "gas": hex(200_000),
                      "nonce": hex(nonce + len(calls))})
    # With automine on, anvil takes a batch's transactions out of nonce order and leaves some
    # queued; with it off they all enter the pool and a few full blocks mine them.
    net.rpc("evm_setAutomine", [False])
    try:
        with httpx.Client(timeout=120) as http:
            hashes: list[str] = []
            for start in range(0, n, chunk):
                part = calls[start:start + chunk]
                batch = [{"jsonrpc": "2.0", "id": i, "method": "eth_sendTransaction",
                          "params": [c]} for i, c in enumerate(part)]
                for reply in sorted(http.post(net.rpc_url, json=batch).json(),
                                    key=lambda r: r["id"]):
                    if "error" in reply:
                        raise RuntimeError(f"open failed: {reply['error']}")
                    hashes.append(reply["result"])
            for _ in range(n // 100 + 10):
                net.rpc("evm_mine", [])
                status = net.rpc("txpool_status", [])
                if int(status["pending"], 16) == 0 and int(status["queued"], 16) == 0:
                    break
            for start in range(0, n, chunk):
                receipts = _receipts(http, net.rpc_url, hashes[start:start + chunk])
                bad = [r for r in receipts if r is None or int(r["status"], 16) != 1]
                if bad:
                    raise RuntimeError(f"{len(bad)} open transactions failed or were not mined")
    finally:
        net.rpc("evm_setAutomine", [True])
    # Spot-check the mirror the service will fetch: the last channel is open on chain.
    if net.client("deployer").get_channel(ids[-1]).deposit != deposit:
        raise RuntimeError("last opened channel does not show its deposit on chain")
    return ids


def _receipts(http: httpx.Client, url: str, hashes: list[str]) -> list[Any]:
    deadline = time.monotonic() + 120
    while True:
        batch = [{"jsonrpc": "2.0", "id": i, "method": "eth_getTransactionReceipt",
                  "params": [h]} for i, h in enumerate(hashes)]
        replies = sorted(http.post(url, json=batch).json(), key=lambda r: r["id"])
        receipts = [r.get("result") for r in replies]
        if all(r is not None for r in receipts) or time.monotonic() > deadline:
            return receipts
        time.sleep(0.05)
