"""Helpers shared by the integration tests: the anvil process, accounts, raw RPC, time travel.

Kept out of conftest.py so test modules can import them (``from piecework_testnode import ...``).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3

from channel.devnet import find_anvil, free_port
from channel.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO_ROOT / "artifacts"
CHAIN_ID = 31337

# anvil's default mnemonic ("test test ... junk"), accounts 0..9; each starts with 10,000 ETH.
ANVIL_KEYS = [
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
    "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
    "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
    "0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
    "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
]


@dataclass(frozen=True)
class Node:
    """A running anvil: where it listens and its PID (for the kill at teardown)."""

    url: str
    port: int
    pid: int


@dataclass(frozen=True)
class Accounts:
    """Named roles over anvil's funded accounts."""

    deployer: LocalAccount
    payer: LocalAccount
    payee: LocalAccount
    third: LocalAccount
    payer2: LocalAccount
    payee2: LocalAccount


@dataclass(frozen=True)
class Deployment:
    channels: str  # PaymentChannels address
    stablecoin: str  # TestStablecoin address (6 decimals, permit, public mint)


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 1}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"anvil exited early with code {proc.returncode}")
        with contextlib.suppress(Exception):
            if w3.eth.chain_id == CHAIN_ID:
                return
        time.sleep(0.02)
    raise RuntimeError(f"anvil at {url} did not answer within {timeout}s")


def start_anvil(port: int | None = None, *extra: str) -> tuple[Node, subprocess.Popen[bytes]]:
    """Start the native anvil binary (not the node wrapper, whose kill leaves anvil running)."""
    try:
        binary = find_anvil()
    except ConfigError as exc:
        pytest.fail(str(exc))
    port = port or free_port()
    proc = subprocess.Popen(
        [str(binary), "--host", "127.0.0.1", "--port", str(port),
         "--chain-id", str(CHAIN_ID), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc)
    except Exception:
        stop_process(proc)
        raise
    return Node(url, port, proc.pid), proc


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """Terminate then kill one process by its PID; never by name."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def rpc(w3: Web3, method: str, *params: Any) -> Any:
    """Raw JSON-RPC (anvil/evm_* methods web3 has no wrapper for)."""
    response = w3.provider.make_request(method, list(params))  # type: ignore[arg-type]
    if "error" in response:
        raise RuntimeError(f"{method} failed: {response['error']}")
    return response.get("result")


def advance_time(w3: Web3, seconds: int) -> None:
    rpc(w3, "evm_increaseTime", seconds)
    rpc(w3, "evm_mine")


def mine(w3: Web3, blocks: int = 1) -> None:
    for _ in range(blocks):
        rpc(w3, "evm_mine")


def sqlalchemy_url(libpq_url: str) -> str:
    """``postgresql://`` → ``postgresql+psycopg://`` (psycopg 3 is the installed driver)."""
    if libpq_url.startswith("postgresql://"):
        return "postgresql+psycopg://" + libpq_url.removeprefix("postgresql://")
    return libpq_url
