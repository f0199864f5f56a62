"""HTTP: paid requests/s and latency of the real payee service vs a bare FastAPI endpoint.

Real channels on a real anvil (``channel.devnet.Supervisor``), the real service
(``piecework serve``, SQLite or PostgreSQL, 1 or 2 workers), and as the baseline, measured in
the same run with the same load, a bare FastAPI app (scripts/_bench_bare_app.py: pydantic
body + one coincurve recover). Load generator: ``wrk`` with scripts/_bench_wrk.lua, one wrk
thread per connection so that each connection pays its own channel strictly in order (no
self-inflicted 409s; any non-201 answer is counted as an error). wrk's own CPU time is
measured (``wait4`` rusage) to show it is not the bottleneck, and its ceiling is measured
against a trivial endpoint.

Usage: .venv/bin/python scripts/bench_http.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
import psycopg
import sqlalchemy as sa
from _bench_chain import CHAIN_ID, CHALLENGE_PERIOD, DEV_KEYS, Devnet, open_channels, start_devnet

from channel.devnet import ManagedProcess, Supervisor, free_port
from channel.messages import Domain, Voucher
from channel.signing import Signer

HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
LUA = HERE / "_bench_wrk.lua"
WARMUP = 1  # vouchers per connection sent before wrk starts (the first fetches the channel)
RATE_GUESS = 3_000.0  # payments/s an instance might reach: sizes the pre-signed vouchers
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass
class Plan:
    connections: list[int]
    workers: list[int]
    backends: list[str]
    duration: float


def plan_for(quick: bool) -> Plan:
    if quick:
        return Plan([8, 64], [1, 2], ["sqlite", "postgres"], 2.0)
    return Plan([1, 8, 32, 64], [1, 2], ["sqlite", "postgres"], 6.0)


WRK_MISSING = ("wrk is not installed: the HTTP section needs it as its load generator. "
               "Install it once with `apt-get install -y wrk` (Debian/Ubuntu; root), then run "
               "the bench again")


def ensure_wrk() -> str:
    """wrk's path; never installs anything (issue 13): says what is missing and how to add it."""
    path = shutil.which("wrk")
    if not path:
        raise RuntimeError(WRK_MISSING)
    return path


# --- vouchers ------------------------------------------------------------------------------

def presign(net: Devnet, ids: list[bytes], plan: Plan, root: Path) -> dict[int, Path]:
    """Voucher files per connection count: ``root/c<C>/conn<k>.txt``, one channel each."""
    payer = Signer(DEV_KEYS["payer"])
    domain = Domain(CHAIN_ID, net.contract)
    dirs: dict[int, Path] = {}
    base = 0
    for c in plan.connections:
        per_conn = int(min(RATE_GUESS / c, 3_000.0) * plan.duration * 2.0) + WARMUP + 100
        d = root / f"c{c}"
        d.mkdir(parents=True, exist_ok=True)
        for k in range(c):
            cid = ids[base + k]
            path = f"/v1/channels/0x{cid.hex()}/payments"
            lines = []
            for i in range(1, per_conn + 1):
                sig = payer.sign(domain, Voucher(cid, i))
                body = json.dumps({"task_id": f"t{c}-{k}-{i}", "amount": "1",
                                   "cumulative_amount": str(i), "signature": "0x" + sig.hex()},
                                  separators=(",", ":"))
                lines.append(f"{path}\t{body}\n")
            (d / f"conn{k}.txt").write_text("".join(lines))
        dirs[c] = d
        base += c
    return dirs


def channels_needed(plan: Plan) -> int:
    return sum(plan.connections)


# --- processes -----------------------------------------------------------------------------

def tree_pids(pid: int) -> list[int]:
    out = [pid]
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            out.extend(tree_pids(int(child)))
    return out


