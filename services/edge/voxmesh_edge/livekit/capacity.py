"""What this edge may accept: its own call slots and the agent pool's free capacity.

The pool's capacity comes from the workers' heartbeats on NATS, read with the operator's own
:class:`~voxmesh_operator.heartbeats.HeartbeatRegistry`, so the edge and the operator judge a
worker the same way (a silent idle worker is warming, not free). The load reported to LiveKit
is the busier of the two: this edge's calls over ``max_calls``, and the pool's calls in progress
over its capacity, which is what the operator sizes the pool on. With a load threshold of 1,
LiveKit's dispatcher stops offering jobs exactly when the edge would reject them.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

from voxmesh_operator.heartbeats import HeartbeatRegistry
from voxmesh_operator.planning import WorkerState

log = logging.getLogger("voxmesh.edge.livekit")

#: LiveKit marks the edge full when its reported load reaches this.
LOAD_THRESHOLD = 1.0
#: An accepted job holds a slot until LiveKit assigns it (livekit-agents waits 7.5 s) and
#: launches it; after this long the hold is dropped whatever happened.
_HOLD_S = 15.0


@dataclasses.dataclass(frozen=True, slots=True)
class PoolCapacity:
    """Calls the pool's warm workers carry and can carry.

    Attributes:
        workers: Workers taking calls (idle or busy, heard from recently).
        sessions: Calls in progress on them.
        capacity: Calls they can carry at once.
    """

    workers: int = 0
    sessions: int = 0
    capacity: int = 0

    @property
    def free(self) -> int:
        """Calls the pool can still take."""
        return max(self.capacity - self.sessions, 0)

    @property
    def load(self) -> float:
        """Calls in progress over capacity; 1 when there is no capacity at all."""
        return min(self.sessions / self.capacity, 1.0) if self.capacity else 1.0


class PoolWatch(HeartbeatRegistry):
    """The agent pool as the workers' heartbeats describe it (the operator's registry)."""

    def capacity(self, now: float | None = None) -> PoolCapacity:
        """Capacity of the workers that take calls now.

        A worker counts when it is idle or busy and its last beat is fresher than
        ``stale_after_s``; a draining or warming worker takes no calls, and a silent one may be
        gone.
        """
        now = time.monotonic() if now is None else now
        workers = sessions = capacity = 0
        # A copy: LiveKit calls the load function from a thread while beats keep arriving.
        for worker_id, beat in list(self._beats.items()):
            state, busy = self.state_of(worker_id, now)
            if state not in (WorkerState.IDLE, WorkerState.BUSY):
                continue
            if now - beat.received_at > self.stale_after_s:
                continue
            workers += 1
            sessions += busy
            capacity += beat.capacity
        return PoolCapacity(workers=workers, sessions=sessions, capacity=capacity)


@dataclasses.dataclass(frozen=True, slots=True)
class Rejection:
    """Why a job is refused.

    Attributes:
        reason: Stable upper-snake reason (``EDGE_DRAINING``, ``EDGE_AT_CAPACITY``,
            ``NO_WORKER_AVAILABLE``).
        message: Human-readable explanation.
    """

    reason: str
    message: str


class Admission:
    """Decides whether the edge takes a LiveKit job, and the load it reports.

    Args:
        pool: The agent pool's heartbeats.
        max_calls: Calls this edge carries at most.
        active_calls: Returns the calls (LiveKit jobs) running on this edge now.
    """

    def __init__(self, pool: PoolWatch, max_calls: int,
                 active_calls: Callable[[], int] = lambda: 0) -> None:
        self.pool = pool
        self.max_calls = max_calls
        self.active_calls = active_calls
        self.draining = False
        self._held: dict[str, float] = {}  # job id -> when it was accepted

    def hold(self, job_id: str, now: float | None = None) -> None:
        """Counts an accepted job that is not running yet (LiveKit has still to assign it)."""
        self._held[job_id] = time.monotonic() if now is None else now

    def release(self, job_id: str) -> None:
        """The accepted job now runs (or never will)."""
        self._held.pop(job_id, None)

    def held(self, now: float | None = None) -> int:
        """Accepted jobs that are not running yet."""
        now = time.monotonic() if now is None else now
        for job_id, since in list(self._held.items()):
            if now - since > _HOLD_S:
                del self._held[job_id]
        return len(self._held)

    def check(self, now: float | None = None) -> Rejection | None:
        """None when one more call fits, else why not."""
        if self.draining:
            return Rejection("EDGE_DRAINING", "this edge is shutting down")
        held = self.held(now)
        calls = self.active_calls() + held
        if calls >= self.max_calls:
            return Rejection("EDGE_AT_CAPACITY",
                             f"this edge already carries {self.max_calls} calls")
        pool = self.pool.capacity(now)
        if pool.free <= held:
            return Rejection(
                "NO_WORKER_AVAILABLE",
                f"the agent pool has no free capacity ({pool.sessions}/{pool.capacity} calls on "
                f"{pool.workers} worker(s), {held} being set up)")
        return None

    def load(self) -> float:
        """Load for LiveKit's dispatcher, 0 to 1: the busier of this edge and the pool.

        Called by livekit-agents from a thread; it only reads.
        """
        if self.draining:
            return 1.0
        # Jobs being accepted are not counted: livekit-agents adds its own reservations for
        # them on top of this number.
        edge = min(self.active_calls() / self.max_calls, 1.0)
        return max(edge, self.pool.capacity().load)
