"""Channels: list (operator), read one, receipts (payer side), close consent, claim (operator)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from api.deps import OperatorDep, PayerSideDep, Runtime, RuntimeDep
from api.problems import ProblemError
from api.queries import list_channels
from api.schemas import (
    ADDRESS_PATTERN,
    AMOUNT_PATTERN,
    BYTES32_PATTERN,
    ChannelIdPath,
    ChannelPage,
    ChannelView,
    ClaimResult,
    CloseConsentBody,
    CloseRequestBody,
    LatestVoucher,
    OperatorReceiptBody,
    ReceiptBody,
    ReceiptList,
    problem_docs,
)
from channel.errors import UnknownChannel
from channel.messages import parse_address, parse_amount, parse_bytes32
from channel.payee import SignedReceipt
from channel.state import ChannelStatus, OnchainChannel, PayeeChannelState

router = APIRouter(prefix="/v1/channels", tags=["channels"])

Limit = Annotated[int, Query(ge=1, le=500, description="Page size.")]
_STATUS_NAMES: dict[str, ChannelStatus] = {
    "open": ChannelStatus.OPEN,
    "closing": ChannelStatus.CLOSING,
    "closed": ChannelStatus.CLOSED,
}


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


def _view(state: PayeeChannelState, onchain: OnchainChannel | None = None) -> ChannelView:
    chain: OnchainChannel | PayeeChannelState = onchain if onchain is not None else state
    latest = (
        LatestVoucher(
            cumulative_amount=str(state.accepted), signature=_hex(state.voucher_signature)
        )
        if state.voucher_signature is not None
        else None
    )
    return ChannelView(
        channel_id=_hex(state.channel_id),
        payer=chain.payer,
        payee=chain.payee,
        token=chain.token,
        voucher_signer=state.voucher_signer,
        deposit=str(chain.deposit),
        claimed=str(chain.claimed),
        challenge_period=chain.challenge_period,
        closes_at=chain.closes_at,
        status=chain.status.name.lower(),
        latest=latest,
    )


def _ours(runtime: Runtime, channel_id: bytes) -> PayeeChannelState:
    """The stored channel if it pays one of our payees; else ``UnknownChannel`` (404)."""
    state = runtime.store.channel(channel_id)
    if state is None or state.payee not in runtime.payees:
        raise UnknownChannel(f"unknown channel {_hex(channel_id)}", channel=_hex(channel_id))
    return state


@router.get(
    "",
    response_model=ChannelPage,
    responses=problem_docs(401, 403, 422),
    summary="List the payee's channels (operator)",
)
def channels(
    runtime: RuntimeDep,
    _: OperatorDep,
    limit: Limit = 100,
    cursor: Annotated[
        str | None,
        Query(max_length=80, description="next_cursor of the previous page (opaque).",
              json_schema_extra={"pattern": BYTES32_PATTERN}),
    ] = None,
    status: Annotated[Literal["open", "closing", "closed"] | None, Query()] = None,
    payer: Annotated[
        str | None, Query(max_length=80, json_schema_extra={"pattern": ADDRESS_PATTERN})
    ] = None,
) -> ChannelPage:
    """Channels paying this service's payees, ordered by id, as the store mirrors them.

    Operator only: the list reveals every client of the payee.
    """
    after = parse_bytes32(cursor) if cursor is not None else None
    rows, next_id = list_channels(
        runtime.engine,
        payees=runtime.payees,
        limit=limit,
        after=after,
        status=_STATUS_NAMES[status] if status is not None else None,
        payer=parse_address(payer) if payer is not None else None,
    )
    return ChannelPage(
        items=[_view(s) for s in rows], next_cursor=_hex(next_id) if next_id else None
    )


@router.get(
    "/{channel_id}",
    response_model=ChannelView,
    responses=problem_docs(404, 422, 503),
    summary="On-chain state and the latest accepted voucher",
)
def channel(channel_id: ChannelIdPath, runtime: RuntimeDep) -> ChannelView:
    """The channel as the store mirrors it (the watcher keeps it current), plus the latest
    voucher this service accepted (null before the first payment). Unauthenticated, so it
    never costs a node read for a mirrored channel (issue 11 item 6); a channel not mirrored
    yet is fetched once, and an id the chain does not know is remembered for a while."""
    cid = parse_bytes32(channel_id)
    state = runtime.store.channel(cid)
    if state is None:
        # First sight of the channel: the service fetches and mirrors it (or 404s).
        state = runtime.service.latest(cid)
    if state.payee not in runtime.payees:
        raise UnknownChannel(f"unknown channel {channel_id}", channel=channel_id)
    return _view(state)


def receipt_body(receipt: SignedReceipt) -> ReceiptBody:
    """A receipt in the protocol's JSON shape (the one conversion, also for tasks)."""
    return ReceiptBody(**receipt.as_json())


