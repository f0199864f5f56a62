"""Task requests: the freelancer asks (operator), the client sees what is asked (payer side)."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from api.deps import OperatorDep, PayerSideDep, RuntimeDep
from api.routes.channels import receipt_body
from api.schemas import ChannelIdPath, NewTask, TaskBody, TaskCreated, TaskList, problem_docs
from channel.payee import SignedReceipt
from channel.store import StoredTask

router = APIRouter(prefix="/v1/channels", tags=["tasks"])


def task_body(task: StoredTask) -> TaskBody:
    return TaskBody(
        task_id=task.task_id,
        task_hash="0x" + task.task_hash.hex(),
        amount=str(task.amount),
        description=task.description,
        status="paid" if task.status == "paid" else "requested",
        requested_at=task.requested_at,
        receipt=receipt_body(SignedReceipt.of(task.receipt)) if task.receipt else None,
    )


@router.post(
    "/{channel_id}/tasks",
    status_code=201,
    response_model=TaskCreated,
    responses={
        200: {"model": TaskCreated, "description": "The same request again: the stored task."},
        **problem_docs(401, 403, 404, 409, 422, 503),
    },
    summary="Request payment for a finished task (operator)",
)
def request_task(
    channel_id: ChannelIdPath, body: NewTask, runtime: RuntimeDep, _: OperatorDep
) -> JSONResponse:
    """Ask the channel's client to pay ``amount`` for ``task_id``. 201 with the new task; the
    same request again 200 with the stored one; the same ``task_id`` with another amount or
    description (or a task already paid without a request) 409 ``task_conflict``. A payment
    for a requested task must be for exactly its amount (422 ``amount_mismatch``) and marks
    it paid."""
    task, created = runtime.service.request_task(
        channel_id, body.task_id, body.amount, body.description, int(time.time())
    )
    answer = TaskCreated(task=task_body(task)).model_dump(mode="json")
    if created:
        runtime.events.publish("task", {"channel_id": "0x" + task.channel_id.hex(), **answer})
    return JSONResponse(
        answer,
        status_code=201 if created else 200,
    )


@router.get(
    "/{channel_id}/tasks",
    response_model=TaskList,
    responses=problem_docs(401, 403, 404, 422),
    summary="The channel's requested tasks, oldest first (payer side)",
)
def tasks(
    channel_id: ChannelIdPath,
    runtime: RuntimeDep,
    _: PayerSideDep,
    status: Annotated[Literal["requested", "paid"] | None, Query()] = None,
) -> TaskList:
    """What the freelancer asked to be paid for, with each paid task's receipt. Private to
    the channel's payer side (an ``Access`` signature) and the operator."""
    return TaskList(tasks=[task_body(t) for t in runtime.service.tasks(channel_id, status)])
