"""The payee settlement service's app factory: ``uvicorn --factory api.main:create_app``.

``create_app`` checks the configuration at once (a missing PIECEWORK_OPERATOR_TOKEN stops
the process with one line, not a traceback); the lifespan then opens the store (running the
migrations under a cross-worker lock), loads the payee key (never logged), builds the chain
client, and starts the watcher in a background thread only in the worker that wins watcher
leadership (``api.leader``), so exactly one watcher acts across workers and replicas.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from pydantic import ValidationError

from api import telemetry
from api.chainstatus import read_status
from api.deps import AcceptedToken, Runtime
from api.leader import LeaderElector, lock_for_database, migration_lock, nonce_lock
from api.middleware import RequestGuard
from api.problems import install_problem_handlers
from api.routes import channels, events, health, info, metrics, payments, tasks
from api.schemas import problem_docs
from api.web import router as web_router
from channel.config import Settings
from channel.errors import ConfigError, PieceworkError
from channel.keys import SigningKey, load_key
from channel.messages import DOMAIN_NAME, DOMAIN_VERSION, MAX_UINT256, ZERO_ADDRESS, Domain
from channel.payee import ChannelSource, GroupCommitter, PayeeService, TokenInfo
from channel.signing import Signer
from channel.state import ChannelStatus, OnchainChannel
from channel.store import PayeeStore, WalCheckpointer, make_engine, migrate

__all__ = ["ChainChannelSource", "Overrides", "create_app"]

log = logging.getLogger(__name__)

# Measured with wrk, 64 connections, 1 worker, 2 cores: group commit took payments from 405 to
# ~900 req/s on SQLite (one fsync per batch) and from 324 to 468 req/s on PostgreSQL.
_GROUP_COMMIT_DEFAULT = True


class ChainChannelSource:
    """``ChannelSource`` over the chain client: ``getChannel``, None for a never-opened id.

    The adapter the core's ``PayeeService`` needs; ``ChainClient.get_channel`` returns a
    ``NONE``-status channel instead of None.
    """

    def __init__(self, chain: Any, confirmations: int = 1) -> None:
        self._chain = chain
        self._confirmations = max(1, confirmations)

    def get(self, channel_id: bytes) -> OnchainChannel | None:
        """The channel as of the newest *confirmed* block (``confirmations`` deep), the same
        depth the watcher mirrors at: a top-up a reorg may still remove buys nothing yet."""
        block: int | str = "latest"
        if self._confirmations > 1:
            block = max(0, int(self._chain.block_number()) - self._confirmations + 1)
        channel: OnchainChannel = self._chain.get_channel(channel_id, block)
        return None if channel.status is ChannelStatus.NONE else channel

    def chain_time(self) -> int:
        return int(self._chain.timestamp())

    def token(self, address: str) -> TokenInfo:
        symbol, decimals = self._chain.token_info(address)
        return TokenInfo(address, symbol, decimals)


_ETH = TokenInfo(ZERO_ADDRESS, "ETH", 18)


def _accepted_tokens(settings: Settings, source: ChannelSource) -> tuple[AcceptedToken, ...]:
    """The accepted tokens with symbol and decimals read from their contracts, once."""
    out = []
    for address, minimum in settings.accepted_token_minimums().items():
        if address == ZERO_ADDRESS:
            out.append(AcceptedToken(_ETH, minimum))
            continue
        try:
            info = source.token(address)
        except PieceworkError as exc:
            raise ConfigError(
                f"PIECEWORK_ACCEPTED_TOKENS: cannot read symbol/decimals of {address}: {exc}"
            ) from None
        out.append(AcceptedToken(info, minimum))
    return tuple(out)


@dataclass(frozen=True)
class Overrides:
    """Test seams: replace the chain with an in-memory ``ChannelSource`` (no watcher, no claim)."""

    source: ChannelSource | None = None
    node_check: Callable[[], None] | None = None
    start_watcher: bool = True
    group_commit: bool | None = None
    """Batch concurrent payments into one commit (``GroupCommitter``); None: the default."""


def _check(settings: Settings) -> None:
    token = settings.operator_token
    if token is None or not token.get_secret_value().strip():
        raise ConfigError(
            "PIECEWORK_OPERATOR_TOKEN is not set: the service refuses to start without the "
            "bearer token that guards its operator endpoints"
        )
    if settings.keystore is None and settings.private_key is None:
        raise ConfigError(
            "no payee key: set PIECEWORK_KEYSTORE (+ PIECEWORK_KEYSTORE_PASSWORD) or, for "
            "development, PIECEWORK_PRIVATE_KEY"
        )
    settings.require_contract()


def _load_key(settings: Settings) -> SigningKey:
    if settings.keystore is not None:
        password = settings.keystore_password
        return load_key(settings.keystore, password.get_secret_value() if password else None)
    if settings.private_key is None:  # pragma: no cover - _check rules this out
        raise ConfigError("no payee key configured")
    return SigningKey.from_hex(settings.private_key.get_secret_value())


def _wallet_reader(chain: Any, min_balance: int) -> Callable[[], dict[str, object] | None]:
    def read() -> dict[str, object] | None:
        if chain.account is None:
            return None
        balance = int(chain.balance(chain.sender))
        return {"address": chain.sender, "balance": str(balance), "low": balance < min_balance}

    return read


def _set_wallet_gauges(balance: int, low: bool) -> None:
    telemetry.WALLET_BALANCE.set(balance)
    telemetry.WALLET_LOW.set(1 if low else 0)


def _build(settings: Settings, overrides: Overrides) -> tuple[Runtime, LeaderElector | None]:
    engine = make_engine(settings.database_url, background_checkpoints=True)
    with migration_lock(settings.database_url):
        migrate(engine)
    key = _load_key(settings)
    signer = Signer(key.private_key)
    contract = settings.require_contract()
    store = PayeeStore(engine)
    chain: Any = None
    source: ChannelSource | None = overrides.source
    if source is None:
        from channel.chain import ChainClient  # noqa: PLC0415 - web3 is slow to import

        chain = ChainClient.from_url(
            settings.rpc_url, contract, account=key.account, confirmations=settings.confirmations,
            nonce_lock=nonce_lock(settings.database_url),
        )
        source = ChainChannelSource(chain, settings.confirmations)
    # A configured chain id lets the service start while the node is down (uncached channels
    # then answer 503); without one the node must answer now. A node that answers must serve
    # that chain and that contract.
    if chain is not None:
        _verify_chain(settings, chain, contract)
    if settings.chain_id is not None:
        chain_id = settings.chain_id
    elif chain is not None:
        chain_id = chain.chain_id()
    else:
        raise ConfigError("PIECEWORK_CHAIN_ID is required without a node")
    domain = Domain(chain_id, contract)
    tokens = _accepted_tokens(settings, source)
    service = PayeeService(
        store,
        signer,
        domain,
        source,
        min_challenge_period=settings.min_challenge_period,
        accepted_tokens={t.info.address: t.min_deposit for t in tokens},
        consent_ttl=settings.consent_ttl_seconds,
    )
    group_commit = overrides.group_commit
    if group_commit is None:
        group_commit = _GROUP_COMMIT_DEFAULT
    runtime = Runtime(
        settings=settings,
        engine=engine,
        store=store,
        service=service,
        domain=domain,
        chain=chain,
        payees=(signer.address,),
        node_check=overrides.node_check or (chain.block_number if chain else lambda: None),
        committer=GroupCommitter(service) if group_commit else None,
        checkpointer=WalCheckpointer(engine).start(),
        claim=(lambda c, amount, sig: chain.claim(c, amount, sig).tx_hash) if chain else None,
        tokens=tokens,
        chain_status=(lambda: read_status(chain, store)) if chain is not None else None,
    )
    if chain is not None:
        runtime.wallet = _wallet_reader(chain, settings.wallet_min_balance)
    if chain is None or not overrides.start_watcher:
        return runtime, None

    from channel.defence import DefencePolicy  # noqa: PLC0415
    from channel.watcher import ClaimPolicy, Watcher  # noqa: PLC0415

    watcher = Watcher(
        _watcher_chain(settings, chain),
        store,
        frozenset({signer.address}),
        confirmations=max(1, settings.confirmations),
        # Settings say 0 disables a rule; the policy expresses "never" as an unreachable bound.
        policy=ClaimPolicy(
            default_threshold=settings.claim_min_unclaimed or MAX_UINT256 + 1,
            max_age=float(settings.claim_max_age_seconds or "inf"),
        ),
        start_block=settings.deployment_block,
        defence=DefencePolicy(
            fee_multiple=settings.claim_fee_multiple,
            max_gas=settings.max_gas_per_tx,
            wallet_min_balance=settings.wallet_min_balance,
            withdraw_interval=settings.withdraw_interval_seconds,
        ),
        max_fee_per_gas=settings.max_fee_gwei * 10**9,
        bump_after=settings.fee_bump_seconds,
        on_alert=lambda kind, _message: telemetry.WATCHTOWER_ALERTS.labels(kind).inc(),
        on_wallet=_set_wallet_gauges,
    )
    # The elector owns leadership; the watcher's own lock stays the always-held default.
    elector = LeaderElector(lock_for_database(settings.database_url), watcher.run)
    runtime.watcher = watcher
    return runtime, elector


def _verify_chain(settings: Settings, chain: Any, contract: str) -> None:
    """Refuse to start on the wrong chain: every reachable endpoint must serve the configured
    chain id (or, without one, the same chain), and the contract's EIP-712 domain must be
    PaymentChannels v2 on that chain at that address. An unreachable node is only logged when
    PIECEWORK_CHAIN_ID is set (the service may start while the node is down)."""
    from channel.chain import connect, split_urls  # noqa: PLC0415 - web3 is slow to import

    expected = settings.chain_id
    urls = split_urls(settings.rpc_url)
    if settings.watcher_rpc_url:
        urls += split_urls(settings.watcher_rpc_url)
    seen: dict[str, int] = {}
    for url in urls:
        try:
            seen[url] = int(connect(url, timeout=5.0).eth.chain_id)
        except Exception as exc:  # unreachable: judged below, and failover covers it later
            log.warning("node %s unreachable at start: %s", url, type(exc).__name__)
    if not seen:
        if expected is None:
            raise ConfigError(f"no node answers at {', '.join(urls)} and PIECEWORK_CHAIN_ID is "
                              "not set")
        return
    for url, chain_id in seen.items():
        want = expected if expected is not None else next(iter(seen.values()))
        if chain_id != want:
            origin = "PIECEWORK_CHAIN_ID is" if expected is not None else "the first node serves"
            raise ConfigError(f"{origin} chain {want} but the node at {url} serves chain "
                              f"{chain_id}: refusing to start")
    chain_id = next(iter(seen.values()))
    try:
        domain = chain.eip712_domain()
    except Exception as exc:
        raise ConfigError(f"no PaymentChannels contract at {contract} on chain {chain_id} "
                          f"(eip712Domain() failed: {type(exc).__name__})") from None
    wanted = {"name": DOMAIN_NAME, "version": DOMAIN_VERSION, "chainId": chain_id,
              "verifyingContract": contract}
    got = {k: domain.get(k) for k in wanted}
    if str(got["verifyingContract"]).lower() == contract.lower():
        got["verifyingContract"] = contract
    if got != wanted:
        raise ConfigError(f"the contract at {contract} signs for EIP-712 domain {got}, not "
                          f"{wanted}: refusing to start")


def _watcher_chain(settings: Settings, chain: Any) -> Any:
    """The watcher's client: its own endpoint(s) when PIECEWORK_WATCHER_RPC_URL is set, so
    payment traffic cannot use up its quota; the same nonces as the service's client."""
    if not settings.watcher_rpc_url:
        return chain
    from channel.chain import connect  # noqa: PLC0415 - web3 is slow to import

    own = dataclasses.replace(chain, w3=connect(settings.watcher_rpc_url))
    own._nonces = chain._nonces  # one nonce owner per key: never two counters
    return own


