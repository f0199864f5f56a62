"""Local processes for development: anvil and the payee service, started and stopped by PID.

Every process is started in its own session so that stopping it (SIGTERM, then SIGKILL after a
grace period) reaches its whole process group: uvicorn's workers, for instance, never outlive
the service. ``Supervisor`` stops everything it started, in reverse order, even when the caller
fails half-way or is interrupted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final

import httpx

from channel.errors import ConfigError

__all__ = [
    "ANVIL_KEYS",
    "ANVIL_RELATIVE_PATH",
    "ManagedProcess",
    "Supervisor",
    "find_anvil",
    "free_port",
    "wait_until",
]

# anvil's default mnemonic ("test test ... junk"), accounts 0..9; each starts with 10,000 ETH.
# Publicly known development keys: never hold real money with them.
ANVIL_KEYS: Final = (
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
)
ANVIL_RELATIVE_PATH = Path("node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")
_REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_anvil() -> Path:
    """The native anvil binary from npm (not the node wrapper, which would outlive a kill)."""
    for base in (Path.cwd(), _REPO_ROOT):
        candidate = base / ANVIL_RELATIVE_PATH
        if candidate.is_file():
            return candidate
    found = shutil.which("anvil")
    if found:
        return Path(found)
    raise ConfigError(f"anvil not found at {ANVIL_RELATIVE_PATH} or on PATH: run `npm ci`")


def wait_until(
    ready: Callable[[], bool], *, timeout: float, what: str, alive: Callable[[], bool]
) -> None:
    """Poll ``ready`` until it is true; fail early if the process died, or after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise ConfigError(f"{what} exited before it was ready")
        with contextlib.suppress(Exception):
            if ready():
                return
        time.sleep(0.05)
    raise ConfigError(f"{what} was not ready within {timeout:.0f}s")


@dataclass
class ManagedProcess:
    """One child process in its own process group."""

    name: str
    popen: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = 5.0) -> None:
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=grace)


@dataclass
class Supervisor:
    """Starts processes and guarantees they are stopped when the ``with`` block ends."""

    log_dir: Path
    processes: list[ManagedProcess] = field(default_factory=list)

    def __enter__(self) -> Supervisor:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # SIGTERM (e.g. from a CI timeout) must unwind through __exit__ like Ctrl-C does.
        self._previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()
        signal.signal(signal.SIGTERM, self._previous)

    def start(
        self, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None
    ) -> ManagedProcess:
        log = (self.log_dir / f"{name}.log").open("ab")
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
        log.close()  # the child holds its own descriptor
        process = ManagedProcess(name, popen)
        self.processes.append(process)
        return process

    def start_anvil(
        self, port: int | None = None, chain_id: int = 31337, extra: Sequence[str] = ()
    ) -> tuple[str, int]:
        """Start anvil on 127.0.0.1; returns its URL and port once it answers JSON-RPC."""
        port = port or free_port()
        argv = [str(find_anvil()), "--host", "127.0.0.1", "--port", str(port),
                "--chain-id", str(chain_id), "--silent", *extra]
        process = self.start("anvil", argv)
        url = f"http://127.0.0.1:{port}"
        payload = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}

        def ready() -> bool:
            return httpx.post(url, json=payload, timeout=1.0).status_code == 200

        wait_until(ready, timeout=15, what="anvil", alive=process.alive)
        return url, port

    def wait_http(self, process: ManagedProcess, url: str, *, timeout: float = 30.0) -> None:
        """Wait until ``url`` answers 200 while ``process`` is still alive."""

        def ready() -> bool:
            return httpx.get(url, timeout=1.0).status_code == 200

        wait_until(ready, timeout=timeout, what=process.name, alive=process.alive)

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
