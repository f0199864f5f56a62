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

from channel.devnet import ANVIL_KEYS, find_anvil, free_port
from channel.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO_ROOT / "artifacts"
CHAIN_ID = 31337

__all__ = [
    "ANVIL_KEYS", "ARTIFACTS", "CHAIN_ID", "REPO_ROOT", "Accounts", "Deployment", "Node",
    "advance_time", "free_port", "mine", "rpc", "sqlalchemy_url", "start_anvil", "stop_process",
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
