"""Reliability harness: the payee service as a real subprocess, payers as threads, a stats log.

``Service`` runs ``piecework serve`` (uvicorn) in its own process group through
``channel.devnet.Supervisor`` and can ``kill -9`` that group and restart on the same port.
``PayClient`` speaks raw HTTP with vouchers signed by ``channel.signing`` and verifies every
receipt it is given. ``record`` keeps the numbers each test measured; they are printed at the
end of the run (and written as JSON to ``$PIECEWORK_RELIABILITY_REPORT`` when set), which is
where RELIABILITY.md's table comes from.

``PIECEWORK_LONG_TESTS=1`` scales every test up (more kills, payers, channels, cases).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from piecework_testnode import ANVIL_KEYS, CHAIN_ID, Accounts, Deployment, sqlalchemy_url

from channel.chain import ChainClient
from channel.devnet import ManagedProcess, Supervisor, free_port
from channel.messages import Domain, Receipt, Voucher, task_id_hash
from channel.signing import Signer, recover
from channel.store import PayeeStore, make_engine

LONG = os.environ.get("PIECEWORK_LONG_TESTS") == "1"
TOKEN = "reliability-operator-token-7f3a9c"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PAYEE_KEY = ANVIL_KEYS[2]
PIECEWORK_BIN = Path(sys.executable).parent / "piecework"
_STATS: list[dict[str, Any]] = []


def scale(ci: int, long: int) -> int:
    return long if LONG else ci


def record(test: str, **numbers: Any) -> None:
    """Keep what a test measured for the end-of-run summary (and RELIABILITY.md)."""
    _STATS.append({"test": test, **numbers})


def terminal_summary(terminalreporter: Any) -> None:
    if not _STATS:
        return
    terminalreporter.section("reliability numbers")
    for row in _STATS:
        terminalreporter.write_line(json.dumps(row, sort_keys=False))
    target = os.environ.get("PIECEWORK_RELIABILITY_REPORT")
    if target:
        Path(target).write_text(json.dumps(_STATS, indent=1) + "\n")


def hx(b: bytes) -> str:
    return "0x" + b.hex()


def service_env(
    node_url: str, contract: str, database_url: str, **extra: str
) -> dict[str, str]:
    """The environment of a service subprocess; nothing PIECEWORK_* leaks in from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIECEWORK_")}
    env.update({
        "PIECEWORK_RPC_URL": node_url,
        "PIECEWORK_CONTRACT_ADDRESS": contract,
        "PIECEWORK_DATABASE_URL": database_url,
        "PIECEWORK_PRIVATE_KEY": PAYEE_KEY,
        "PIECEWORK_OPERATOR_TOKEN": TOKEN,
        "PIECEWORK_MIN_CHALLENGE_PERIOD": "60",
        "PIECEWORK_CHAIN_ID": str(CHAIN_ID),
        # The suite pays toy amounts (wei), far below any gas cost: claim them anyway.
        "PIECEWORK_CLAIM_FEE_MULTIPLE": "0",
        **extra,
    })
    return env


