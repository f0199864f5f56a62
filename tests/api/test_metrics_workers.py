"""``piecework serve --workers 2``: one scrape of /metrics reports the sum of both workers.

The service runs as deployed, from the ``piecework`` command, against anvil and a SQLite file.
Its channels are written into the payee's store beforehand, exactly as the service records a
channel it has read from the chain, so the payments (verified off chain) do not depend on the
Python chain client, which is being rewritten for protocol v2.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from api_support import AUTH, ETH, PAYEE_KEY, PAYER_KEY, TOKEN, hx
from piecework_testnode import CHAIN_ID, Deployment, Node, free_port, stop_process
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from channel.messages import Domain, Voucher
from channel.signing import Signer
from channel.state import ChannelStatus, OnchainChannel
from channel.store import PayeeStore, make_engine, migrate

pytestmark = pytest.mark.integration

PAYERS = 8  # threads, each paying its own channel: no 409 but the deliberate ones
PIECEWORK = Path(sys.executable).parent / "piecework"


@dataclass
class Service:
    url: str
    process: subprocess.Popen[str]
    metrics_dir: Path
    tmpdir: Path


@pytest.fixture
def channels(tmp_path: Path) -> tuple[str, list[bytes]]:
    database = f"sqlite:///{tmp_path / 'payee.db'}"
    engine = make_engine(database)
    migrate(engine)
    store = PayeeStore(engine)
    payer, payee = Signer(PAYER_KEY), Signer(PAYEE_KEY)
    ids = [os.urandom(32) for _ in range(PAYERS)]
    for cid in ids:
        store.upsert_channel(OnchainChannel(cid, payer.address, payee.address, ETH, 10**18, 0,
                                            7200, 0, ChannelStatus.OPEN))
    engine.dispose()
    return database, ids


@pytest.fixture
def two_workers(
    anvil_node: Node, deployment: Deployment, channels: tuple[str, list[bytes]], tmp_path: Path
) -> Iterator[Service]:
    tmpdir = tmp_path / "tmp"  # where serve's private metrics directory will appear
    tmpdir.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIECEWORK_", "PROMETHEUS"))}
    env |= {"PIECEWORK_RPC_URL": anvil_node.url, "PIECEWORK_CONTRACT_ADDRESS": deployment.channels,
            "PIECEWORK_DATABASE_URL": channels[0], "PIECEWORK_PRIVATE_KEY": PAYEE_KEY,
            "PIECEWORK_OPERATOR_TOKEN": TOKEN, "TMPDIR": str(tmpdir),
            "PIECEWORK_MIN_CHALLENGE_PERIOD": "7200",  # the channels above; default is 24 h
            # Inherited from the caller: serve must replace it with a fresh directory of its own.
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    proc = subprocess.Popen([str(PIECEWORK), "serve", "--workers", "2", "--port", str(port)],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"serve exited: {proc.communicate()[1][-3000:]}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "serve did not become healthy"
            time.sleep(0.1)
        (metrics_dir,) = tmpdir.glob("piecework-metrics-*")
        assert metrics_dir.stat().st_mode & 0o077 == 0  # private to the service's user
        yield Service(url, proc, metrics_dir, tmpdir)
    finally:
        stop_process(proc)  # SIGTERM: uvicorn stops its workers, serve removes the directory


def _per_worker(metrics_dir: Path, scratch: Path) -> dict[int, float]:
    """Accepted payments per worker pid, from each worker's own files alone."""
    by_pid: dict[int, float] = {}
    for counter in metrics_dir.glob("counter_*.db"):
        pid = int(counter.stem.rsplit("_", 1)[1])
        alone = scratch / str(pid)
        alone.mkdir(parents=True, exist_ok=True)
        for own in metrics_dir.glob(f"*_{pid}.db"):
            shutil.copy(own, alone / own.name)
        by_pid[pid] = sum(
            s.value for family in MultiProcessCollector(None, path=str(alone)).collect()
            for s in family.samples if s.name == "piecework_payments_accepted_total"
        )
    return by_pid


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    # A new connection per scrape: any worker may answer.
    response = httpx.get(f"{url}/metrics", headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples}


