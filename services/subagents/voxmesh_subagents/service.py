"""gRPC servicer of ``voxmesh.v1.Subagents``: start, read, cancel and watch tasks."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator

import grpc
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.js.client import JetStreamContext
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from voxmesh import subjects
from voxmesh.errors import (
    InvalidInputError,
    NotFoundError,
    OutOfOrderError,
    UnavailableError,
    VoxmeshError,
    abort,
)
from voxmesh.telemetry import context_carrier, extract, tracer
from voxmesh.v1 import subagents_pb2, subagents_pb2_grpc
from voxmesh_subagents.handlers.base import COMPONENT, TaskHandler
from voxmesh_subagents.queue import (
    HEADER_PUBLISHED_AT,
    MSG_ID,
    RESERVED_TYPES,
    SESSION_ID,
    TASK_ID,
    TaskMessage,
    deliver_result,
    failure,
)
from voxmesh_subagents.records import TaskRecord, TaskState, TaskStore
from voxmesh_subagents.settings import SubagentsSettings

log = logging.getLogger("voxmesh.subagents")
_tracer = tracer("subagents")


class SubagentsServicer(subagents_pb2_grpc.SubagentsServicer):
    """Queues tasks on JetStream and reports them from the task bucket."""

    def __init__(self, handlers: dict[str, TaskHandler], settings: SubagentsSettings) -> None:
        """Creates the servicer; :meth:`attach` gives it NATS once connected."""
        self._handlers = handlers
        self._settings = settings
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._store: TaskStore | None = None

    def attach(self, nc: NatsClient, js: JetStreamContext, store: TaskStore) -> None:
        """Sets the NATS connection, JetStream context and task store."""
        self._nc, self._js, self._store = nc, js, store

    def _connected(self) -> tuple[NatsClient, JetStreamContext, TaskStore]:
        if self._nc is None or self._js is None or self._store is None:
            raise UnavailableError("not connected to NATS yet", reason="TASK_STORE_UNAVAILABLE",
                                   component=COMPONENT)
        return self._nc, self._js, self._store

    # -- StartTask -----------------------------------------------------------------------

    def _task_message(self, request: subagents_pb2.StartTaskRequest) -> TaskMessage:
        task_id = request.task_id or uuid.uuid4().hex
        if not TASK_ID.match(task_id):
            raise InvalidInputError("task_id must be 1-100 characters of letters, digits, '-' "
                                    "or '_'", reason="TASK_ID_INVALID", field="task_id",
                                    component=COMPONENT)
        if not SESSION_ID.match(request.turn.session_id):
            raise InvalidInputError("turn.session_id must be 1-128 characters of letters, "
                                    "digits, '-' or '_'", reason="SESSION_ID_INVALID",
                                    field="turn.session_id", component=COMPONENT)
        handler = self._handlers.get(request.task_type)
        if handler is None or request.task_type in RESERVED_TYPES:
            raise InvalidInputError(
                f"unknown task type {request.task_type!r}; known: "
                f"{', '.join(sorted(self._handlers))}",
                reason="TASK_TYPE_UNKNOWN", field="task_type", component=COMPONENT)
        size = len(request.arguments_json.encode())
        if size > self._settings.max_arguments_bytes:
            raise InvalidInputError(
                f"arguments_json has {size} bytes; the limit is "
                f"{self._settings.max_arguments_bytes}",
                reason="ARGUMENTS_TOO_LARGE", field="arguments_json", component=COMPONENT)
        try:
            arguments = json.loads(request.arguments_json or "{}")
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"arguments_json is not JSON: {exc}",
                                    reason="ARGUMENTS_INVALID", field="arguments_json",
                                    component=COMPONENT) from None
        if not isinstance(arguments, dict):
            raise InvalidInputError("arguments_json must be a JSON object",
                                    reason="ARGUMENTS_INVALID", field="arguments_json",
                                    component=COMPONENT)
        handler.validate(arguments)
        turn = request.turn
        return TaskMessage(
            task_id=task_id, type=request.task_type, arguments=arguments,
            turn={"session_id": turn.session_id, "turn_index": turn.turn_index,
                  "turn_id": turn.turn_id},
            interruptible=request.interruptible)

    async def StartTask(  # noqa: N802 - gRPC method name
        self, request: subagents_pb2.StartTaskRequest, context: grpc.aio.ServicerContext
    ) -> subagents_pb2.TaskStatus:
        """See ``subagents.proto``. Starting an existing task id returns that task."""
        try:
            message = self._task_message(request)
            _, js, store = self._connected()
            span = _tracer.start_span(
                "subagents.start_task", context=extract(context.invocation_metadata()),
                kind=SpanKind.SERVER,
                attributes={"voxmesh.task.id": message.task_id,
                            "voxmesh.task.type": message.type,
                            "voxmesh.session.id": request.turn.session_id,
                            "voxmesh.turn.index": request.turn.turn_index})
            with trace.use_span(span, end_on_exit=True):
                record, created = await store.create(message.new_record())
                span.set_attribute("voxmesh.task.created", created)
                # An existing QUEUED task is published again: if the first StartTask died
                # between the record and the publish, this is what queues it; otherwise the
                # message id makes it a no-op.
                if created or record.state == TaskState.QUEUED:
                    await self._publish(js, message)
        except VoxmeshError as exc:
            await abort(context, exc)
        return record.to_status()

    async def _publish(self, js: JetStreamContext, message: TaskMessage) -> None:
        headers = {MSG_ID: message.task_id, HEADER_PUBLISHED_AT: f"{time.time():.6f}",
                   **context_carrier()}
        try:
            await js.publish(subjects.task(message.type), message.to_json(),
                             stream=subjects.TASKS_STREAM, headers=headers)
        except (nats.errors.Error, TimeoutError) as exc:
            raise UnavailableError(f"task queue unreachable: {exc}",
                                   reason="TASK_QUEUE_UNAVAILABLE",
                                   component=COMPONENT) from exc

    # -- GetTask, CancelTask, WatchTask ---------------------------------------------------

    async def _require(self, task_id: str) -> TaskRecord:
        _validate_task_id(task_id)
        _, _, store = self._connected()
        found = await store.get(task_id)
        if found is None:
            raise _not_found(task_id)
        return found[0]

    async def GetTask(  # noqa: N802 - gRPC method name
        self, request: subagents_pb2.GetTaskRequest, context: grpc.aio.ServicerContext
    ) -> subagents_pb2.TaskStatus:
        """See ``subagents.proto``."""
        try:
            record = await self._require(request.task_id)
        except VoxmeshError as exc:
            await abort(context, exc)
        return record.to_status()

    async def CancelTask(  # noqa: N802 - gRPC method name
        self, request: subagents_pb2.CancelTaskRequest, context: grpc.aio.ServicerContext
    ) -> subagents_pb2.TaskStatus:
        """See ``subagents.proto``.

        A queued task is cancelled (and skipped when pulled); a running one only if it was
        started as interruptible (``TASK_NOT_INTERRUPTIBLE`` otherwise). Cancelling a
        finished task returns it unchanged.
        """
        refused = False

        def cancel(record: TaskRecord) -> TaskRecord | None:
            nonlocal refused
            refused = record.state == TaskState.RUNNING and not record.interruptible
            if record.state.terminal or refused:
                return None
            return record.changed(state=TaskState.CANCELLED, delivered=False, error=failure(
                "CANCELLED", request.reason or "cancelled by request"))

        try:
            _validate_task_id(request.task_id)
            nc, js, store = self._connected()
            outcome = await store.transition(request.task_id, cancel)
            if outcome is None:
                raise _not_found(request.task_id)
            record, changed = outcome
            if refused:
                raise OutOfOrderError(
                    f"task {request.task_id} is running and was not started as interruptible",
                    reason="TASK_NOT_INTERRUPTIBLE", field="task_id", component=COMPONENT)
            if changed:
                # Every replica listens; the one running the task stops it now.
                await nc.publish(subjects.task_cancel(request.task_id), b"")
            await deliver_result(js, store, record)
        except (nats.errors.Error, TimeoutError) as exc:
            await abort(context, UnavailableError(f"task queue unreachable: {exc}",
                                                  reason="TASK_QUEUE_UNAVAILABLE",
                                                  component=COMPONENT))
        except VoxmeshError as exc:
            await abort(context, exc)
        return record.to_status()

    async def WatchTask(  # noqa: N802 - gRPC method name
        self, request: subagents_pb2.GetTaskRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[subagents_pb2.TaskStatus]:
        """See ``subagents.proto``: the current status, then every change until terminal."""
        try:
            await self._require(request.task_id)
            _, _, store = self._connected()
        except VoxmeshError as exc:
            await abort(context, exc)
        last: subagents_pb2.TaskStatus | None = None
        async for record in store.watch(request.task_id):
            status = record.to_status()
            if status != last:
                yield status
                last = status
            if record.state.terminal:
                return


def _validate_task_id(task_id: str) -> None:
    if not TASK_ID.match(task_id):
        raise InvalidInputError("task_id must be 1-100 characters of letters, digits, '-' or '_'",
                                reason="TASK_ID_INVALID", field="task_id", component=COMPONENT)


def _not_found(task_id: str) -> NotFoundError:
    return NotFoundError(f"unknown task {task_id!r} (never started, or expired)",
                         reason="TASK_NOT_FOUND", field="task_id", component=COMPONENT)