@dataclass
class Service:
    """``piecework serve`` in its own process group, restartable on the same port."""

    supervisor: Supervisor
    env: dict[str, str]
    cwd: Path
    workers: int = 1
    debug_logging: bool = False
    port: int = field(default_factory=free_port)
    name: str = field(default_factory=lambda: f"serve-{uuid.uuid4().hex[:6]}")
    keep_spare: bool = False
    """Warm the next process while this one serves (for tests that restart many times)."""
    process: ManagedProcess | None = None
    starts: int = 0
    _spare: ManagedProcess | None = None
    _spawned: int = 0
    _warm_marker: Path | None = None

    def wait_spare(self, timeout: float = 30.0) -> None:
        """Block until the spare finished its imports (so a kill now restarts quickly)."""
        deadline = time.monotonic() + timeout
        while self._spare is not None and self._warm_marker is not None:
            if self._warm_marker.exists() or time.monotonic() > deadline:
                return
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.supervisor.log_dir / f"{self.name}.log"

    def argv(self, warm_marker: Path) -> list[str]:
        """``piecework serve`` behind a boot line that imports everything first, then waits
        for a newline on stdin: a spare process is warmed while the current one serves, so a
        restart after ``kill -9`` costs the app's startup, not Python's imports."""
        boot = (
            "import logging, sys\n"
            "import api.main, channel.chain, channel.cli, uvicorn, web3, psycopg, sqlalchemy\n"
            f"if {self.debug_logging!r}: logging.basicConfig(level=logging.DEBUG)\n"
            f"open({str(warm_marker)!r}, 'w').close()\n"
            "sys.stdin.readline()\n"
            "channel.cli.main(sys.argv[1:])\n"
        )
        return [sys.executable, "-c", boot, "serve", "--host", "127.0.0.1",
                "--port", str(self.port), "--workers", str(self.workers)]

    def _spawn(self) -> ManagedProcess:
        self._spawned += 1
        self._warm_marker = self.supervisor.log_dir / f"{self.name}.{self._spawned}.warm"
        log = self.log_path.open("ab")
        try:
            popen = subprocess.Popen(
                self.argv(self._warm_marker), stdin=subprocess.PIPE, stdout=log,
                stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd, start_new_session=True,
            )
        finally:
            log.close()
        process = ManagedProcess(self.name, popen)
        self.supervisor.processes.append(process)  # stopped with the supervisor, always
        return process

    def start(self, *, wait: str = "/healthz", timeout: float = 60.0) -> None:
        """Start serving (the warm spare if there is one) and warm the next spare."""
        process = self._spare or self._spawn()
        self._spare = None
        assert process.popen.stdin is not None
        process.popen.stdin.write(b"go\n")
        process.popen.stdin.close()
        self.process = process
        self.starts += 1
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as http:
            while True:
                if not process.alive():
                    raise RuntimeError(f"service exited early:\n{self.tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if http.get(self.url + wait).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"service not ready in {timeout}s:\n{self.tail()}")
                time.sleep(0.02)
        if self.keep_spare:
            self._spare = self._spawn()

    def kill9(self) -> None:
        """SIGKILL the whole process group (master and workers) by its PID, and reap it."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.popen.wait(timeout=10)
        self.supervisor.processes.remove(self.process)
        self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.supervisor.processes.remove(self.process)
            self.process = None

    def tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[Supervisor]:
    with Supervisor(tmp_path / "logs") as sup:
        yield sup


@pytest.fixture
def make_service(
    supervisor: Supervisor, tmp_path: Path
) -> Callable[..., Service]:
    def make(env: dict[str, str], **options: Any) -> Service:
        return Service(supervisor, env, tmp_path, **options)

    return make


@pytest.fixture
def pg_sqlalchemy_url(pg_url: str) -> str:
    """A fresh schema in the session's PostgreSQL database, as a SQLAlchemy URL."""
    import psycopg

    schema = f"r_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return sqlalchemy_url(pg_url) + f"?options=-csearch_path%3D{schema}"


def store_for(database_url: str) -> PayeeStore:
    """Read-only view of the service's store (tables exist once the service has started)."""
    return PayeeStore(make_engine(database_url))


@dataclass
class PayClient:
    """A payer over raw HTTP: signs vouchers itself and verifies every receipt it gets."""

    url: str
    domain: Domain
    payer_key: str
    payee: str
    timeout: float = 5.0

    def __post_init__(self) -> None:
        self.signer = Signer(self.payer_key)
        self.http = httpx.Client(base_url=self.url, timeout=self.timeout)

    def body(self, cid: bytes, task: str, amount: int, cumulative: int) -> dict[str, str]:
        sig = self.signer.sign(self.domain, Voucher(cid, cumulative))
        return {"task_id": task, "amount": str(amount), "cumulative_amount": str(cumulative),
                "signature": hx(sig)}

    def pay(self, cid: bytes, task: str, amount: int, cumulative: int) -> httpx.Response:
        return self.http.post(f"/v1/channels/{hx(cid)}/payments",
                              json=self.body(cid, task, amount, cumulative))

    def check_receipt(self, cid: bytes, task: str, cumulative: int, response: httpx.Response
                      ) -> bytes:
        """The receipt's signature after checking it names this payment and the payee signed."""
        receipt = response.json()["receipt"]
        assert receipt["channel_id"] == hx(cid)
        assert int(receipt["cumulative_amount"]) == cumulative
        assert receipt["task_id"] == hx(task_id_hash(task))
        message = Receipt(cid, cumulative, int(receipt["amount"]), task_id_hash(task))
        assert recover(self.domain, message, receipt["signature"]) == self.payee
        return bytes.fromhex(receipt["signature"][2:])

    def close(self) -> None:
        self.http.close()


def assert_payer_signed(state: Any, domain: Domain, payer: str) -> None:
    """The stored latest voucher is the payer's signature over exactly the stored amount:
    what a claim would pay out is what was signed."""
    if state is None or state.accepted == 0:
        return
    assert state.voucher_signature is not None
    signer = recover(domain, Voucher(state.channel_id, state.accepted), state.voucher_signature)
    assert signer == payer, (hx(state.channel_id), state.accepted, signer)


def open_channels(
    client: ChainClient, payee: str, count: int, *, deposit: int = 10**18, period: int = 3600
) -> list[bytes]:
    return [client.open(payee, deposit, challenge_period=period, salt=os.urandom(32))[0]
            for _ in range(count)]


def domain_of(deployment: Deployment) -> Domain:
    return Domain(CHAIN_ID, deployment.channels)


__all__ = [
    "AUTH",
    "LONG",
    "PAYEE_KEY",
    "TOKEN",
    "Accounts",
    "PayClient",
    "Service",
    "assert_payer_signed",
    "domain_of",
    "hx",
    "open_channels",
    "record",
    "scale",
    "service_env",
    "store_for",
]
