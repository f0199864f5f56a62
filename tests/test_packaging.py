"""The wheel a user gets from ``pip install .`` runs outside the checkout, and the contract copies
it carries (``channel/contracts/*.json``, written by scripts/package_data.js) match the build.

The wheel is built from the checkout's files (tracked and not ignored), without build isolation,
and installed with ``--no-deps`` into a fresh venv that sees the development venv's packages
through a ``.pth`` line: ~2 s instead of ~40 s for a full install from pip's cache (measured on
the 2-core CI machine). What a full install would add is checked instead: ``pip check`` proves
every declared requirement resolves, and importing every module of the installed package proves
it needs nothing beyond them. The installed ``piecework`` then deploys and serves against anvil
from an empty temporary directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from piecework_testnode import ANVIL_KEYS, CHAIN_ID, REPO_ROOT, Node, start_anvil, stop_process

from channel.chain import DEFAULT_ARTIFACT, PACKAGED_CONTRACTS, find_artifact, load_artifact
from channel.devnet import free_port
from channel.errors import ConfigError

PACKAGED = ("PaymentChannels", "TestStablecoin")
FIX = "run `npm run build` (or `node scripts/package_data.js`) and commit channel/contracts/"
TOKEN = "packaging-test-operator-token"


def _packaged(name: str) -> dict[str, object]:
    data: dict[str, object] = json.loads((PACKAGED_CONTRACTS / f"{name}.json").read_text())
    return data


# --- the committed copies against the build ----------------------------------------------------


@pytest.mark.parametrize("name", PACKAGED)
def test_packaged_contract_equals_the_compiled_artifact(name: str) -> None:
    packaged = _packaged(name)
    artifact_path = REPO_ROOT / "artifacts" / str(packaged["sourceName"]) / f"{name}.json"
    if not artifact_path.is_file():
        pytest.fail(f"no compiled {name} at {artifact_path}: run `npm run build` first")
    artifact = json.loads(artifact_path.read_text())
    for key in ("abi", "bytecode", "deployedBytecode"):
        assert packaged[key] == artifact[key], f"{name}.json is stale ({key}): {FIX}"
    build_info = REPO_ROOT / "artifacts" / "build-info" / f"{artifact['buildInfoId']}.json"
    info = json.loads(build_info.read_text())
    settings = info["input"]["settings"]
    assert packaged["compiler"] == {
        "version": info["solcLongVersion"],
        "optimizer": settings["optimizer"],
        "evmVersion": settings["evmVersion"],
        "viaIR": settings["viaIR"],
    }, f"{name}.json is stale (compiler): {FIX}"


_NPM_SOURCE = re.compile(r"^npm/((?:@[^/]+/)?[^/@]+)@([^/]+)/(.+)$")


def _source_on_disk(source_name: str) -> Path:
    """Hardhat 3's source name → the file it was read from (``project/`` or an npm package)."""
    if source_name.startswith("project/"):
        return REPO_ROOT / source_name.removeprefix("project/")
    match = _NPM_SOURCE.match(source_name)
    assert match, f"unexpected source name {source_name}"
    package, version, inner = match.groups()
    root = REPO_ROOT / "node_modules" / package
    installed = json.loads((root / "package.json").read_text())["version"]
    assert installed == version, f"{package} is {installed} in node_modules, compiled {version}"
    return root / inner


@pytest.mark.parametrize("name", PACKAGED)
def test_packaged_contract_was_compiled_from_the_sources_on_disk(name: str) -> None:
    """Catches a contract edited but not rebuilt, even when artifacts/ is just as old."""
    sources = _packaged(name)["sources"]
    assert isinstance(sources, dict)
    assert f"project/{_packaged(name)['sourceName']}" in sources
    for source_name, digest in sources.items():
        path = _source_on_disk(source_name)
        actual = hashlib.sha256(path.read_bytes()).hexdigest()
        assert actual == digest, f"{name}.json is stale ({path} changed): {FIX}"


