"""Request and response bodies of the HTTP API v2 (PROTOCOL.md), with an example for each.

Amounts travel as decimal strings (uint256 exceeds 2**53), ids and signatures as 0x hex.
Request fields are plain strict ``str`` with length caps: the caps bound the work done on
hostile input, and the real checks (exact lengths, checksums, low-s, canonical decimals) are
``channel.messages.parse_*``, so every malformed field gets that helper's stable ``code``
instead of a generic pydantic one. The ``pattern``s are documentation for client generators.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

from channel.messages import MAX_TASK_ID_LENGTH
from channel.payee import MAX_DESCRIPTION_LENGTH

__all__ = [
    "ChannelIdPath",
    "ChannelPage",
    "ChannelView",
    "ClaimResult",
    "CloseConsentBody",
    "CloseRequestBody",
    "Health",
    "Info",
    "LatestVoucher",
    "NewPayment",
    "NewTask",
    "PaymentCreated",
    "Problem",
    "ReceiptBody",
    "ReceiptList",
    "TaskBody",
    "TaskCreated",
    "TaskList",
    "TokenBody",
    "problem_docs",
]

AMOUNT_PATTERN: Final = r"^(0|[1-9][0-9]{0,77})$"
BYTES32_PATTERN: Final = r"^0x[0-9a-fA-F]{64}$"
ADDRESS_PATTERN: Final = r"^0x[0-9a-fA-F]{40}$"
SIGNATURE_PATTERN: Final = r"^0x[0-9a-fA-F]{130}$"

EX_CHANNEL: Final = "0x5b1f6c1dca4d6a0f0e8a3b8f0d83d7d0f5a0a9c2b8b17a2c54b6e1c6d4b9a0f1"
EX_SIG: Final = "0x" + "1b" * 32 + "2c" * 32 + "1b"
EX_PAYER: Final = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
EX_PAYEE: Final = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
EX_ETH: Final = "0x0000000000000000000000000000000000000000"
EX_TASK: Final = "0x3e3d4b0bd1d4e5ad2ad1c6e1f27a3a4a3f7d3dba0c0e4e0e3a6d5d2d1b7c3f2a"
EX_TX: Final = "0x9f1c4e5d0c5a1f3e7b2d8a6c4e0f1b3d5a7c9e1f3b5d7f9a1c3e5a7b9d1f3e5a"
EX_SIGNER: Final = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
EX_VIEW: Final[dict[str, Any]] = {
    "channel_id": EX_CHANNEL,
    "payer": EX_PAYER,
    "payee": EX_PAYEE,
    "token": EX_ETH,
    "voucher_signer": EX_SIGNER,
    "deposit": "10000000000000000",
    "claimed": "0",
    "challenge_period": 86400,
    "closes_at": 0,
    "status": "open",
    "latest": {"cumulative_amount": "3000000000000000", "signature": EX_SIG},
}
EX_RECEIPT: Final[dict[str, Any]] = {
    "channel_id": EX_CHANNEL,
    "task_id": EX_TASK,
    "amount": "1000000000000000",
    "cumulative_amount": "3000000000000000",
    "signature": EX_SIG,
}
EX_TASK_BODY: Final[dict[str, Any]] = {
    "task_id": "logo-42",
    "task_hash": EX_TASK,
    "amount": "1000000000000000",
    "description": "Logo draft, second round",
    "status": "paid",
    "requested_at": 1764489600,
    "receipt": EX_RECEIPT,
}


def _amount(description: str, example: str) -> Any:
    return Field(
        max_length=78,
        description=description,
        examples=[example],
        json_schema_extra={"pattern": AMOUNT_PATTERN},
    )


def _task_id() -> Any:
    # Lengths and characters are checked by channel.messages.parse_task_id (422
    # invalid_task_id, everywhere a task id is accepted), not by pydantic, whose generic
    # validation_error would hide the protocol's code; the body size limit bounds the work.
    return Field(
        description="The task id string: 1 to 256 Unicode code points, no control characters "
        "(Cc) or lone surrogates; its bytes32 is keccak256(utf8(task_id)).",
        examples=["task-42"],
        json_schema_extra={"minLength": 1, "maxLength": MAX_TASK_ID_LENGTH},
    )


def _signature(description: str) -> Any:
    return Field(
        max_length=132,
        description=description + " 65 bytes as 0x hex, v = 27/28, low s.",
        examples=[EX_SIG],
        json_schema_extra={"pattern": SIGNATURE_PATTERN},
    )


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class NewPayment(BaseModel):
    """A voucher paying one task: ``cumulative_amount`` = previous accepted + ``amount``."""

    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "task_id": "task-42",
                    "amount": "1000000000000000",
                    "cumulative_amount": "3000000000000000",
                    "signature": EX_SIG,
                }
            ]
        },
    )

    task_id: str = _task_id()
    amount: str = _amount("Price of this task in base units (wei/token units).", "1000000000000000")
    cumulative_amount: str = _amount("The voucher's cumulative amount.", "3000000000000000")
    signature: str = _signature(
        "The Voucher signature of the payer or of the channel's voucher signer."
    )


class ReceiptBody(_Out):
    """The payee's signed ``Receipt(channelId, cumulativeAmount, amount, taskId)``: one
    receipt proves what one task cost."""

    model_config = ConfigDict(frozen=True, json_schema_extra={"examples": [EX_RECEIPT]})

    channel_id: str
    task_id: str = Field(description="bytes32 keccak256(utf8(task_id)): the Receipt's taskId.")
    amount: str = Field(description="What this task paid, in base units.")
    cumulative_amount: str = Field(description="The voucher's cumulative amount.")
    signature: str = Field(description="The payee's EIP-712 Receipt signature.")


class PaymentCreated(_Out):
    """201 answer of POST /payments, also for an idempotent repeat of the same payment."""

    model_config = ConfigDict(
        frozen=True, json_schema_extra={"examples": [{"receipt": EX_RECEIPT}]}
    )

    receipt: ReceiptBody


class CloseRequestBody(BaseModel):
    """A ``CloseRequest(channelId, cumulativeAmount)`` signed by the payer or voucher signer."""

    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        json_schema_extra={
            "examples": [{"cumulative_amount": "3000000000000000", "signature": EX_SIG}]
        },
    )

    cumulative_amount: str = _amount(
        "The latest accepted cumulative amount, to close at.", "3000000000000000"
    )
    signature: str = _signature("The CloseRequest signature of the payer or voucher signer.")


class CloseConsentBody(_Out):
    """The payee's ``CloseConsent(channelId, cumulativeAmount, deadline)``: with the payer
    side's voucher for that amount, anyone can ``cooperativeClose`` until ``deadline``."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {"cumulative_amount": "3000000000000000", "deadline": 1764490500,
                 "signature": EX_SIG}
            ]
        },
    )

    cumulative_amount: str
    deadline: int = Field(description="Unix seconds, compared with block timestamps.")
    signature: str


