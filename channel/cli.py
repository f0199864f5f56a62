"""The ``piecework`` command: local node, deploy, channel operations, payments, watcher, server.

Every failure Piecework anticipates is a :class:`~channel.errors.PieceworkError`; the command
prints it as one line ``error: <message>`` on stderr and exits 1 (no traceback). Amounts that
move money (``open``, ``top-up``, ``pay``, ``tasks request``) are plain integers in base units
or decimals with a unit, ``0.003eth``, ``1.5gwei``, ``2.5tusd`` (the token's symbol, read from
its contract), converted exactly (``channel.units``); ``1e18`` or a bare ``1.5`` are refused
rather than guessed. Configuration comes from flags or ``PIECEWORK_*`` variables.
"""

# Imports inside commands are deliberate: web3 and friends take ~0.5 s to import, and
# `piecework --help` or `piecework node` should not pay for that.
# ruff: noqa: PLC0415

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console

from channel.errors import (
    ConfigError,
    InvalidInput,
    NodeUnavailable,
    PieceworkError,
    TransactionTimeout,
)

__all__ = ["cli", "main"]

_REPO_ROOT = Path(__file__).resolve().parent.parent
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"

err_console = Console(stderr=True)


# --- one-line errors -----------------------------------------------------------------------------


class _CliError(click.ClickException):
    """A PieceworkError on its way out: ``error: <message>``, exit code 1."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.message}", err=True)


class _Group(click.Group):
    """Turns PieceworkError anywhere below into a one-line message (also under CliRunner)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PieceworkError as exc:
            raise _CliError(str(exc)) from None


class _Amount(click.ParamType[int, Any]):
    """A uint256 in base units, written as a canonical decimal string."""

    name = "amount"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        from channel.messages import parse_amount

        try:
            amount = parse_amount(str(value))
        except InvalidInput:
            self.fail(
                f"{value!r} is not an integer amount in base units (wei / token units); "
                "write e.g. 1000000000000000000 for 1 ETH",
                param, ctx,
            )
        return amount


class _Hex32(click.ParamType[bytes, Any]):
    name = "bytes32"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> bytes:
        if isinstance(value, bytes):
            return value
        from channel.messages import parse_bytes32

        try:
            return parse_bytes32(str(value))
        except InvalidInput as exc:
            self.fail(str(exc), param, ctx)


AMOUNT = _Amount()
BYTES32 = _Hex32()
MONEY_HELP = "Base units (1500000) or a decimal with a unit: 0.003eth, 1.5gwei, 2.5tusd."


# --- shared configuration ------------------------------------------------------------------------


@dataclass
class Config:
    rpc_url: str
    contract: str | None
    database_url: str | None
    keystore: str | None
    confirmations: int
    rpc_timeout: float
    artifact: str | None
    _key: Any = None

    def key(self) -> Any:
        """The signing key, decrypted once per command (one password prompt, not one per use)."""
        from channel.keys import load_key

        if self._key is None:
            self._key = load_key(
                self.keystore,
                prompt=lambda text: click.prompt(text, hide_input=True, err=True),
            )
        return self._key

    def client(self, *, sign: bool = True, progress: Callable[[str], None] | None = None) -> Any:
        from channel.chain import DEFAULT_ARTIFACT, ChainClient

        if not self.contract:
            raise ConfigError(
                "no contract address: pass --contract or set PIECEWORK_CONTRACT_ADDRESS"
            )
        account = self.key().account if sign else None
        return ChainClient.from_url(
            self.rpc_url, self.contract, account=account,
            artifact=self.artifact or DEFAULT_ARTIFACT, rpc_timeout=self.rpc_timeout,
            confirmations=self.confirmations, progress=progress,
        )

    def database(self) -> str:
        """The configured database, else the default SQLite file of ``channel.config``."""
        from channel.config import DEFAULT_DATABASE_URL

        return self.database_url or DEFAULT_DATABASE_URL


