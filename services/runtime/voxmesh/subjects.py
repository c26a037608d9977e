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
#: Worker heartbeats (WorkerHeartbeat).
HEARTBEAT = "voxmesh.worker.{worker}.heartbeat"
#: JetStream KV bucket holding LLM context per session.
CONTEXT_BUCKET = "voxmesh_context"


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


def heartbeat(worker: str) -> str:
    """Heartbeat subject of a worker."""
    return HEARTBEAT.format(worker=worker)
