"""The payer's side: open channels from a wallet, pay tasks with vouchers over HTTP, close.

A payment is: sign ``Voucher(channel, previous + amount)``, **store it before sending** (so a
crash never leaves a voucher out there that we do not know about), POST it to the payee
service, check the receipt (signed by the channel's payee, for our channel, task, amount and
cumulative amount), store the receipt: in the same commit as the next voucher (one fsync per
payment), or at ``flush``/``close``. The payer keeps the last receipted amount per channel in
memory, so a payment reads nothing from its store; after any error it reads the store again.
Signatures are deterministic (RFC 6979), so the payer can never produce two different vouchers
for one cumulative amount: asking again yields the byte-identical voucher.

Vouchers, close requests and access signatures come from the channel's **voucher signer**
when this client holds its key (``add_voucher_signer``; the wallet then signs nothing per
task), else from the payer's own key.

On ``409`` the service is ahead of or behind us (another device with the same key, or a
voucher of ours that never arrived): ``resync`` reads the service's latest accepted voucher,
checks it carries *our* (payer or voucher signer) signature, adopts it and its receipts, and
the payment is retried once on top of it. Errors from the service (RFC 9457 ``code``) map
back onto ``channel.errors``.

    PieceworkError
    └── ServiceError            the payee service answered something unusable
        └── ServiceUnavailable  it could not be reached or timed out
"""

from __future__ import annotations

import logging
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
import sqlalchemy as sa

from channel.chain import ZERO_ADDRESS, ChainClient, TxResult
from channel.errors import (
    AccessDenied,
    AccessRequired,
    AmountMismatch,
    ChannelNotOpen,
    CloseNotAuthorized,
    ConfigError,
    ExceedsDeposit,
    InvalidAmount,
    InvalidSignature,
    InvalidTaskId,
    PieceworkError,
    StaleVoucher,
    TaskConflict,
    TokenNotAccepted,
)
from channel.keys import SigningKey, load_key, new_keystore
from channel.messages import (
    Access,
    CloseConsent,
    CloseRequest,
    Domain,
    Message,
    Receipt,
    Voucher,
    format_access,
    parse_amount,
    parse_bytes32,
    parse_signature,
    parse_task_id,
    parse_uint64,
    task_id_hash,
)
from channel.signing import Signer, recover
from channel.state import ChannelStatus, OnchainChannel
from channel.store import PayerStore, StoredReceipt, make_engine, metadata, migrate

__all__ = [
    "PaidReceipt",
    "Payer",
    "RequestedTask",
    "ServiceError",
    "ServiceUnavailable",
    "keepalive_transport",
    "new_voucher_signer",
    "open_payer_store",
    "problem_error",
    "voucher_signer_dir",
]

log = logging.getLogger(__name__)

# Access signatures are made fresh for each private read; a short life limits a leaked one.
_ACCESS_LIFETIME: Final = 600


class ServiceError(PieceworkError):
    """The payee service answered with an error we cannot map, or a malformed body."""

    code = "service_error"


class ServiceUnavailable(ServiceError):  # noqa: N818 - named like the rest of channel.errors
    code = "service_unavailable"


@dataclass(frozen=True)
class PaidReceipt:
    """The payee's signed acknowledgement that ``amount`` of ``cumulative_amount`` paid
    ``task_id``: on its own a proof of what that one task cost."""

    channel_id: bytes
    task_id: str
    amount: int
    cumulative_amount: int
    signature: bytes

    @property
    def message(self) -> Receipt:
        """The EIP-712 message the signature is over."""
        return Receipt(self.channel_id, self.cumulative_amount, self.amount,
                       task_id_hash(self.task_id))


@dataclass(frozen=True)
class RequestedTask:
    """A task the payee asked to be paid for (``GET .../tasks``)."""

    task_id: str
    amount: int
    description: str
    status: str
    requested_at: int


def keepalive_transport() -> httpx.HTTPTransport:
    """httpx's transport with TCP_NODELAY: httpx writes a request's headers and body in two
    sends, and with Nagle's algorithm on the body then waits for the ACK of the headers, which
    the server delays (delayed ACK): milliseconds per request on a keep-alive connection."""
    return httpx.HTTPTransport(
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)], retries=0
    )