def _password(what: str, *, confirm: bool = False) -> str:
    """PIECEWORK_KEYSTORE_PASSWORD, else a prompt (never echoed)."""
    from channel.keys import KEYSTORE_PASSWORD_ENV

    given = os.environ.get(KEYSTORE_PASSWORD_ENV)
    if given:
        return given
    answer: str = click.prompt(f"Password for {what}", hide_input=True,
                               confirmation_prompt=confirm, err=True)
    return answer


def _units(client: Any, token: str) -> Any:
    """How amounts of ``token`` are written (ETH, or the ERC-20's symbol and decimals)."""
    from channel.units import eth_units, token_units

    if token == ZERO_ADDRESS:
        return eth_units()
    symbol, decimals = client.token_info(token)
    return token_units(token, symbol, decimals)


def _money(text: str, units: Any) -> int:
    from channel.units import parse_amount_text

    amount = parse_amount_text(text, units)
    if amount <= 0:
        raise InvalidInput(f"amount must be positive, got {text!r}")
    return amount


def _shown(amount: int, units: Any) -> str:
    from channel.units import format_amount

    return f"{amount} ({format_amount(amount, units)})"


pass_config = click.make_pass_decorator(Config)


@contextmanager
def _progress(what: str) -> Iterator[Callable[[str], None]]:
    """A rich spinner while waiting for the node; the callback updates its text."""
    with err_console.status(what) as status:
        yield lambda message: status.update(f"{what}: {message}")


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--rpc-url", envvar="PIECEWORK_RPC_URL", default="http://127.0.0.1:8545",
              show_default=True, help="JSON-RPC endpoint of the node.")
@click.option("--contract", envvar="PIECEWORK_CONTRACT_ADDRESS", help="PaymentChannels address.")
@click.option("--database-url", envvar="PIECEWORK_DATABASE_URL",
              help="SQLAlchemy URL of the local store (payer vouchers, payee state).")
@click.option("--keystore", envvar="PIECEWORK_KEYSTORE", type=click.Path(dir_okay=False),
              help="Encrypted JSON keystore; else PIECEWORK_PRIVATE_KEY (development).")
@click.option("--confirmations", type=click.IntRange(min=1), default=1, show_default=True,
              envvar="PIECEWORK_CONFIRMATIONS", help="Blocks a transaction must be deep.")
@click.option("--rpc-timeout", type=float, default=10.0, show_default=True,
              help="Seconds per RPC request.")
@click.option("--artifact", envvar="PIECEWORK_ARTIFACT",
              help="Path of a Hardhat artifact (default: the packaged PaymentChannels).")
@click.pass_context
def cli(  # noqa: PLR0917 - click passes options by keyword
    ctx: click.Context,
    rpc_url: str,
    contract: str | None,
    database_url: str | None,
    keystore: str | None,
    confirmations: int,
    rpc_timeout: float,
    artifact: str | None,
) -> None:
    """Piecework: payment channels for freelance micro-tasks."""
    ctx.obj = Config(rpc_url, contract, database_url, keystore, confirmations, rpc_timeout,
                     artifact)


# --- local node ----------------------------------------------------------------------------------


@cli.command()
@click.option("--port", type=click.IntRange(1, 65535), default=8545, show_default=True)
@click.option("--chain-id", type=int, default=31337, show_default=True)
@click.option("--block-time", type=int, default=None, help="Seconds per block (default: automine).")
def node(port: int, chain_id: int, block_time: int | None) -> None:
    """Run a local anvil node on 127.0.0.1 until Ctrl-C."""
    from channel.devnet import Supervisor

    # Ctrl-C must work even when started in the background of a script (SIGINT ignored
    # there), and SIGTERM must not orphan anvil: the Supervisor stops it by PID on both.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    extra = ["--block-time", str(block_time)] if block_time else []
    with Supervisor(Path(".piecework") / "logs") as sup:
        try:
            try:
                url, _ = sup.start_anvil(port, chain_id, extra)
            except ConfigError as exc:
                raise ConfigError(f"{exc} (port {port} in use?)") from None
            anvil = sup.processes[-1]
            click.echo(url)
            err_console.print(f"anvil (pid {anvil.pid}) listening on {url}; Ctrl-C stops it")
            code = anvil.popen.wait()
        except KeyboardInterrupt:  # Ctrl-C at any moment: the Supervisor stops anvil
            return
        if code not in (0, -signal.SIGTERM):
            raise ConfigError(f"anvil exited with code {code}")


