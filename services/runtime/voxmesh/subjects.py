"""NATS subject names. One place, so the edge, workers and observers agree."""

from __future__ import annotations

#: Queue-group subject on which idle workers accept calls for an agent.
DISPATCH = "voxmesh.dispatch.{agent}"
DISPATCH_QUEUE = "voxmesh-workers"
#: Caller audio, edge -> worker (AudioChunk, PCM16 16 kHz mono, 20 ms).
MEDIA_IN = "voxmesh.session.{session}.media.in"
#: Agent audio, worker -> edge (AudioChunk), paced in real time.
MEDIA_OUT = "voxmesh.session.{session}.media.out"
#: Worker -> edge media control (MediaControl).
MEDIA_CONTROL = "voxmesh.session.{session}.media.control"
#: Edge -> worker session control (SessionControl).
CONTROL = "voxmesh.session.{session}.control"
#: Worker -> anyone: SessionEvent.
EVENTS = "voxmesh.session.{session}.events"
EVENTS_ALL = "voxmesh.session.*.events"
#: Worker heartbeats (WorkerHeartbeat): every ``heartbeat_interval_s`` and on each change.
HEARTBEAT = "voxmesh.worker.{worker}.heartbeat"
HEARTBEAT_ALL = "voxmesh.worker.*.heartbeat"
#: Operator -> worker: stop taking calls, finish the active ones, exit (empty payload).
DRAIN = "voxmesh.worker.{worker}.drain"
#: JetStream KV bucket holding LLM context per session.
CONTEXT_BUCKET = "voxmesh_context"
#: Subagent tasks (JSON), JetStream work-queue stream VOXMESH_TASKS, one durable consumer.
TASKS = "voxmesh.tasks.{type}"
TASKS_ALL = "voxmesh.tasks.*"
TASKS_STREAM = "VOXMESH_TASKS"
TASKS_CONSUMER = "voxmesh-subagents"
#: Core NATS broadcast to every subagents replica: stop running this task now.
TASK_CANCEL = "voxmesh.tasks.cancel.{task}"
TASK_CANCEL_ALL = "voxmesh.tasks.cancel.*"
#: Terminal TaskStatus of a task, once per task, on stream VOXMESH_TASK_RESULTS.
TASK_RESULT = "voxmesh.session.{session}.task_result"
TASK_RESULTS_ALL = "voxmesh.session.*.task_result"
TASK_RESULTS_STREAM = "VOXMESH_TASK_RESULTS"
#: Tasks that can never run, with the reason in headers; stream VOXMESH_TASKS_DLQ.
TASKS_DLQ = "voxmesh.tasks_dlq.{type}"
TASKS_DLQ_ALL = "voxmesh.tasks_dlq.*"
TASKS_DLQ_STREAM = "VOXMESH_TASKS_DLQ"
#: JetStream KV bucket holding subagent task records.
TASKS_BUCKET = "voxmesh_tasks"
#: JetStream advisory: a task message reached the consumer's max deliveries.
TASKS_MAX_DELIVERIES = (
    f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{TASKS_STREAM}.{TASKS_CONSUMER}")


def media_in(session: str) -> str:
    """Subject of the caller audio of a session."""
    return MEDIA_IN.format(session=session)


def media_out(session: str) -> str:
    """Subject of the agent audio of a session."""
    return MEDIA_OUT.format(session=session)


def media_control(session: str) -> str:
    """Subject of media control (playout clear) of a session."""
    return MEDIA_CONTROL.format(session=session)


def control(session: str) -> str:
    """Subject of session control (hangup) of a session."""
    return CONTROL.format(session=session)


def events(session: str) -> str:
    """Subject of the events of a session."""
    return EVENTS.format(session=session)


def dispatch(agent: str) -> str:
    """Dispatch subject for an agent."""
    return DISPATCH.format(agent=agent)


def drain(worker: str) -> str:
    """Subject on which the operator asks ``worker`` to drain."""
    return DRAIN.format(worker=worker)


def heartbeat(worker: str) -> str:
    """Heartbeat subject of a worker."""
    return HEARTBEAT.format(worker=worker)


def task(task_type: str) -> str:
    """Queue subject of a subagent task type."""
    return TASKS.format(type=task_type)


def task_cancel(task_id: str) -> str:
    """Cancel broadcast subject of a subagent task."""
    return TASK_CANCEL.format(task=task_id)


def task_result(session: str) -> str:
    """Subject of the subagent task results of a session."""
    return TASK_RESULT.format(session=session)


def task_dlq(task_type: str) -> str:
    """Dead-letter subject of a subagent task type."""
    return TASKS_DLQ.format(type=task_type)