def peak_rss_mib(pid: int) -> tuple[float, float]:
    """(largest VmHWM of one process, sum of VmHWM) over the process tree, in MiB."""
    peaks = []
    for p in tree_pids(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
    return (max(peaks) if peaks else 0.0, sum(peaks))


@contextlib.contextmanager
def postgres_database(base: str) -> Iterator[str]:
    """A fresh database on the server of ``base``; dropped afterwards."""
    name = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield sa.make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(base, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_ok(base: str) -> str | None:
    try:
        with psycopg.connect(base, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}".strip()
    return None


def start_service(sup: Supervisor, net: Devnet, database_url: str, *,
                  workers: int, name: str) -> tuple[ManagedProcess, str]:
    port = free_port()
    env = {
        **os.environ,
        "PIECEWORK_RPC_URL": net.rpc_url,
        "PIECEWORK_CONTRACT_ADDRESS": net.contract,
        "PIECEWORK_CHAIN_ID": str(CHAIN_ID),
        "PIECEWORK_DATABASE_URL": database_url,
        "PIECEWORK_OPERATOR_TOKEN": secrets.token_urlsafe(24),
        "PIECEWORK_PRIVATE_KEY": DEV_KEYS["payee"],  # anvil development key, by env only
        # The channels are opened with this challenge period; the service's default minimum
        # is an operator policy that may be longer.
        "PIECEWORK_MIN_CHALLENGE_PERIOD": str(CHALLENGE_PERIOD),
    }
    proc = sup.start(name, [str(VENV_BIN / "piecework"), "serve", "--host", "127.0.0.1",
                            "--port", str(port), "--workers", str(workers)], env=env)
    return proc, f"http://127.0.0.1:{port}"


def start_bare(sup: Supervisor, workers: int, name: str) -> tuple[ManagedProcess, str]:
    port = free_port()
    proc = sup.start(name, [str(VENV_BIN / "uvicorn"), "--factory", "_bench_bare_app:create_app",
                            "--app-dir", str(HERE), "--host", "127.0.0.1", "--port", str(port),
                            "--workers", str(workers)])
    return proc, f"http://127.0.0.1:{port}"


def stop(sup: Supervisor, proc: ManagedProcess) -> None:
    proc.stop()
    if proc in sup.processes:
        sup.processes.remove(proc)


# --- load ----------------------------------------------------------------------------------

def warm_up(url: str, vdir: Path, c: int) -> int:
    """Send each connection's first WARMUP vouchers in order; returns the non-201 count."""
    bad = 0
    with httpx.Client(base_url=url, timeout=30) as http:
        for k in range(c):
            with (vdir / f"conn{k}.txt").open() as f:
                for _ in range(WARMUP):
                    path, body = f.readline().rstrip("\n").split("\t", 1)
                    r = http.post(path, content=body,
                                  headers={"content-type": "application/json"})
                    bad += r.status_code != 201
    return bad


def run_wrk(wrk: str, url: str, vdir: Path, c: int, seconds: float, *,
            first: int = WARMUP + 1, path: str = "/") -> dict[str, Any]:
    argv = [wrk, f"-t{c}", f"-c{c}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
            "-s", str(LUA), url + path, "--", str(vdir), str(first)]
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    out = proc.stdout.read().decode() if proc.stdout else ""
    err = proc.stderr.read().decode() if proc.stderr else ""
    line = next((x for x in out.splitlines() if x.startswith("WRKJSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {err.strip() or out.strip()}")
    res: dict[str, Any] = json.loads(line[len("WRKJSON "):])
    seconds_run = res["duration_us"] / 1e6
    res["paid_per_s"] = res["ok"] / seconds_run
    res["requests_per_s"] = res["requests"] / seconds_run
    res["errors"] = (res["bad"] + res["connect_errors"] + res["read_errors"]
                     + res["write_errors"] + res["timeouts"])
    res["wrk_cpu_s"] = usage.ru_utime + usage.ru_stime
    res["wrk_wall_s"] = wall
    res["wrk_cpu_fraction_of_one_core"] = res["wrk_cpu_s"] / wall
    for key in ("p50", "p90", "p99", "p999", "max", "mean"):
        res[f"{key}_ms"] = res.pop(f"{key}_us") / 1000
    return res


def wrk_ceiling(wrk: str, url: str, seconds: float, c: int = 64) -> dict[str, Any]:
    """Plain wrk (no Lua) on a trivial GET: the load generator's own ceiling here."""
    argv = [wrk, "-t2", f"-c{c}", f"-d{max(1, round(seconds))}s", url + "/healthz"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, _status, usage = os.wait4(proc.pid, 0)
    out = proc.stdout.read().decode() if proc.stdout else ""
    rate = next(float(x.split()[1]) for x in out.splitlines() if x.startswith("Requests/sec"))
    return {"requests_per_s": rate, "wrk_cpu_s": usage.ru_utime + usage.ru_stime}


# --- the whole matrix ----------------------------------------------------------------------

def run(sup: Supervisor, net: Devnet, workdir: Path, plan: Plan, *,
        postgres_url: str, log: Any = print) -> dict[str, Any]:
    """Every cell of the matrix; failures are recorded, not raised, so the rest still runs."""
    wrk = ensure_wrk()
    out: dict[str, Any] = {"load_generator": "wrk 4.1 + scripts/_bench_wrk.lua, one thread per "
                           "connection, keep-alive HTTP/1.1, no pipelining",
                           "duration_s": plan.duration, "cells": [], "failures": [],
                           "notes": []}
    t0 = time.perf_counter()
    ids = open_channels(net, channels_needed(plan), 10**18)
    log(f"  opened {len(ids)} channels on anvil in {time.perf_counter() - t0:.1f}s")
    t0 = time.perf_counter()
    dirs = presign(net, ids, plan, workdir / "vouchers")
    log(f"  pre-signed vouchers in {time.perf_counter() - t0:.1f}s")
    backends = list(plan.backends)
    if "postgres" in backends:
        why = postgres_ok(postgres_url)
        if why is not None:
            backends.remove("postgres")
            out["notes"].append(f"PostgreSQL skipped: {postgres_url} unreachable ({why})")
            log(f"  PostgreSQL skipped: {why}")
    # Every instance starts at once (startup is slow on a loaded machine, and idle instances
    # cost next to nothing); then they are measured one at a time, each stopped after its turn.
    with contextlib.ExitStack() as stack:
        instances = []
        t0 = time.perf_counter()
        for workers in plan.workers:
            for target in ["bare", *backends]:
                name = f"{target}-w{workers}"
                try:
                    if target == "bare":
                        proc, url = start_bare(sup, workers, name)
                    else:
                        if target == "sqlite":
                            db_url = f"sqlite:///{workdir / name}.db"
                        else:
                            db_url = stack.enter_context(postgres_database(postgres_url))
                        proc, url = start_service(sup, net, db_url, workers=workers, name=name)
                    stack.callback(stop, sup, proc)
                    instances.append((target, workers, name, proc, url))
                except Exception as exc:
                    out["failures"].append(f"{name}: {type(exc).__name__}: {exc}")
        for target, workers, name, proc, url in list(instances):
            try:
                sup.wait_http(proc, f"{url}/healthz", timeout=120)
            except Exception as exc:
                out["failures"].append(f"{name}: did not start: {exc}")
                instances.remove((target, workers, name, proc, url))
        log(f"  {len(instances)} instances up in {time.perf_counter() - t0:.1f}s")
        for target, workers, name, proc, url in instances:
            try:
                if target == "bare" and workers == plan.workers[0]:
                    out["wrk_ceiling_trivial_get"] = wrk_ceiling(wrk, url, 2.0)
                for c in plan.connections:
                    warm_bad = warm_up(url, dirs[c], c)
                    res = run_wrk(wrk, url, dirs[c], c, plan.duration)
                    res.update(target=target, workers=workers, connections=c,
                               warmup_errors=warm_bad)
                    out["cells"].append(res)
                    log(f"  {name:12s} c={c:3d}: {res['paid_per_s']:8,.0f} paid/s  "
                        f"p50 {res['p50_ms']:6.1f} ms  p99 {res['p99_ms']:6.1f} ms  "
                        f"max {res['max_ms']:7.1f} ms  errors {res['errors']}  "
                        f"wrk cpu {res['wrk_cpu_fraction_of_one_core']:.0%} of a core")
                    if res["exhausted"]:
                        out["notes"].append(f"{name} c={c}: ran out of pre-signed vouchers "
                                            f"({res['exhausted']} filler requests)")
                rss_max, rss_sum = peak_rss_mib(proc.pid)
                out.setdefault("peak_rss_mib", {})[name] = {"largest_process": rss_max,
                                                            "whole_tree": rss_sum}
            except Exception as exc:
                out["failures"].append(f"{name}: {type(exc).__name__}: {exc}")
                log(f"  {name} FAILED: {exc}")
            finally:
                stop(sup, proc)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--duration", type=float)
    parser.add_argument("--postgres",
                        default=os.environ.get("PIECEWORK_TEST_POSTGRES_URL", DEFAULT_PG))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    plan = plan_for(args.quick)
    if args.duration:
        plan.duration = args.duration
    workdir = Path(tempfile.mkdtemp(prefix="piecework-bench-http-"))
    with Supervisor(workdir / "logs") as sup:
        net = start_devnet(sup)
        result = run(sup, net, workdir, plan, postgres_url=args.postgres)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    shutil.rmtree(workdir / "vouchers", ignore_errors=True)
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