# --- deploy --------------------------------------------------------------------------------------


@cli.command()
@click.option("--stablecoin", is_flag=True, help="Also deploy TestStablecoin (6 decimals).")
@pass_config
def deploy(cfg: Config, stablecoin: bool) -> None:
    """Deploy PaymentChannels (and optionally TestStablecoin); prints the address(es)."""
    from channel.chain import DEFAULT_ARTIFACT, ChainClient, connect, load_artifact

    account = cfg.key().account
    art = load_artifact(cfg.artifact or DEFAULT_ARTIFACT)
    with _progress("deploying PaymentChannels") as progress:
        boot = ChainClient(connect(cfg.rpc_url, timeout=cfg.rpc_timeout), ZERO_ADDRESS, art,
                           account, confirmations=cfg.confirmations, progress=progress)
        result = boot.deploy()
        click.echo(result.contract_address)
        if stablecoin:
            coin = boot.deploy_artifact("TestStablecoin")
            click.echo(coin.contract_address)


# --- channel operations --------------------------------------------------------------------------


@cli.command("open")
@click.option("--payee", required=True, help="Payee address.")
@click.option("--amount", required=True, help="Deposit. " + MONEY_HELP)
@click.option("--token", default=ZERO_ADDRESS, help="ERC-20 address; omit for ETH.")
@click.option("--challenge-period", type=click.IntRange(min=1), default=86_400,
              show_default=True, help="Seconds between startClose and settle.")
@click.option("--permit", is_flag=True, help="ERC-20 only: one transaction with EIP-2612.")
@click.option("--salt", type=BYTES32, default=None, help="32-byte hex salt (default random).")
@click.option("--voucher-signer", "voucher_signer", default=None, metavar="new|ADDRESS",
              help="A second key that signs vouchers: `new` creates one in an encrypted "
              "keystore next to the payer's store (this client then pays every task without "
              "the wallet), or the address of a key held elsewhere.")
@pass_config
def open_cmd(  # noqa: PLR0917 - click passes options by keyword
    cfg: Config, payee: str, amount: str, token: str, challenge_period: int, permit: bool,
    salt: bytes | None, voucher_signer: str | None,
) -> None:
    """Open and fund a channel; prints its id (and its voucher signer's address)."""
    from channel.messages import parse_address
    from channel.payer import new_voucher_signer

    salt = salt or secrets.token_bytes(32)
    signer: Any = None
    keystore: str | None = None
    if voucher_signer == "new":
        signer, keystore = new_voucher_signer(
            cfg.database(), _password("the new voucher signer's keystore", confirm=True))
    elif voucher_signer is not None:
        signer = parse_address(voucher_signer)
    with _progress("opening channel") as progress:
        client = cfg.client(progress=progress)
        deposit = _money(amount, _units(client, parse_address(token)))
        payer = _payer(cfg, client)
        channel_id = payer.open_channel(
            payee, deposit, token=token, challenge_period=challenge_period, permit=permit,
            salt=salt, voucher_signer=signer, voucher_signer_keystore=keystore,
        )
    click.echo(_hex(channel_id))
    if signer is not None:
        address = signer if isinstance(signer, str) else signer.address
        click.echo(f"voucher_signer {address}")
        if keystore:
            err_console.print(f"voucher signer key in {keystore} (back it up with the store)")