def open_payer_store(database_url: str) -> PayerStore:
    """The payer's tables at ``database_url``, created or migrated to the current schema."""
    engine = make_engine(database_url)
    try:
        migrate(engine)
    except Exception as exc:  # no migrations shipped (yet): the models are the schema
        log.debug("migrations unavailable (%s); creating tables from the models", exc)
        metadata.create_all(engine)
    return PayerStore(engine)


def voucher_signer_dir(database_url: str) -> Path:
    """Where voucher signer keystores live: next to the payer's SQLite store, else in
    ``./.piecework`` (a PostgreSQL store has no directory of its own)."""
    url = sa.make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).expanduser().resolve().parent / "voucher-signers"
    return Path(".piecework").resolve() / "voucher-signers"


def new_voucher_signer(database_url: str, password: str) -> tuple[Signer, str]:
    """A fresh key in an encrypted keystore next to the payer's store: ``(signer, path)``."""
    directory = voucher_signer_dir(database_url)
    staging = directory / f".new-{secrets.token_hex(8)}.json"
    address = new_keystore(staging, password)
    path = directory / f"voucher-signer-{address}.json"
    staging.rename(path)
    return Signer(load_key(path, password).private_key), str(path)


class Payer:
    """Pays one payee service per call; the chain client must sign with the payer's key."""

    def __init__(
        self,
        chain: ChainClient,
        signer: Signer,
        store: PayerStore,
        *,
        http: httpx.Client | None = None,
        timeout: float = 10.0,
    ) -> None:
        if chain.account is not None and chain.sender != signer.address:
            raise ConfigError(
                f"chain client signs as {chain.sender} but vouchers would be signed by "
                f"{signer.address}: use one key"
            )
        self.chain = chain
        self.signer = signer
        self.store = store
        self.http = http or httpx.Client(timeout=timeout, transport=keepalive_transport())
        self._domain: Domain | None = None
        self._channels: dict[bytes, OnchainChannel] = {}
        self._voucher_signers: dict[bytes, Signer] = {}
        # Per channel, the cumulative amount the service receipted last, while every voucher
        # we signed on it is receipted: the next payment extends it without reading the store.
        # Dropped while a voucher is unanswered (and on any error), so the next payment reads
        # the store and resyncs as before.
        self._settled: dict[bytes, int] = {}
        # Receipts received but not yet stored: written in the same transaction as the next
        # voucher (one fsync per payment), or by flush()/close().
        self._unsaved: list[StoredReceipt] = []

    @classmethod
    def from_url(cls, chain: ChainClient, key: SigningKey, database_url: str) -> Payer:
        if chain.account is None:
            chain.use_account(key.account)
        return cls(chain, Signer(key.private_key), open_payer_store(database_url))

    @property
    def address(self) -> str:
        return self.signer.address

    def flush(self) -> None:
        """Store the receipts received since the last voucher was recorded."""
        if self._unsaved:
            self.store.record_receipts(self._unsaved)
            self._unsaved = []

    def close(self) -> None:
        """Store pending receipts and release the HTTP connections (the store's engine
        belongs to the caller)."""
        try:
            self.flush()
        finally:
            self.http.close()

    def __enter__(self) -> Payer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def domain(self) -> Domain:
        if self._domain is None:
            self._domain = Domain(self.chain.chain_id(), self.chain.address)
        return self._domain

    # -- signers --------------------------------------------------------------------------

    def add_voucher_signer(self, channel_id: bytes, signer: Signer) -> None:
        """Sign this channel's vouchers (and close requests, access) with ``signer``: the
        channel's on-chain voucher signer, checked before its first use."""
        self._voucher_signers[channel_id] = signer

    def load_voucher_signer(self, channel_id: bytes, password: Callable[[], str]) -> bool:
        """Use the voucher signer the store remembers for the channel, if its keystore is
        here (``password`` is asked only then). False when the channel has none we hold."""
        remembered = self.store.voucher_signer(channel_id)
        if remembered is None:
            return False
        address, keystore = remembered
        if keystore is None:
            return False
        if not Path(keystore).is_file():
            log.warning("voucher signer %s of %s: keystore %s is missing; the payer key signs",
                        address, _hex(channel_id), keystore)
            return False
        signer = Signer(load_key(keystore, password()).private_key)
        if signer.address != address:
            raise ConfigError(f"keystore {keystore} holds {signer.address}, not {address}")
        self.add_voucher_signer(channel_id, signer)
        return True

    def signer_for(self, channel_id: bytes) -> Signer:
        """The key that signs for the channel: its voucher signer when we hold it."""
        signer = self._voucher_signers.get(channel_id)
        if signer is None:
            return self.signer
        ch = self._channel(channel_id)
        if ch.voucher_signer != signer.address:
            raise ConfigError(
                f"channel {_hex(channel_id)} has voucher signer {ch.voucher_signer}, not the "
                f"key held for it ({signer.address})"
            )
        return signer

    # -- on chain -------------------------------------------------------------------------

    def open_channel(
        self,
        payee: str,
        amount: int,
        *,
        token: str = ZERO_ADDRESS,
        challenge_period: int,
        permit: bool = False,
        salt: bytes | None = None,
        voucher_signer: Signer | str | None = None,
        voucher_signer_keystore: str | None = None,
    ) -> bytes:
        """Open and fund a channel to ``payee``; returns its id (known before mining).

        ``voucher_signer``: a ``Signer`` this client holds (its vouchers then need no wallet
        signature; remembered in the store, with ``voucher_signer_keystore`` if given), or the
        address of a key held elsewhere, or None (only the payer signs).
        """
        salt = salt or secrets.token_bytes(32)
        signer_address = (
            voucher_signer.address if isinstance(voucher_signer, Signer)
            else voucher_signer or ZERO_ADDRESS
        )
        if permit:
            channel_id, _ = self.chain.open_with_permit(
                payee, amount, token=token, challenge_period=challenge_period, salt=salt,
                voucher_signer=signer_address,
            )
        else:
            channel_id, _ = self.chain.open(
                payee, amount, token=token, challenge_period=challenge_period, salt=salt,
                voucher_signer=signer_address,
            )
        channel_id = bytes(channel_id)
        self._channels.pop(channel_id, None)
        if isinstance(voucher_signer, Signer):
            self.store.remember_voucher_signer(
                channel_id, voucher_signer.address, voucher_signer_keystore
            )
            self.add_voucher_signer(channel_id, voucher_signer)
        return channel_id

    def cooperative_close(self, service_url: str, channel_id: bytes) -> TxResult:
        """Send a ``CloseRequest`` for the latest receipted amount, check the payee's
        ``CloseConsent`` and close on chain with it before its deadline."""
        ch = self._channel(channel_id, refresh=True)
        amount = self._settled_amount(service_url, channel_id)
        path = f"/v1/channels/{_hex(channel_id)}/close"
        for attempt in (1, 2):
            request = CloseRequest(channel_id, amount)
            signature = self.signer_for(channel_id).sign(self.domain, request)
            try:
                body = self._request("POST", service_url, path, json={
                    "cumulative_amount": str(amount), "signature": _hex(signature)})
                break
            except StaleVoucher:
                if attempt == 2:
                    raise
                amount = self.resync(service_url, channel_id)
        got = parse_amount(_field(body, "cumulative_amount"))
        deadline = parse_uint64(_field(body, "deadline"), "deadline")
        consent = parse_signature(_field(body, "signature"))
        if got != amount:
            raise ServiceError(f"close consent is for {got}, we asked for {amount}")
        self._require_signed(CloseConsent(channel_id, amount, deadline), consent, ch.payee,
                             f"close consent for {amount} on {_hex(channel_id)}")
        voucher_sig = self.signer_for(channel_id).sign(self.domain, Voucher(channel_id, amount))
        return self.chain.cooperative_close(channel_id, amount, deadline, voucher_sig, consent)

    def _settled_amount(self, service_url: str, channel_id: bytes) -> int:
        """Our latest amount the service acknowledged (resynced if a voucher is unanswered)."""
        self.flush()
        latest = self.store.latest_voucher(channel_id)
        signed = latest[0] if latest else 0
        receipted = self.store.latest_receipt_amount(channel_id)
        return self.resync(service_url, channel_id) if signed > receipted else receipted

    # -- paying ---------------------------------------------------------------------------

    def pay(self, service_url: str, channel_id: bytes, task_id: str, amount: int) -> PaidReceipt:
        """Pay ``amount`` for ``task_id``; returns the verified receipt (stored)."""
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            raise InvalidAmount(f"payment amount must be a positive int, got {amount!r}")
        parse_task_id(task_id)  # refused before anything is signed
        ch = self._channel(channel_id)
        if ch.status is not ChannelStatus.OPEN:
            raise ChannelNotOpen(
                f"channel {_hex(channel_id)} is {ch.status.name.lower()}, not open",
                channel=_hex(channel_id), status=ch.status.name.lower())
        signer = self.signer_for(channel_id)
        # Taken out while this voucher is in flight: an error anywhere below leaves the
        # channel unknown, so the next payment reads the store and resyncs.
        base = self._settled.pop(channel_id, None)
        if base is None:
            # A voucher we signed but never got a receipt for (crash, timeout): ask the
            # service where it stands before extending anything.
            base = self._settled_amount(service_url, channel_id)
        for attempt in (1, 2):
            cumulative = base + amount
            if cumulative > ch.deposit:
                ch = self._channel(channel_id, refresh=True)  # maybe topped up meanwhile
                if cumulative > ch.deposit:
                    raise ExceedsDeposit(
                        f"paying {amount} on {_hex(channel_id)} needs cumulative {cumulative}, "
                        f"above the deposit {ch.deposit}", deposit=ch.deposit)
            # RFC 6979 signatures are deterministic: a voucher for an amount we signed before
            # is that very voucher again, never a second one for the same cumulative amount.
            signature = signer.sign(self.domain, Voucher(channel_id, cumulative))
            # Durable before it leaves the process: we must never forget a voucher we sent.
            # The receipts of the payments before it share its commit (one fsync): until
            # then a crash can lose only receipts, and only behind a stored voucher that is
            # higher than the stored receipts, which makes the next Payer on this store
            # resync them from the service before it pays (_settled_amount).
            self.store.record_voucher(channel_id, ch.payee, cumulative, signature,
                                      receipts=self._unsaved)
            self._unsaved = []
            try:
                body = self._request(
                    "POST", service_url, f"/v1/channels/{_hex(channel_id)}/payments",
                    json={"task_id": task_id, "amount": str(amount),
                          "cumulative_amount": str(cumulative), "signature": _hex(signature)},
                )
            except StaleVoucher as exc:
                if attempt == 2:
                    raise
                log.info("service rejected %d on %s as stale (current %s); resyncing",
                         cumulative, _hex(channel_id), exc.current)
                base = self.resync(service_url, channel_id)
                continue
            receipt = body.get("receipt") if isinstance(body, dict) else None
            paid = self._accept_receipt(
                ch, PaidReceipt(channel_id, task_id, amount, cumulative, b""), receipt)
            self._settled[channel_id] = cumulative
            return paid
        raise AssertionError("unreachable")  # pragma: no cover

    def _accept_receipt(self, ch: OnchainChannel, expected: PaidReceipt, got: Any) -> PaidReceipt:
        """Check a receipt is for exactly the payment we made and signed by the payee."""
        if not isinstance(got, dict):
            raise ServiceError(f"payment response has no receipt object: {str(got)[:200]}")
        message = expected.message
        fields = (
            parse_bytes32(_field(got, "channel_id")),
            parse_bytes32(_field(got, "task_id")),
            parse_amount(_field(got, "amount")),
            parse_amount(_field(got, "cumulative_amount")),
        )
        wanted = (message.channel_id, message.task_id, message.amount, message.cumulative_amount)
        if fields != wanted:
            raise ServiceError(
                f"receipt is for channel/task/amount/cumulative {_hex(fields[0])} / "
                f"{_hex(fields[1])} / {fields[2]} / {fields[3]}, expected {_hex(wanted[0])} / "
                f"{_hex(wanted[1])} / {wanted[2]} / {wanted[3]}"
            )
        signature = parse_signature(_field(got, "signature"))
        self._require_signed(message, signature, ch.payee, f"receipt for {expected.task_id!r}")
        # Stored with the next voucher's commit, or by flush()/close() (see pay).
        self._unsaved.append(StoredReceipt(
            expected.channel_id, expected.task_id, message.task_id, expected.amount,
            expected.cumulative_amount, signature,
        ))
        return PaidReceipt(expected.channel_id, expected.task_id, expected.amount,
                           expected.cumulative_amount, signature)

    # -- task requests --------------------------------------------------------------------

    def tasks(
        self, service_url: str, channel_id: bytes, status: str | None = None
    ) -> list[RequestedTask]:
        """The tasks the payee asked this channel to pay for, oldest first (``Access``)."""
        body = self._request(
            "GET", service_url, f"/v1/channels/{_hex(channel_id)}/tasks",
            params={"status": status} if status else None, access=channel_id,
        )
        items = body.get("tasks") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise ServiceError(f"task list has no tasks array: {str(body)[:200]}")
        out = []
        for item in items:
            task_id = parse_task_id(_field(item, "task_id"))
            if parse_bytes32(_field(item, "task_hash")) != task_id_hash(task_id):
                raise InvalidTaskId(f"task {task_id!r} comes with another task hash")
            out.append(RequestedTask(
                task_id=task_id,
                amount=parse_amount(_field(item, "amount")),
                description=str(_field(item, "description")),
                status=str(_field(item, "status")),
                requested_at=parse_uint64(_field(item, "requested_at"), "requested_at"),
            ))
        return out

    def pay_requested(self, service_url: str, channel_id: bytes) -> list[PaidReceipt]:
        """Pay every task the payee requested and that is not paid yet, each for exactly the
        amount asked, oldest first."""
        return [self.pay(service_url, channel_id, task.task_id, task.amount)
                for task in self.tasks(service_url, channel_id, "requested")]

    # -- resync ---------------------------------------------------------------------------

    def resync(self, service_url: str, channel_id: bytes) -> int:
        """Adopt the service's latest accepted voucher (if it is ours) and its receipts.

        Returns the service's accepted cumulative amount.
        """
        self._settled.pop(channel_id, None)
        self.flush()
        ch = self._channel(channel_id, refresh=True)
        view = self._request("GET", service_url, f"/v1/channels/{_hex(channel_id)}")
        latest = view.get("latest") if isinstance(view, dict) else None
        if not latest:
            return 0
        accepted = parse_amount(_field(latest, "cumulative_amount"))
        signature = parse_signature(_field(latest, "signature"))
        self._require_payer_side(ch, Voucher(channel_id, accepted), signature,
                                 f"service's latest voucher on {_hex(channel_id)} ({accepted})")
        self.store.record_voucher(channel_id, ch.payee, accepted, signature)
        for item in self.receipts(service_url, channel_id):
            try:
                self._adopt_receipt(ch, channel_id, item)
            except PieceworkError as exc:
                log.warning("ignoring receipt from the service: %s", exc)
        return accepted

    def receipts(self, service_url: str, channel_id: bytes) -> Iterator[dict[str, Any]]:
        """Every receipt the service holds for the channel, as JSON objects (``Access``)."""
        path = f"/v1/channels/{_hex(channel_id)}/receipts"
        after: str | None = None
        for _page in range(100_000):  # bounded: a hostile service cannot keep us here forever
            page = self._request("GET", service_url, path,
                                 params={"after": after} if after else None, access=channel_id)
            items = page.get("receipts") if isinstance(page, dict) else None
            yield from items if isinstance(items, list) else []
            following = page.get("next") if isinstance(page, dict) else None
            if not following or following == after:
                return
            after = str(following)

    def _adopt_receipt(self, ch: OnchainChannel, channel_id: bytes, item: Any) -> None:
        if parse_bytes32(_field(item, "channel_id")) != channel_id:
            raise ServiceError("a receipt for another channel in the channel's receipts")
        cumulative = parse_amount(_field(item, "cumulative_amount"))
        amount = parse_amount(_field(item, "amount"))
        task_hash = parse_bytes32(_field(item, "task_id"))
        signature = parse_signature(_field(item, "signature"))
        self._require_signed(Receipt(channel_id, cumulative, amount, task_hash), signature,
                             ch.payee, f"stored receipt at {cumulative}")
        # The receipt names the task by its hash; the string is only known for our own tasks.
        self.store.record_receipt(
            channel_id,
            task_id=_hex(task_hash),
            task_hash=task_hash,
            amount=amount,
            cumulative_amount=cumulative,
            receipt_signature=signature,
        )

    # -- plumbing -------------------------------------------------------------------------

    def access(self, channel_id: bytes, lifetime: int = _ACCESS_LIFETIME) -> str:
        """An ``Access`` credential (``<expires>.<signature>``) for the channel's private reads."""
        expires = int(time.time()) + lifetime
        signature = self.signer_for(channel_id).sign(self.domain, Access(channel_id, expires))
        return format_access(expires, signature)

    def _require_signed(
        self, message: Message, signature: bytes, expected: str, what: str
    ) -> None:
        """``InvalidSignature`` naming both addresses unless ``signature`` over ``message`` is
        ``expected``'s: every receipt and consent passes through here."""
        signer = recover(self.domain, message, signature)
        if signer != expected:
            raise InvalidSignature(f"{what} is signed by {signer}, not by {expected}",
                                   got=signer, expected=expected)

    def _require_payer_side(
        self, ch: OnchainChannel, message: Message, signature: bytes, what: str
    ) -> None:
        """Like ``_require_signed`` for what the payer side signs: the payer or the voucher
        signer (an adopted voucher may come from either)."""
        signer = recover(self.domain, message, signature)
        if signer not in (self.address, ch.voucher_signer) or signer == ZERO_ADDRESS:
            raise InvalidSignature(
                f"{what} is signed by {signer}, neither by {self.address} nor by the voucher "
                f"signer {ch.voucher_signer}", got=signer)

    def _channel(self, channel_id: bytes, *, refresh: bool = False) -> OnchainChannel:
        ch = None if refresh else self._channels.get(channel_id)
        if ch is None:
            ch = self.chain.get_channel(channel_id)
            if ch.status is ChannelStatus.NONE:
                raise ChannelNotOpen(
                    f"channel {_hex(channel_id)} does not exist on chain",
                    channel=_hex(channel_id),
                    status="none",
                )
            if ch.status is not ChannelStatus.CLOSED and ch.payer != self.address:
                raise ConfigError(
                    f"channel {_hex(channel_id)} belongs to payer {ch.payer}, "
                    f"not to this key ({self.address})"
                )
            self._channels[channel_id] = ch
        return ch

    def _request(
        self,
        method: str,
        base: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        access: bytes | None = None,
    ) -> Any:
        url = base.rstrip("/") + path
        headers = {"Authorization": f"Access {self.access(access)}"} if access else None
        try:
            response = self.http.request(method, url, json=json, params=params, headers=headers)
        except httpx.TimeoutException:
            raise ServiceUnavailable(
                f"payee service {base} timed out on {method} {path}", url=url
            ) from None
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(
                f"payee service {base} unreachable: {type(exc).__name__}", url=url
            ) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_success:
            return body
        raise problem_error(response.status_code, body, method, path)


