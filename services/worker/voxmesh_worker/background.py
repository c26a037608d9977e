"""Background work of one call: subagent tasks started by async tools (seed guide 5.11.6).

An async tool returns ``in_progress`` at once and the conversation goes on. The subagents
service publishes the task's terminal status once on the session's result subject (a JetStream
stream, deduplicated by task id); this class collects the results and hands them to the
session, which speaks them at the next turn boundary. A barge-in cancels the interruptible
ones.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import grpc
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from voxmesh import subjects
from voxmesh.agent import SubagentTool
from voxmesh.errors import error_from_rpc
from voxmesh.v1 import common_pb2, llm_pb2, subagents_pb2, subagents_pb2_grpc
from voxmesh_worker.tools import StartTask

log = logging.getLogger("voxmesh.worker.background")
TaskState = subagents_pb2.TaskStatus.State


@dataclass
class BackgroundTask:
    """A task an async tool started, waiting for its result."""

    task_id: str
    call_id: str
    tool: str
    interruptible: bool


def result_message(task: BackgroundTask, status: subagents_pb2.TaskStatus
                   ) -> llm_pb2.ToolResultMessage:
    """The task's outcome as the tool result that replaces the call's placeholder."""
    if status.state == TaskState.STATE_SUCCEEDED:
        content: dict[str, Any] = {"status": "ok",
                                   "result": json.loads(status.result_json or "null")}
    elif status.state == TaskState.STATE_CANCELLED:
        content = {"status": "cancelled", "error": "the caller interrupted"}
    else:
        content = {"status": "error", "error": status.error.message or "the task failed"}
    return llm_pb2.ToolResultMessage(call_id=task.call_id, name=task.tool,
                                     content_json=json.dumps(content))


def spoken_result(result: llm_pb2.ToolResultMessage) -> str:
    """What the agent says when a background result arrives ("" for nothing).

    Spoken as the subagent found it, not rephrased by the conversation model: asked to restate
    a late result, the local 0.5B model repeated its earlier "still looking" line (greedy, 3 of
    3 calls), so the finding itself is what the caller hears.
    """
    content = json.loads(result.content_json)
    status = content.get("status")
    if status == "cancelled":
        return ""
    if status != "ok":
        return "Sorry, I couldn't find that out just now."
    found = content.get("result")
    if isinstance(found, dict) and found.get("passages"):
        top = str(found["passages"][0].get("text", "")).strip()
        sentences = re.split(r"(?<=[.!?])\s+", top)
        return "Here's what I found. " + " ".join(sentences[:2])
    if isinstance(found, dict):
        return str(found.get("answer") or found.get("summary") or "")
    return str(found or "")


class BackgroundTasks:
    """Starts, tracks, cancels and collects one session's subagent tasks."""

    def __init__(self, session_id: str, nc: NatsClient,
                 stub: subagents_pb2_grpc.SubagentsStub | None) -> None:
        """Creates the tracker; :meth:`start` subscribes to the session's results."""
        self._session_id = session_id
        self._nc = nc
        self._stub = stub
        self._running: dict[str, BackgroundTask] = {}
        self.finished: asyncio.Queue[tuple[BackgroundTask, subagents_pb2.TaskStatus]] = (
            asyncio.Queue())
        self._subscription: Any = None

    @property
    def enabled(self) -> bool:
        """False when no subagents service is configured."""
        return self._stub is not None

    async def start(self) -> None:
        """Subscribes to the session's task results (only new ones: tasks start after)."""
        if self._stub is None:
            return
        self._subscription = await self._nc.jetstream().subscribe(
            subjects.task_result(self._session_id), cb=self._on_result, ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW))

    async def stop(self) -> None:
        """Unsubscribes; tasks still running are cancelled (the call is over)."""
        if self._subscription is not None:
            await self._subscription.unsubscribe()
        await self.cancel(only_interruptible=False)

    def starter(self, turn: common_pb2.TurnRef) -> Any:
        """For a tool round: given a call id, a :data:`StartTask` bound to that call."""
        def for_call(call_id: str) -> StartTask:
            async def start(spec: SubagentTool, arguments: dict[str, Any],
                            interruptible: bool) -> str:
                return await self._start_task(turn, call_id, spec, arguments, interruptible)
            return start
        return for_call

    async def _start_task(self, turn: common_pb2.TurnRef, call_id: str, spec: SubagentTool,
                          arguments: dict[str, Any], interruptible: bool) -> str:
        assert self._stub is not None
        # The id is derived from the call, so a retried start cannot create a second task.
        task_id = f"{self._session_id}-{call_id}"
        await self._stub.StartTask(subagents_pb2.StartTaskRequest(
            turn=turn, task_type=spec.task, arguments_json=json.dumps(arguments),
            task_id=task_id, interruptible=interruptible), timeout=5)
        self._running[task_id] = BackgroundTask(task_id, call_id, spec.task, interruptible)
        log.info("session %s: started %s task %s", self._session_id, spec.task, task_id)
        return task_id

    async def _on_result(self, msg: Msg) -> None:
        status = subagents_pb2.TaskStatus()
        try:
            status.ParseFromString(msg.data)
        except Exception:  # noqa: BLE001 - a bad message must not break the call
            log.warning("session %s: unreadable task result", self._session_id)
            return
        task = self._running.pop(status.task_id, None)
        if task is not None:  # unknown: cancelled here already, or delivered twice
            await self.finished.put((task, status))

    async def cancel(self, *, only_interruptible: bool = True) -> list[llm_pb2.ToolResultMessage]:
        """Cancels running tasks (barge-in: the interruptible ones); returns their results."""
        cancelled = [task for task in self._running.values()
                     if task.interruptible or not only_interruptible]
        results = []
        for task in cancelled:
            self._running.pop(task.task_id, None)
            try:
                assert self._stub is not None
                await self._stub.CancelTask(subagents_pb2.CancelTaskRequest(
                    task_id=task.task_id, reason="the caller interrupted"), timeout=2)
            except grpc.RpcError as exc:
                log.warning("cancelling task %s failed: %s", task.task_id,
                            error_from_rpc(exc).message)
            status = subagents_pb2.TaskStatus(task_id=task.task_id,
                                              state=TaskState.STATE_CANCELLED)
            results.append(result_message(task, status))
        return results