class TokenBody(_Out):
    address: str = Field(description="ERC-20 address; the zero address is ETH.")
    symbol: str
    decimals: int
    min_deposit: str = Field(description="Least deposit a channel in this token must hold.")


class Info(_Out):
    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "version": "2",
                    "chain_id": 31337,
                    "contract": EX_PAYER,
                    "payees": [EX_PAYEE],
                    "min_challenge_period": 86400,
                    "tokens": [
                        {"address": EX_ETH, "symbol": "ETH", "decimals": 18,
                         "min_deposit": "0"},
                    ],
                }
            ]
        },
    )

    version: str = "2"
    chain_id: int
    contract: str = Field(description="The PaymentChannels contract (EIP-712 verifyingContract).")
    payees: list[str] = Field(description="Payee addresses this service accepts vouchers for.")
    min_challenge_period: int = Field(description="Seconds; shorter channels are refused.")
    tokens: list[TokenBody] = Field(description="The tokens channels may be in.")
    rpc_url: str | None = Field(
        None,
        description="A public RPC URL for wallet_addEthereumChain (PIECEWORK_PUBLIC_RPC_URL); "
        "absent when unset.",
    )


class LatestVoucher(_Out):
    cumulative_amount: str
    signature: str


class ChannelView(_Out):
    """On-chain state of a channel plus the latest voucher this service accepted for it."""

    model_config = ConfigDict(frozen=True, json_schema_extra={"examples": [EX_VIEW]})

    channel_id: str
    payer: str
    payee: str
    token: str = Field(description="ERC-20 token address; the zero address means ETH.")
    voucher_signer: str = Field(
        description="May sign vouchers besides the payer; the zero address when none."
    )
    deposit: str
    claimed: str
    challenge_period: int = Field(description="Seconds.")
    closes_at: int = Field(description="Unix time; 0 while open.")
    status: Literal["none", "open", "closing", "closed"]
    latest: LatestVoucher | None = Field(description="Latest accepted voucher, null if none.")


class ChannelPage(_Out):
    model_config = ConfigDict(
        frozen=True, json_schema_extra={"examples": [{"items": [EX_VIEW], "next_cursor": None}]}
    )

    items: list[ChannelView]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null at end.")