def test_without_a_root_contracts_come_from_the_package_wherever_the_cwd_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An artifacts/ tree in the working directory must not shadow what was packaged.
    decoy = tmp_path / "artifacts" / "contracts" / "PaymentChannels.sol"
    decoy.mkdir(parents=True)
    (decoy / "PaymentChannels.json").write_text('{"abi": [], "bytecode": "0x00"}')
    monkeypatch.chdir(tmp_path)
    art = load_artifact(DEFAULT_ARTIFACT)
    assert art.path == PACKAGED_CONTRACTS / "PaymentChannels.json"
    assert art.abi == _packaged("PaymentChannels")["abi"]
    assert find_artifact("TestStablecoin") == PACKAGED_CONTRACTS / "TestStablecoin.json"
    with pytest.raises(ConfigError, match=r"'FeeToken' is packaged .*PaymentChannels, "
                                          r"TestStablecoin.*path of a Hardhat artifact"):
        find_artifact("FeeToken")


# --- the wheel ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def piecework(self) -> Path:
        return self.venv / "bin" / "piecework"


def _run(*cmd: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def _checkout_copy(dest: Path) -> None:
    """The files a fresh clone plus the uncommitted work would have (never build/ leftovers)."""
    listed = _run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard",
                  cwd=REPO_ROOT)
    if listed.returncode != 0:
        pytest.fail(f"git ls-files failed (the test builds from a git checkout): {listed.stderr}")
    for name in filter(None, listed.stdout.split("\0")):
        source = REPO_ROOT / name
        if source.is_file():  # a deleted but not yet staged file is still listed
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("wheel")
    source, dist, venv = base / "src", base / "dist", base / "venv"
    _checkout_copy(source)
    built = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                 "--disable-pip-version-check", "--quiet", "--wheel-dir", dist, source)
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("piecework-*.whl")
    made = _run(sys.executable, "-m", "venv", "--without-pip", venv)
    assert made.returncode == 0, made.stderr
    purelib = _run(venv / "bin" / "python", "-c",
                   "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    # A bare path line: appended to sys.path after the venv's own site-packages, and .pth files
    # in it (the checkout's editable install among them) are not processed.
    dev_purelib = __import__("sysconfig").get_paths()["purelib"]
    (Path(purelib) / "_piecework_dev_dependencies.pth").write_text(dev_purelib + "\n")
    done = _run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install",
                "--no-deps", "--no-index", "--disable-pip-version-check", "--quiet", wheel)
    assert done.returncode == 0, done.stderr
    return Installed(wheel, venv)


def test_wheel_carries_the_package_data_and_nothing_of_the_checkout(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
    assert {f"channel/contracts/{n}.json" for n in PACKAGED} <= names
    assert {"channel/py.typed", "api/py.typed", "channel/migrations/env.py",
            "channel/migrations/script.py.mako"} <= names
    assert any(n.startswith("channel/migrations/versions/0001_") for n in names)
    # The web app `piecework serve` answers at / (api/web, copied from web/dist by build:web).
    assert {"api/web/index.html", "api/web/dashboard.html", "api/web/settle.html",
            "api/web/assets/style.css"} <= names
    pages = sorted(p.relative_to(REPO_ROOT).as_posix()
                   for p in (REPO_ROOT / "api" / "web").rglob("*") if p.is_file())
    assert {n for n in names if n.startswith("api/web/")} == set(pages)
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"channel", "api", "piecework-0.1.0.dist-info"}, tops
    with zipfile.ZipFile(installed.wheel) as wheel:
        for name in PACKAGED:
            assert json.loads(wheel.read(f"channel/contracts/{name}.json")) == _packaged(name)


_DEPENDENCY_CHECK = textwrap.dedent("""
    import ast, importlib, json, pkgutil, sys
    from importlib import metadata
    from pathlib import Path

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    import api, channel

    # Every module imports (alembic runs the migration scripts, they are not imported).
    for package in (channel, api):
        for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not module.name.startswith("channel.migrations."):
                importlib.import_module(module.name)

    # Every top-level name the package's own code imports (not what its dependencies import
    # opportunistically, like pycryptodome trying cffi).
    imported = set()
    for package in (channel, api):
        for path in Path(package.__path__[0]).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    imported |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    imported.add(node.module.split(".")[0])
    imported -= set(sys.stdlib_module_names) | {"__future__", "channel", "api"}

    declared, todo = {}, [("piecework", frozenset())]
    while todo:
        name, extras = todo.pop()
        key = canonicalize_name(name)
        if key in declared and extras <= declared[key]:
            continue
        declared[key] = declared.get(key, frozenset()) | extras
        for line in metadata.requires(name) or []:
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({"extra": e})
                                         for e in (extras or {""})):
                todo.append((req.name, frozenset(req.extras)))

    providers = metadata.packages_distributions()
    undeclared = {}
    for top in sorted(imported):
        dists = {canonicalize_name(d) for d in providers.get(top, [])}
        if not dists & declared.keys():
            undeclared[top] = sorted(dists)
    print(json.dumps({"channel": channel.__file__, "imported": sorted(imported),
                      "undeclared": undeclared}))
""")