_CODES: Final[dict[str, type[PieceworkError]]] = {
    "task_conflict": TaskConflict,
    "channel_not_open": ChannelNotOpen,
    "channel_closing_soon": ChannelNotOpen,
    "invalid_signature": InvalidSignature,
    "amount_mismatch": AmountMismatch,
    "token_not_accepted": TokenNotAccepted,
    "close_not_authorized": CloseNotAuthorized,
    "access_required": AccessRequired,
    "access_denied": AccessDenied,
}


def problem_error(status: int, body: Any, method: str, path: str) -> PieceworkError:
    """Map an RFC 9457 problem back onto the exception the service raised."""
    problem = body if isinstance(body, dict) else {}
    code = str(problem.get("code", ""))
    detail = str(problem.get("detail") or f"HTTP {status}")
    if code == "stale_voucher":
        current = str(problem.get("current_cumulative_amount"))
        return StaleVoucher(detail, current=int(current) if current.isdigit() else -1)
    if code == "exceeds_deposit":
        deposit = str(problem.get("deposit"))
        return ExceedsDeposit(detail, deposit=int(deposit) if deposit.isdigit() else -1)
    known = _CODES.get(code)
    if known is not None:
        return known(detail)
    if status in (502, 503, 504):
        return ServiceUnavailable(f"payee service: {detail} ({method} {path})", status=status)
    return ServiceError(
        f"payee service answered {status} {code or ''} on {method} {path}: {detail}",
        status=status,
        code=code,
    )


def _field(obj: Any, name: str) -> Any:
    if not isinstance(obj, dict) or name not in obj:
        raise ServiceError(f"response lacks {name!r}: {str(obj)[:200]}")
    return obj[name]


def _hex(b: bytes) -> str:
    return "0x" + b.hex()
