"""The payer's side: open channels from a wallet, pay tasks with vouchers over HTTP, close.

A payment is: sign ``Voucher(channel, previous + amount)``, **store it before sending** (so a
crash never leaves a voucher out there that we do not know about), POST it to the payee
service, check that the receipt recovers to the channel's payee and names our task and amount,
store the receipt. Signatures are deterministic (RFC 6979), so the payer can never produce two
different vouchers for one cumulative amount: asking again yields the byte-identical voucher.

On ``409`` the service is ahead of or behind us (another device with the same key, or a
voucher of ours that never arrived): ``resync`` reads the service's latest accepted voucher,
checks it carries *our* signature, adopts it and its receipts, and the payment is retried once
on top of it. Errors from the service (RFC 9457 ``code``) map back onto ``channel.errors``.

    PieceworkError
    └── ServiceError            the payee service answered something unusable
        └── ServiceUnavailable  it could not be reached or timed out
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any

import httpx

from channel.chain import ZERO_ADDRESS, ChainClient, TxResult
from channel.errors import (
    ChannelNotOpen,
    ConfigError,
    ExceedsDeposit,
    InvalidAmount,
    PieceworkError,
    StaleVoucher,
    TaskConflict,
    WrongSigner,
)
from channel.keys import SigningKey
from channel.messages import (
    CloseConsent,
    Domain,
    Message,
    Receipt,
    Voucher,
    parse_amount,
    parse_bytes32,
    parse_signature,
    task_id_hash,
)
from channel.signing import Signer, recover
from channel.state import ChannelStatus, OnchainChannel
from channel.store import PayerStore, make_engine, metadata, migrate

__all__ = ["PaidReceipt", "Payer", "ServiceError", "ServiceUnavailable", "open_payer_store"]

log = logging.getLogger(__name__)


class ServiceError(PieceworkError):
    """The payee service answered with an error we cannot map, or a malformed body."""

    code = "service_error"


class ServiceUnavailable(ServiceError):  # noqa: N818 - named like the rest of channel.errors
    code = "service_unavailable"


@dataclass(frozen=True)
class PaidReceipt:
    """The payee's signed acknowledgement that ``cumulative_amount`` pays ``task_id``."""

    channel_id: bytes
    task_id: str
    amount: int
    cumulative_amount: int
    signature: bytes