def test_one_scrape_reports_the_sum_of_both_workers(
    two_workers: Service, channels: tuple[str, list[bytes]], deployment: Deployment,
    tmp_path: Path,
) -> None:
    domain = Domain(CHAIN_ID, deployment.channels)
    signer = Signer(PAYER_KEY)
    totals = [0] * PAYERS
    accepted = rejected = 0

    def pay(i: int, round_: int) -> tuple[int, int]:
        cid = channels[1][i]
        ok = stale = 0
        for n in range(4):
            amount = 1 + n
            body = {"task_id": f"r{round_}-p{i}-{n}", "amount": str(amount),
                    "cumulative_amount": str(totals[i] + amount),
                    "signature": hx(signer.sign(domain, Voucher(cid, totals[i] + amount)))}
            # httpx.post opens a new connection each time: the kernel spreads them over both
            # workers' accept queues.
            response = httpx.post(f"{two_workers.url}/v1/channels/{hx(cid)}/payments",
                                  json=body, timeout=30)
            assert response.status_code == 201, response.text
            totals[i] += amount
            ok += 1
        replay = {"task_id": f"r{round_}-p{i}-stale", "amount": "1",
                  "cumulative_amount": str(totals[i]),
                  "signature": hx(signer.sign(domain, Voucher(cid, totals[i])))}
        response = httpx.post(f"{two_workers.url}/v1/channels/{hx(cid)}/payments",
                              json=replay, timeout=30)
        assert response.status_code == 409, response.text
        stale += 1
        return ok, stale

    per_worker: dict[int, float] = {}
    with ThreadPoolExecutor(PAYERS) as pool:
        for round_ in range(20):
            for ok, stale in pool.map(pay, range(PAYERS), [round_] * PAYERS):
                accepted += ok
                rejected += stale
            per_worker = _per_worker(two_workers.metrics_dir, tmp_path / f"scratch{round_}")
            if len(per_worker) == 2 and min(per_worker.values()) > 0:
                break
    assert len(per_worker) == 2 and min(per_worker.values()) > 0, per_worker
    assert sum(per_worker.values()) == accepted  # the files hold every worker's share

    for _ in range(6):  # whichever worker answers, the same sums
        samples = _scrape(two_workers.url)
        assert samples[("piecework_payments_accepted_total", ())] == accepted
        assert samples[("piecework_payments_rejected_total",
                        (("code", "stale_voucher"),))] == rejected
        assert samples[("piecework_payment_seconds_count", ())] == accepted + rejected
        assert samples[("piecework_payment_seconds_bucket", (("le", "+Inf"),))] == (
            accepted + rejected)
        assert samples[("piecework_unclaimed_amount", (("token", ETH),))] == sum(totals)
        # Process metrics of each live worker, told apart by pid; Python's own info.
        pids = {int(dict(labels)["pid"]) for name, labels in samples
                if name == "process_resident_memory_bytes"}
        assert pids == set(per_worker)
        assert any(name == "python_info" for name, _ in samples)
    for pid in per_worker:  # both are children of the serve process
        stat = Path(f"/proc/{pid}/stat").read_text()
        assert int(stat.rsplit(")", 1)[1].split()[1]) == two_workers.process.pid


def test_the_metrics_directory_is_removed_when_serve_stops(two_workers: Service) -> None:
    assert any(two_workers.metrics_dir.glob("counter_*.db"))
    stop_process(two_workers.process)
    assert two_workers.process.returncode == 0, two_workers.process.communicate()[1][-2000:]
    assert not two_workers.metrics_dir.exists()
    assert not list(two_workers.tmpdir.glob("piecework-metrics-*"))
