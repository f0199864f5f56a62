"""`make demo`: a small gig marketplace on a local anvil chain, end to end, reconciled to the unit.

One freelancer runs the payee service (`piecework serve`, SQLite). Client A pays in ETH, client
B in a 6-decimal permit stablecoin; each pays for 500 micro-tasks over real HTTP, every receipt
checked against the freelancer's address. Mid-way the freelancer claims both channels in one
claimMany; A closes cooperatively; B tries to walk away with a stale startClose, the service's
watchtower claims B's latest voucher, time passes, and a bystander settles. Exits non-zero if
any balance fails to reconcile. Every process it starts is stopped by PID on the way out.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from eth_utils import function_abi_to_4byte_selector
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from channel.chain import ZERO_ADDRESS, ChainClient, Claim, load_artifact
from channel.devnet import ANVIL_KEYS, Supervisor, free_port
from channel.keys import SigningKey
from channel.messages import Receipt, task_id_hash
from channel.payer import Payer
from channel.signing import recover
from channel.state import ChannelStatus

REPO = Path(__file__).resolve().parent.parent

# anvil's well-known development accounts: never real money.
DEV_KEYS = dict(zip(("deployer", "freelancer", "client A", "client B", "bystander"),
                    ANVIL_KEYS, strict=False))
CHALLENGE_PERIOD = 3_600  # the service's default minimum: one hour to notice a close
ETH_DEPOSIT = 10**16  # 0.01 ETH
USD = 10**6  # TestStablecoin has 6 decimals
USD_DEPOSIT = 10 * USD

# A fixed width keeps the closing tables readable when stdout is not a terminal (CI logs).
console = Console(width=None if sys.stdout.isatty() else 140)


@dataclass
class Ledger:
    """What each side did, to reconcile against the chain at the end."""

    paid: dict[str, int] = field(default_factory=lambda: {"A": 0, "B": 0})
    tasks: dict[str, int] = field(default_factory=lambda: {"A": 0, "B": 0})
    receipts_verified: int = 0
    gas: list[tuple[str, str, int]] = field(default_factory=list)
    pay_seconds: float = 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=500, help="micro-tasks per client")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="piecework-demo-"))
    started = time.monotonic()
    with Supervisor(workdir / "logs") as sup:
        try:
            ok = run(sup, workdir, args.tasks, rng)
        except KeyboardInterrupt:
            console.print("[red]interrupted; stopping everything[/red]")
            return 130
    console.print(f"demo finished in {time.monotonic() - started:.1f}s; "
                  f"logs and databases in {workdir}")
    return 0 if ok else 1


def run(sup: Supervisor, workdir: Path, tasks: int, rng: random.Random) -> bool:
    keys = {name: SigningKey.from_hex(k) for name, k in DEV_KEYS.items()}
    addr = {name: key.address for name, key in keys.items()}
    ledger = Ledger()

    console.rule("[bold]Piecework demo: a gig marketplace on payment channels")
    rpc_url, _ = sup.start_anvil()
    console.print(f"anvil on {rpc_url}")

    artifact = load_artifact("PaymentChannels", REPO)
    deployer = _client(rpc_url, ZERO_ADDRESS, keys["deployer"], artifact, deploy=True)
    channels_addr = deployer.deploy().contract_address
    coin_addr = deployer.deploy_artifact("TestStablecoin").contract_address
    if channels_addr is None or coin_addr is None:
        raise SystemExit("deployment returned no contract address")
    chain = {name: _client(rpc_url, channels_addr, key, artifact) for name, key in keys.items()}
    _mint(chain["deployer"], coin_addr, addr["client B"], 100 * USD)
    console.print(f"PaymentChannels at {channels_addr}, TestStablecoin (6 decimals) at {coin_addr}")

    service_port = free_port()
    service_url = f"http://127.0.0.1:{service_port}"
    env = {
        **os.environ,
        "PIECEWORK_RPC_URL": rpc_url,
        "PIECEWORK_CONTRACT_ADDRESS": channels_addr,
        "PIECEWORK_DATABASE_URL": f"sqlite:///{workdir / 'freelancer.db'}",
        "PIECEWORK_OPERATOR_TOKEN": secrets.token_urlsafe(24),
        "PIECEWORK_PRIVATE_KEY": DEV_KEYS["freelancer"],  # development key, passed by env only
    }
    piecework = str(Path(sys.executable).with_name("piecework"))
    service = sup.start("service", [piecework, "serve", "--host", "127.0.0.1",
                                    "--port", str(service_port)], env=env)
    sup.wait_http(service, f"{service_url}/healthz")
    console.print(f"freelancer's service on {service_url} (SQLite, watchtower on)")

    tokens = {"ETH": ZERO_ADDRESS, "USD": coin_addr}
    parties = ("freelancer", "client A", "client B", "bystander")
    before = {(p, t): chain["deployer"].balance(addr[p], tok)
              for p in parties for t, tok in tokens.items()}
    first_block = chain["deployer"].block_number() + 1

    payer_a = Payer.from_url(chain["client A"], keys["client A"],
                             f"sqlite:///{workdir / 'client-a.db'}")
    payer_b = Payer.from_url(chain["client B"], keys["client B"],
                             f"sqlite:///{workdir / 'client-b.db'}")
    chan_a = payer_a.open_channel(addr["freelancer"], ETH_DEPOSIT,
                                  challenge_period=CHALLENGE_PERIOD)
    chan_b = payer_b.open_channel(addr["freelancer"], USD_DEPOSIT, token=coin_addr,
                                  challenge_period=CHALLENGE_PERIOD, permit=True)
    console.print(f"client A opened ETH channel {_short(chan_a)} with {ETH_DEPOSIT} wei; "
                  f"client B opened USD channel {_short(chan_b)} with a permit (one tx)")

    # Sub-cent prices: ETH tasks at 0.1-0.9 cents (ETH at 3,000 USD), USD tasks 0.1-0.9 cents.
    def price(client: str) -> int:
        cents_tenths = rng.randint(1, 9)
        return cents_tenths * (333_333_333_333 if client == "A" else USD // 1_000)

    payers = {"A": (payer_a, chan_a), "B": (payer_b, chan_b)}
    prices = {c: [price(c) for _ in range(tasks)] for c in "AB"}  # drawn up front: reproducible
    half = tasks // 2

    def pay_range(client: str, start: int, end: int, progress: Progress, bar: Any) -> None:
        payer, chan = payers[client]
        for i in range(start, end):
            amount = prices[client][i]
            task_id = f"task-{client}-{i:04d}"
            receipt = payer.pay(service_url, chan, task_id, amount)
            # The library already checked it; check again, independently, as a user would.
            signer = recover(payer.domain,
                             Receipt(chan, receipt.cumulative_amount, task_id_hash(task_id)),
                             receipt.signature)
            if signer != addr["freelancer"]:
                raise SystemExit(f"receipt for {task_id} signed by {signer}")
            with lock:
                ledger.receipts_verified += 1
                ledger.paid[client] += amount
                ledger.tasks[client] += 1
            progress.advance(bar)

    lock = threading.Lock()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as progress:
        bars = {c: progress.add_task(f"client {c} paying", total=tasks) for c in "AB"}
        for start, phase_end in ((0, half), (half, tasks)):
            t0 = time.monotonic()
            # The two clients pay at the same time, each from its own thread and wallet.
            with ThreadPoolExecutor(max_workers=2) as pool:
                futures = [pool.submit(pay_range, c, start, phase_end, progress, bars[c])
                           for c in "AB"]
                for future in futures:
                    future.result()
            ledger.pay_seconds += time.monotonic() - t0
            if phase_end == half:
                claims = [_latest_claim(service_url, c) for c in (chan_a, chan_b)]
                tx = chain["freelancer"].claim_many(claims)
                progress.console.print(
                    f"mid-way: freelancer claimed both channels in one claimMany "
                    f"({tx.gas_used:,} gas)")

    tx = payer_a.cooperative_close(service_url, chan_a)
    console.print(f"client A closed cooperatively with the service's consent ({tx.gas_used:,} gas)")

    tx = chain["client B"].start_close(chan_b)
    stale = chain["deployer"].get_channel(chan_b).claimed
    console.print(f"client B cheats: startClose with {stale} claimed while the freelancer holds "
                  f"vouchers for {ledger.paid['B']}")
    deadline = time.monotonic() + 60
    with console.status("waiting for the watchtower to claim B's latest voucher"):
        while chain["deployer"].get_channel(chan_b).claimed < ledger.paid["B"]:
            if time.monotonic() > deadline:
                raise SystemExit("the watchtower did not claim within 60s")
            time.sleep(0.2)
    console.print(f"watchtower claimed {ledger.paid['B']} before closesAt")
    _rpc(rpc_url, "evm_increaseTime", [CHALLENGE_PERIOD + 1])
    _rpc(rpc_url, "evm_mine", [])
    tx = chain["bystander"].settle(chan_b)
    console.print(f"one hour later a bystander settled B's channel ({tx.gas_used:,} gas)")

    last_block = chain["deployer"].block_number()
    ledger.gas = _gas_by_function(chain["deployer"], first_block, last_block, addr)
    after = {(p, t): chain["deployer"].balance(addr[p], tok)
             for p in parties for t, tok in tokens.items()}
    fees = _fees_paid(chain["deployer"], first_block, last_block, addr)
    return report(ledger, addr=addr, before=before, after=after, fees=fees,
                  client=chain["deployer"], chan_a=chan_a, chan_b=chan_b,
                  channels_addr=channels_addr, coin_addr=coin_addr)


def report(ledger: Ledger, *, addr: dict[str, str], before: dict[tuple[str, str], int],
           after: dict[tuple[str, str], int], fees: dict[str, int], client: ChainClient,
           chan_a: bytes, chan_b: bytes, channels_addr: str, coin_addr: str) -> bool:
    summary = Table(title="Tasks and payments")
    for col in ("client", "tasks", "receipts verified", "paid", "channel"):
        summary.add_column(col, justify="right")
    summary.add_row("A (ETH)", str(ledger.tasks["A"]), str(ledger.tasks["A"]),
                    f"{ledger.paid['A']:,} wei", _short(chan_a))
    summary.add_row("B (USD)", str(ledger.tasks["B"]), str(ledger.tasks["B"]),
                    f"{ledger.paid['B']:,} units ({ledger.paid['B'] / USD:.4f} USD)",
                    _short(chan_b))
    console.print(summary)

    balances = Table(title="On-chain balances (exact: ETH to the wei, USD to the unit)")
    for col in ("party", "ETH before", "ETH after", "gas fees", "USD before", "USD after"):
        balances.add_column(col, justify="right")
    for party in ("freelancer", "client A", "client B", "bystander"):
        balances.add_row(party, _units(before[party, "ETH"], 18), _units(after[party, "ETH"], 18),
                         _units(fees.get(party, 0), 18), _units(before[party, "USD"], 6),
                         _units(after[party, "USD"], 6))
    console.print(balances)

    gas = Table(title="Gas per on-chain operation (from receipts)")
    for col in ("function", "sent by", "gas used"):
        gas.add_column(col, justify="right" if col == "gas used" else "left")
    for fn, sender, used in ledger.gas:
        gas.add_row(fn, sender, f"{used:,}")
    console.print(gas)
    total = sum(ledger.tasks.values())
    console.print(f"{total} paid requests in {ledger.pay_seconds:.2f}s over HTTP: "
                  f"{total / ledger.pay_seconds:,.0f} payments/s (two clients paying at once, "
                  f"each waiting for its receipt before its next task)")

    def delta(party: str, token: str) -> int:
        return after[party, token] - before[party, token]

    checks = {
        "freelancer ETH + its gas == A's payments":
            delta("freelancer", "ETH") + fees.get("freelancer", 0) == ledger.paid["A"],
        "client A ETH + its gas == -A's payments":
            delta("client A", "ETH") + fees.get("client A", 0) == -ledger.paid["A"],
        "freelancer USD == B's payments": delta("freelancer", "USD") == ledger.paid["B"],
        "client B USD == -B's payments": delta("client B", "USD") == -ledger.paid["B"],
        "bystander ETH + its gas == 0": delta("bystander", "ETH") + fees.get("bystander", 0) == 0,
        "both channels closed": all(client.get_channel(c).status is ChannelStatus.CLOSED
                                    for c in (chan_a, chan_b)),
        "contract holds nothing": client.balance(channels_addr) == 0
            and client.balance(channels_addr, coin_addr) == 0,
        "every receipt verified": ledger.receipts_verified == sum(ledger.tasks.values()),
    }
    for name, ok in checks.items():
        console.print(f"  {'[green]✓' if ok else '[red]✗'} {name}[/]")
    ok = all(checks.values())
    console.print(f"[bold]{'reconciled to the unit' if ok else 'RECONCILIATION FAILED'}[/bold]: "
                  f"A paid {ledger.paid['A']:,} wei, B paid {ledger.paid['B']:,} USD units; "
                  f"the freelancer received exactly that")
    return ok


def _client(rpc_url: str, address: str, key: SigningKey, artifact: Any,
            deploy: bool = False) -> ChainClient:
    if deploy:
        # Any checksummed address will do until deployment gives the real one.
        address = "0x" + "00" * 19 + "01"
    return ChainClient.from_url(rpc_url, address, account=key.account, artifact=artifact)


def _mint(client: ChainClient, token: str, to: str, amount: int) -> None:
    w3 = client.w3
    account = client.account
    if account is None:
        raise SystemExit("minting needs a signing account")
    coin = w3.eth.contract(address=w3.to_checksum_address(token),
                           abi=load_artifact("TestStablecoin", REPO).abi)
    tx = coin.functions.mint(to, amount).build_transaction(
        {"from": account.address, "nonce": w3.eth.get_transaction_count(account.address)})
    tx_hash = w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
    if w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)["status"] != 1:
        raise SystemExit("minting the test stablecoin failed")


def _latest_claim(service_url: str, channel_id: bytes) -> Claim:
    body = httpx.get(f"{service_url}/v1/channels/0x{channel_id.hex()}", timeout=10).json()
    latest = body["latest"]
    return Claim(channel_id, int(latest["cumulative_amount"]),
                 bytes.fromhex(latest["signature"][2:]))


def _rpc(url: str, method: str, params: list[Any]) -> Any:
    reply = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method,
                                  "params": params}, timeout=10).json()
    if "error" in reply:
        raise SystemExit(f"{method}: {reply['error']}")
    return reply["result"]


def _transactions(client: ChainClient, first: int, last: int) -> list[tuple[Any, Any]]:
    out = []
    for number in range(first, last + 1):
        block = client.w3.eth.get_block(number, full_transactions=True)
        for tx in block["transactions"]:
            out.append((tx, client.w3.eth.get_transaction_receipt(tx["hash"])))
    return out


def _fees_paid(client: ChainClient, first: int, last: int, addr: dict[str, str]) -> dict[str, int]:
    who = {a: name for name, a in addr.items()}
    fees: dict[str, int] = {}
    for tx, receipt in _transactions(client, first, last):
        name = who.get(tx["from"])
        if name is not None:
            fees[name] = fees.get(name, 0) + receipt["gasUsed"] * receipt["effectiveGasPrice"]
    return fees


def _gas_by_function(client: ChainClient, first: int, last: int,
                     addr: dict[str, str]) -> list[tuple[str, str, int]]:
    """(function, sender role, gasUsed) of every PaymentChannels transaction in the demo."""
    names = {function_abi_to_4byte_selector(item): item["name"]
             for item in client.artifact.abi if item.get("type") == "function"}
    who = {a: name for name, a in addr.items()}
    return [(names.get(bytes(tx["input"][:4]), "?"), who.get(tx["from"], tx["from"]),
             int(receipt["gasUsed"]))
            for tx, receipt in _transactions(client, first, last) if tx["to"] == client.address]


def _units(amount: int, decimals: int) -> str:
    """An exact decimal rendering of an integer amount (no float anywhere)."""
    whole, frac = divmod(amount, 10**decimals)
    return f"{whole:,}.{frac:0{decimals}d}"


def _short(channel_id: bytes) -> str:
    return "0x" + channel_id.hex()[:8] + "…"


if __name__ == "__main__":
    raise SystemExit(main())