def create_app(settings: Settings | None = None, overrides: Overrides | None = None) -> FastAPI:
    """Build the app; configuration errors exit at once with a one-line message."""
    try:
        settings = settings if settings is not None else Settings()
    except ValidationError as exc:
        # One line naming the variable, not pydantic's multi-line report.
        first = exc.errors()[0]
        name = "PIECEWORK_" + str(first["loc"][0]).upper() if first["loc"] else "a setting"
        raise SystemExit(f"piecework: {name}: {first['msg']}") from None
    try:
        _check(settings)
    except ConfigError as exc:
        # SystemExit prints exactly this line to stderr; uvicorn adds no traceback.
        raise SystemExit(f"piecework: {exc}") from None
    chosen = overrides or Overrides()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            runtime, elector = _build(settings, chosen)
        except PieceworkError as exc:
            # One line, no traceback: the message names what to fix and never holds a key.
            log.error("piecework: cannot start: %s", exc)
            raise SystemExit(f"piecework: cannot start: {exc}") from None
        app.state.runtime = runtime
        if elector is not None:
            elector.start()
        # The modules, the ABI and the app are loaded for good: out of the collector's sight,
        # a full collection scans only what requests allocate (a 2 s bench run otherwise
        # paused once or twice for ~80 ms, every connection's p99).
        gc.collect()
        gc.freeze()
        try:
            async with events.following(runtime):
                yield
        finally:
            if elector is not None:
                elector.stop()
            if runtime.committer is not None:
                runtime.committer.close()
            if runtime.checkpointer is not None:
                runtime.checkpointer.stop()
            runtime.engine.dispose()

    app = FastAPI(
        title="Piecework payee service",
        version="2",
        summary="Payment-channel vouchers in, signed receipts out (PROTOCOL.md, HTTP API v2).",
        lifespan=lifespan,
        # Any route can answer 4xx/5xx problems (404, 405, 413, 415, 422, 500): say so once.
        responses=problem_docs("4XX", "5XX"),
    )
    install_problem_handlers(app)
    # Well-formed payments are answered in front of FastAPI's routing (api.routes.payments);
    # added first so that RequestGuard (413/415) still runs before it.
    app.add_middleware(payments.LeanPayments)
    app.add_middleware(RequestGuard, max_body_bytes=settings.max_body_bytes)
    for module in (info, channels, payments, tasks, health, metrics, events):
        app.include_router(module.router)
    # Last: the pages at / (api.web) never shadow an API route.
    app.include_router(web_router)
    # Cross-origin access only to the payer-side endpoints, and only for the origins in
    # PIECEWORK_CORS_ORIGINS (api.cors; default none: same origin only). Added last, so
    # outermost: answers of every inner layer (413/415 included) carry it.
    from api.cors import PayerSideCors  # noqa: PLC0415 - kept beside its one use

    app.add_middleware(PayerSideCors, origins=settings.cors_origin_set())
    return app