@cli.command("top-up")
@click.option("--channel", "channel_id", type=BYTES32, required=True)
@click.option("--amount", required=True, help=MONEY_HELP)
@pass_config
def top_up(cfg: Config, channel_id: bytes, amount: str) -> None:
    """Add funds to an open channel."""
    with _progress("topping up") as progress:
        client = cfg.client(progress=progress)
        units = _units(client, client.get_channel(channel_id).token)
        client.top_up(channel_id, _money(amount, units))
        ch = client.get_channel(channel_id)
    click.echo(f"deposit {ch.deposit}")


@cli.command()
@click.option("--service", required=True, help="Base URL of the payee service.")
@click.option("--channel", "channel_id", type=BYTES32, required=True)
@click.option("--task", "task_id", required=True, help="Task id (1..256 characters).")
@click.option("--amount", required=True, help=MONEY_HELP)
@pass_config
def pay(cfg: Config, service: str, channel_id: bytes, task_id: str, amount: str) -> None:
    """Pay for one task with a signed voucher (the channel's voucher signer when this client
    holds it, else the payer key); prints the verified receipt."""
    client = cfg.client()
    payer = _payer(cfg, client, channel_id)
    units = _units(client, client.get_channel(channel_id).token)
    receipt = payer.pay(service, channel_id, task_id, _money(amount, units))
    click.echo(f"receipt amount={_shown(receipt.amount, units)} "
               f"cumulative_amount={receipt.cumulative_amount} "
               f"signature={_hex(receipt.signature)}")


@cli.command()
@click.option("--channel", "channel_id", type=BYTES32, required=True)
@click.option("--amount", "cumulative", type=AMOUNT, default=None,
              help="Cumulative amount of the voucher (default: latest accepted in the store).")
@click.option("--signature", default=None, help="The payer's voucher signature (0x hex).")
@pass_config
def claim(cfg: Config, channel_id: bytes, cumulative: int | None, signature: str | None) -> None:
    """Payee: withdraw what the latest voucher pays; the channel stays open."""
    from channel.messages import parse_signature

    if (cumulative is None) != (signature is None):
        raise ConfigError("give both --amount and --signature, or neither (use the store)")
    if cumulative is None or signature is None:
        from channel.watcher import latest_voucher

        cumulative, sig = latest_voucher(cfg.database(), channel_id)
    else:
        sig = parse_signature(signature)
    with _progress("claiming") as progress:
        result = cfg.client(progress=progress).claim(channel_id, cumulative, sig)
    paid = sum(getattr(ev, "paid", 0) for ev in result.events)
    click.echo(f"claimed {paid} (tx {_hex(result.tx_hash)})")


@cli.command()
@click.option("--channel", "channel_id", type=BYTES32, required=True)
@click.option("--service", default=None, help="Payee service for a cooperative close.")
@pass_config
def close(cfg: Config, channel_id: bytes, service: str | None) -> None:
    """Payer: close cooperatively through the service if it answers, else startClose."""
    with _progress("closing") as progress:
        client = cfg.client(progress=progress)
        if service:
            payer = _payer(cfg, client, channel_id)
            try:
                result = payer.cooperative_close(service, channel_id)
                click.echo(f"closed cooperatively (tx {_hex(result.tx_hash)})")
                return
            except (NodeUnavailable, TransactionTimeout):
                raise  # the unilateral close needs the node just as much
            except PieceworkError as exc:
                err_console.print(f"cooperative close failed ({exc}); starting a unilateral close")
        client.start_close(channel_id)
        ch = client.get_channel(channel_id)
    click.echo(f"closing; settle possible from {ch.closes_at} (unix time)")