def open_payer_store(database_url: str) -> PayerStore:
    """The payer's tables at ``database_url``, created or migrated to the current schema."""
    engine = make_engine(database_url)
    try:
        migrate(engine)
    except Exception as exc:  # no migrations shipped (yet): the models are the schema
        log.debug("migrations unavailable (%s); creating tables from the models", exc)
        metadata.create_all(engine)
    return PayerStore(engine)


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
        self.http = http or httpx.Client(timeout=timeout)
        self._domain: Domain | None = None
        self._channels: dict[bytes, OnchainChannel] = {}

    @classmethod
    def from_url(cls, chain: ChainClient, key: SigningKey, database_url: str) -> Payer:
        if chain.account is None:
            chain.use_account(key.account)
        return cls(chain, Signer(key.private_key), open_payer_store(database_url))

    @property
    def address(self) -> str:
        return self.signer.address

    def close(self) -> None:
        """Release the HTTP connections (the store's engine belongs to the caller)."""
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
    ) -> bytes:
        """Open and fund a channel to ``payee``; returns its id (known before mining)."""
        salt = salt or secrets.token_bytes(32)
        if permit:
            channel_id, _ = self.chain.open_with_permit(
                payee, amount, token=token, challenge_period=challenge_period, salt=salt
            )
        else:
            channel_id, _ = self.chain.open(
                payee, amount, token=token, challenge_period=challenge_period, salt=salt
            )
        self._channels.pop(channel_id, None)
        return bytes(channel_id)

    def cooperative_close(self, service_url: str, channel_id: bytes) -> TxResult:
        """Ask the service for its CloseConsent and close on chain at that amount."""
        ch = self._channel(channel_id, refresh=True)
        body = self._request("POST", service_url, f"/v1/channels/{_hex(channel_id)}/close")
        amount = parse_amount(_field(body, "cumulative_amount"))
        consent = parse_signature(_field(body, "signature"))
        self._require_signed(CloseConsent(channel_id, amount), consent, ch.payee,
                             f"close consent for {amount} on {_hex(channel_id)}")
        latest = self.store.latest_voucher(channel_id)
        signed = latest[0] if latest else 0
        if amount > signed:
            # The service claims more than we remember signing: only its copy of our own
            # signature (checked in resync) can justify that.
            signed = self.resync(service_url, channel_id)
            if amount > signed:
                raise StaleVoucher(
                    f"service wants to close {_hex(channel_id)} at {amount}, above our latest "
                    f"voucher {signed}",
                    current=signed,
                )
        voucher_sig = self.signer.sign(self.domain, Voucher(channel_id, amount))
        return self.chain.cooperative_close(channel_id, amount, voucher_sig, consent)

    # -- paying ---------------------------------------------------------------------------

    def pay(self, service_url: str, channel_id: bytes, task_id: str, amount: int) -> PaidReceipt:
        """Pay ``amount`` for ``task_id``; returns the verified receipt (stored)."""
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            raise InvalidAmount(f"payment amount must be a positive int, got {amount!r}")
        task_hash = task_id_hash(task_id)
        ch = self._channel(channel_id)
        if ch.status is not ChannelStatus.OPEN:
            raise ChannelNotOpen(
                f"channel {_hex(channel_id)} is {ch.status.name.lower()}, not open",
                channel=_hex(channel_id), status=ch.status.name.lower())
        latest = self.store.latest_voucher(channel_id)
        signed = latest[0] if latest else 0
        receipted = self.store.latest_receipt_amount(channel_id)
        # A voucher we signed but never got a receipt for (crash, timeout): ask the service
        # where it stands before extending anything.
        base = self.resync(service_url, channel_id) if signed > receipted else signed
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
            signature = self.signer.sign(self.domain, Voucher(channel_id, cumulative))
            # Durable before it leaves the process: we must never forget a voucher we sent.
            self.store.record_voucher(channel_id, ch.payee, cumulative, signature)
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
            return self._accept_receipt(ch, channel_id, task_id, task_hash, amount, cumulative,
                                        body)
        raise AssertionError("unreachable")  # pragma: no cover

    def _accept_receipt(  # noqa: PLR0917 - private, called once with every value named
        self,
        ch: OnchainChannel,
        channel_id: bytes,
        task_id: str,
        task_hash: bytes,
        amount: int,
        cumulative: int,
        body: Any,
    ) -> PaidReceipt:
        receipt = body.get("receipt") if isinstance(body, dict) else None
        if not isinstance(receipt, dict):
            raise ServiceError(f"payment response has no receipt object: {str(body)[:200]}")
        got_amount = parse_amount(_field(receipt, "cumulative_amount"))
        got_channel = parse_bytes32(_field(receipt, "channel_id"))
        got_task = receipt.get("task_id")
        # PROTOCOL.md's receipt names the task; accept the id string or its bytes32 hash.
        task_ok = got_task in (task_id, _hex(task_hash))
        if got_channel != channel_id or got_amount != cumulative or not task_ok:
            raise ServiceError(
                f"receipt is for channel {_hex(got_channel)} / {got_amount} / "
                f"{receipt.get('task_id')!r}, expected {_hex(channel_id)} / {cumulative} / "
                f"{task_id!r}"
            )
        signature = parse_signature(_field(receipt, "signature"))
        self._require_signed(Receipt(channel_id, cumulative, task_hash), signature, ch.payee,
                             f"receipt for {task_id!r}")
        self.store.record_receipt(
            channel_id,
            task_id=task_id,
            task_hash=task_hash,
            amount=amount,
            cumulative_amount=cumulative,
            receipt_signature=signature,
        )
        return PaidReceipt(channel_id, task_id, amount, cumulative, signature)

    def resync(self, service_url: str, channel_id: bytes) -> int:
        """Adopt the service's latest accepted voucher (if it is ours) and its receipts.

        Returns the service's accepted cumulative amount.
        """
        ch = self._channel(channel_id, refresh=True)
        view = self._request("GET", service_url, f"/v1/channels/{_hex(channel_id)}")
        latest = view.get("latest") if isinstance(view, dict) else None
        if not latest:
            return 0
        accepted = parse_amount(_field(latest, "cumulative_amount"))
        signature = parse_signature(_field(latest, "signature"))
        self._require_signed(Voucher(channel_id, accepted), signature, self.address,
                             f"service's latest voucher on {_hex(channel_id)} ({accepted})")
        self.store.record_voucher(channel_id, ch.payee, accepted, signature)
        self._adopt_receipts(service_url, ch, channel_id)
        return accepted

    def _adopt_receipts(self, service_url: str, ch: OnchainChannel, channel_id: bytes) -> None:
        path = f"/v1/channels/{_hex(channel_id)}/receipts"
        cursor: str | None = None
        for _page in range(1000):  # bounded: a hostile service cannot keep us here forever
            page = self._request(
                "GET", service_url, path, params={"cursor": cursor} if cursor else None
            )
            for item in page.get("items", []) if isinstance(page, dict) else []:
                try:
                    self._adopt_receipt(ch, channel_id, item)
                except PieceworkError as exc:
                    log.warning("ignoring receipt from the service: %s", exc)
            cursor = page.get("next_cursor") if isinstance(page, dict) else None
            if not cursor:
                return

    def _adopt_receipt(self, ch: OnchainChannel, channel_id: bytes, item: dict[str, Any]) -> None:
        cumulative = parse_amount(_field(item, "cumulative_amount"))
        task_hash = parse_bytes32(_field(item, "task_hash"))
        signature = parse_signature(_field(item, "signature"))
        self._require_signed(Receipt(channel_id, cumulative, task_hash), signature, ch.payee,
                             f"stored receipt at {cumulative}")
        task_id = item.get("task_id") or _hex(task_hash)
        self.store.record_receipt(
            channel_id,
            task_id=str(task_id),
            task_hash=task_hash,
            amount=parse_amount(_field(item, "amount")),
            cumulative_amount=cumulative,
            receipt_signature=signature,
        )

    # -- plumbing -------------------------------------------------------------------------

    def _require_signed(
        self, message: Message, signature: bytes, expected: str, what: str
    ) -> None:
        """``WrongSigner`` naming both addresses unless ``signature`` over ``message`` is
        ``expected``'s: every receipt, consent and adopted voucher passes through here."""
        signer = recover(self.domain, message, signature)
        if signer != expected:
            raise WrongSigner(f"{what} is signed by {signer}, not by {expected}",
                              got=signer, expected=expected)

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
    ) -> Any:
        url = base.rstrip("/") + path
        try:
            response = self.http.request(method, url, json=json, params=params)
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
        raise _problem_error(response.status_code, body, method, path)


def _problem_error(status: int, body: Any, method: str, path: str) -> PieceworkError:
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
    if code == "task_conflict":
        return TaskConflict(detail)
    if code in ("channel_not_open", "channel_closing_soon"):
        return ChannelNotOpen(detail)
    if code == "wrong_signer":
        return WrongSigner(detail)
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
