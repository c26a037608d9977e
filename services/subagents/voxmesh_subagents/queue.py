"""The JetStream side of tasks: streams, the task message, results and dead letters.

* stream ``VOXMESH_TASKS`` (work queue): ``voxmesh.tasks.<type>``, queued tasks (JSON), read by
  one durable pull consumer that every replica shares;
* stream ``VOXMESH_TASK_RESULTS``: ``voxmesh.session.<id>.task_result``, one terminal
  ``TaskStatus`` (protobuf) per task;
* stream ``VOXMESH_TASKS_DLQ``: ``voxmesh.tasks_dlq.<type>``, dead letters with the reason;
* KV bucket ``voxmesh_tasks``: task records (JSON), key = task id.

Task messages carry ``Nats-Msg-Id: <task id>`` and results ``Nats-Msg-Id: <task id>:result``, so
a publish repeated within the duplicate window is stored once.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.client import JetStreamContext
from nats.js.errors import BadRequestError
from nats.js.kv import KeyValue

from voxmesh import subjects
from voxmesh.errors import InvalidInputError
from voxmesh_subagents.handlers.base import COMPONENT, TaskHandler
from voxmesh_subagents.records import TaskRecord, TaskState, TaskStore
from voxmesh_subagents.settings import SubagentsSettings

log = logging.getLogger("voxmesh.subagents.queue")

#: Unix time (seconds) StartTask published the task; pickup latency is measured from it.
HEADER_PUBLISHED_AT = "Voxmesh-Published-At"
#: Dead letters: stable reason (e.g. ``MALFORMED_JSON``), a readable detail, where it came from.
HEADER_DLQ_REASON = "Voxmesh-Dlq-Reason"
HEADER_DLQ_DETAIL = "Voxmesh-Dlq-Detail"
HEADER_ORIGINAL_SUBJECT = "Voxmesh-Original-Subject"
HEADER_ORIGINAL_SEQ = "Voxmesh-Original-Seq"
HEADER_TASK_ID = "Voxmesh-Task-Id"
MSG_ID = "Nats-Msg-Id"
#: Headers of the task message that are not copied onto a dead letter (JetStream's own).
_NOT_COPIED = {MSG_ID, "Nats-Expected-Stream"}

TASK_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
#: Subject tokens are safe for task types; "cancel" is taken by the cancel broadcast.
TASK_TYPE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
RESERVED_TYPES = frozenset({"cancel"})


class MalformedTaskError(Exception):
    """A task message that can never run: it goes to the dead-letter stream."""

    def __init__(self, reason: str, detail: str, task_id: str = "") -> None:
        """Creates the error with a stable reason and a readable detail."""
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.task_id = task_id


@dataclass(frozen=True)
class TaskMessage:
    """The body of a message on ``voxmesh.tasks.<type>`` (JSON)."""

    task_id: str
    type: str
    arguments: dict[str, Any]
    turn: dict[str, Any] = field(default_factory=dict)
    interruptible: bool = False

    def to_json(self) -> bytes:
        """Serialized message body."""
        return json.dumps({
            "task_id": self.task_id, "type": self.type, "arguments": self.arguments,
            "turn": self.turn, "interruptible": self.interruptible,
        }, separators=(",", ":")).encode()

    def new_record(self) -> TaskRecord:
        """The QUEUED record of a task that has none yet."""
        return TaskRecord(task_id=self.task_id, type=self.type, state=TaskState.QUEUED,
                          turn=self.turn, interruptible=self.interruptible,
                          updated_at=time.time())


def parse_task(subject: str, data: bytes, handlers: dict[str, TaskHandler]) -> TaskMessage:
    """Parses and validates a task message.

    Raises:
        MalformedTaskError: Bad JSON, a missing or mistyped field, an unknown task type, a type
            that differs from the subject's, or arguments that fail the type's schema.
    """
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedTaskError("MALFORMED_JSON", f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise MalformedTaskError("MALFORMED_JSON", "the body is not a JSON object")
    task_id = body.get("task_id")
    if not isinstance(task_id, str) or not TASK_ID.match(task_id):
        raise MalformedTaskError("MISSING_FIELD", "task_id is missing or not 1-100 of [A-Za-z0-9_-]")
    task_type = body.get("type")
    if not isinstance(task_type, str):
        raise MalformedTaskError("MISSING_FIELD", "type is missing", task_id)
    if subject != subjects.task(task_type):
        raise MalformedTaskError("TYPE_MISMATCH", f"type {task_type!r} on subject {subject}",
                                 task_id)
    handler = handlers.get(task_type)
    if handler is None:
        raise MalformedTaskError("TASK_TYPE_UNKNOWN", f"no handler for {task_type!r}", task_id)
    arguments = body.get("arguments")
    if not isinstance(arguments, dict):
        raise MalformedTaskError("MISSING_FIELD", "arguments is missing or not an object",
                                 task_id)
    turn = body.get("turn", {})
    if not isinstance(turn, dict) or not SESSION_ID.match(str(turn.get("session_id", ""))):
        raise MalformedTaskError("MISSING_FIELD", "turn.session_id is missing or invalid",
                                 task_id)
    try:
        handler.validate(arguments)
    except InvalidInputError as exc:
        raise MalformedTaskError("ARGUMENTS_INVALID", exc.message, task_id) from None
    return TaskMessage(task_id=task_id, type=task_type, arguments=arguments, turn=turn,
                       interruptible=bool(body.get("interruptible", False)))


async def ensure_streams(js: JetStreamContext, settings: SubagentsSettings) -> KeyValue:
    """Creates (or updates) the task, result and dead-letter streams; returns the task bucket."""
    await _ensure_stream(js, StreamConfig(
        name=subjects.TASKS_STREAM,
        description="Voxmesh subagent tasks (work queue)",
        subjects=[subjects.TASKS_ALL],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        max_age=settings.task_ttl_hours * 3600,
        duplicate_window=settings.duplicate_window_s,
    ))
    await _ensure_stream(js, StreamConfig(
        name=subjects.TASK_RESULTS_STREAM,
        description="Voxmesh subagent results, one per task, on the session's subject",
        subjects=[subjects.TASK_RESULTS_ALL],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=settings.result_ttl_hours * 3600,
        duplicate_window=settings.duplicate_window_s,
    ))
    await _ensure_stream(js, StreamConfig(
        name=subjects.TASKS_DLQ_STREAM,
        description="Voxmesh subagent tasks that can never run, with the reason",
        subjects=[subjects.TASKS_DLQ_ALL],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=settings.dead_letter_ttl_days * 86400,
        duplicate_window=settings.duplicate_window_s,
    ))
    return await js.create_key_value(KeyValueConfig(
        bucket=subjects.TASKS_BUCKET, history=1, ttl=settings.task_ttl_hours * 3600))


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        await js.add_stream(config)
    except BadRequestError as exc:
        # 10058: the stream exists with another configuration (settings changed): update it.
        if exc.err_code != 10058:
            raise
        await js.update_stream(config)


async def publish_result(js: JetStreamContext, record: TaskRecord) -> None:
    """Publishes a terminal status on the session's result subject, once per task id."""
    await js.publish(
        subjects.task_result(record.session_id),
        record.to_status().SerializeToString(),
        stream=subjects.TASK_RESULTS_STREAM,
        headers={MSG_ID: f"{record.task_id}:result", HEADER_TASK_ID: record.task_id},
    )