@router.get(
    "/{channel_id}/receipts",
    response_model=ReceiptList,
    responses=problem_docs(401, 403, 404, 422),
    summary="Receipts of a channel in ascending cumulative order (payer side)",
)
def receipts(
    channel_id: ChannelIdPath,
    runtime: RuntimeDep,
    _: PayerSideDep,
    request: Request,
    after: Annotated[
        str | None,
        Query(max_length=78, description="Only receipts whose cumulative amount is greater "
              "(the `next` of the previous page).",
              json_schema_extra={"pattern": AMOUNT_PATTERN}),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size.")] = 500,
) -> ReceiptList:
    """Every receipt issued on the channel, at most 500 per page, so a payer that lost its
    state can rebuild it and prove any task's amount. Private to the channel's payer side
    (an ``Access`` signature) and the operator."""
    start = parse_amount(after) if after is not None else None
    if _is_operator(request):
        # The bearer token was checked by PayerSideDep: add the accounting fields.
        from channel.claims import claim_transactions  # noqa: PLC0415 - one hunk here
        state = runtime.service.ours(channel_id)
        stored, next_after = runtime.store.receipts(state.channel_id, after=start, limit=limit)
        claims = claim_transactions(
            runtime.engine, state.channel_id, [p.cumulative_amount for p in stored]
        )
        return ReceiptList(
            receipts=[
                OperatorReceiptBody(
                    **SignedReceipt.of(p).as_json(), task=p.task_id,
                    created_at=int(p.created_at), claim_tx=tx,
                )
                for p, tx in zip(stored, claims, strict=True)
            ],
            next=str(next_after) if next_after is not None else None,
        )
    page, next_after = runtime.service.receipts(channel_id, after=start, limit=limit)
    return ReceiptList(
        receipts=[receipt_body(r) for r in page],
        next=str(next_after) if next_after is not None else None,
    )


def _is_operator(request: Request) -> bool:
    scheme = request.headers.get("authorization", "").split(" ", 1)[0]
    return scheme.lower() == "bearer"


@router.post(
    "/{channel_id}/close",
    response_model=CloseConsentBody,
    responses=problem_docs(403, 404, 409, 422, 503),
    summary="The payee's CloseConsent, for a CloseRequest of the payer side",
)
def close(
    channel_id: ChannelIdPath, body: CloseRequestBody, runtime: RuntimeDep
) -> CloseConsentBody:
    """Signs ``CloseConsent(channelId, cumulativeAmount, deadline)`` for the latest accepted
    amount, when the ``CloseRequest`` for it is signed by the payer or the voucher signer
    (403 ``close_not_authorized`` otherwise, and nothing changes; 409 ``stale_voucher`` with
    ``current_cumulative_amount`` for another amount). ``deadline`` is the latest block's
    timestamp plus the service's setting (at most one hour). Until a block later than the
    deadline exists the channel takes no payment (409 ``channel_not_open``) and the same request
    gets the same consent; after it, payments resume and a new request gets a new consent."""
    consent = runtime.service.close(channel_id, body.cumulative_amount, body.signature)
    return CloseConsentBody(
        cumulative_amount=str(consent.cumulative_amount),
        deadline=consent.deadline,
        signature=_hex(consent.signature),
    )


@router.post(
    "/{channel_id}/claim",
    response_model=ClaimResult,
    responses=problem_docs(401, 403, 404, 409, 422, 502, 503, 504),
    summary="Claim the latest accepted voucher on chain now (operator)",
)
def claim(channel_id: ChannelIdPath, runtime: RuntimeDep, _: OperatorDep) -> ClaimResult:
    """Sends ``claim(channelId, latest cumulative amount, payer signature)`` and waits for the
    receipt. 409 ``nothing_to_claim`` when no voucher above ``claimed`` is held."""
    cid = parse_bytes32(channel_id)
    state = _ours(runtime, cid)
    if state.voucher_signature is None or state.accepted <= state.claimed:
        raise ProblemError(
            409,
            "nothing_to_claim",
            f"no accepted voucher above the claimed {state.claimed}",
            claimed=state.claimed,
            accepted=state.accepted,
        )
    if runtime.claim is None:
        raise ProblemError(503, "chain_not_configured", "this service has no chain client")
    tx_hash = runtime.claim(cid, state.accepted, state.voucher_signature)
    return ClaimResult(
        channel_id=_hex(cid), cumulative_amount=str(state.accepted), tx_hash=_hex(tx_hash)
    )
