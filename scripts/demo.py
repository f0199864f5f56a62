"""`make demo`: a small gig marketplace on a local anvil chain, end to end, reconciled to the unit.

One freelancer runs the payee service (`piecework serve`, SQLite). Client A pays in ETH through
a voucher signer: its wallet signs the deposit and nothing per task. Client B pays in a
6-decimal permit stablecoin for tasks the freelancer requests: the freelancer asks (id, amount,
description), B pays exactly what is asked. 500 micro-tasks each over real HTTP, every receipt
checked (payee, amount, cumulative amount, task); one receipt is shown proving its task's
amount on its own. Mid-way the freelancer claims both channels in one claimMany; A closes
cooperatively (CloseRequest -> consent with a deadline -> cooperativeClose); B tries to walk
away with a stale startClose, the service's watchtower claims B's latest voucher, time passes,
and a bystander settles. Exits non-zero if any balance fails to reconcile. Every process it
starts is stopped by PID on the way out.
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
from channel.payer import PaidReceipt, Payer, open_payer_store
from channel.signing import Signer, recover
from channel.state import ChannelStatus
from channel.units import eth_units, format_amount, token_units

REPO = Path(__file__).resolve().parent.parent

# anvil's well-known development accounts: never real money.
DEV_KEYS = dict(zip(("deployer", "freelancer", "client A", "client B", "bystander"),
                    ANVIL_KEYS, strict=False))
# One hour to notice a close; the service is told this minimum explicitly (its default is
# the operator's policy, and may be longer).
CHALLENGE_PERIOD = 3_600
ETH_DEPOSIT = 10**16  # 0.01 ETH
USD = 10**6  # TestStablecoin has 6 decimals
USD_DEPOSIT = 10 * USD

# A fixed width keeps the closing tables readable when stdout is not a terminal (CI logs).
console = Console(width=None if sys.stdout.isatty() else 140)


class CountingSigner(Signer):
    """A Signer that counts its signatures: how often the demo asked each key to sign."""

    __slots__ = ("count",)

    def __init__(self, private_key: bytes | str) -> None:
        super().__init__(private_key)
        self.count = 0

    def sign_digest(self, digest: bytes) -> bytes:
        self.count += 1
        return super().sign_digest(digest)


@dataclass
class Ledger:
    """What each side did, to reconcile against the chain at the end."""

    paid: dict[str, int] = field(default_factory=lambda: {"A": 0, "B": 0})
    tasks: dict[str, int] = field(default_factory=lambda: {"A": 0, "B": 0})
    requested: int = 0
    receipts_verified: int = 0
    gas: list[tuple[str, str, int]] = field(default_factory=list)
    pay_seconds: float = 0.0
    wallet_signatures_per_task: int = -1
    wallet_transactions_per_task: int = -1
    signer_signatures: int = 0
    proof: PaidReceipt | None = None


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
    operator_token = secrets.token_urlsafe(24)
    env = {
        **os.environ,
        "PIECEWORK_RPC_URL": rpc_url,
        "PIECEWORK_CONTRACT_ADDRESS": channels_addr,
        "PIECEWORK_DATABASE_URL": f"sqlite:///{workdir / 'freelancer.db'}",
        "PIECEWORK_OPERATOR_TOKEN": operator_token,
        "PIECEWORK_PRIVATE_KEY": DEV_KEYS["freelancer"],  # development key, passed by env only
        "PIECEWORK_MIN_CHALLENGE_PERIOD": str(CHALLENGE_PERIOD),
        "PIECEWORK_ACCEPTED_TOKENS": f"ETH,{coin_addr}:{USD}",  # at least 1 USD in a channel
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

    # Client A's wallet key is counted: it should sign the deposit and nothing per task.
    wallet_a = CountingSigner(DEV_KEYS["client A"])
    payer_a = Payer(chain["client A"], wallet_a,
                    open_payer_store(f"sqlite:///{workdir / 'client-a.db'}"))
    payer_b = Payer.from_url(chain["client B"], keys["client B"],
                             f"sqlite:///{workdir / 'client-b.db'}")
    voucher_signer = CountingSigner.generate()  # the key client A's app holds
    chan_a = payer_a.open_channel(addr["freelancer"], ETH_DEPOSIT,
                                  challenge_period=CHALLENGE_PERIOD, voucher_signer=voucher_signer)
    chan_b = payer_b.open_channel(addr["freelancer"], USD_DEPOSIT, token=coin_addr,
                                  challenge_period=CHALLENGE_PERIOD, permit=True)
    console.print(f"client A opened ETH channel {_short(chan_a)} with {ETH_DEPOSIT} wei and a "
                  f"voucher signer {voucher_signer.address} (a key held by its app); "
                  f"client B opened USD channel {_short(chan_b)} with a permit (one tx)")

    # Sub-cent prices: ETH tasks at 0.1-0.9 cents (ETH at 3,000 USD), USD tasks 0.1-0.9 cents.
    def price(client: str) -> int:
        cents_tenths = rng.randint(1, 9)
        return cents_tenths * (333_333_333_333 if client == "A" else USD // 1_000)

    payers = {"A": (payer_a, chan_a), "B": (payer_b, chan_b)}
    prices = {c: [price(c) for _ in range(tasks)] for c in "AB"}  # drawn up front: reproducible
    half = tasks // 2
    usd = token_units(coin_addr, *chain["deployer"].token_info(coin_addr))
    lock = threading.Lock()
    freelancer_http = httpx.Client(base_url=service_url, timeout=10,
                                   headers={"Authorization": f"Bearer {operator_token}"})

    def check(client: str, receipt: PaidReceipt, task_id: str, amount: int) -> None:
        # The library already checked it; check again, independently, as a user would: this
        # receipt alone proves what the task cost.
        chan = payers[client][1]
        message = Receipt(chan, receipt.cumulative_amount, amount, task_id_hash(task_id))
        signer = recover(payers[client][0].domain, message, receipt.signature)
        if signer != addr["freelancer"] or receipt.amount != amount:
            raise SystemExit(f"receipt for {task_id} signed by {signer} for {receipt.amount}")
        with lock:
            ledger.receipts_verified += 1
            ledger.paid[client] += amount
            ledger.tasks[client] += 1

    def pay_a(start: int, end: int, progress: Progress, bar: Any) -> None:
        for i in range(start, end):
            task_id, amount = f"task-A-{i:04d}", prices["A"][i]
            check("A", payer_a.pay(service_url, chan_a, task_id, amount), task_id, amount)
            progress.advance(bar)

    def pay_b(start: int, end: int, progress: Progress, bar: Any) -> None:
        # The freelancer asks to be paid for each finished task; client B pays what is asked.
        for first in range(start, end, 50):
            for i in range(first, min(first + 50, end)):
                asked = freelancer_http.post(f"/v1/channels/0x{chan_b.hex()}/tasks", json={
                    "task_id": f"task-B-{i:04d}", "amount": str(prices["B"][i]),
                    "description": f"translation, paragraph {i + 1}"})
                if asked.status_code != 201:
                    raise SystemExit(f"task request refused: {asked.text}")
                with lock:
                    ledger.requested += 1
            for receipt in payer_b.pay_requested(service_url, chan_b):
                index = int(receipt.task_id.rsplit("-", 1)[1])
                check("B", receipt, receipt.task_id, prices["B"][index])
                ledger.proof = ledger.proof or receipt
                progress.advance(bar)

    wallet_before = (wallet_a.count, chain["deployer"].w3.eth.get_transaction_count(
        addr["client A"]))
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as progress:
        bars = {c: progress.add_task(f"client {c} paying", total=tasks) for c in "AB"}
        workers = {"A": pay_a, "B": pay_b}
        for start, phase_end in ((0, half), (half, tasks)):
            t0 = time.monotonic()
            # The two clients pay at the same time, each from its own thread and wallet.
            with ThreadPoolExecutor(max_workers=2) as pool:
                futures = [pool.submit(workers[c], start, phase_end, progress, bars[c])
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
    freelancer_http.close()
    ledger.wallet_signatures_per_task = wallet_a.count - wallet_before[0]
    ledger.wallet_transactions_per_task = chain["deployer"].w3.eth.get_transaction_count(
        addr["client A"]) - wallet_before[1]
    ledger.signer_signatures = voucher_signer.count
    console.print(
        f"client A: {ledger.tasks['A']} tasks paid with {voucher_signer.count} vouchers from its "
        f"voucher signer; its wallet signed {ledger.wallet_signatures_per_task} messages and "
        f"{ledger.wallet_transactions_per_task} transactions for them")
    if ledger.proof is not None:
        show_proof(ledger.proof, payer_b.domain, addr["freelancer"], usd)

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


def show_proof(receipt: PaidReceipt, domain: Any, freelancer: str, units: Any) -> None:
    """Print one receipt and why it proves, on its own, what its task cost."""
    message = receipt.message
    signer = recover(domain, message, receipt.signature)
    body = {"channel_id": "0x" + receipt.channel_id.hex(), "task_id": "0x" + message.task_id.hex(),
            "amount": str(receipt.amount), "cumulative_amount": str(receipt.cumulative_amount),
            "signature": "0x" + receipt.signature.hex()}
    console.print("one receipt, on its own, proves one task's price:")
    console.print_json(data=body)
    ok = "[green]✓[/]" if signer == freelancer else "[red]✗[/]"
    console.print(f"  {ok} Receipt(channelId, cumulativeAmount, amount, taskId) recovers to "
                  f"{signer} (the freelancer); taskId = keccak256(\"{receipt.task_id}\"); "
                  f"the task cost {format_amount(receipt.amount, units)}")


def report(ledger: Ledger, *, addr: dict[str, str], before: dict[tuple[str, str], int],
           after: dict[tuple[str, str], int], fees: dict[str, int], client: ChainClient,
           chan_a: bytes, chan_b: bytes, channels_addr: str, coin_addr: str) -> bool:
    usd = token_units(coin_addr, *client.token_info(coin_addr))
    summary = Table(title="Tasks and payments")
    for col in ("client", "tasks", "receipts verified", "paid", "channel"):
        summary.add_column(col, justify="right")
    summary.add_row("A (ETH, voucher signer)", str(ledger.tasks["A"]), str(ledger.tasks["A"]),
                    f"{ledger.paid['A']:,} wei ({format_amount(ledger.paid['A'], eth_units())})",
                    _short(chan_a))
    summary.add_row("B (USD, requested tasks)", str(ledger.tasks["B"]), str(ledger.tasks["B"]),
                    f"{ledger.paid['B']:,} units "
                    f"({format_amount(ledger.paid['B'], usd)})",
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
        "client B paid exactly the tasks requested": ledger.tasks["B"] == ledger.requested,
        "client A's wallet signed nothing per task": ledger.wallet_signatures_per_task == 0
            and ledger.wallet_transactions_per_task == 0
            and ledger.signer_signatures >= ledger.tasks["A"],
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
