"""web3.py client for the PaymentChannels contract: artifacts, transaction proxies, reads, events.

Every transaction goes through one pipeline, the way Raiden's proxies do it:

    check preconditions (read state)  ->  estimate gas (a revert here is decoded by its 4-byte
    selector into the contract's custom error, raised as ContractRevert(name, args))  ->  sign
    locally  ->  send raw  ->  poll for the receipt with a timeout  ->  wait for the configured
    confirmation depth.

Nonces for back-to-back transactions from one account come from a local :class:`NonceManager`
(seeded from the pending transaction count, resynced on "nonce too low"). Every RPC call has a
timeout; connection failures become :class:`~channel.errors.NodeUnavailable`. Amounts are int.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias, cast

import requests
from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_typing import URI, ChecksumAddress
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import (
    BlockNotFound,
    ContractLogicError,
    ProviderConnectionError,
    TransactionNotFound,
    Web3RPCError,
)
from web3.providers.rpc import HTTPProvider
from web3.providers.rpc.utils import ExceptionRetryConfiguration
from web3.types import RPCEndpoint

from channel.errors import (
    ChainError,
    ConfigError,
    ContractRevert,
    InvalidAddress,
    InvalidBytes32,
    NodeUnavailable,
    TransactionTimeout,
)
from channel.state import ChannelStatus, OnchainChannel

__all__ = [
    "DEFAULT_ARTIFACT",
    "ZERO_ADDRESS",
    "Artifact",
    "ChainClient",
    "ChannelClosed",
    "ChannelEvent",
    "ChannelOpened",
    "ChannelStatus",
    "ChannelToppedUp",
    "Claim",
    "Claimed",
    "CloseStarted",
    "ErrorDecoder",
    "FailoverHTTPProvider",
    "LogMeta",
    "NonceManager",
    "NonceUsed",
    "OnchainChannel",
    "OtherEvent",
    "PaymentDeferred",
    "PreconditionFailed",
    "TxResult",
    "Withdrawn",
    "channel_id_for",
    "connect",
    "find_artifact",
    "is_too_large",
    "load_artifact",
    "split_urls",
]

log = logging.getLogger(__name__)

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
DEFAULT_ARTIFACT = "PaymentChannels"
# ABI and bytecode shipped inside the package (written by scripts/package_data.js, checked
# against artifacts/ by tests/test_packaging.py), so an installed `piecework` needs no build.
PACKAGED_CONTRACTS = Path(__file__).resolve().parent / "contracts"
_ERROR_STRING_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)
_PANIC_SELECTOR = bytes.fromhex("4e487b71")  # Panic(uint256)

ProgressCallback: TypeAlias = Callable[[str], None]
_hooks = threading.local()  # per-thread sent hooks, see ChainClient.sent_hook


class PreconditionFailed(ChainError):  # noqa: N818 - named like the rest of channel.errors
    """A transaction would certainly revert given the state just read; nothing was sent."""

    code = "precondition_failed"


class NonceUsed(ChainError):  # noqa: N818 - named like the rest of channel.errors
    """The node refused a transaction because its nonce was already used by a mined one."""

    code = "nonce_used"


# --- artifacts ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Artifact:
    """ABI and creation bytecode of one compiled contract (a Hardhat artifact)."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: bytes
    path: Path


def find_artifact(name: str, root: str | Path | None = None) -> Path:
    """The artifact of contract ``name``: Hardhat's ``artifacts/**/<name>.json`` under ``root``,
    or without ``root`` the copy packaged with Piecework (``channel/contracts/<name>.json``).

    The default does not depend on the working directory: an installed ``piecework`` uses the
    code it was built and tested with, wherever it runs.
    """
    if root is None:
        packaged = PACKAGED_CONTRACTS / f"{name}.json"
        if packaged.is_file():
            return packaged
        shipped = sorted(p.stem for p in PACKAGED_CONTRACTS.glob("*.json"))
        raise ConfigError(
            f"no contract named {name!r} is packaged (packaged: {', '.join(shipped) or 'none'}); "
            "give the path of a Hardhat artifact instead"
        )
    base = Path(root)
    artifacts = base / "artifacts" if (base / "artifacts").is_dir() else base
    if artifacts.is_dir():
        direct = artifacts / "contracts" / f"{name}.sol" / f"{name}.json"
        if direct.is_file():
            return direct
        # Test mocks may live in subfolders (contracts/test/...); build-info is not an artifact.
        for candidate in sorted(artifacts.rglob(f"{name}.json")):
            if "build-info" not in candidate.parts and candidate.parent.name.endswith(".sol"):
                return candidate
    raise ConfigError(f"artifact for {name} not found under {base}: run `npm run build` first")


def load_artifact(path_or_name: str | Path, root: str | Path | None = None) -> Artifact:
    """Load an artifact from a ``.json`` path (relative to ``root``, else to the working
    directory), or by contract name via :func:`find_artifact`."""
    candidate = Path(path_or_name)
    if candidate.suffix == ".json":
        path = candidate if candidate.is_absolute() or root is None else Path(root) / candidate
    else:
        path = find_artifact(str(path_or_name), root)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"artifact {path} does not exist") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"artifact {path} is unreadable: {exc}") from None
    try:
        abi = data["abi"]
        code = str(data.get("bytecode", "0x"))
        name = str(data.get("contractName", path.stem))
        return Artifact(name, abi, bytes.fromhex(code[2:]), path)
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"artifact {path} lacks abi/bytecode: {exc}") from None


# --- values ------------------------------------------------------------------------------------


# ChannelStatus and OnchainChannel are the state machine's (channel.state): one shape.


@dataclass(frozen=True)
class Claim:
    """One entry of ``claimMany``: the payer's voucher for ``cumulative_amount``."""

    channel_id: bytes
    cumulative_amount: int
    payer_signature: bytes


@dataclass(frozen=True)
class LogMeta:
    """Where an event was emitted; the watcher needs the block hash to notice reorgs."""

    block_number: int
    block_hash: bytes
    tx_hash: bytes
    log_index: int


@dataclass(frozen=True)
class ChannelOpened:
    channel_id: bytes
    payer: str
    payee: str
    token: str
    deposit: int
    challenge_period: int
    voucher_signer: str
    meta: LogMeta


@dataclass(frozen=True)
class ChannelToppedUp:
    channel_id: bytes
    amount: int
    deposit: int
    meta: LogMeta


@dataclass(frozen=True)
class Claimed:
    channel_id: bytes
    cumulative_amount: int
    paid: int
    meta: LogMeta


@dataclass(frozen=True)
class CloseStarted:
    channel_id: bytes
    closes_at: int
    meta: LogMeta


@dataclass(frozen=True)
class ChannelClosed:
    channel_id: bytes
    payee_total: int
    payer_refund: int
    meta: LogMeta


@dataclass(frozen=True)
class PaymentDeferred:
    """A payout to ``account`` failed and was credited to ``owed(account, token)`` instead."""

    account: str
    token: str
    amount: int
    meta: LogMeta


@dataclass(frozen=True)
class Withdrawn:
    account: str
    token: str
    to: str
    amount: int
    meta: LogMeta


@dataclass(frozen=True)
class OtherEvent:
    """Any other event of the contract (e.g. a pull-payment withdrawal), decoded by its ABI."""

    name: str
    args: tuple[tuple[str, Any], ...]
    meta: LogMeta

    @property
    def channel_id(self) -> bytes | None:
        value = dict(self.args).get("channelId")
        return bytes(value) if isinstance(value, bytes | bytearray) else None


ChannelEvent: TypeAlias = (
    ChannelOpened | ChannelToppedUp | Claimed | CloseStarted | ChannelClosed
    | PaymentDeferred | Withdrawn | OtherEvent
)