async def deliver_result(js: JetStreamContext, store: TaskStore, record: TaskRecord) -> None:
    """Publishes a terminal record's status unless that was done, then marks it delivered.

    Called after the compare-and-set into the terminal state, by whoever made it and by anyone
    who later finds the task terminal but not delivered (its finisher died in between); the
    result's ``Nats-Msg-Id`` makes the second publish a no-op within the duplicate window.
    """
    if not record.state.terminal or record.delivered:
        return
    await publish_result(js, record)
    await store.transition(record.task_id, lambda current: (
        current.changed(delivered=True)
        if current.state.terminal and not current.delivered else None))


async def dead_letter(
    js: JetStreamContext, *, subject: str, data: bytes, headers: dict[str, str] | None,
    stream_seq: int, reason: str, detail: str, task_id: str = "",
) -> None:
    """Copies a task message to ``voxmesh.tasks_dlq.<type>`` with why it landed there.

    The copy is de-duplicated on the original's stream sequence, so a dead letter written
    twice (the replica died before it could terminate the original) is stored once.
    """
    task_type = subject.rsplit(".", 1)[-1] if subject.startswith("voxmesh.tasks.") else "unknown"
    copied = {k: v for k, v in (headers or {}).items() if k not in _NOT_COPIED}
    copied.update({
        MSG_ID: f"dlq:{stream_seq}",
        HEADER_DLQ_REASON: reason,
        # Header values are one line; a detail may quote the bad payload.
        HEADER_DLQ_DETAIL: " ".join(detail.split())[:512],
        HEADER_ORIGINAL_SUBJECT: subject,
        HEADER_ORIGINAL_SEQ: str(stream_seq),
    })
    if task_id:
        copied[HEADER_TASK_ID] = task_id
    await js.publish(subjects.task_dlq(task_type), data, stream=subjects.TASKS_DLQ_STREAM,
                     headers=copied)
    log.warning("dead letter: %s seq %d: %s %s", subject, stream_seq, reason, detail)


def failure(reason: str, message: str, *, retryable: bool = False, field: str = "") -> dict[
        str, Any]:
    """The ``error`` of a task record (the fields of ``ErrorDetail``)."""
    return {"reason": reason, "message": message, "retryable": retryable, "field": field,
            "component": COMPONENT}