def test_installed_package_needs_only_its_declared_dependencies(
    installed: Installed, tmp_path: Path
) -> None:
    check = _run(sys.executable, "-m", "pip", "--python", installed.python, "check",
                 "--disable-pip-version-check")
    assert check.returncode == 0, check.stdout + check.stderr
    result = _run(installed.python, "-c", _DEPENDENCY_CHECK, cwd=tmp_path, env=_clean_env())
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["channel"].startswith(str(installed.venv)), report  # not the checkout
    assert {"web3", "fastapi", "prometheus_client"} <= set(report["imported"]), report
    assert report["undeclared"] == {}, "imported but not declared in pyproject.toml"


# --- the installed command against anvil -------------------------------------------------------


def _clean_env(**extra: str) -> dict[str, str]:
    """The user's environment: nothing of this checkout, no PIECEWORK_* from the developer."""
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith(("PIECEWORK_", "PYTHON", "VIRTUAL_ENV", "PROMETHEUS_"))}
    return {**keep, **extra}


@dataclass(frozen=True)
class Service:
    url: str
    node: Node
    contract: str
    stablecoin: str
    workdir: Path
    installed: Installed


def _wait_healthy(url: str, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"piecework serve exited: {proc.communicate()[1][-3000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("piecework serve did not become healthy")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def service(installed: Installed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """``piecework deploy --stablecoin`` then ``piecework serve``, both run from an empty dir."""
    workdir = tmp_path_factory.mktemp("user")
    node, anvil = start_anvil()
    try:
        deployed = _run(installed.piecework, "--rpc-url", node.url, "deploy", "--stablecoin",
                        cwd=workdir, env=_clean_env(PIECEWORK_PRIVATE_KEY=ANVIL_KEYS[0]))
        assert deployed.returncode == 0, deployed.stderr
        contract, stablecoin = deployed.stdout.split()
        port = free_port()
        env = _clean_env(PIECEWORK_RPC_URL=node.url, PIECEWORK_CONTRACT_ADDRESS=contract,
                         PIECEWORK_PRIVATE_KEY=ANVIL_KEYS[2], PIECEWORK_OPERATOR_TOKEN=TOKEN,
                         # the payer test opens a 2 h channel; the default minimum is 24 h
                         PIECEWORK_MIN_CHALLENGE_PERIOD="7200")
        server = subprocess.Popen(
            [str(installed.piecework), "serve", "--port", str(port)],
            cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(url, server)
            yield Service(url, node, contract, stablecoin, workdir, installed)
        finally:
            stop_process(server)
    finally:
        stop_process(anvil)


@pytest.mark.integration
def test_installed_cli_deploys_and_serves_from_an_empty_directory(service: Service) -> None:
    from web3 import Web3

    w3 = Web3(Web3.HTTPProvider(service.node.url, request_kwargs={"timeout": 10}))
    for name, address in (("PaymentChannels", service.contract),
                          ("TestStablecoin", service.stablecoin)):
        # Deployed from the packaged bytecode: the runtime code differs from the packaged
        # deployedBytecode only in immutables, and ends in the same compiler metadata hash.
        code = bytes(w3.eth.get_code(Web3.to_checksum_address(address)))
        packaged = bytes.fromhex(str(_packaged(name)["deployedBytecode"])[2:])
        assert len(code) == len(packaged), name
        metadata_length = int.from_bytes(packaged[-2:], "big") + 2
        assert code[-metadata_length:] == packaged[-metadata_length:], name

    with httpx.Client(base_url=service.url, timeout=10) as http:
        info = http.get("/v1/info")
        assert info.status_code == 200
        body = info.json()
        assert body["version"] == "2"
        assert body["chain_id"] == CHAIN_ID
        assert body["contract"] == Web3.to_checksum_address(service.contract)
        assert body["payees"] == [Web3.to_checksum_address(_address(ANVIL_KEYS[2]))]
        assert body["tokens"] == [{"address": "0x" + "0" * 40, "symbol": "ETH", "decimals": 18,
                                   "min_deposit": "0"}]
        assert isinstance(body["min_challenge_period"], int)
        payee = Web3.to_checksum_address(_address(ANVIL_KEYS[2]))
        health = http.get("/healthz").json()
        assert {k: health[k] for k in ("status", "database", "node")} == {
            "status": "ok", "database": "ok", "node": "ok"}
        assert health["mirror_lag_blocks"] >= 0 and health["head_age_seconds"] >= 0
        assert health["wallet"] == {"address": payee, "balance": health["wallet"]["balance"],
                                    "low": False}
        assert int(health["wallet"]["balance"]) > 0
        metrics = http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert metrics.status_code == 200
        assert "piecework_payments_accepted_total" in metrics.text
        # The pages come from the installed package (api/web in site-packages).
        page = http.get("/")
        assert page.status_code == 200, page.text
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        script = re.search(r'src="\./(assets/client-[A-Za-z0-9]+\.js)"', page.text)
        assert script is not None, page.text
        assert http.get(f"/{script.group(1)}").status_code == 200
    # The default SQLite store lives in the user's directory, not in site-packages.
    assert (service.workdir / ".piecework" / "piecework.db").is_file()


@pytest.mark.integration
def test_installed_cli_opens_a_channel_and_pays_the_service(service: Service) -> None:
    payer_env = _clean_env(PIECEWORK_RPC_URL=service.node.url,
                           PIECEWORK_CONTRACT_ADDRESS=service.contract,
                           PIECEWORK_PRIVATE_KEY=ANVIL_KEYS[1],
                           PIECEWORK_DATABASE_URL=f"sqlite:///{service.workdir / 'payer.db'}")
    opened = _run(service.installed.piecework, "open", "--payee", _address(ANVIL_KEYS[2]),
                  "--amount", "1000000000000000", "--challenge-period", "86400",
                  cwd=service.workdir, env=payer_env)
    assert opened.returncode == 0, opened.stderr
    channel_id = opened.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"0x[0-9a-f]{64}", channel_id), opened.stdout

    paid = _run(service.installed.piecework, "pay", "--service", service.url,
                "--channel", channel_id, "--task", "logo-1", "--amount", "3000",
                cwd=service.workdir, env=payer_env)
    assert paid.returncode == 0, paid.stderr
    assert "cumulative_amount=3000" in paid.stdout


def _address(key: str) -> str:
    from eth_account import Account

    return str(Account.from_key(key).address)


@pytest.mark.integration
def test_an_independent_js_client_pays_the_installed_service(service: Service) -> None:
    """tests/js/service_session.js, written from PROTOCOL.md alone, against the wheel's service.

    It opens a channel with its own voucher signer, pays three tasks the freelancer requested,
    verifies each receipt, lists them with an Access signature and closes cooperatively.
    """
    node = REPO_ROOT / "node_modules" / ".bin" / "node"
    if not node.exists():
        pytest.skip("npm ci has not run: node_modules/.bin/node is missing")
    session = _run(str(node), str(REPO_ROOT / "tests" / "js" / "service_session.js"),
                   cwd=service.workdir,
                   env=_clean_env(RPC_URL=service.node.url, SERVICE_URL=service.url,
                                  PAYER_KEY=ANVIL_KEYS[3], OPERATOR_TOKEN=TOKEN))
    assert session.returncode == 0, session.stderr[-3000:]
    seen = json.loads(session.stdout.strip().splitlines()[-1])
    total = 1_000_000_000_000 + 2_500_000_000_000 + 7
    assert seen["receipts_verified"] == seen["receipts_listed"] == seen["paid_tasks"] == 3, seen
    assert int(seen["cumulative"]) == int(seen["consent_amount"]) == total
    assert int(seen["payee_total"]) == total
    assert int(seen["payer_refund"]) == 10**16 - total
