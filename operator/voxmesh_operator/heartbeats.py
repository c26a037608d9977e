"""Worker heartbeats from NATS, and drain requests back to the workers.

Workers publish a ``WorkerHeartbeat`` every couple of seconds and on every change of state or
session count. The registry keeps the latest beat per worker (the worker id is its pod name).
A worker silent for longer than ``stale_after_s`` is no longer trusted to be idle: it is
reported as warming (not ready, not counted as buffer). A silent busy worker stays busy; the
operator never deletes a worker on silence alone, since its calls may still be running.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from google.protobuf.message import DecodeError
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from voxmesh import subjects
from voxmesh.natsconn import connect_nats
from voxmesh.v1 import session_pb2
from voxmesh_operator.planning import WorkerState

log = logging.getLogger("voxmesh.operator.heartbeats")


@dataclass(frozen=True, slots=True)
class Beat:
    """The latest heartbeat of one worker.

    Attributes:
        state: Reported state.
        sessions: Calls in progress.
        capacity: Calls it can take at once.
        version: Worker version.
        received_at: Monotonic time it arrived.
    """

    state: WorkerState
    sessions: int
    capacity: int
    version: str
    received_at: float


class HeartbeatRegistry:
    """Latest heartbeat per worker.

    Args:
        stale_after_s: Silence after which an idle worker no longer counts as warm.
        forget_after_s: Silence after which a worker is forgotten (its pod is long gone).
    """

    def __init__(self, stale_after_s: float = 10.0, forget_after_s: float = 600.0) -> None:
        self.stale_after_s = stale_after_s
        self.forget_after_s = forget_after_s
        self._beats: dict[str, Beat] = {}

    def observe(self, beat: session_pb2.WorkerHeartbeat, now: float | None = None) -> None:
        """Records a heartbeat; an unknown state is logged and ignored."""
        try:
            state = WorkerState(beat.state)
        except ValueError:
            log.warning("worker %s sent an unknown state %r", beat.worker_id, beat.state)
            return
        self._beats[beat.worker_id] = Beat(
            state=state, sessions=beat.active_sessions, capacity=beat.max_sessions,
            version=beat.version, received_at=time.monotonic() if now is None else now)

    def state_of(self, worker_id: str, now: float | None = None) -> tuple[WorkerState, int]:
        """The state and session count to plan with."""
        beat = self._beats.get(worker_id)
        if beat is None:
            return WorkerState.WARMING, 0
        now = time.monotonic() if now is None else now
        if now - beat.received_at > self.stale_after_s and beat.state is WorkerState.IDLE:
            return WorkerState.WARMING, 0
        return beat.state, beat.sessions

    def prune(self, now: float | None = None) -> None:
        """Forgets workers silent for ``forget_after_s``."""
        now = time.monotonic() if now is None else now
        for worker_id, beat in list(self._beats.items()):
            if now - beat.received_at > self.forget_after_s:
                del self._beats[worker_id]

    async def watch(self, nc: NatsClient) -> Subscription:
        """Subscribes to every worker's heartbeats; unsubscribe the result to stop."""
        return await nc.subscribe(subjects.HEARTBEAT_ALL, cb=self._on_heartbeat)

    async def _on_heartbeat(self, msg: Msg) -> None:
        beat = session_pb2.WorkerHeartbeat()
        try:
            beat.ParseFromString(msg.data)
        except DecodeError:
            log.warning("dropped an unreadable heartbeat on %s", msg.subject)
            return
        self.observe(beat)
        self.prune()


class WorkerChannel:
    """The operator's NATS side: heartbeats in, drain requests out."""

    def __init__(self, registry: HeartbeatRegistry) -> None:
        self.registry = registry
        self._nc: NatsClient | None = None
        self._subscription: Subscription | None = None

    async def connect(self, url: str) -> None:
        """Connects and subscribes to every worker's heartbeats."""
        self._nc = await connect_nats(url, "voxmesh-operator")
        self._subscription = await self.registry.watch(self._nc)

    async def close(self) -> None:
        """Unsubscribes and closes the connection."""
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.drain()
        self._nc = None

    async def request_drain(self, worker_id: str) -> None:
        """Asks a worker to drain. Sent again on every reconcile until it reports draining."""
        if self._nc is None:
            raise RuntimeError("not connected to NATS")
        await self._nc.publish(subjects.drain(worker_id), b"",
                               headers={"from": "voxmesh-operator"})