@dataclass(frozen=True)
class TxResult:
    """A mined, successful transaction."""

    tx_hash: bytes
    block_number: int
    block_hash: bytes
    gas_used: int
    events: tuple[ChannelEvent, ...] = ()
    contract_address: str | None = None


def channel_id_for(payer: str, payee: str, token: str, salt: bytes) -> bytes:
    """``keccak256(abi.encode(payer, payee, token, salt))`` — known before the open is mined."""
    return keccak(
        abi_encode(
            ["address", "address", "address", "bytes32"],
            [_address(payer), _address(payee), _address(token), _bytes32(salt, "salt")],
        )
    )


# Channel ids per eth_getLogs topic filter (an OR list); providers accept a few hundred.
_IDS_PER_QUERY = 200

# What providers answer when an eth_getLogs query is too big (Infura/Alchemy/QuickNode result
# caps, block-range caps, response-size limits, geth's and erigon's timeouts).
_TOO_LARGE = (
    "more than", "too many", "limit exceeded", "exceeds", "too large", "block range",
    "range is too", "response size", "query timeout", "log response size",
)


# ... and what they answer when it is the caller's quota instead (same -32005 on Infura).
_NOT_SIZE = ("rate limit", "rate-limit", "too many requests", "request rate", "daily request",
             "credits", "capacity")


def is_too_large(exc: BaseException) -> bool:
    """Did the node refuse an ``eth_getLogs`` because of its size (so a smaller one may pass)?"""
    response = getattr(exc, "rpc_response", None)
    error = response.get("error") if isinstance(response, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    text = (str(error.get("message", "")) if isinstance(error, dict) else str(exc)).lower()
    if any(part in text for part in _NOT_SIZE):
        return False
    return code == -32005 or any(part in text for part in _TOO_LARGE)


def _address_topic(address: str) -> str:
    return "0x" + "00" * 12 + _address(address)[2:].lower()


def _address(value: str) -> ChecksumAddress:
    try:
        return to_checksum_address(value)
    except (ValueError, TypeError):
        raise InvalidAddress(f"not an address: {value!r}", value=value) from None


def _bytes32(value: bytes, what: str) -> bytes:
    if len(value) != 32:
        raise InvalidBytes32(f"{what} must be 32 bytes, got {len(value)}", value=value.hex())
    return bytes(value)


# --- revert decoding ---------------------------------------------------------------------------


class ErrorDecoder:
    """Maps revert data to ``ContractRevert(name, args)`` using the custom errors in ABIs."""

    def __init__(self, *abis: Sequence[dict[str, Any]]) -> None:
        self._errors: dict[bytes, tuple[str, list[str]]] = {}
        for abi in abis:
            self.add_abi(abi)

    def add_abi(self, abi: Sequence[dict[str, Any]]) -> None:
        for item in abi:
            if item.get("type") != "error":
                continue
            types = [_abi_type(inp) for inp in item.get("inputs", [])]
            signature = f"{item['name']}({','.join(types)})"
            self._errors[keccak(text=signature)[:4]] = (str(item["name"]), types)

    def decode(self, data: bytes) -> ContractRevert:
        """Decode revert data; unknown selectors keep their hex so nothing is lost."""
        if len(data) < 4:
            return ContractRevert("Reverted", (), "transaction reverted without a reason")
        selector, payload = data[:4], data[4:]
        if selector == _ERROR_STRING_SELECTOR:
            (reason,) = abi_decode(["string"], payload)
            return ContractRevert("Error", (reason,), f"contract reverted: {reason}")
        if selector == _PANIC_SELECTOR:
            (panic_code,) = abi_decode(["uint256"], payload)
            return ContractRevert("Panic", (panic_code,), f"contract panicked with {panic_code:#x}")
        known = self._errors.get(selector)
        if known is None:
            return ContractRevert("UnknownError", (data.hex(),), f"unknown revert 0x{data.hex()}")
        name, types = known
        try:
            values = tuple(
                to_checksum_address(v) if t == "address" else _plain(v)
                for t, v in zip(types, abi_decode(types, payload), strict=True)
            )
        except Exception:  # malformed payload: still report the name
            values = ()
        return ContractRevert(name, values)


def _abi_type(param: dict[str, Any]) -> str:
    kind = str(param["type"])
    if kind.startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in param.get("components", []))
        return f"({inner}){kind[5:]}"
    return kind


def _plain(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, list | tuple):
        return tuple(_plain(v) for v in value)
    return value


def _revert_data(exc: BaseException) -> bytes | None:
    """Extract revert bytes from whatever shape web3 / the node used."""
    data: Any = getattr(exc, "data", None)
    if data is None and isinstance(exc, Web3RPCError):
        message = exc.rpc_response.get("error") if exc.rpc_response else None
        data = message.get("data") if isinstance(message, dict) else None
    if isinstance(data, dict):
        data = data.get("data")
    if isinstance(data, bytes | bytearray):
        return bytes(data)
    if isinstance(data, str) and data.startswith("0x"):
        try:
            return bytes.fromhex(data[2:])
        except ValueError:
            return None
    return None


# --- nonces ------------------------------------------------------------------------------------


class NonceManager:
    """Hands out consecutive nonces for one account: the one nonce owner of a process.

    Seeded lazily from the pending count so transactions already in the pool are respected;
    ``resync`` forgets the local value after the node rejected one (e.g. "nonce too low"
    because another process used the account).

    ``shared`` (a context-manager factory, e.g. a PostgreSQL advisory lock) makes the manager
    safe across processes that sign with the same key: :meth:`sending` then holds that lock
    from reading the node's pending count until the transaction is in the node's pool, so two
    workers never pick the same nonce and neither keeps a counter of its own.
    """

    def __init__(
        self, fetch_pending: Callable[[], int],
        shared: Callable[[], AbstractContextManager[object]] | None = None,
    ) -> None:
        self._fetch = fetch_pending
        self._next: int | None = None
        self._lock = threading.RLock()
        self.shared = shared

    def reserve(self) -> int:
        with self._lock:
            if self._next is None or self.shared is not None:
                pending = self._fetch()
                self._next = pending if self._next is None else max(self._next, pending)
            nonce = self._next
            self._next += 1
            return nonce

    def release(self, nonce: int) -> None:
        """Give back a nonce whose transaction never reached the node (only the newest)."""
        with self._lock:
            if self._next == nonce + 1:
                self._next = nonce

    def resync(self) -> None:
        with self._lock:
            self._next = None

    @contextmanager
    def sending(self) -> Iterator[int]:
        """A nonce, held exclusively (in this process, and across processes when ``shared``)
        until the block ends: send the transaction inside it. An exception gives it back."""
        with self._lock, (self.shared() if self.shared is not None else _null()):
            if self.shared is not None:
                self._next = None  # another process may have used the key: ask the node
            nonce = self.reserve()
            try:
                yield nonce
            except BaseException:
                self.release(nonce)
                raise


@contextmanager
def _null() -> Iterator[None]:
    yield


# --- client ------------------------------------------------------------------------------------


# web3's default retries a timed-out or refused request 5 times with backoff: a hung node
# then holds a call for 6 x timeout + ~4 s (a minute with the 10 s default), and a node that
# is down costs ~4 s per call before NodeUnavailable. One retry keeps a blip harmless and
# bounds every call at about 2 x timeout.
RPC_RETRIES = 1


def split_urls(rpc_url: str | Sequence[str]) -> list[str]:
    """``"http://a,http://b"`` (or a list) -> the endpoints in order; ConfigError when empty."""
    parts = rpc_url.split(",") if isinstance(rpc_url, str) else list(rpc_url)
    urls = [u.strip() for u in parts if u.strip()]
    if not urls:
        raise ConfigError(f"no JSON-RPC URL in {rpc_url!r}")
    return urls


