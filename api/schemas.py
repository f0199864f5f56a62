"""Request and response bodies of the HTTP API v1 (PROTOCOL.md), with an example for each.

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

__all__ = [
    "ChannelIdPath",
    "ChannelPage",
    "ChannelView",
    "ClaimResult",
    "CloseConsentBody",
    "Health",
    "Info",
    "LatestVoucher",
    "NewPayment",
    "PaymentCreated",
    "Problem",
    "ReceiptBody",
    "ReceiptPage",
    "StoredReceipt",
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
EX_VIEW: Final[dict[str, Any]] = {
    "channel_id": EX_CHANNEL,
    "payer": EX_PAYER,
    "payee": EX_PAYEE,
    "token": EX_ETH,
    "deposit": "10000000000000000",
    "claimed": "0",
    "challenge_period": 86400,
    "closes_at": 0,
    "status": "open",
    "latest": {"cumulative_amount": "3000000000000000", "signature": EX_SIG},
}


def _amount(description: str, example: str) -> Any:
    return Field(
        max_length=78,
        description=description,
        examples=[example],
        json_schema_extra={"pattern": AMOUNT_PATTERN},
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

    task_id: str = Field(
        min_length=1,
        max_length=MAX_TASK_ID_LENGTH,
        description="The task id string; its bytes32 is keccak256(utf8(task_id)).",
        examples=["task-42"],
    )
    amount: str = _amount("Price of this task in base units (wei/token units).", "1000000000000000")
    cumulative_amount: str = _amount("The voucher's cumulative amount.", "3000000000000000")
    signature: str = Field(
        max_length=132,
        description="The payer's EIP-712 Voucher signature (65 bytes, v = 27/28, low s).",
        examples=[EX_SIG],
        json_schema_extra={"pattern": SIGNATURE_PATTERN},
    )


class ReceiptBody(_Out):
    """The payee's signed ``Receipt(channelId, cumulativeAmount, taskId)``."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "channel_id": EX_CHANNEL,
                    "cumulative_amount": "3000000000000000",
                    "task_id": EX_TASK,
                    "signature": EX_SIG,
                }
            ]
        },
    )

    channel_id: str
    cumulative_amount: str
    task_id: str = Field(description="bytes32 keccak256(utf8(task_id)): the Receipt's taskId.")
    signature: str = Field(description="The payee's EIP-712 Receipt signature.")


class PaymentCreated(_Out):
    """201 answer of POST /payments, also for an idempotent repeat of the same payment."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [{"receipt": ReceiptBody.model_json_schema()["examples"][0]}]
        },
    )

    receipt: ReceiptBody


class CloseConsentBody(_Out):
    """The payee's ``CloseConsent`` for the latest accepted voucher (for ``cooperativeClose``)."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [{"cumulative_amount": "3000000000000000", "signature": EX_SIG}]
        },
    )

    cumulative_amount: str
    signature: str


class Info(_Out):
    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {"chain_id": 31337, "contract": EX_PAYER, "payees": [EX_PAYEE], "version": "1"}
            ]
        },
    )

    chain_id: int
    contract: str = Field(description="The PaymentChannels contract (EIP-712 verifyingContract).")
    payees: list[str] = Field(description="Payee addresses this service accepts vouchers for.")
    version: str = "1"


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


class StoredReceipt(_Out):
    """One accepted payment: its receipt plus what a payer needs to resync after a crash."""

    channel_id: str
    cumulative_amount: str
    amount: str = Field(description="What this payment added to the cumulative amount.")
    task_hash: str = Field(description="keccak256(utf8(task id)): the Receipt's taskId.")
    task_id: str | None = Field(
        description="The task id string as sent; only shown to the operator (privacy model)."
    )
    signature: str = Field(description="The payee's Receipt signature.")


class ReceiptPage(_Out):
    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {
                            "channel_id": EX_CHANNEL,
                            "cumulative_amount": "3000000000000000",
                            "amount": "1000000000000000",
                            "task_hash": EX_TASK,
                            "task_id": None,
                            "signature": EX_SIG,
                        }
                    ],
                    "next_cursor": None,
                }
            ]
        },
    )

    items: list[StoredReceipt]
    next_cursor: str | None


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
