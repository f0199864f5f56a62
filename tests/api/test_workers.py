"""Two uvicorn workers on one PostgreSQL database against anvil: one ledger, one watcher.

The service runs exactly as deployed (``uvicorn --factory api.main:create_app --workers 2``)
in a subprocess on a free loopback port; payers race on shared channels from threads.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest
from api_support import AUTH, TOKEN, free_port, hx
from piecework_testnode import Accounts, Deployment, Node, stop_process

from api.leader import advisory_key
from channel.chain import ChainClient
from channel.messages import Domain, Voucher
from channel.signing import Signer

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def two_workers(
    anvil_node: Node, deployment: Deployment, accounts: Accounts, db_url: str,
    chain_snapshot: None,
) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "PIECEWORK_RPC_URL": anvil_node.url,
        "PIECEWORK_CONTRACT_ADDRESS": deployment.channels,
        "PIECEWORK_DATABASE_URL": db_url,
        "PIECEWORK_PRIVATE_KEY": hx(bytes(accounts.payee.key)),
        "PIECEWORK_OPERATOR_TOKEN": TOKEN,
        "PIECEWORK_MIN_CHALLENGE_PERIOD": "60",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app", "--workers", "2",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not become healthy")
            time.sleep(0.1)
        yield url
    finally:
        stop_process(proc)  # by PID: the master stops its workers


def _advisory_holders(db_url: str) -> int:
    libpq = db_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(libpq, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND ((classid::bigint << 32) | objid::bigint) = %s "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (advisory_key(db_url),),
        ).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_two_workers_share_one_ledger_and_one_watcher(
    two_workers: str, db_url: str, accounts: Accounts, deployment: Deployment,
    make_client: Callable[..., ChainClient],
) -> None:
    payer_chain = make_client(accounts.payer)
    channels = [
        payer_chain.open(accounts.payee.address, 10**18, challenge_period=3600,
                         salt=os.urandom(32))[0]
        for _ in range(4)
    ]
    signer = Signer(bytes(accounts.payer.key))
    domain = Domain(31337, deployment.channels)
    threads, per_thread = 16, 8
    start = threading.Barrier(threads)

    def payer(i: int) -> list[int]:
        cid = channels[i % len(channels)]
        accepted = []
        with httpx.Client(base_url=two_workers, timeout=30) as http:
            start.wait()
            current = 0
            for n in range(per_thread):
                amount = 1 + i * per_thread + n
                for _ in range(1000):
                    cumulative = current + amount
                    response = http.post(
                        f"/v1/channels/{hx(cid)}/payments",
                        json={"task_id": f"w{i}-{n}", "amount": str(amount),
                              "cumulative_amount": str(cumulative),
                              "signature": hx(signer.sign(domain, Voucher(cid, cumulative)))},
                    )
                    if response.status_code == 201:
                        accepted.append(amount)
                        current = cumulative
                        break
                    assert response.status_code == 409, response.text
                    current = int(response.json()["current_cumulative_amount"])
                else:
                    raise AssertionError("payment never accepted")
        return accepted

    with ThreadPoolExecutor(threads) as pool:
        paid = list(pool.map(payer, range(threads)))

    with httpx.Client(base_url=two_workers, timeout=30) as http:
        for k, cid in enumerate(channels):
            expected = sum(sum(paid[i]) for i in range(threads) if i % len(channels) == k)
            view = http.get(f"/v1/channels/{hx(cid)}").json()
            assert int(view["latest"]["cumulative_amount"]) == expected
            items = http.get(f"/v1/channels/{hx(cid)}/receipts",
                             headers=AUTH).json()["receipts"]
            assert len(items) == (threads // len(channels)) * per_thread
            assert sum(int(r["amount"]) for r in items) == expected
            cumulative = [int(r["cumulative_amount"]) for r in items]
            assert cumulative == sorted(set(cumulative))  # strictly increasing
    assert _advisory_holders(db_url) == 1  # exactly one worker leads the watcher