@cli.command()
@click.option("--channel", "channel_id", type=BYTES32, required=True)
@pass_config
def settle(cfg: Config, channel_id: bytes) -> None:
    """Anyone: after the challenge period, refund the rest of the deposit to the payer."""
    with _progress("settling") as progress:
        result = cfg.client(progress=progress).settle(channel_id)
    closed = [ev for ev in result.events if type(ev).__name__ == "ChannelClosed"]
    refund = getattr(closed[0], "payer_refund", 0) if closed else 0
    click.echo(f"settled; payer refund {refund}")


@cli.command()
@click.option("--channel", "channel_id", type=BYTES32, required=True)
@pass_config
def status(cfg: Config, channel_id: bytes) -> None:
    """Show a channel as the contract sees it (a closed one: its final split from the events)."""
    from channel.chain import ChannelClosed, ChannelOpened
    from channel.state import ChannelStatus

    client = cfg.client(sign=False)
    ch = client.get_channel(channel_id)
    rows: list[tuple[str, object]] = [
        ("channel", _hex(ch.channel_id)), ("status", ch.status.name.lower()),
        ("payer", ch.payer), ("payee", ch.payee), ("token", ch.token),
        ("deposit", ch.deposit), ("claimed", ch.claimed),
        ("challenge_period", ch.challenge_period), ("closes_at", ch.closes_at),
    ]
    if ch.status is ChannelStatus.CLOSED:
        # The contract zeroes payee/token/amounts of a closed channel; the events keep them.
        history = client.channel_history(channel_id)
        opened = next((e for e in history if isinstance(e, ChannelOpened)), None)
        closed = next((e for e in history if isinstance(e, ChannelClosed)), None)
        if opened is not None:
            rows[3:6] = [("payee", opened.payee), ("token", opened.token),
                         ("deposit", sum(getattr(e, "amount", 0) for e in history
                                         if type(e).__name__ == "ChannelToppedUp")
                          + opened.deposit)]
        if closed is not None:
            rows[6] = ("claimed", closed.payee_total)
            rows.append(("payer_refund", closed.payer_refund))
    for name, value in rows:
        click.echo(f"{name:<17}{value}")


# --- services ------------------------------------------------------------------------------------


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--access-log/--no-access-log", default=False, show_default=True,
              help="Log one line per request (costs ~15% of throughput; /metrics counts them).")
@pass_config
def serve(cfg: Config, host: str, port: int, workers: int, access_log: bool) -> None:
    """Run the payee HTTP service (api.main:create_app) under uvicorn.

    With several workers, GET /metrics sums every worker's counters: they share a private
    temporary directory (PROMETHEUS_MULTIPROC_DIR, set here, removed at exit).
    """
    import tempfile

    import uvicorn

    # The app factory reads its Settings from the environment, also in worker processes.
    for var, value in (("PIECEWORK_RPC_URL", cfg.rpc_url),
                       ("PIECEWORK_CONTRACT_ADDRESS", cfg.contract),
                       ("PIECEWORK_DATABASE_URL", cfg.database_url),
                       ("PIECEWORK_KEYSTORE", cfg.keystore)):
        if value:
            os.environ[var] = value
    # The directory belongs to this run: files left by an earlier one (or another service)
    # would be summed in. One worker keeps its counters in memory.
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with contextlib.ExitStack() as stack:
        if workers > 1:
            shared = stack.enter_context(tempfile.TemporaryDirectory(prefix="piecework-metrics-"))
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = shared  # before the workers import it
        uvicorn.run("api.main:create_app", factory=True, host=host, port=port, workers=workers,
                    access_log=access_log)


@cli.command()
@click.option("--interval", type=float, default=2.0, show_default=True,
              help="Seconds between polls.")
@click.option("--payee", "payees", multiple=True,
              help="Act for this payee (repeatable; default: the key's address).")
@click.option("--claim-threshold", type=AMOUNT, default="0", show_default=True,
              envvar="PIECEWORK_CLAIM_MIN_UNCLAIMED",
              help="Claim a channel once this much is unclaimed (0: age rule only).")