class OperatorReceiptBody(ReceiptBody):
    """A receipt as the operator sees it (bearer token): what accounting needs besides the
    signed fields (web/SERVICE-NEEDS.md item 7)."""

    task: str = Field(description="The task id string as paid (task_id is its bytes32 hash).")
    created_at: int = Field(description="Unix seconds when the payment was durably accepted.")
    claim_tx: str | None = Field(
        description="The first transaction whose Claimed / ChannelClosed covered this "
        "cumulative amount; null while unclaimed."
    )


class ReceiptList(_Out):
    """A page of receipts in ascending cumulative order."""

    model_config = ConfigDict(
        frozen=True, json_schema_extra={"examples": [{"receipts": [EX_RECEIPT], "next": None}]}
    )

    receipts: list[OperatorReceiptBody | ReceiptBody] = Field(
        description="Payer-side callers get the protocol's receipt; the operator (bearer "
        "token) also gets task, created_at and claim_tx."
    )
    next: str | None = Field(
        description="Pass as ?after= for the next page (a cumulative amount); null at the end."
    )


class NewTask(BaseModel):
    """The payee asks the payer to pay ``amount`` for a finished task."""

    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"task_id": "logo-42", "amount": "1000000000000000",
                 "description": "Logo draft, second round"}
            ]
        },
    )

    task_id: str = _task_id()
    amount: str = _amount("What the task costs, in base units.", "1000000000000000")
    description: str = Field(
        description=f"Plain text, at most {MAX_DESCRIPTION_LENGTH} characters (line breaks and "
        "tabs allowed, no other control characters).",
        examples=["Logo draft, second round"],
        json_schema_extra={"maxLength": MAX_DESCRIPTION_LENGTH},
    )


class TaskBody(_Out):
    model_config = ConfigDict(frozen=True, json_schema_extra={"examples": [EX_TASK_BODY]})

    task_id: str = Field(description="The task id string.")
    task_hash: str = Field(description="keccak256(utf8(task_id)), the receipts' taskId.")
    amount: str
    description: str
    status: Literal["requested", "paid"]
    requested_at: int = Field(description="Unix seconds (the service's clock).")
    receipt: ReceiptBody | None = Field(description="The receipt that paid it; null until paid.")


class TaskCreated(_Out):
    model_config = ConfigDict(
        frozen=True, json_schema_extra={"examples": [{"task": EX_TASK_BODY}]}
    )

    task: TaskBody


class TaskList(_Out):
    model_config = ConfigDict(
        frozen=True, json_schema_extra={"examples": [{"tasks": [EX_TASK_BODY]}]}
    )

    tasks: list[TaskBody]


class ClaimResult(_Out):
    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [{"channel_id": EX_CHANNEL, "cumulative_amount": "3000000000000000",
                          "tx_hash": EX_TX}]
        },
    )

    channel_id: str
    cumulative_amount: str
    tx_hash: str


class Health(_Out):
    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={"examples": [{"status": "ok", "database": "ok", "node": "ok"}]},
    )

    status: Literal["ok", "degraded"]
    database: Literal["ok", "down"]
    node: Literal["ok", "down"]
    head_block: int | None = None
    head_age_seconds: float | None = Field(
        None, description="Seconds since the node's latest block was made.")
    mirror_block: int | None = Field(None, description="The watcher's last followed block.")
    mirror_lag_blocks: int | None = None
    mirror_lag_seconds: int | None = Field(
        None, description="Block time between the watcher's cursor and the latest block.")
    wallet: dict[str, str | bool] | None = None
    """The hot wallet that pays the watchtower's gas: address, balance (wei), low."""


class Problem(BaseModel):
    """RFC 9457 problem details; ``code`` is the stable machine-readable error."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "type": "urn:piecework:problem:stale_voucher",
                    "title": "Conflict",
                    "status": 409,
                    "detail": "voucher does not extend the latest accepted one",
                    "code": "stale_voucher",
                    "current_cumulative_amount": "3000000000000000",
                }
            ]
        },
    )

    type: str
    title: str
    status: int
    detail: str
    code: str


ChannelIdPath = Annotated[
    str,
    Path(
        max_length=80,
        description="bytes32 channel id, 0x + 64 hex digits.",
        examples=[EX_CHANNEL],
        json_schema_extra={"pattern": BYTES32_PATTERN},
    ),
]


_PROBLEM_REF: Final = {"$ref": "#/components/schemas/Problem"}


def problem_docs(*statuses: int | str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries saying these statuses answer with problem+json."""
    return {
        status: {
            "model": Problem,
            "content": {"application/problem+json": {"schema": _PROBLEM_REF}},
            "description": "RFC 9457 problem details; branch on `code`.",
        }
        for status in statuses
    }
