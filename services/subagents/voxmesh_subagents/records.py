"""Task records in the JetStream KV bucket ``voxmesh_tasks`` (key = task id, value = JSON).

Every state change is a compare-and-set on the key's revision, so two replicas (or a replica and
CancelTask) never both move a task out of the same state: the loser re-reads and re-decides.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

import nats.errors
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from voxmesh.errors import UnavailableError
from voxmesh.v1 import common_pb2, subagents_pb2

COMPONENT = "subagents"
_CAS_ATTEMPTS = 20
#: NATS down, reconnecting or slow: the store is unavailable (retryable).
_STORE_ERRORS = (nats.errors.Error, OSError, TimeoutError)


class TaskState(StrEnum):
    """Lifecycle of a task: QUEUED ⇄ RUNNING → SUCCEEDED | FAILED | CANCELLED."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        """True for the states a task never leaves."""
        return self in (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED)


_PROTO_STATE = {
    TaskState.QUEUED: subagents_pb2.TaskStatus.STATE_QUEUED,
    TaskState.RUNNING: subagents_pb2.TaskStatus.STATE_RUNNING,
    TaskState.SUCCEEDED: subagents_pb2.TaskStatus.STATE_SUCCEEDED,
    TaskState.FAILED: subagents_pb2.TaskStatus.STATE_FAILED,
    TaskState.CANCELLED: subagents_pb2.TaskStatus.STATE_CANCELLED,
}


@dataclass(frozen=True)
class TaskRecord:
    """What the bucket holds about one task.

    Attributes:
        task_id: The key.
        type: Task type (handler name).
        state: Where the task is in its lifecycle.
        turn: ``{"session_id", "turn_index", "turn_id"}`` of the turn that started it.
        interruptible: CancelTask may stop it while it runs.
        attempts: Runs started so far (a crashed run counts).
        result: The handler's result (SUCCEEDED).
        error: ``ErrorDetail`` fields of the last failure, or why it was cancelled.
        updated_at: Unix time of the last change.
        msg_seq: Stream sequence of the queue message that owns the task's run; a second
            message for the same id (published after the duplicate window) is skipped.
        owner: Replica that ran it last.
        delivered: The terminal status was published to the session's result subject.
    """

    task_id: str
    type: str
    state: TaskState
    turn: dict[str, Any] = field(default_factory=dict)
    interruptible: bool = False
    attempts: int = 0
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    updated_at: float = 0.0
    msg_seq: int = 0
    owner: str = ""
    delivered: bool = False

    @property
    def session_id(self) -> str:
        """Session of the turn that started the task."""
        return str(self.turn.get("session_id", ""))

    def to_json(self) -> bytes:
        """Serialized form stored in the bucket."""
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> TaskRecord:
        """Parses a stored record; unknown keys (newer writers) are ignored."""
        raw = json.loads(data)
        known = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}
        known["state"] = TaskState(known["state"])
        return cls(**known)

    def changed(self, **changes: Any) -> TaskRecord:
        """A copy with ``changes`` applied and ``updated_at`` set to now."""
        return replace(self, updated_at=time.time(), **changes)

    def to_status(self) -> subagents_pb2.TaskStatus:
        """The record as the wire ``TaskStatus``."""
        status = subagents_pb2.TaskStatus(
            task_id=self.task_id,
            state=_PROTO_STATE[self.state],
            attempts=self.attempts,
            turn=common_pb2.TurnRef(
                session_id=self.session_id,
                turn_index=int(self.turn.get("turn_index", 0)),
                turn_id=str(self.turn.get("turn_id", ""))),
        )
        if self.result is not None:
            status.result_json = json.dumps(self.result)
        if self.error is not None:
            status.error.CopyFrom(common_pb2.ErrorDetail(
                reason=str(self.error.get("reason", "")),
                field=str(self.error.get("field", "")),
                retryable=bool(self.error.get("retryable", False)),
                component=str(self.error.get("component", COMPONENT)),
                message=str(self.error.get("message", ""))))
        return status


#: Decides the next record from the current one; None leaves it unchanged.
Change = Callable[[TaskRecord], TaskRecord | None]


class TaskStore:
    """Reads and changes task records with compare-and-set."""

    def __init__(self, bucket: KeyValue) -> None:
        """Wraps an opened KV bucket."""
        self._kv = bucket

    async def get(self, task_id: str) -> tuple[TaskRecord, int] | None:
        """The record and its revision, or None when the task is unknown (or expired)."""
        try:
            entry = await self._kv.get(task_id)
        except KeyNotFoundError:
            return None
        except _STORE_ERRORS as exc:
            raise _unavailable(exc) from exc
        if entry.value is None or entry.operation in ("DEL", "PURGE") or entry.revision is None:
            return None
        return TaskRecord.from_json(entry.value), entry.revision

    async def create(self, record: TaskRecord) -> tuple[TaskRecord, bool]:
        """Creates the record unless the id exists (the dedupe point of StartTask).

        Returns:
            The stored record and whether this call created it.
        """
        for _ in range(_CAS_ATTEMPTS):
            try:
                await self._kv.create(record.task_id, record.to_json())
                return record, True
            except KeyWrongLastSequenceError:
                current = await self.get(record.task_id)
                if current is not None:
                    return current[0], False
                # Deleted between the two calls: try to create again.
            except _STORE_ERRORS as exc:
                raise _unavailable(exc) from exc
        raise RuntimeError(f"task {record.task_id} was created and deleted concurrently")

    async def transition(self, task_id: str, change: Change) -> tuple[TaskRecord, bool] | None:
        """Applies ``change`` with compare-and-set, re-deciding when another writer won.

        Args:
            task_id: The task.
            change: Called with the current record (possibly several times).

        Returns:
            The record now stored and whether this call changed it; None for unknown tasks.
        """
        for _ in range(_CAS_ATTEMPTS):
            current = await self.get(task_id)
            if current is None:
                return None
            record, revision = current
            updated = change(record)
            if updated is None:
                return record, False
            try:
                await self._kv.update(task_id, updated.to_json(), last=revision)
                return updated, True
            except KeyWrongLastSequenceError:
                continue
            except _STORE_ERRORS as exc:
                raise _unavailable(exc) from exc
        raise RuntimeError(f"task {task_id} changed concurrently {_CAS_ATTEMPTS} times in a row")

    async def watch(self, task_id: str) -> AsyncIterator[TaskRecord]:
        """Yields the record now and after every change, until it is deleted or expires."""
        watcher = await self._kv.watch(task_id)
        try:
            async for entry in watcher:
                if entry is None:  # marks the end of the initial values
                    continue
                if entry.operation in ("DEL", "PURGE") or not entry.value:
                    return
                yield TaskRecord.from_json(entry.value)
        finally:
            await watcher.stop()


def _unavailable(exc: BaseException) -> UnavailableError:
    return UnavailableError(f"task store unreachable: {exc}", reason="TASK_STORE_UNAVAILABLE",
                            component=COMPONENT)