@click.option("--claim-max-age", type=click.IntRange(min=0), default=86_400, show_default=True,
              envvar="PIECEWORK_CLAIM_MAX_AGE_SECONDS",
              help="Claim vouchers older than this many seconds (0: never by age).")
@pass_config
def watch(
    cfg: Config, interval: float, payees: tuple[str, ...], claim_threshold: int,
    claim_max_age: int,
) -> None:
    """Run the watchtower: follow events, claim before deadlines, batch routine claims."""
    from pydantic import ValidationError

    from api.leader import lock_for_database
    from channel.config import Settings
    from channel.defence import DefencePolicy
    from channel.messages import MAX_UINT256
    from channel.watcher import ClaimPolicy, build_watcher

    database = cfg.database()
    policy = ClaimPolicy(default_threshold=claim_threshold or MAX_UINT256 + 1,
                         max_age=float(claim_max_age or "inf"))
    try:  # the watchtower's spending limits: the same PIECEWORK_* settings as the service's
        settings = Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "PIECEWORK_" + str(first["loc"][0]).upper() if first["loc"] else "a setting"
        raise ConfigError(f"{name}: {first['msg']}") from None
    # The same leadership lock as the api's watcher: never two watchers acting at once.
    watcher = build_watcher(
        cfg.client(), database, confirmations=cfg.confirmations, payees=payees or None,
        policy=policy, lock=lock_for_database(database),
        defence=DefencePolicy(fee_multiple=settings.claim_fee_multiple,
                              max_gas=settings.max_gas_per_tx,
                              wallet_min_balance=settings.wallet_min_balance,
                              withdraw_interval=settings.withdraw_interval_seconds),
        max_fee_per_gas=settings.max_fee_gwei * 10**9, bump_after=settings.fee_bump_seconds)
    watcher.report = err_console.print
    stop = threading.Event()

    def _stop(*_: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    err_console.print(f"watching {cfg.contract} on {cfg.rpc_url} every {interval}s; Ctrl-C stops")
    try:
        watcher.run(stop, interval=interval)
    except KeyboardInterrupt:
        stop.set()
    finally:
        watcher.lock.release()


# --- task requests -------------------------------------------------------------------------------


@cli.group(cls=_Group)
def tasks() -> None:
    """Task requests: the freelancer asks to be paid for a task, the client pays what is asked."""


_operator_option = click.option(
    "--operator-token", envvar="PIECEWORK_OPERATOR_TOKEN", default=None,
    help="The service's operator bearer token (PIECEWORK_OPERATOR_TOKEN).")


@tasks.command("request")
@click.option("--service", required=True, help="Base URL of the payee service.")
@click.option("--channel", "channel_id", type=BYTES32, required=True)
@click.option("--task", "task_id", required=True, help="Task id (1..256 characters).")
@click.option("--amount", required=True, help=MONEY_HELP)
@click.option("--description", default="", help="Plain text for the client, <= 2,000 chars.")
@_operator_option
@pass_config
def tasks_request(  # noqa: PLR0917 - click passes options by keyword
    cfg: Config, service: str, channel_id: bytes, task_id: str, amount: str, description: str,
    operator_token: str | None,
) -> None:
    """Freelancer: ask the channel's client to pay AMOUNT for TASK (operator API)."""
    if not operator_token:
        raise ConfigError("tasks request needs the operator token: set PIECEWORK_OPERATOR_TOKEN")
    client = cfg.client(sign=False)
    units = _units(client, client.get_channel(channel_id).token)
    body = _service_call(
        "POST", service, f"/v1/channels/{_hex(channel_id)}/tasks",
        headers={"Authorization": f"Bearer {operator_token}"},
        json={"task_id": task_id, "amount": str(_money(amount, units)),
              "description": description},
    )
    task = body["task"]
    click.echo(f"{task['status']} {task['task_id']} {_shown(int(task['amount']), units)}")


@tasks.command("list")
@click.option("--service", required=True, help="Base URL of the payee service.")
@click.option("--channel", "channel_id", type=BYTES32, required=True)
@click.option("--status", type=click.Choice(["requested", "paid"]), default=None)
@_operator_option
@pass_config
def tasks_list(
    cfg: Config, service: str, channel_id: bytes, status: str | None, operator_token: str | None,
) -> None:
    """The channel's task requests, oldest first: as the client (an Access signature by its
    payer or voucher signer) or, with the operator token, as the freelancer."""
    client = cfg.client(sign=False)
    units = _units(client, client.get_channel(channel_id).token)
    if operator_token:
        body = _service_call(
            "GET", service, f"/v1/channels/{_hex(channel_id)}/tasks",
            headers={"Authorization": f"Bearer {operator_token}"},
            params={"status": status} if status else None,
        )
        rows = [(t["status"], t["task_id"], int(t["amount"]), t["description"])
                for t in body["tasks"]]
    else:
        payer = _payer(cfg, cfg.client(), channel_id)
        rows = [(t.status, t.task_id, t.amount, t.description)
                for t in payer.tasks(service, channel_id, status)]
    for state, task_id, value, description in rows:
        click.echo(f"{state:<9} {task_id}  {_shown(value, units)}  {description!r}")


@tasks.command("pay")
@click.option("--service", required=True, help="Base URL of the payee service.")
@click.option("--channel", "channel_id", type=BYTES32, required=True)
@pass_config
def tasks_pay(cfg: Config, service: str, channel_id: bytes) -> None:
    """Client: pay every requested task, each for exactly the amount asked."""
    client = cfg.client()
    payer = _payer(cfg, client, channel_id)
    units = _units(client, client.get_channel(channel_id).token)
    for receipt in payer.pay_requested(service, channel_id):
        click.echo(f"paid {receipt.task_id} {_shown(receipt.amount, units)} "
                   f"cumulative_amount={receipt.cumulative_amount}")


def _service_call(method: str, base: str, path: str, **kwargs: Any) -> Any:
    """One request to the payee service; its problem+json comes back as a PieceworkError."""
    import httpx

    from channel.payer import ServiceUnavailable, problem_error

    try:
        response = httpx.request(method, base.rstrip("/") + path, timeout=10, **kwargs)
    except httpx.HTTPError as exc:
        raise ServiceUnavailable(f"payee service {base} unreachable: {type(exc).__name__}") \
            from None
    if response.is_success:
        return response.json()
    try:
        problem = response.json()
    except ValueError:
        problem = None
    raise problem_error(response.status_code, problem, method, path)


# --- keys ----------------------------------------------------------------------------------------


@cli.group(cls=_Group)
def keys() -> None:
    """Manage signing keys."""


@keys.command("new")
@click.argument("path", type=click.Path(dir_okay=False))
@click.password_option(envvar="PIECEWORK_KEYSTORE_PASSWORD", confirmation_prompt=True)
def keys_new(path: str, password: str) -> None:
    """Create a key and write it as an encrypted keystore; prints the address."""
    from channel.keys import new_keystore

    click.echo(new_keystore(path, password))


@keys.command("address")
@pass_config
def keys_address(cfg: Config) -> None:
    """Print the address of the configured key."""
    click.echo(cfg.key().address)


# --- helpers -------------------------------------------------------------------------------------


def _payer(cfg: Config, client: Any, channel_id: bytes | None = None) -> Any:
    """The payer library on the configured database (it records every voucher it signs),
    with the channel's voucher signer loaded when this client holds it."""
    from channel.payer import Payer

    payer = Payer.from_url(client, cfg.key(), cfg.database())
    if channel_id is not None:
        payer.load_voucher_signer(channel_id, lambda: _password("the voucher signer's keystore"))
    return payer


def main(argv: list[str] | None = None) -> NoReturn:
    """Console-script entry point."""
    try:
        cli.main(args=argv, prog_name="piecework", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except PieceworkError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(0)