class FailoverHTTPProvider(HTTPProvider):
    """An HTTP provider over several endpoints of the same chain.

    A request that fails in transport (refused, timed out, HTTP 429/5xx) is sent to the next
    endpoint; the one that answered becomes the current one, so a dead node costs one failed
    request, not one per call. JSON-RPC errors (a revert, a refused query) are answers and are
    returned as they are.
    """

    def __init__(self, urls: Sequence[str], **kwargs: Any) -> None:
        self.endpoints = list(urls)
        self._current = 0
        self._switch = threading.Lock()
        super().__init__(self.endpoints[0], **kwargs)

    def _make_request(self, method: Any, request_data: bytes) -> bytes:
        with self._switch:
            start = self._current
        failure: BaseException | None = None
        for step in range(len(self.endpoints)):
            index = (start + step) % len(self.endpoints)
            url = self.endpoints[index]
            try:
                raw: bytes = self._request_session_manager.make_post_request(
                    URI(url), request_data, **self.get_request_kwargs())
            except (ConnectionError, requests.ConnectionError, requests.Timeout,
                    requests.HTTPError) as exc:
                failure = exc
                if len(self.endpoints) > 1:
                    log.warning("node %s failed %s (%s); trying the next endpoint", url,
                                method, type(exc).__name__)
                continue
            if index != start:
                with self._switch:
                    self._current = index
                    self.endpoint_uri = URI(url)
            return raw
        assert failure is not None
        raise failure


def connect(rpc_url: str | Sequence[str], *, timeout: float = 10.0) -> Web3:
    """A Web3 over HTTP with a timeout on every request (about ``2 * timeout`` per call at
    most, retry included). Several endpoints (a comma-separated string or a list) fail over
    to each other in order (:class:`FailoverHTTPProvider`)."""
    urls = split_urls(rpc_url)
    # web3's validation middleware asks eth_chainId twice per eth_call (3 requests for one
    # getChannel); a chain's id never changes, and every endpoint of a list serves one chain.
    cache = {"cache_allowed_requests": True,
             "cacheable_requests": {RPCEndpoint("eth_chainId")}}
    if len(urls) > 1:
        # Failover replaces web3's retries: the next node is the retry.
        return Web3(FailoverHTTPProvider(urls, request_kwargs={"timeout": timeout},
                                         exception_retry_configuration=None, **cache))
    # The same errors web3 retries by default (and its default method allowlist).
    retry = ExceptionRetryConfiguration(
        errors=(ConnectionError, requests.HTTPError, requests.Timeout),
        retries=RPC_RETRIES,
        backoff_factor=0.1,
    )
    return Web3(HTTPProvider(urls[0], request_kwargs={"timeout": timeout},
                             exception_retry_configuration=retry, **cache))


@contextmanager
def _rpc(what: str, url: str) -> Iterator[None]:
    """Translate transport failures into NodeUnavailable (contract reverts pass through)."""
    try:
        yield
    except (requests.ConnectionError, requests.Timeout, ProviderConnectionError) as exc:
        raise NodeUnavailable(f"node at {url} unavailable during {what}: {type(exc).__name__}",
                              url=url) from None
    except requests.HTTPError as exc:
        raise NodeUnavailable(f"node at {url} answered HTTP error during {what}: {exc}",
                              url=url) from None


