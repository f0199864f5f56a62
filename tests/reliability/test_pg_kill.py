"""PostgreSQL itself crashes under load: the service answers 503 while it is down, recovers by
itself, and loses nothing it acknowledged.

The database is a PRIVATE cluster this test creates with ``initdb`` in a temporary directory
and serves on a free 127.0.0.1 port (the shared server on 5432 is never touched). Its
postmaster is killed with SIGKILL (its backends exit when they notice, no checkpoint, no
clean shutdown), then started again: PostgreSQL replays its WAL. Payer threads keep paying
through ``piecework serve`` all along, retrying the same voucher until they get an answer.
After every crash and at the end: every receipt a payer holds has its stored payment row
(same signature), no accepted amount went backwards, rows chain up per channel.

``PIECEWORK_LONG_TESTS=1``: 40 crashes instead of 3.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from piecework_testnode import Accounts, Deployment, Node, free_port
from reliability_harness import (
    PayClient,
    Service,
    domain_of,
    open_channels,
    record,
    scale,
    service_env,
)
from test_crash import _check_store, _payer_loop, _reconcile

from channel.chain import ChainClient

pytestmark = pytest.mark.integration

MakeClient = Callable[..., ChainClient]


def _pg_bin() -> Path:
    root = Path("/usr/lib/postgresql")
    versions = sorted(root.iterdir(), key=lambda p: int(p.name)) if root.is_dir() else []
    for version in reversed(versions):
        if (version / "bin" / "initdb").is_file():
            return version / "bin"
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    message = "initdb not installed: no private PostgreSQL cluster possible"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)  # CI machines have PostgreSQL: a skip there would hide a gap
    pytest.skip(message)


def _alive(pid: int) -> bool:
    """Running (a zombie whose parent has not reaped it yet counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


class PrivateCluster:
    """``initdb`` + ``postgres`` of our own (as the ``postgres`` user when we are root)."""

    def __init__(self) -> None:
        self.bin = _pg_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="piecework-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self._as: list[str] = []
        self.process: subprocess.Popen[bytes] | None = None
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "--no-sync", "-E", "UTF8")

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self._as, str(self.bin / tool), *args], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)

    def start(self) -> float:
        """Start the postmaster as our own child (crash recovery included) and wait until it
        accepts connections; returns the seconds that took."""
        t0 = time.monotonic()
        argv = [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
                "-k", str(self.dir), "-c", "listen_addresses=127.0.0.1",
                "-c", "max_connections=60"]
        with (self.dir / "server.log").open("ab") as log:
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT,
                user="postgres" if os.geteuid() == 0 else None, start_new_session=True)
        while time.monotonic() - t0 < 60:
            assert self.process.poll() is None, (self.dir / "server.log").read_text()[-2000:]
            try:
                psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres",
                                connect_timeout=1).close()
                return time.monotonic() - t0
            except psycopg.OperationalError:
                time.sleep(0.02)
        raise AssertionError("private PostgreSQL did not start in 60 s")

    def crash(self) -> None:
        """SIGKILL the postmaster, then wait for its backends to notice and exit."""
        assert self.process is not None
        found = subprocess.run(["pgrep", "-P", str(self.process.pid)], check=False,
                               capture_output=True, text=True).stdout.split()
        self.process.kill()
        self.process.wait(timeout=30)
        deadline = time.monotonic() + 30
        for child in map(int, found):
            while _alive(child) and time.monotonic() < deadline:
                time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # immediate shutdown
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def private_pg() -> Iterator[PrivateCluster]:
    if not shutil.which("runuser") and os.geteuid() == 0:
        pytest.skip("running as root without runuser: initdb refuses root")
    cluster = PrivateCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def _wait_status(url: str, path: str, status: int, timeout: float) -> float:
    t0 = time.monotonic()
    with httpx.Client(timeout=2.0) as http:
        while time.monotonic() - t0 < timeout:
            with contextlib.suppress(httpx.HTTPError):
                if http.get(url + path).status_code == status:
                    return time.monotonic() - t0
            time.sleep(0.02)
    raise AssertionError(f"{path} never answered {status} within {timeout}s")


def test_postgres_crash_under_load_503_then_recovers_losing_nothing(  # noqa: PLR0917
    anvil_node: Node, deployment: Deployment, accounts: Accounts, make_client: MakeClient,
    make_service: Callable[..., Service], private_pg: PrivateCluster,
) -> None:
    crashes = scale(3, 40)
    channels = open_channels(make_client(accounts.payer), accounts.payee.address, scale(4, 8),
                             period=86_400)
    env = service_env(anvil_node.url, deployment.channels, private_pg.url,
                      PIECEWORK_CLAIM_MAX_AGE_SECONDS="0")
    service = make_service(env)
    service.start()
    domain = domain_of(deployment)
    clients = [PayClient(service.url, domain, accounts.payer.key.hex(), accounts.payee.address,
                         timeout=5.0) for _ in channels]
    acked: dict[bytes, list[tuple[int, bytes]]] = {cid: [] for cid in channels}
    errors: list[str] = []
    counters = {"acked": 0, "transport_errors": 0, "busy": 0}
    stop = threading.Event()
    threads = [threading.Thread(target=_payer_loop, daemon=True,
                                args=(clients[i], cid, i, acked[cid], stop, errors, counters))
               for i, cid in enumerate(channels)]
    floor: dict[bytes, int] = {}
    recoveries: list[float] = []
    down_503 = 0
    started = time.monotonic()
    for t in threads:
        t.start()
    try:
        for _ in range(crashes):
            time.sleep(0.4)
            private_pg.crash()
            # Down: the service says so (503 problem), it does not hang or answer 500.
            _wait_status(service.url, "/healthz", 503, timeout=15)
            down_503 += 1
            time.sleep(0.3)
            acked_before = counters["acked"]
            private_pg.start()
            t0 = time.monotonic()
            # Recovered by itself: payments flow again without restarting the service.
            while counters["acked"] == acked_before:
                if time.monotonic() - t0 > 30:
                    raise AssertionError(f"no payment acknowledged 30s after restart:\n"
                                         f"{service.tail()}")
                time.sleep(0.005)
            recoveries.append(time.monotonic() - t0)
            assert not errors, errors[:5]
            assert service.process is not None and service.process.alive()
            # Payers keep going: check the receipts held *before* reading the store.
            _check_store(private_pg.url, {c: list(r) for c, r in acked.items()}, floor)
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        for c in clients:
            c.close()
    assert not errors, errors[:5]
    _check_store(private_pg.url, acked, floor)
    rows = _reconcile(private_pg.url, channels, domain, accounts.payer.address)
    held = sum(len(v) for v in acked.values())
    # Every acknowledged payment is stored; at most one in-flight payment per payer was
    # stored without its answer reaching the payer when the test stopped.
    assert held <= rows <= held + len(channels)
    assert counters["busy"] > 0  # the outage was answered with 503, not hidden
    record("pg-crash/postmaster-sigkill", crashes=crashes, payers=len(channels),
           acked=held, stored_rows=rows, answered_503=counters["busy"],
           healthz_503_during_outage=down_503,
           recovery_s_max=round(max(recoveries), 2),
           recovery_s_avg=round(sum(recoveries) / len(recoveries), 2),
           seconds=round(time.monotonic() - started, 1))
