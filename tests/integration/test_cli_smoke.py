"""``piecework`` through click's CliRunner against anvil: every command once, and its errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result
from payee_twin import SERVICE_URL, PayeeTwin, payee_store, voucher_sig
from piecework_testnode import (
    Accounts,
    Deployment,
    Node,
    advance_time,
    free_port,
    stop_process,
)
from web3 import Web3

from channel.chain import ChainClient
from channel.cli import cli
from channel.messages import Domain, Voucher
from channel.payer import open_payer_store
from channel.signing import recover

pytestmark = pytest.mark.integration


def run(node: Node, deployment: Deployment, key: str, *args: str,
        env: dict[str, str] | None = None) -> Result:
    base = {"PIECEWORK_RPC_URL": node.url, "PIECEWORK_CONTRACT_ADDRESS": deployment.channels,
            "PIECEWORK_PRIVATE_KEY": key, "PIECEWORK_KEYSTORE": "", "PIECEWORK_DATABASE_URL": ""}
    base.update(env or {})
    return CliRunner().invoke(cli, list(args), env=base, catch_exceptions=False)


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def test_deploy_prints_addresses(
    anvil_node: Node, deployment: Deployment, accounts: Accounts, chain_snapshot: None, w3: Web3
) -> None:
    out = ok(run(anvil_node, deployment, accounts.deployer.key.hex(), "deploy", "--stablecoin"))
    channels, coin = out.splitlines()
    assert w3.eth.get_code(Web3.to_checksum_address(channels))
    assert w3.eth.get_code(Web3.to_checksum_address(coin))


def test_open_top_up_status_close_settle(
    anvil_node: Node, deployment: Deployment, accounts: Accounts, chain_snapshot: None, w3: Web3
) -> None:
    payer_key = accounts.payer.key.hex()
    channel = ok(run(anvil_node, deployment, payer_key, "open", "--payee",
                     accounts.payee.address, "--amount", "1000000", "--challenge-period", "600"))
    assert channel.startswith("0x") and len(channel) == 66
    assert ok(run(anvil_node, deployment, payer_key, "top-up", "--channel", channel,
                  "--amount", "500")) == "deposit 1000500"
    status = ok(run(anvil_node, deployment, payer_key, "status", "--channel", channel))
    assert "open" in status and "1000500" in status

    sig = voucher_sig(accounts.payer, deployment.channels, bytes.fromhex(channel[2:]), 400)
    claimed = ok(run(anvil_node, deployment, accounts.payee.key.hex(), "claim", "--channel",
                     channel, "--amount", "400", "--signature", "0x" + sig.hex()))
    assert claimed.startswith("claimed 400")

    assert "closing" in ok(run(anvil_node, deployment, payer_key, "close", "--channel", channel))
    early = run(anvil_node, deployment, payer_key, "settle", "--channel", channel)
    assert early.exit_code == 1
    assert early.stderr.startswith("error: challenge period") and "Traceback" not in early.output
    assert len(early.stderr.strip().splitlines()) == 1
    advance_time(w3, 600)
    assert ok(run(anvil_node, deployment, accounts.third.key.hex(), "settle", "--channel",
                  channel)) == "settled; payer refund 1000100"
    final = dict(line.split(None, 1) for line in ok(run(
        anvil_node, deployment, payer_key, "status", "--channel", channel)).splitlines())
    assert (final["status"], final["payee"], final["deposit"], final["claimed"],
            final["payer_refund"]) == ("closed", accounts.payee.address, "1000500", "400",
                                       "1000100")


def test_erc20_open_with_permit(
    anvil_node: Node, deployment: Deployment, accounts: Accounts, chain_snapshot: None,
    make_client: Callable[..., ChainClient],
) -> None:
    channel = ok(run(anvil_node, deployment, accounts.payer.key.hex(), "open", "--payee",
                     accounts.payee.address, "--amount", "5000000", "--token",
                     deployment.stablecoin, "--permit"))
    ch = make_client().get_channel(bytes.fromhex(channel[2:]))
    assert (ch.token, ch.deposit) == (deployment.stablecoin, 5_000_000)


def test_pay_through_the_service(  # noqa: PLR0917 - fixtures
    anvil_node: Node, deployment: Deployment, accounts: Accounts, payee_twin: PayeeTwin,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_client = httpx.Client
    monkeypatch.setattr("channel.payer.httpx.Client", lambda **_: real_client(
        transport=httpx.MockTransport(payee_twin.handler)))
    env = {"PIECEWORK_DATABASE_URL": f"sqlite:///{tmp_path / 'payer.db'}"}
    key = accounts.payer.key.hex()
    channel = ok(run(anvil_node, deployment, key, "open", "--payee", accounts.payee.address,
                     "--amount", "1gwei", "--challenge-period", "3600", env=env))
    out = ok(run(anvil_node, deployment, key, "pay", "--service", SERVICE_URL, "--channel",
                 channel, "--task", "t-1", "--amount", "250", env=env))
    assert out.startswith("receipt amount=250 (0.00000000000000025 ETH) cumulative_amount=250 ")
    out = ok(run(anvil_node, deployment, key, "pay", "--service", SERVICE_URL, "--channel",
                 channel, "--task", "t-2", "--amount", "0.5gwei", env=env))
    assert "amount=500000000 (0.0000000005 ETH) cumulative_amount=500000250" in out
    closed = ok(run(anvil_node, deployment, key, "close", "--channel", channel, "--service",
                    SERVICE_URL, env=env))
    assert closed.startswith("closed cooperatively")


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["status", "--channel", "0x" + "00" * 32], {"PIECEWORK_CONTRACT_ADDRESS": ""},
         "error: no contract address"),
        (["status", "--channel", "0x" + "00" * 32], {"PIECEWORK_RPC_URL": "http://127.0.0.1:9"},
         "error: node at http://127.0.0.1:9 unavailable"),
        (["top-up", "--channel", "0x" + "00" * 32, "--amount", "5"], {},
         "error: cannot top up channel"),
        (["top-up", "--channel", "0x" + "00" * 32, "--amount", "5"],
         {"PIECEWORK_PRIVATE_KEY": ""}, "error: no signing key"),
    ],
)
def test_errors_are_one_line(  # noqa: PLR0917 - fixtures
    anvil_node: Node, deployment: Deployment, accounts: Accounts, args: list[str],
    env: dict[str, str], message: str,
) -> None:
    result = run(anvil_node, deployment, accounts.payer.key.hex(), *args, env=env)
    assert result.exit_code == 1
    assert result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert accounts.payer.key.hex()[2:] not in result.output


@pytest.mark.parametrize(
    ("amount", "message"),
    [("1e18", "unit 'e18'"), ("1.5", "no unit"), ("-1", "is not an amount"),
     ("0x10", "unit 'x10'"), (" 7", "is not an amount"), ("1.5usd", "unit 'usd'"),
     ("0.0000000001gwei", "has only 9"), ("0eth", "positive")],
)
def test_amounts_are_exact_or_refused(
    anvil_node: Node, deployment: Deployment, accounts: Accounts, amount: str, message: str
) -> None:
    result = run(anvil_node, deployment, accounts.payer.key.hex(), "top-up", "--channel",
                 "0x" + "00" * 32, "--amount", amount)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_human_amounts_in_eth_and_in_the_tokens_own_units(
    anvil_node: Node, deployment: Deployment, accounts: Accounts, chain_snapshot: None,
    make_client: Callable[..., ChainClient],
) -> None:
    key = accounts.payer.key.hex()
    eth = ok(run(anvil_node, deployment, key, "open", "--payee", accounts.payee.address,
                 "--amount", "0.003eth"))
    assert make_client().get_channel(bytes.fromhex(eth[2:])).deposit == 3 * 10**15
    assert ok(run(anvil_node, deployment, key, "top-up", "--channel", eth, "--amount",
                  "1.5 gwei")) == f"deposit {3 * 10**15 + 1_500_000_000}"
    coin = ok(run(anvil_node, deployment, key, "open", "--payee", accounts.payee.address,
                  "--amount", "2.5TUSD", "--token", deployment.stablecoin))
    assert make_client().get_channel(bytes.fromhex(coin[2:])).deposit == 2_500_000
    for bad, message in (("1eth", "unit 'eth'"), ("0.0000001tusd", "has only 6")):
        refused = run(anvil_node, deployment, key, "top-up", "--channel", coin, "--amount", bad)
        assert refused.exit_code == 1 and message in refused.stderr, refused.stderr


def test_keys_new_and_address(tmp_path: Path, anvil_node: Node, deployment: Deployment) -> None:
    path = tmp_path / "key.json"
    env = {"PIECEWORK_KEYSTORE_PASSWORD": "correct horse"}
    created = ok(run(anvil_node, deployment, "", "keys", "new", str(path), env=env))
    assert json.loads(path.read_text())["address"].lower() == created[2:].lower()
    assert path.stat().st_mode & 0o077 == 0
    shown = ok(run(anvil_node, deployment, "", "--keystore", str(path), "keys", "address",
                   env=env))
    assert shown == created
    wrong = run(anvil_node, deployment, "", "--keystore", str(path), "keys", "address",
                env={"PIECEWORK_KEYSTORE_PASSWORD": "nope"})
    assert wrong.exit_code == 1 and wrong.stderr.startswith("error: wrong password")


PIECEWORK_BIN = Path(sys.executable).with_name("piecework")


def test_node_starts_anvil_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([str(PIECEWORK_BIN), "node", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url == f"http://127.0.0.1:{port}"
        assert Web3(Web3.HTTPProvider(url)).eth.chain_id == 31337
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        stop_process(proc)
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass  # anvil went down with it


def test_watch_follows_the_chain_until_sigterm(
    anvil_node: Node, deployment: Deployment, accounts: Accounts, tmp_path: Path,
) -> None:
    db = tmp_path / "payee.db"
    env = {**os.environ, "PIECEWORK_RPC_URL": anvil_node.url,
           "PIECEWORK_CONTRACT_ADDRESS": deployment.channels,
           "PIECEWORK_PRIVATE_KEY": accounts.payee.key.hex(),
           "PIECEWORK_DATABASE_URL": f"sqlite:///{db}"}
    proc = subprocess.Popen([str(PIECEWORK_BIN), "watch", "--interval", "0.1"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        store = payee_store(f"sqlite:///{db}")
        deadline = time.monotonic() + 20
        while store.cursor("watcher") is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert store.cursor("watcher") is not None, "watch never saved a cursor"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        stop_process(proc)


def test_serve_runs_the_api_and_pay_and_close_go_through_it(
    *, anvil_node: Node, deployment: Deployment, accounts: Accounts, chain_snapshot: None,
    tmp_path: Path,
) -> None:
    port = free_port()
    env = {**os.environ, "PIECEWORK_RPC_URL": anvil_node.url,
           "PIECEWORK_CONTRACT_ADDRESS": deployment.channels,
           "PIECEWORK_PRIVATE_KEY": accounts.payee.key.hex(),
           "PIECEWORK_DATABASE_URL": f"sqlite:///{tmp_path / 'payee.db'}",
           "PIECEWORK_OPERATOR_TOKEN": "test-operator-token",
           "PIECEWORK_MIN_CHALLENGE_PERIOD": "60"}
    proc = subprocess.Popen([str(PIECEWORK_BIN), "serve", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    service = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                info = httpx.get(service + "/v1/info", timeout=1).json()
                break
            except httpx.HTTPError:
                assert proc.poll() is None, "piecework serve exited"
                assert time.monotonic() < deadline, "piecework serve never answered"
                time.sleep(0.1)
        assert accounts.payee.address in info["payees"]
        payer_env = {"PIECEWORK_DATABASE_URL": f"sqlite:///{tmp_path / 'payer.db'}",
                     "PIECEWORK_KEYSTORE_PASSWORD": "voucher signer pw"}
        key = accounts.payer.key.hex()
        opened = ok(run(anvil_node, deployment, key, "open", "--payee", accounts.payee.address,
                        "--amount", "100000", "--challenge-period", "3600",
                        "--voucher-signer", "new", env=payer_env)).splitlines()
        channel, signer_line = opened
        signer = signer_line.removeprefix("voucher_signer ")
        keystore = tmp_path / "voucher-signers" / f"voucher-signer-{signer}.json"
        assert keystore.is_file() and keystore.stat().st_mode & 0o077 == 0
        cid = bytes.fromhex(channel[2:])
        assert ChainClient.from_url(anvil_node.url, deployment.channels).get_channel(
            cid).voucher_signer == signer

        # The freelancer asks (operator API), the client sees it and pays what is asked.
        freelancer = {"PIECEWORK_OPERATOR_TOKEN": "test-operator-token"}
        for task, amount, text in (("logo", "700wei", "Logo, second round"),
                                   ("icon", "300", "")):
            asked = ok(run(anvil_node, deployment, "", "tasks", "request", "--service", service,
                           "--channel", channel, "--task", task, "--amount", amount,
                           "--description", text, env=freelancer))
            assert asked.startswith(f"requested {task} ")
        listed = ok(run(anvil_node, deployment, key, "tasks", "list", "--service", service,
                        "--channel", channel, env=payer_env)).splitlines()
        assert [line.split()[:3] for line in listed] == [
            ["requested", "logo", "700"], ["requested", "icon", "300"]]
        nonce = Web3(Web3.HTTPProvider(anvil_node.url)).eth.get_transaction_count(
            accounts.payer.address)
        paid = ok(run(anvil_node, deployment, key, "tasks", "pay", "--service", service,
                      "--channel", channel, env=payer_env)).splitlines()
        assert [line.split()[:3] for line in paid] == [["paid", "logo", "700"],
                                                      ["paid", "icon", "300"]]
        out = ok(run(anvil_node, deployment, key, "pay", "--service", service, "--channel",
                     channel, "--task", "metered", "--amount", "250", env=payer_env))
        assert "cumulative_amount=1250" in out
        after = ok(run(anvil_node, deployment, "", "tasks", "list", "--service", service,
                       "--channel", channel, "--status", "paid", env=freelancer))
        assert [line.split()[:2] for line in after.splitlines()] == [["paid", "logo"],
                                                                    ["paid", "icon"]]
        # Every voucher came from the voucher signer: no wallet signature, no transaction.
        store = open_payer_store(payer_env["PIECEWORK_DATABASE_URL"])
        latest = store.latest_voucher(cid)
        assert latest is not None and latest[0] == 1250
        domain = Domain(info["chain_id"], info["contract"])
        assert recover(domain, Voucher(cid, 1250), latest[1]) == signer
        assert Web3(Web3.HTTPProvider(anvil_node.url)).eth.get_transaction_count(
            accounts.payer.address) == nonce
        closed = ok(run(anvil_node, deployment, key, "close", "--channel", channel,
                        "--service", service, env=payer_env))
        assert closed.startswith("closed cooperatively")
    finally:
        stop_process(proc)


def test_close_falls_back_to_start_close_when_the_service_is_down(
    *, anvil_node: Node, deployment: Deployment, accounts: Accounts, payee_twin: PayeeTwin,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_client = httpx.Client
    monkeypatch.setattr("channel.payer.httpx.Client", lambda **_: real_client(
        transport=httpx.MockTransport(payee_twin.handler)))
    payee_twin.offline = True
    env = {"PIECEWORK_DATABASE_URL": f"sqlite:///{tmp_path / 'payer.db'}"}
    key = accounts.payer.key.hex()
    channel = ok(run(anvil_node, deployment, key, "open", "--payee", accounts.payee.address,
                     "--amount", "1000", env=env))
    result = run(anvil_node, deployment, key, "close", "--channel", channel, "--service",
                 SERVICE_URL, env=env)
    assert result.stdout.startswith("closing; settle possible from")
    assert "cooperative close failed" in result.stderr