@dataclass
class ChainClient:
    """Talks to one deployed PaymentChannels contract, optionally signing as ``account``.

    ``confirmations`` is how many blocks (counting the one that includes it) a transaction must
    have before it is reported as done; 1 on a local automining node.
    """

    w3: Web3
    address: str
    artifact: Artifact
    account: LocalAccount | None = None
    confirmations: int = 1
    receipt_timeout: float = 120.0
    poll_interval: float = 0.05
    check_preconditions: bool = True
    gas_margin_percent: int = 20
    progress: ProgressCallback | None = None
    on_sent: Callable[[bytes, int], None] | None = None
    """Called with (tx_hash, nonce) right after the node accepted a transaction."""
    extra_error_abis: Sequence[Sequence[dict[str, Any]]] = ()
    nonce_lock: Callable[[], AbstractContextManager[object]] | None = None
    """Held around every nonce pick + send when several processes sign with one key."""
    _decoder: ErrorDecoder = field(init=False, repr=False)
    _nonces: NonceManager | None = field(init=False, repr=False, default=None)
    _chain_id: int | None = field(init=False, repr=False, default=None)
    _topics: dict[bytes, dict[str, Any]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.address = _address(self.address)
        self.contract = self.w3.eth.contract(address=self.address, abi=self.artifact.abi)
        self._decoder = ErrorDecoder(self.artifact.abi, *self.extra_error_abis)
        self._topics = {}
        for item in self.artifact.abi:
            if item.get("type") == "event":
                types = ",".join(_abi_type(i) for i in item.get("inputs", []))
                self._topics[keccak(text=f"{item['name']}({types})")] = item
        if self.account is not None:
            self.use_account(self.account)

    # -- construction helpers --

    @classmethod
    def from_url(
        cls,
        rpc_url: str | Sequence[str],
        address: str,
        *,
        account: LocalAccount | None = None,
        artifact: Artifact | str | Path | None = None,
        rpc_timeout: float = 10.0,
        **options: Any,
    ) -> ChainClient:
        art = _as_artifact(artifact)
        return cls(connect(rpc_url, timeout=rpc_timeout), address, art, account, **options)

    @staticmethod
    @contextmanager
    def sent_hook(hook: Callable[[bytes, int], None]) -> Iterator[None]:
        """Call ``hook(tx_hash, nonce)`` for transactions sent *by this thread* inside the block.

        Thread-local on purpose: the api shares one client between request handlers and the
        watcher thread, and each must record only its own transactions.
        """
        previous = getattr(_hooks, "on_sent", None)
        _hooks.on_sent = hook
        try:
            yield
        finally:
            _hooks.on_sent = previous

    def use_account(self, account: LocalAccount) -> None:
        """Sign transactions as ``account`` from now on (fresh nonce state)."""
        self.account = account
        addr = account.address
        self._nonces = NonceManager(
            lambda: self._call("nonce", lambda: self.w3.eth.get_transaction_count(addr, "pending")),
            self.nonce_lock,
        )

    def resync_nonce(self) -> None:
        """Forget the local nonce: the next transaction re-reads the node's pending count.

        Needed after a reorg dropped transactions of ours: the cached nonce is then ahead of
        the chain and every new transaction would wait in the pool behind a nonce gap.
        """
        if self._nonces is not None:
            self._nonces.resync()

    def with_account(self, account: LocalAccount) -> ChainClient:
        """A client for the same contract and options signing as another account."""
        return dataclasses.replace(self, account=account)

    @property
    def url(self) -> str:
        return str(getattr(self.w3.provider, "endpoint_uri", "?"))

    @property
    def sender(self) -> str:
        if self.account is None:
            raise ConfigError("this operation sends a transaction: configure a signing key")
        return str(self.account.address)

    def add_error_abi(self, abi: Sequence[dict[str, Any]]) -> None:
        """Also decode errors from another contract (e.g. the token's ERC20InsufficientBalance)."""
        self.extra_error_abis = (*self.extra_error_abis, abi)
        self._decoder.add_abi(abi)

    def decode_revert(self, data: bytes) -> ContractRevert:
        return self._decoder.decode(data)

    # -- reads --

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        with _rpc(what, self.url):
            try:
                return fn()
            except ContractLogicError as exc:
                raw = _revert_data(exc)
                raise (self._decoder.decode(raw) if raw is not None else
                       ContractRevert("Reverted", (), f"{what} reverted: {exc.message}")) from None

    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(self._call("eth_chainId", lambda: self.w3.eth.chain_id))
        return self._chain_id

    def block_number(self) -> int:
        return int(self._call("eth_blockNumber", lambda: self.w3.eth.block_number))

    def block(self, number: int | str) -> dict[str, Any]:
        """Block header fields (number, hash, timestamp, ...); missing block → ChainError."""
        try:
            got = self._call("eth_getBlockByNumber",
                             lambda: self.w3.eth.get_block(cast(Any, number)))
        except BlockNotFound:
            raise ChainError(f"block {number} not found on {self.url}", block=number) from None
        return dict(got)

    def timestamp(self, block: int | str = "latest") -> int:
        return int(self.block(block)["timestamp"])

    def balance(self, address: str, token: str = ZERO_ADDRESS) -> int:
        """ETH balance, or an ERC-20 balance when ``token`` is given."""
        addr = _address(address)
        if token == ZERO_ADDRESS:
            return int(self._call("eth_getBalance", lambda: self.w3.eth.get_balance(addr)))
        erc20 = self.w3.eth.contract(address=_address(token), abi=_ERC20_ABI)
        return int(self._call("balanceOf", erc20.functions.balanceOf(addr).call))

    def get_channel(
        self, channel_id: bytes, block: int | str | bytes = "latest"
    ) -> OnchainChannel:
        """``getChannel`` at ``block``: a number, a tag, or a block hash (EIP-1898: the node
        answers for exactly that block, or fails if a reorg removed it)."""
        cid = _bytes32(channel_id, "channel id")
        fn = self.contract.functions.getChannel(cid)
        if isinstance(block, bytes):
            return _to_channel(cid, self._call_at_hash("getChannel", fn, block))
        raw = self._call("getChannel", lambda: fn.call(block_identifier=cast(Any, block)))
        return _to_channel(cid, raw)

    def _call_at_hash(self, what: str, fn: Any, block_hash: bytes) -> Any:
        """``eth_call`` of a view at exactly ``block_hash`` (EIP-1898). web3's own
        ``block_identifier`` turns a hash back into a number, which a reorg can re-point."""
        tx = {"to": self.address, "data": fn._encode_transaction_data()}
        at = {"blockHash": "0x" + _bytes32(block_hash, "block hash").hex()}
        try:
            raw = self._call(what, lambda: self.w3.manager.request_blocking(
                cast(Any, "eth_call"), [tx, at]))
        except Web3RPCError as exc:
            raise ChainError(f"{what} at block 0x{block_hash.hex()} failed on {self.url}: "
                             f"{exc}", block_hash="0x" + block_hash.hex()) from None
        types = [_abi_type(o) for o in fn.abi["outputs"]]
        values = abi_decode(types, bytes(HexBytes(raw)))
        return values[0] if len(values) == 1 else values

    def channel_id_onchain(self, payer: str, payee: str, token: str, salt: bytes) -> bytes:
        """The contract's own ``channelId`` (pure), to check :func:`channel_id_for` against."""
        fn = self.contract.functions.channelId(
            _address(payer), _address(payee), _address(token), _bytes32(salt, "salt")
        )
        return bytes(self._call("channelId", fn.call))

    def owed(self, account: str, token: str = ZERO_ADDRESS) -> int:
        """Deferred payouts ``account`` can collect with :meth:`withdraw` (pull payment)."""
        fn = self.contract.functions.owed(_address(account), _address(token))
        return int(self._call("owed", fn.call))

    def voucher_digest(self, channel_id: bytes, cumulative_amount: int) -> bytes:
        """The contract's own EIP-712 digest of a voucher (to check Python's against)."""
        fn = self.contract.functions.hashVoucher(_bytes32(channel_id, "channel id"),
                                                 cumulative_amount)
        return bytes(self._call("hashVoucher", fn.call))

    def close_consent_digest(self, channel_id: bytes, cumulative_amount: int,
                             deadline: int) -> bytes:
        """The contract's own EIP-712 digest of ``CloseConsent(channelId, amount, deadline)``."""
        fn = self.contract.functions.hashCloseConsent(_bytes32(channel_id, "channel id"),
                                                      cumulative_amount, deadline)
        return bytes(self._call("hashCloseConsent", fn.call))

    def type_hash(self, name: str) -> bytes:
        """One of the contract's public ``*_TYPEHASH`` constants, e.g. ``"VOUCHER_TYPEHASH"``."""
        return bytes(self._call(name, getattr(self.contract.functions, name)().call))

    def token_info(self, token: str) -> tuple[str, int]:
        """An ERC-20's ``(symbol, decimals)`` as its contract reports them."""
        erc20 = self.w3.eth.contract(address=_address(token), abi=_ERC20_ABI)
        symbol = str(self._call("symbol", erc20.functions.symbol().call))
        decimals = int(self._call("decimals", erc20.functions.decimals().call))
        return symbol, decimals

    def eip712_domain(self) -> dict[str, Any]:
        """The contract's EIP-5267 domain (name, version, chainId, verifyingContract)."""
        got = self._call("eip712Domain", self.contract.functions.eip712Domain().call)
        return {"name": got[1], "version": got[2], "chainId": int(got[3]),
                "verifyingContract": str(got[4])}

    # -- transactions (public) --

    def open(
        self,
        payee: str,
        amount: int,
        *,
        token: str = ZERO_ADDRESS,
        challenge_period: int,
        salt: bytes,
        voucher_signer: str = ZERO_ADDRESS,
    ) -> tuple[bytes, TxResult]:
        """Open a channel funded with ``amount`` (ETH, or ERC-20 after an approve if needed).

        ``voucher_signer`` may sign vouchers besides the payer (zero address: only the payer).
        """
        payer = self.sender
        token = _address(token)
        channel_id = channel_id_for(payer, payee, token, salt)
        self._require_new(channel_id)
        _require_positive(amount, "deposit")
        if token != ZERO_ADDRESS:
            self._ensure_allowance(token, amount)
        fn = self.contract.functions.open(_address(payee), token, amount, challenge_period, salt,
                                          _address(voucher_signer))
        result = self._transact("open", fn, value=amount if token == ZERO_ADDRESS else 0)
        return channel_id, result

    def open_with_permit(
        self,
        payee: str,
        amount: int,
        *,
        token: str,
        challenge_period: int,
        salt: bytes,
        voucher_signer: str = ZERO_ADDRESS,
        deadline: int | None = None,
    ) -> tuple[bytes, TxResult]:
        """Open an ERC-20 channel in one transaction using an EIP-2612 permit signed here."""
        payer = self.sender
        token = _address(token)
        if token == ZERO_ADDRESS:
            raise PreconditionFailed("openWithPermit needs an ERC-20 token, not ETH")
        channel_id = channel_id_for(payer, payee, token, salt)
        self._require_new(channel_id)
        _require_positive(amount, "deposit")
        if deadline is None:
            deadline = self.timestamp() + 3600
        v, r, s = self.sign_permit(token, self.address, amount, deadline)
        fn = self.contract.functions.openWithPermit(
            _address(payee), token, amount, challenge_period, salt, _address(voucher_signer),
            deadline, v, r, s,
        )
        return channel_id, self._transact("openWithPermit", fn)

    def sign_permit(
        self, token: str, spender: str, value: int, deadline: int
    ) -> tuple[int, bytes, bytes]:
        """Sign an EIP-2612 ``Permit`` for ``token`` locally; returns (v, r, s)."""
        account = self._require_account()
        erc20 = self.w3.eth.contract(address=_address(token), abi=_ERC20_ABI)
        owner = str(account.address)
        nonce = int(self._call("nonces", erc20.functions.nonces(owner).call))
        domain = self._token_domain(erc20)
        signed = account.sign_typed_data(
            domain_data=domain,
            message_types={"Permit": [
                {"name": "owner", "type": "address"},
                {"name": "spender", "type": "address"},
                {"name": "value", "type": "uint256"},
                {"name": "nonce", "type": "uint256"},
                {"name": "deadline", "type": "uint256"},
            ]},
            message_data={"owner": owner, "spender": _address(spender), "value": value,
                          "nonce": nonce, "deadline": deadline},
        )
        return int(signed.v), int(signed.r).to_bytes(32, "big"), int(signed.s).to_bytes(32, "big")

    def top_up(self, channel_id: bytes, amount: int) -> TxResult:
        ch = self.get_channel(channel_id)
        if self.check_preconditions and ch.status is not ChannelStatus.OPEN:
            raise PreconditionFailed(
                f"cannot top up channel 0x{channel_id.hex()}: status is {ch.status.name}",
                channel_id=channel_id.hex(), status=ch.status.name)
        _require_positive(amount, "top-up")
        if ch.token != ZERO_ADDRESS:
            self._ensure_allowance(ch.token, amount)
        fn = self.contract.functions.topUp(channel_id, amount)
        return self._transact("topUp", fn, value=amount if ch.token == ZERO_ADDRESS else 0)

    def claim(self, channel_id: bytes, cumulative_amount: int, payer_signature: bytes) -> TxResult:
        self._check_claimable(channel_id, cumulative_amount)
        fn = self.contract.functions.claim(channel_id, cumulative_amount, payer_signature)
        return self._transact("claim", fn)

    def claim_many(self, claims: Sequence[Claim]) -> TxResult:
        if not claims:
            raise PreconditionFailed("claimMany needs at least one claim")
        entries = [(c.channel_id, c.cumulative_amount, c.payer_signature) for c in claims]
        return self._transact("claimMany", self.contract.functions.claimMany(entries))

    def close_by_payee(
        self, channel_id: bytes, cumulative_amount: int, payer_signature: bytes
    ) -> TxResult:
        if self.check_preconditions:
            ch = self._check_live(channel_id)
            if ch.payee != self.sender:
                raise PreconditionFailed(
                    f"closeByPayee must come from the payee {ch.payee}, not {self.sender}",
                    payee=ch.payee, sender=self.sender)
        fn = self.contract.functions.closeByPayee(channel_id, cumulative_amount, payer_signature)
        return self._transact("closeByPayee", fn)

    def cooperative_close(
        self,
        channel_id: bytes,
        cumulative_amount: int,
        deadline: int,
        payer_signature: bytes,
        payee_signature: bytes,
    ) -> TxResult:
        """Close now with the payee's ``CloseConsent(cumulative_amount, deadline)``."""
        if self.check_preconditions:
            self._check_live(channel_id)
            now = self.timestamp()
            if now > deadline:
                # Block time only moves forward: the consent can never be used again.
                raise PreconditionFailed(
                    f"close consent for 0x{channel_id.hex()} expired at {deadline} (block time "
                    f"now {now}); ask the payee for a new one", deadline=deadline, now=now)
        fn = self.contract.functions.cooperativeClose(
            channel_id, cumulative_amount, deadline, payer_signature, payee_signature
        )
        return self._transact("cooperativeClose", fn)

    def start_close(self, channel_id: bytes) -> TxResult:
        if self.check_preconditions:
            ch = self.get_channel(channel_id)
            if ch.status is not ChannelStatus.OPEN:
                raise PreconditionFailed(
                    f"cannot start closing channel 0x{channel_id.hex()}: status is "
                    f"{ch.status.name}", channel_id=channel_id.hex(), status=ch.status.name)
            if ch.payer != self.sender:
                raise PreconditionFailed(
                    f"startClose must come from the payer {ch.payer}, not {self.sender}",
                    payer=ch.payer, sender=self.sender)
        return self._transact("startClose", self.contract.functions.startClose(channel_id))

    def settle(self, channel_id: bytes) -> TxResult:
        if self.check_preconditions:
            ch = self.get_channel(channel_id)
            if ch.status is not ChannelStatus.CLOSING:
                raise PreconditionFailed(
                    f"cannot settle channel 0x{channel_id.hex()}: status is {ch.status.name}",
                    channel_id=channel_id.hex(), status=ch.status.name)
            now = self.timestamp()
            if now < ch.closes_at:
                raise PreconditionFailed(
                    f"challenge period of 0x{channel_id.hex()} ends at {ch.closes_at}, "
                    f"now is {now} ({ch.closes_at - now}s left)",
                    closes_at=ch.closes_at, now=now)
        return self._transact("settle", self.contract.functions.settle(channel_id))

    def withdraw(self, token: str = ZERO_ADDRESS, to: str | None = None) -> TxResult:
        """Collect the sender's deferred payouts of ``token`` (see ``PaymentDeferred``)."""
        token = _address(token)
        if self.check_preconditions and self.owed(self.sender, token) == 0:
            raise PreconditionFailed(f"nothing owed to {self.sender} in token {token}",
                                     account=self.sender, token=token)
        fn = self.contract.functions.withdraw(token, _address(to or self.sender))
        return self._transact("withdraw", fn)

    def deploy(self, *args: Any) -> TxResult:
        """Deploy this client's artifact; the result carries ``contract_address``."""
        return self.deploy_artifact(self.artifact, *args)

    def deploy_artifact(self, artifact: Artifact | str, *args: Any) -> TxResult:
        """Deploy any compiled contract (e.g. ``"TestStablecoin"``) from the signing account."""
        art = _as_artifact(artifact)
        factory = self.w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
        data = factory.constructor(*args).data_in_transaction
        result = self._send("deploy " + art.name, {"data": data}, decoder=ErrorDecoder(art.abi))
        if result.contract_address is None:
            raise ChainError(f"deploying {art.name} produced no contract address")
        return result

    # -- building blocks of a non-blocking sender (channel.txsender) --

    def tx_data(self, fn_name: str, *args: Any) -> dict[str, Any]:
        """``{from, to, data, value}`` of a call to this contract's ``fn_name(*args)``."""
        fn = getattr(self.contract.functions, fn_name)(*args)
        return {"from": self.sender, "to": self.address, "data": fn._encode_transaction_data(),
                "value": 0}

    def estimate_gas(self, what: str, tx: dict[str, Any]) -> int:
        """``eth_estimateGas``; a revert is decoded into ContractRevert like a sent one."""
        return self._estimate(what, tx, self._decoder)

    def fee_quote(self) -> tuple[int, int]:
        """(base fee of the latest block, the node's suggested priority fee), in wei."""
        latest = self.block("latest")
        base = int(latest.get("baseFeePerGas") or 0)
        tip = int(self._call("eth_maxPriorityFeePerGas", lambda: self.w3.eth.max_priority_fee))
        return base, tip

    def broadcast(self, what: str, tx: dict[str, Any]) -> tuple[bytes, int]:
        """Sign and send ``tx`` without waiting; returns (hash, nonce).

        Without a ``nonce`` in ``tx`` one is taken from the account's nonce owner (under its
        cross-process lock when configured); with one, this is a replacement of that nonce.
        ``NonceUsed`` when the node says the nonce is already taken by a mined transaction.
        """
        account = self._require_account()
        nonces = self._nonces
        if nonces is None:  # pragma: no cover - use_account always sets it
            raise ConfigError("no nonce manager")
        tx = {"from": str(account.address), "value": 0, "chainId": self.chain_id(), **tx}

        def send(body: dict[str, Any]) -> bytes:
            signed = account.sign_transaction(body)
            try:
                with _rpc("eth_sendRawTransaction " + what, self.url):
                    return bytes(self.w3.eth.send_raw_transaction(signed.raw_transaction))
            except Web3RPCError as exc:
                text = str(exc).lower()
                if "nonce too low" in text:
                    raise NonceUsed(f"{what}: nonce {body['nonce']} already used: {exc}",
                                    nonce=body["nonce"]) from None
                if "already known" in text or "already imported" in text:
                    return bytes(signed.hash)
                raw = _revert_data(exc)
                if raw is not None:
                    raise self._decoder.decode(raw) from None
                raise ChainError(f"{what} rejected by the node: {exc}") from None

        if "nonce" in tx:
            return send(tx), int(tx["nonce"])
        for attempt in range(2):
            try:
                with nonces.sending() as nonce:
                    tx_hash = send({**tx, "nonce": nonce})
                return tx_hash, nonce
            except NonceUsed:
                nonces.resync()
                if attempt:
                    raise
            except NodeUnavailable:
                nonces.resync()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def receipt(self, tx_hash: bytes) -> Any | None:
        """The receipt of ``tx_hash``, or None while it is not mined."""
        with _rpc("eth_getTransactionReceipt", self.url):
            try:
                return self.w3.eth.get_transaction_receipt(HexBytes(tx_hash))
            except TransactionNotFound:
                return None

    def transaction_known(self, tx_hash: bytes) -> bool:
        """Whether the node still has ``tx_hash`` (in its pool or mined)."""
        with _rpc("eth_getTransactionByHash", self.url):
            try:
                return self.w3.eth.get_transaction(HexBytes(tx_hash)) is not None
            except TransactionNotFound:
                return False

    def account_nonce(self, block: str = "latest") -> int:
        """Transactions of the signing account mined (``latest``) or known (``pending``)."""
        addr = self.sender
        return int(self._call("nonce", lambda: self.w3.eth.get_transaction_count(
            cast(Any, addr), cast(Any, block))))

    def explain_failure(self, what: str, tx: dict[str, Any], receipt: Any) -> ContractRevert:
        """The contract error a mined, reverted transaction hit (replayed at its block)."""
        return self._explain_failure(what, tx, receipt, self._decoder)

    def call_would_revert(self, tx: dict[str, Any]) -> ContractRevert | None:
        """``eth_call`` of ``tx`` (fee fields and gas included) on the latest state: the
        revert it would hit, or None."""
        call = {k: tx[k] for k in ("from", "to", "data", "value", "gas", "maxFeePerGas",
                                   "maxPriorityFeePerGas") if k in tx}
        try:
            with _rpc("eth_call", self.url):
                self.w3.eth.call(cast(Any, call), block_identifier="latest")
        except ContractLogicError as exc:
            raw = _revert_data(exc)
            return (self._decoder.decode(raw) if raw is not None
                    else ContractRevert("Reverted", (), str(exc.message)))
        except Web3RPCError as exc:
            raw = _revert_data(exc)
            if raw is not None:
                return self._decoder.decode(raw)
            return ContractRevert("Reverted", (), f"eth_call failed: {exc}")
        return None

    # -- events --

    def get_events(
        self,
        from_block: int,
        to_block: int,
        *,
        payees: Sequence[str] | None = None,
        channel_ids: Sequence[bytes] = (),
    ) -> list[ChannelEvent]:
        """Decode the logs of this contract in ``[from_block, to_block]``, in chain order.

        Without ``payees`` every log of the contract. With ``payees`` only what concerns them:
        ``ChannelOpened`` whose indexed ``payee`` is one of them, every event of those channels
        and of ``channel_ids`` (the first indexed topic is the channel id), and their
        ``PaymentDeferred``/``Withdrawn``. On a busy shared contract that keeps each query far
        below a provider's result cap. A query the node refuses as too large (result cap,
        block-range cap, response size) is split in halves until it passes.
        """
        if payees is None:
            logs = self._logs({}, from_block, to_block)
        else:
            payee_topics = [_address_topic(p) for p in payees]
            opened_topic = self._event_topic("ChannelOpened")
            logs = self._logs({"topics": [opened_topic, None, None, payee_topics]},
                              from_block, to_block)
            ids = {"0x" + _bytes32(c, "channel id").hex() for c in channel_ids}
            ids.update("0x" + bytes(lg["topics"][1]).hex() for lg in logs)
            ordered = sorted(ids)
            for i in range(0, len(ordered), _IDS_PER_QUERY):
                logs.extend(self._logs({"topics": [None, ordered[i:i + _IDS_PER_QUERY]]},
                                       from_block, to_block))
            account_events = [self._event_topic("PaymentDeferred"),
                              self._event_topic("Withdrawn")]
            logs.extend(self._logs({"topics": [account_events, payee_topics]},
                                   from_block, to_block))
        seen: set[tuple[int, int]] = set()
        out: list[ChannelEvent] = []
        for lg in logs:
            ev = self.decode_log(dict(lg))
            if ev is None or (ev.meta.block_number, ev.meta.log_index) in seen:
                continue
            seen.add((ev.meta.block_number, ev.meta.log_index))
            out.append(ev)
        out.sort(key=lambda e: (e.meta.block_number, e.meta.log_index))
        return out

    def _event_topic(self, name: str) -> str:
        for topic, item in self._topics.items():
            if item.get("name") == name:
                return "0x" + topic.hex()
        raise ConfigError(f"the contract ABI has no event {name}")

    def _logs(self, extra: dict[str, Any], start: int, end: int) -> list[Any]:
        """``eth_getLogs`` of this contract over ``[start, end]``, halving refused ranges."""
        query = {"address": _address(self.address), "fromBlock": start, "toBlock": end, **extra}
        try:
            return list(self._call("eth_getLogs",
                                   lambda: self.w3.eth.get_logs(cast(Any, query))))
        except Web3RPCError as exc:
            if not is_too_large(exc) or start >= end:
                raise ChainError(f"eth_getLogs [{start}, {end}] refused by {self.url}: {exc}",
                                 from_block=start, to_block=end) from None
        middle = (start + end) // 2
        log.info("eth_getLogs [%d, %d] too large for %s: splitting", start, end, self.url)
        return self._logs(extra, start, middle) + self._logs(extra, middle + 1, end)

    def deployment_block(self) -> int:
        """The first block at which the contract has code (binary search over ``eth_getCode``).

        Needs a node that serves historic state; ``ChainError`` otherwise (then configure
        ``PIECEWORK_DEPLOYMENT_BLOCK``). ``ConfigError`` when there is no contract at all.
        """
        address = _address(self.address)

        def has_code(block: int) -> bool:
            return len(self._call("eth_getCode",
                                  lambda: self.w3.eth.get_code(address, block))) > 0

        high = self.block_number()
        if not has_code(high):
            raise ConfigError(f"no contract at {address} on {self.url}: check "
                              "PIECEWORK_CONTRACT_ADDRESS and PIECEWORK_RPC_URL")
        low = 0
        try:
            while low < high:
                middle = (low + high) // 2
                if has_code(middle):
                    high = middle
                else:
                    low = middle + 1
        except Web3RPCError as exc:
            raise ChainError(f"{self.url} cannot read historic code ({exc}): set "
                             "PIECEWORK_DEPLOYMENT_BLOCK") from None
        return low

    def channel_history(
        self, channel_id: bytes, from_block: int = 0, to_block: int | str = "latest"
    ) -> list[ChannelEvent]:
        """Every event of one channel (its id is the first indexed topic of each), in order.

        Ranges the node refuses as too large are split like :meth:`get_events`' are."""
        cid = "0x" + _bytes32(channel_id, "channel id").hex()
        end = self.block_number() if to_block == "latest" else int(to_block)
        logs = self._logs({"topics": [None, cid]}, from_block, end)
        out = [ev for ev in (self.decode_log(dict(lg)) for lg in logs) if ev is not None]
        out.sort(key=lambda e: (e.meta.block_number, e.meta.log_index))
        return out

    def decode_log(self, log_entry: dict[str, Any]) -> ChannelEvent | None:
        topics = [bytes(t) for t in log_entry.get("topics", [])]
        if not topics or log_entry.get("removed"):
            return None
        abi = self._topics.get(topics[0])
        if abi is None:
            return None
        inputs = abi.get("inputs", [])
        indexed = [i for i in inputs if i.get("indexed")]
        plain = [i for i in inputs if not i.get("indexed")]
        values: dict[str, Any] = {}
        for inp, topic in zip(indexed, topics[1:], strict=False):
            (values[inp["name"]],) = abi_decode([_abi_type(inp)], topic)
        data = bytes(HexBytes(log_entry.get("data", b"")))
        decoded = abi_decode([_abi_type(i) for i in plain], data) if plain else ()
        values.update({i["name"]: v for i, v in zip(plain, decoded, strict=True)})
        meta = LogMeta(
            int(log_entry["blockNumber"]), bytes(log_entry["blockHash"]),
            bytes(log_entry["transactionHash"]), int(log_entry["logIndex"]),
        )
        return _typed_event(str(abi["name"]), values, meta)

    # -- pipeline --

    def _require_account(self) -> LocalAccount:
        if self.account is None:
            raise ConfigError("this operation signs: configure a signing key")
        return self.account

    def _require_new(self, channel_id: bytes) -> None:
        if not self.check_preconditions:
            return
        ch = self.get_channel(channel_id)
        if ch.status is not ChannelStatus.NONE:
            raise PreconditionFailed(
                f"channel id 0x{channel_id.hex()} was already used (status {ch.status.name}); "
                "pick another salt", channel_id=channel_id.hex())

    def _check_live(self, channel_id: bytes) -> OnchainChannel:
        ch = self.get_channel(channel_id)
        if ch.status not in (ChannelStatus.OPEN, ChannelStatus.CLOSING):
            raise PreconditionFailed(
                f"channel 0x{channel_id.hex()} is {ch.status.name}, not open or closing",
                channel_id=channel_id.hex(), status=ch.status.name)
        if ch.status is ChannelStatus.CLOSING:
            now = self.timestamp()
            if now >= ch.closes_at:
                raise PreconditionFailed(
                    f"challenge period of 0x{channel_id.hex()} ended at {ch.closes_at} "
                    f"(now {now}): only settle is possible", closes_at=ch.closes_at, now=now)
        return ch

    def _check_claimable(self, channel_id: bytes, cumulative_amount: int) -> None:
        if not self.check_preconditions:
            return
        ch = self._check_live(channel_id)
        payable = min(cumulative_amount, ch.deposit) - ch.claimed
        if payable <= 0:
            raise PreconditionFailed(
                f"voucher for {cumulative_amount} on 0x{channel_id.hex()} pays nothing: "
                f"claimed {ch.claimed}, deposit {ch.deposit}",
                cumulative_amount=cumulative_amount, claimed=ch.claimed, deposit=ch.deposit)

    def _ensure_allowance(self, token: str, amount: int) -> None:
        owner = self.sender
        erc20 = self.w3.eth.contract(address=_address(token), abi=_ERC20_ABI)
        allowance = int(self._call("allowance",
                                   erc20.functions.allowance(owner, self.address).call))
        if allowance >= amount:
            return
        data = erc20.functions.approve(self.address, amount)._encode_transaction_data()
        self._send("approve", {"to": erc20.address, "data": data}, decoder=self._decoder)

    def _transact(self, what: str, fn: Any, *, value: int = 0) -> TxResult:
        data = fn._encode_transaction_data()
        return self._send(what, {"to": self.address, "data": data, "value": value},
                          decoder=self._decoder)

    def _send(self, what: str, tx: dict[str, Any], *, decoder: ErrorDecoder) -> TxResult:
        account = self._require_account()
        nonces = self._nonces
        if nonces is None:  # pragma: no cover - use_account always sets it
            raise ConfigError("no nonce manager")
        tx = {"from": str(account.address), "value": 0, **tx}
        gas = self._estimate(what, tx, decoder)
        tx["gas"] = gas + gas * self.gas_margin_percent // 100
        tx["chainId"] = self.chain_id()
        tx.update(self._fees())
        for attempt in range(2):
            try:
                with nonces.sending() as nonce:
                    tx["nonce"] = nonce
                    signed = account.sign_transaction(tx)
                    with _rpc("eth_sendRawTransaction " + what, self.url):
                        tx_hash = bytes(self.w3.eth.send_raw_transaction(signed.raw_transaction))
                break
            except Web3RPCError as exc:
                text = str(exc).lower()
                if ("nonce too low" in text or "nonce too high" in text) and attempt == 0:
                    log.warning("%s: %s; resyncing nonce", what, exc)
                    nonces.resync()
                    continue
                raw = _revert_data(exc)
                if raw is not None:
                    raise decoder.decode(raw) from None
                raise ChainError(f"{what} rejected by the node: {exc}") from None
            except NodeUnavailable:
                # The node may or may not have it; a resync next time finds out.
                nonces.resync()
                raise
        self._report(f"{what}: sent 0x{tx_hash.hex()}")
        for hook in (self.on_sent, getattr(_hooks, "on_sent", None)):
            if hook is not None:
                hook(tx_hash, int(tx["nonce"]))
        receipt = self.wait_for_receipt(tx_hash, what=what)
        if int(receipt["status"]) != 1:
            raise self._explain_failure(what, tx, receipt, decoder)
        events = tuple(
            ev for ev in (self.decode_log(dict(lg)) for lg in receipt["logs"])
            if ev is not None
        )
        contract_address = receipt.get("contractAddress")
        return TxResult(
            tx_hash=tx_hash,
            block_number=int(receipt["blockNumber"]),
            block_hash=bytes(receipt["blockHash"]),
            gas_used=int(receipt["gasUsed"]),
            events=events,
            contract_address=str(contract_address) if contract_address else None,
        )

    def _estimate(self, what: str, tx: dict[str, Any], decoder: ErrorDecoder) -> int:
        with _rpc("eth_estimateGas " + what, self.url):
            try:
                return int(self.w3.eth.estimate_gas(cast(Any, tx)))
            except ContractLogicError as exc:
                raw = _revert_data(exc)
                if raw is not None:
                    raise decoder.decode(raw) from None
                message = f"{what} would revert: {exc.message}"
                raise ContractRevert("Reverted", (), message) from None
            except Web3RPCError as exc:
                raw = _revert_data(exc)
                if raw is not None:
                    raise decoder.decode(raw) from None
                raise ChainError(f"{what}: gas estimation failed: {exc}") from None

    def _fees(self) -> dict[str, int]:
        latest = self.block("latest")
        base = int(latest.get("baseFeePerGas") or 0)
        tip = int(self._call("eth_maxPriorityFeePerGas", lambda: self.w3.eth.max_priority_fee))
        # Twice the base fee survives six full blocks of base-fee growth before the tx stalls.
        return {"maxFeePerGas": 2 * base + tip, "maxPriorityFeePerGas": tip}

    def _explain_failure(
        self, what: str, tx: dict[str, Any], receipt: Any, decoder: ErrorDecoder
    ) -> ContractRevert:
        """A mined revert: replay it at its block to learn the error name (not retried)."""
        block = int(receipt["blockNumber"])
        # With its gas and fees: a revert that depends on them (a starved payout, a token that
        # looks at tx.gasprice) replays the same way.
        call = {k: tx[k] for k in ("from", "to", "data", "value", "gas", "maxFeePerGas",
                                   "maxPriorityFeePerGas") if k in tx}
        # Before the block first; if it passed there, a transaction earlier in the same block
        # changed the state (e.g. the payer's cooperativeClose raced our claim): replaying on
        # the block's final state names that error instead of a bare "Reverted".
        for at in (block - 1, block):
            try:
                with _rpc("eth_call " + what, self.url):
                    self.w3.eth.call(cast(Any, call), block_identifier=at)
            except ContractLogicError as exc:
                raw = _revert_data(exc)
                if raw is not None:
                    return decoder.decode(raw)
            except (ChainError, Web3RPCError):
                pass
        return ContractRevert(
            "Reverted", (),
            f"{what} reverted in block {block} (tx 0x{bytes(receipt['transactionHash']).hex()})")

    def wait_for_receipt(self, tx_hash: bytes, *, what: str = "transaction") -> Any:
        """Poll for the receipt, then for ``confirmations`` blocks; TransactionTimeout if slow."""
        deadline = time.monotonic() + self.receipt_timeout
        receipt: Any = None
        interval = min(self.poll_interval, 0.01)  # automining nodes answer within milliseconds
        while True:
            with _rpc("eth_getTransactionReceipt", self.url):
                try:
                    receipt = self.w3.eth.get_transaction_receipt(HexBytes(tx_hash))
                except TransactionNotFound:
                    receipt = None
            if receipt is not None and self.confirmations <= 1:
                # Included is all that was asked for: no depth to wait for, no reorg re-check.
                self._report(f"{what}: mined in block {int(receipt['blockNumber'])}")
                return receipt
            if receipt is not None:
                confirmed = self.block_number() - int(receipt["blockNumber"]) + 1
                if confirmed >= self.confirmations:
                    # Re-read: a reorg while we waited may have moved or dropped it.
                    with _rpc("eth_getTransactionReceipt", self.url):
                        try:
                            again = self.w3.eth.get_transaction_receipt(HexBytes(tx_hash))
                        except TransactionNotFound:
                            again = None
                    if again is not None and again["blockHash"] == receipt["blockHash"]:
                        self._report(f"{what}: confirmed in block {int(receipt['blockNumber'])}")
                        return receipt
                    receipt = None
                    continue
                self._report(f"{what}: {confirmed}/{self.confirmations} confirmations")
            if time.monotonic() >= deadline:
                raise TransactionTimeout(
                    f"{what} 0x{tx_hash.hex()} not confirmed after {self.receipt_timeout:.0f}s "
                    f"(wanted {self.confirmations} confirmations)",
                    tx_hash=tx_hash.hex(), timeout=self.receipt_timeout)
            time.sleep(interval)
            interval = min(interval * 2, self.poll_interval)

    def _report(self, message: str) -> None:
        log.debug("%s", message)
        if self.progress is not None:
            self.progress(message)

    def _token_domain(self, erc20: Any) -> dict[str, Any]:
        try:
            got = self._call("eip712Domain", erc20.functions.eip712Domain().call)
            return {"name": got[1], "version": got[2], "chainId": int(got[3]),
                    "verifyingContract": str(got[4])}
        except (ContractRevert, ChainError, ValueError):
            # Pre-EIP-5267 tokens: OpenZeppelin's ERC20Permit uses version "1" and the name.
            name = str(self._call("name", erc20.functions.name().call))
            return {"name": name, "version": "1", "chainId": self.chain_id(),
                    "verifyingContract": str(erc20.address)}


def _as_artifact(artifact: Artifact | str | Path | None) -> Artifact:
    if isinstance(artifact, Artifact):
        return artifact
    return load_artifact(artifact if artifact is not None else DEFAULT_ARTIFACT)


def _require_positive(amount: int, what: str) -> None:
    if amount <= 0:
        raise PreconditionFailed(f"{what} amount must be positive, got {amount}", amount=amount)


def _to_channel(channel_id: bytes, raw: Any) -> OnchainChannel:
    # web3 returns the struct as a tuple in ABI order: payer, payee, token, deposit, claimed,
    # challengePeriod, closesAt, status, voucherSigner (PROTOCOL.md fixes the names, so map by
    # name if we can).
    if isinstance(raw, dict):
        fields = [raw[k] for k in ("payer", "payee", "token", "deposit", "claimed",
                                   "challengePeriod", "closesAt", "status", "voucherSigner")]
    else:
        fields = list(raw)
    payer, payee, token, deposit, claimed, period, closes_at, status, signer = fields
    return OnchainChannel(
        channel_id=channel_id,
        payer=_address(payer),
        payee=_address(payee),
        token=_address(token),
        deposit=int(deposit),
        claimed=int(claimed),
        challenge_period=int(period),
        closes_at=int(closes_at),
        status=ChannelStatus(int(status)),
        voucher_signer=_address(signer),
    )


def _typed_event(name: str, v: dict[str, Any], meta: LogMeta) -> ChannelEvent:
    if name == "ChannelOpened":
        return ChannelOpened(bytes(v["channelId"]), _address(v["payer"]), _address(v["payee"]),
                             _address(v["token"]), int(v["deposit"]), int(v["challengePeriod"]),
                             _address(v["voucherSigner"]), meta)
    if name == "ChannelToppedUp":
        return ChannelToppedUp(bytes(v["channelId"]), int(v["amount"]), int(v["deposit"]), meta)
    if name == "Claimed":
        return Claimed(bytes(v["channelId"]), int(v["cumulativeAmount"]), int(v["paid"]), meta)
    if name == "CloseStarted":
        return CloseStarted(bytes(v["channelId"]), int(v["closesAt"]), meta)
    if name == "ChannelClosed":
        return ChannelClosed(bytes(v["channelId"]), int(v["payeeTotal"]), int(v["payerRefund"]),
                             meta)
    if name == "PaymentDeferred":
        return PaymentDeferred(_address(v["account"]), _address(v["token"]), int(v["amount"]),
                               meta)
    if name == "Withdrawn":
        return Withdrawn(_address(v["account"]), _address(v["token"]), _address(v["to"]),
                         int(v["amount"]), meta)
    return OtherEvent(name, tuple(sorted(v.items())), meta)


# Only what the client needs from a token, so it works with any ERC-20 / ERC-2612.
_ERC20_ABI: list[dict[str, Any]] = [
    {"type": "function", "name": "approve", "stateMutability": "nonpayable",
     "inputs": [{"name": "spender", "type": "address"}, {"name": "value", "type": "uint256"}],
     "outputs": [{"name": "", "type": "bool"}]},
    {"type": "function", "name": "allowance", "stateMutability": "view",
     "inputs": [{"name": "owner", "type": "address"}, {"name": "spender", "type": "address"}],
     "outputs": [{"name": "", "type": "uint256"}]},
    {"type": "function", "name": "balanceOf", "stateMutability": "view",
     "inputs": [{"name": "owner", "type": "address"}],
     "outputs": [{"name": "", "type": "uint256"}]},
    {"type": "function", "name": "nonces", "stateMutability": "view",
     "inputs": [{"name": "owner", "type": "address"}],
     "outputs": [{"name": "", "type": "uint256"}]},
    {"type": "function", "name": "name", "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "", "type": "string"}]},
    {"type": "function", "name": "symbol", "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "", "type": "string"}]},
    {"type": "function", "name": "decimals", "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "", "type": "uint8"}]},
    {"type": "function", "name": "eip712Domain", "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "fields", "type": "bytes1"}, {"name": "name", "type": "string"},
                 {"name": "version", "type": "string"}, {"name": "chainId", "type": "uint256"},
                 {"name": "verifyingContract", "type": "address"},
                 {"name": "salt", "type": "bytes32"},
                 {"name": "extensions", "type": "uint256[]"}]},
]
