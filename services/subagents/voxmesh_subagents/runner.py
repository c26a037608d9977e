"""The task consumer of one replica: pulls from the shared durable consumer and runs tasks.

Delivery is at least once; these rules make each task's outcome happen once:

* a run starts only after the record moved QUEUED/RUNNING → RUNNING by compare-and-set,
  binding the run to the message's stream sequence (a second message with the same task id is
  acknowledged and skipped);
* a running task signals progress every third of ``ack_wait``; when its replica dies the
  signals stop and JetStream redelivers the message to another replica, which takes over;
* the outcome is a compare-and-set into a terminal state; only its winner publishes the result
  (with ``Nats-Msg-Id``), and a task found terminal but undelivered is delivered then;
* the record counts attempts; the consumer allows one delivery more than ``max_attempts`` so
  that a task whose last run died is still seen, failed and dead-lettered. JetStream's
  max-deliveries advisory covers the rest (a replica that died during that last look).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from voxmesh import subjects
from voxmesh.errors import VoxmeshError
from voxmesh.metrics import meter
from voxmesh.telemetry import extract, tracer
from voxmesh_subagents.handlers.base import TaskContext, TaskHandler
from voxmesh_subagents.queue import (
    HEADER_PUBLISHED_AT,
    MalformedTaskError,
    TaskMessage,
    dead_letter,
    deliver_result,
    failure,
    parse_task,
)
from voxmesh_subagents.records import TaskRecord, TaskState, TaskStore
from voxmesh_subagents.settings import SubagentsSettings

log = logging.getLogger("voxmesh.subagents.runner")
_tracer = tracer("subagents")
_meter = meter("subagents")
_PICKUP = _meter.create_histogram(
    "voxmesh.subagents.pickup", unit="ms",
    description="StartTask publish to handler start, first attempts (attribute type)")
_RUN = _meter.create_histogram(
    "voxmesh.subagents.run", unit="ms", description="Handler run time (attributes type, outcome)")
_TASKS = _meter.create_counter(
    "voxmesh.subagents.tasks", description="Task deliveries by outcome (attributes type, outcome)")
#: Replicas share advisories through this queue group: one of them handles each.
ADVISORY_QUEUE = "voxmesh-subagents"


@dataclass
class _Running:
    """A handler run and why it was stopped, if it was."""

    task: asyncio.Task[dict[str, Any]]
    #: "cancelled" (CancelTask), "superseded" (finished elsewhere) or "handback" (drain).
    stop_reason: str = ""

    def stop(self, reason: str) -> None:
        if not self.task.done():
            self.stop_reason = reason
            self.task.cancel()


class TaskRunner:
    """Pulls tasks and runs them, up to ``max_concurrency`` at once."""

    def __init__(
        self, nc: NatsClient, js: JetStreamContext, store: TaskStore,
        handlers: dict[str, TaskHandler], settings: SubagentsSettings,
    ) -> None:
        """Creates the runner; :meth:`start` binds the consumer."""
        self._nc = nc
        self._js = js
        self._store = store
        self._handlers = handlers
        self._settings = settings
        self._running: dict[str, _Running] = {}
        self._handling: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._handing_back = False
        self._wake = asyncio.Event()
        self._pull_task: asyncio.Task[None] | None = None
        self._subs: list[Subscription] = []
        self._pull: JetStreamContext.PullSubscription | None = None

    async def start(self) -> None:
        """Creates (or updates) the durable consumer and starts pulling."""
        await self._js.add_consumer(subjects.TASKS_STREAM, ConsumerConfig(
            name=subjects.TASKS_CONSUMER,
            durable_name=subjects.TASKS_CONSUMER,
            filter_subject=subjects.TASKS_ALL,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self._settings.ack_wait_s,
            max_deliver=self._settings.max_attempts + 1,
            max_ack_pending=-1,
        ))
        self._pull = await self._js.pull_subscribe_bind(
            durable=subjects.TASKS_CONSUMER, stream=subjects.TASKS_STREAM)
        self._subs.append(await self._nc.subscribe(subjects.TASK_CANCEL_ALL, cb=self._on_cancel))
        self._subs.append(await self._nc.subscribe(
            subjects.TASKS_MAX_DELIVERIES, queue=ADVISORY_QUEUE, cb=self._on_max_deliveries))
        self._pull_task = asyncio.create_task(self._pull_loop(), name="subagents-pull")

    @property
    def running(self) -> int:
        """Tasks this replica is handling now."""
        return len(self._handling)

    async def drain(self, grace_s: float) -> None:
        """Stops pulling, lets running tasks finish for ``grace_s``, then hands the rest back.

        A handed-back task is negatively acknowledged without delay, so another replica
        starts it again at once.
        """
        self._stopping.set()
        self._wake.set()
        if self._pull_task is not None:
            await self._pull_task
        if self._handling:
            log.info("draining: waiting up to %.1fs for %d task(s)", grace_s, len(self._handling))
            _, pending = await asyncio.wait(set(self._handling), timeout=grace_s)
            if pending:
                self._handing_back = True
                for running in list(self._running.values()):
                    running.stop("handback")
                await asyncio.wait(pending, timeout=5.0)

    async def close(self) -> None:
        """Drains at once (if :meth:`drain` was not called) and drops the subscriptions."""
        if not self._stopping.is_set():
            await self.drain(0.0)
        for handling in list(self._handling):
            handling.cancel()
        if self._handling:
            await asyncio.wait(set(self._handling))
        for sub in self._subs:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        if self._pull is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._pull.unsubscribe()

    # -- intake --------------------------------------------------------------------------

    async def _pull_loop(self) -> None:
        assert self._pull is not None
        while not self._stopping.is_set():
            if len(self._handling) >= self._settings.max_concurrency:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                # One message per pull: a replica takes only what it can start now, the rest
                # stays queued for the others. The pull ends within fetch_timeout_s, so a drain
                # never leaves a pull open that the server would still answer.
                messages = await self._pull.fetch(1, timeout=self._settings.fetch_timeout_s)
            except nats.errors.TimeoutError:
                continue
            except nats.errors.Error as exc:
                log.warning("pull failed: %s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), 0.5)
                continue
            for msg in messages:
                if self._stopping.is_set():
                    await _quietly(msg.nak())  # arrived while draining: another replica takes it
                    continue
                handling = asyncio.create_task(self._handle(msg), name=f"subagents-{msg.subject}")
                self._handling.add(handling)
                handling.add_done_callback(self._handled)

    def _handled(self, handling: asyncio.Task[None]) -> None:
        self._handling.discard(handling)
        self._wake.set()
        if not handling.cancelled() and (exc := handling.exception()) is not None:
            log.error("task handling failed: %s", exc, exc_info=exc)

    async def _handle(self, msg: Msg) -> None:
        seq = msg.metadata.sequence.stream
        try:
            try:
                task = parse_task(msg.subject, msg.data, self._handlers)
            except MalformedTaskError as bad:
                await self._reject(msg, seq, bad)
                return
            await self._claim_and_run(msg, seq, task)
        except (VoxmeshError, nats.errors.Error, TimeoutError) as exc:
            # The store or JetStream is unreachable: leave the task for a later delivery.
            log.warning("task message %d: %s; retrying later", seq, exc)
            await _quietly(msg.nak(delay=self._settings.retry_backoff_s))

    async def _reject(self, msg: Msg, seq: int, bad: MalformedTaskError) -> None:
        await dead_letter(self._js, subject=msg.subject, data=msg.data, headers=msg.headers,
                          stream_seq=seq, reason=bad.reason, detail=bad.detail,
                          task_id=bad.task_id)
        await msg.term()
        _TASKS.add(1, {"type": _type_of(msg.subject), "outcome": "dead_lettered"})
        if bad.task_id:
            # A record created for this very message (or none): it can never run.
            await self._finish(bad.task_id, TaskState.FAILED, error=failure(
                bad.reason, bad.detail), only_seq=seq)

    async def _claim_and_run(self, msg: Msg, seq: int, task: TaskMessage) -> None:
        if await self._store.get(task.task_id) is None:
            # Published straight to the queue, not through StartTask.
            await self._store.create(task.new_record())
        decision = ""
        max_attempts = self._settings.max_attempts

        def claim(record: TaskRecord) -> TaskRecord | None:
            nonlocal decision
            if record.state.terminal:
                decision = "done"
            elif record.state == TaskState.RUNNING and record.msg_seq not in (0, seq):
                decision = "duplicate"
            elif record.attempts >= max_attempts:
                decision = "exhausted"
            else:
                decision = "run"
                return record.changed(state=TaskState.RUNNING, attempts=record.attempts + 1,
                                      msg_seq=seq, owner=self._settings.replica_id)
            return None

        claimed = await self._store.transition(task.task_id, claim)
        if claimed is None:  # the record expired meanwhile
            await msg.ack()
            return
        record, _ = claimed
        if decision == "done":
            await deliver_result(self._js, self._store, record)
            await msg.ack()
            _TASKS.add(1, {"type": task.type, "outcome": "skipped"})
        elif decision == "duplicate":
            log.info("task %s: message %d duplicates message %d; skipped", task.task_id, seq,
                     record.msg_seq)
            await msg.ack()
            _TASKS.add(1, {"type": task.type, "outcome": "duplicate"})
        elif decision == "exhausted":
            last = (record.error or {}).get("message", "its replica stopped mid-run")
            detail = f"{record.attempts} attempts failed; last: {last}"
            # Dead letter first: once FAILED is visible, the letter exists (and writing it
            # again after a crash here is de-duplicated).
            await dead_letter(self._js, subject=msg.subject, data=msg.data, headers=msg.headers,
                              stream_seq=seq, reason="ATTEMPTS_EXHAUSTED", detail=detail,
                              task_id=task.task_id)
            await self._finish(task.task_id, TaskState.FAILED,
                               error=failure("ATTEMPTS_EXHAUSTED", detail))
            await msg.term()
            _TASKS.add(1, {"type": task.type, "outcome": "dead_lettered"})
        elif self._handing_back:
            await self._hand_back(msg, seq, task.task_id)
        else:
            await self._run(msg, seq, task, record)

    # -- running -------------------------------------------------------------------------

    async def _run(self, msg: Msg, seq: int, task: TaskMessage, record: TaskRecord) -> None:
        handler = self._handlers[task.type]
        headers = msg.headers or {}
        started = time.time()
        published_at = _float(headers.get(HEADER_PUBLISHED_AT))
        if record.attempts == 1 and published_at:
            _PICKUP.record(max(0.0, started - published_at) * 1000, {"type": task.type})
        span = _tracer.start_span(
            "subagents.task", context=extract(headers), kind=SpanKind.CONSUMER,
            attributes={"voxmesh.task.id": task.task_id, "voxmesh.task.type": task.type,
                        "voxmesh.task.attempt": record.attempts,
                        "voxmesh.session.id": record.session_id,
                        "voxmesh.turn.index": int(task.turn.get("turn_index", 0)),
                        "voxmesh.subagents.replica": self._settings.replica_id})
        ctx = TaskContext(task_id=task.task_id, session_id=record.session_id,
                          turn_index=int(task.turn.get("turn_index", 0)),
                          attempt=record.attempts, span=span)
        # The handler runs in a task of its own (so CancelTask can stop just it); created
        # inside the span so its outgoing calls (LLM) join the trace.
        with trace.use_span(span, end_on_exit=False):
            running = _Running(asyncio.create_task(handler.run(task.arguments, ctx),
                                                   name=f"task-{task.task_id}"))
        self._running[task.task_id] = running
        keepalive = asyncio.create_task(self._keep_alive(msg, task.task_id, running),
                                        name=f"keepalive-{task.task_id}")
        outcome = "failed"
        try:
            outcome = await self._outcome(msg, seq, task, record.attempts, running)
        except asyncio.CancelledError:
            # This handling itself was cancelled (shutdown without drain): the record stays
            # RUNNING on this message, so whoever gets it next takes the run over.
            running.task.cancel()
            await _quietly(msg.nak())
            outcome = "handed_back"
            raise
        finally:
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keepalive
            if self._running.get(task.task_id) is running:
                del self._running[task.task_id]
            elapsed_ms = (time.time() - started) * 1000
            _RUN.record(elapsed_ms, {"type": task.type, "outcome": outcome})
            _TASKS.add(1, {"type": task.type, "outcome": outcome})
            span.set_attribute("voxmesh.task.outcome", outcome)
            if outcome in ("failed", "dead_lettered", "retried"):
                span.set_status(Status(StatusCode.ERROR, outcome))
            span.end()

    async def _outcome(
        self, msg: Msg, seq: int, task: TaskMessage, attempt: int, running: _Running
    ) -> str:
        try:
            result = await running.task
        except asyncio.CancelledError:
            if running.stop_reason == "handback":
                await self._hand_back(msg, seq, task.task_id)
                return "handed_back"
            if running.stop_reason in ("cancelled", "superseded"):
                current = await self._store.get(task.task_id)
                if current is not None:
                    await deliver_result(self._js, self._store, current[0])
                await msg.ack()
                return running.stop_reason
            raise
        except VoxmeshError as exc:
            return await self._failed(msg, seq, task, attempt, failure(
                exc.reason, exc.message, retryable=exc.retryable, field=exc.field))
        except Exception as exc:
            log.exception("task %s (%s) raised", task.task_id, task.type)
            return await self._failed(msg, seq, task, attempt, failure(
                "TASK_ERROR", f"{type(exc).__name__}: {exc}", retryable=True))
        try:
            json.dumps(result)
        except (TypeError, ValueError) as exc:
            return await self._failed(msg, seq, task, attempt, failure(
                "RESULT_NOT_JSON", f"{task.type} returned a result that is not JSON: {exc}"))
        final = await self._finish(task.task_id, TaskState.SUCCEEDED, result=result)
        await msg.ack()
        if final is None or final.state == TaskState.SUCCEEDED:
            return "succeeded"
        return final.state.value.lower()  # cancelled just before the run ended

    async def _failed(
        self, msg: Msg, seq: int, task: TaskMessage, attempt: int, error: dict[str, Any]
    ) -> str:
        if error["retryable"] and attempt < self._settings.max_attempts:

            def requeue(record: TaskRecord) -> TaskRecord | None:
                if record.state == TaskState.RUNNING and record.msg_seq == seq:
                    return record.changed(state=TaskState.QUEUED, error=error)
                return None

            outcome = await self._store.transition(task.task_id, requeue)
            if outcome is not None and outcome[0].state.terminal:
                await deliver_result(self._js, self._store, outcome[0])
                await msg.ack()
                return outcome[0].state.value.lower()
            delay = min(self._settings.retry_backoff_s * 2 ** (attempt - 1),
                        self._settings.retry_backoff_max_s)
            log.info("task %s attempt %d failed (%s); retry in %.1fs", task.task_id, attempt,
                     error["reason"], delay)
            await msg.nak(delay=delay)
            return "retried"
        if not error["retryable"]:
            await self._finish(task.task_id, TaskState.FAILED, error=error)
            await msg.ack()
            return "failed"
        detail = f"{attempt} attempts failed; last: {error['message']}"
        await dead_letter(self._js, subject=msg.subject, data=msg.data, headers=msg.headers,
                          stream_seq=seq, reason="ATTEMPTS_EXHAUSTED", detail=detail,
                          task_id=task.task_id)
        await self._finish(task.task_id, TaskState.FAILED,
                           error=failure("ATTEMPTS_EXHAUSTED", detail))
        await msg.term()
        return "dead_lettered"

    async def _hand_back(self, msg: Msg, seq: int, task_id: str) -> None:
        def requeue(record: TaskRecord) -> TaskRecord | None:
            if record.state == TaskState.RUNNING and record.msg_seq == seq:
                return record.changed(state=TaskState.QUEUED)
            return None

        with contextlib.suppress(VoxmeshError, nats.errors.Error, TimeoutError):
            await self._store.transition(task_id, requeue)
        await _quietly(msg.nak())
        log.info("task %s handed back to the queue (draining)", task_id)

    async def _finish(
        self, task_id: str, state: TaskState, *, result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None, only_seq: int | None = None,
    ) -> TaskRecord | None:
        """Moves a task into a terminal state (unless it is in one) and delivers the result.

        Returns:
            The record now stored (possibly terminal by someone else's hand), or None.
        """

        def finish(record: TaskRecord) -> TaskRecord | None:
            if record.state.terminal:
                return None
            if only_seq is not None and record.msg_seq not in (0, only_seq):
                return None
            return record.changed(state=state, result=result, error=error, delivered=False)

        outcome = await self._store.transition(task_id, finish)
        if outcome is None:
            return None
        await deliver_result(self._js, self._store, outcome[0])
        return outcome[0]

    async def _keep_alive(self, msg: Msg, task_id: str, running: _Running) -> None:
        interval = self._settings.ack_wait_s / 3
        while True:
            await asyncio.sleep(interval)
            await _quietly(msg.in_progress())
            # Backstop for a missed cancel broadcast (or a run finished by another replica
            # after a redelivery): the record is the truth.
            try:
                current = await self._store.get(task_id)
            except VoxmeshError:
                continue
            if current is not None and current[0].state.terminal:
                running.stop("cancelled" if current[0].state == TaskState.CANCELLED
                             else "superseded")
                return

    # -- broadcasts ----------------------------------------------------------------------

    async def _on_cancel(self, msg: Msg) -> None:
        running = self._running.get(msg.subject.rsplit(".", 1)[-1])
        if running is not None:
            running.stop("cancelled")

    async def _on_max_deliveries(self, msg: Msg) -> None:
        try:
            advisory = json.loads(msg.data)
            seq = int(advisory["stream_seq"])
        except (ValueError, KeyError, TypeError):
            return
        try:
            raw = await self._js.get_msg(subjects.TASKS_STREAM, seq)
        except NotFoundError:
            return  # already acknowledged or terminated
        data = raw.data or b""
        task_id = ""
        with contextlib.suppress(ValueError, AttributeError):
            task_id = str(json.loads(data).get("task_id", ""))
        detail = f"delivered {advisory.get('deliveries', '?')} times without an outcome"
        await dead_letter(self._js, subject=raw.subject or "", data=data, headers=raw.headers,
                          stream_seq=seq, reason="MAX_DELIVERIES", detail=detail,
                          task_id=task_id)
        if task_id and await self._store.get(task_id) is not None:
            await self._finish(task_id, TaskState.FAILED,
                               error=failure("ATTEMPTS_EXHAUSTED", detail), only_seq=seq)
        with contextlib.suppress(NotFoundError):
            await self._js.delete_msg(subjects.TASKS_STREAM, seq)
        _TASKS.add(1, {"type": _type_of(raw.subject or ""), "outcome": "dead_lettered"})


async def _quietly(ack: Awaitable[None]) -> None:
    """Sends an ack/nak/progress; a lost one only means a later redelivery."""
    try:
        await ack
    except (nats.errors.Error, OSError) as exc:
        log.debug("ack not sent: %s", exc)


def _float(value: str | None) -> float:
    try:
        return float(value) if value else 0.0
    except ValueError:
        return 0.0


def _type_of(subject: str) -> str:
    return subject.rsplit(".", 1)[-1] if subject.startswith("voxmesh.tasks.") else "unknown"
