"""What a pool should do next, as a pure function of its spec and its workers.

:func:`plan_pool` is the whole scaling and rollout policy. It is shared by the kopf handlers
and the simulator, and is tested table-driven and with hypothesis properties:

* a worker with calls is never deleted, unless it was draining and its drain timed out;
* the pool keeps ``busy + buffer`` workers (clamped to min/max), so spare capacity is there
  before calls arrive;
* it never plans more than ``maxReplicas`` workers (draining workers, already leaving, aside).

Rules, in order:

1. Pods whose worker exited (``Succeeded``/``Failed``) are deleted; terminating pods are
   ignored, the kubelet is already draining them.
2. Draining workers are deleted once they have no calls, or when the drain timeout passes.
3. The buffer is sized on the calls in progress, draining workers' included, and the pool
   keeps ``busy + buffer`` workers that take calls, clamped to min/max.
4. In a rollout, busy workers of an old template are drained: they finish their calls and take
   no new ones. ``maxSurge`` extra spare workers absorb the calls that would have gone to
   them. Old spare workers stay only while new ones are still warming, so the buffer is
   never cold.
5. Spare (idle or warming) workers are created up to the target; surplus ones are deleted
   after ``scaleDownDelaySeconds``, warming before idle, newest first.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from voxmesh_operator.spec import PoolSpec

#: Extra seconds past the drain timeout before a draining pod is deleted: the worker's own
#: timer (started by the same drain request) ends the calls first, with a proper error event.
DRAIN_DEADLINE_MARGIN_S = 5.0


class WorkerState(enum.StrEnum):
    """A worker's state, as its heartbeats report it."""

    WARMING = "warming"  # starting, or connecting to the model services; takes no calls
    IDLE = "idle"  # warm and in the dispatch group, no calls
    BUSY = "busy"  # one or more calls
    DRAINING = "draining"  # finishing its calls, taking no new ones


class PodPhase(enum.StrEnum):
    """The Kubernetes pod phases the planner cares about."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    UNKNOWN = "Unknown"


@dataclass(frozen=True, slots=True)
class WorkerView:
    """One worker pod as the planner sees it.

    Attributes:
        name: Pod name (also the worker id in heartbeats).
        template_hash: Hash of the pod template it was created from.
        state: Last reported state (``WARMING`` before the first heartbeat).
        sessions: Calls in progress.
        created_at: Creation time, seconds (any clock, the same as ``now``).
        drain_requested_at: When the operator asked it to drain, or None.
        phase: Pod phase.
        terminating: The pod has a deletion timestamp.
    """

    name: str
    template_hash: str
    state: WorkerState = WorkerState.WARMING
    sessions: int = 0
    created_at: float = 0.0
    drain_requested_at: float | None = None
    phase: PodPhase = PodPhase.RUNNING
    terminating: bool = False

    @property
    def draining(self) -> bool:
        """Asked to drain, or draining on its own (SIGTERM)."""
        return self.drain_requested_at is not None or self.state is WorkerState.DRAINING

    @property
    def has_calls(self) -> bool:
        """Busy, by state or by session count."""
        return self.sessions > 0 or self.state is WorkerState.BUSY

    @property
    def spare(self) -> bool:
        """Idle or warming: capacity for calls to come."""
        return not self.draining and not self.has_calls


@dataclass(frozen=True, slots=True)
class PoolPlan:
    """The actions of one reconcile, and the counts behind them.

    Attributes:
        create: New workers to create from the current template.
        delete: Pods to delete, with the reason (for events and logs).
        drain: Workers to ask to drain.
        desired: Busy plus spare workers the pool aims for (``busy + buffer``, clamped).
        busy: Busy workers that take calls (draining ones excluded).
        load: Workers with calls, draining ones included; the buffer is sized on it.
        spare_after: Spare workers once the plan is applied (created ones included).
        rolling_out: Workers of an old template remain.
        surplus_since: When the pool started having more spare workers than it needs (kept
            until ``scaleDownDelaySeconds`` passes); pass it to the next plan.
    """

    create: int = 0
    delete: tuple[tuple[str, str], ...] = ()
    drain: tuple[str, ...] = ()
    desired: int = 0
    busy: int = 0
    load: int = 0
    spare_after: int = 0
    rolling_out: bool = False
    surplus_since: float | None = None

    @property
    def deleted_names(self) -> set[str]:
        """Names of the pods the plan deletes."""
        return {name for name, _ in self.delete}

    @property
    def active_after(self) -> int:
        """Workers that take calls once the plan is applied (busy plus spare)."""
        return self.busy + self.spare_after


def _newest_first(workers: Sequence[WorkerView]) -> list[WorkerView]:
    # Warming before idle (it serves no one yet), then the youngest: the old ones are proven.
    return sorted(workers, key=lambda w: (w.state is not WorkerState.WARMING, -w.created_at,
                                          w.name))


def plan_pool(spec: PoolSpec, template_hash: str, workers: Sequence[WorkerView],
              now: float, surplus_since: float | None = None) -> PoolPlan:
    """Decides the next actions of a pool.

    Args:
        spec: The pool's spec.
        template_hash: Hash of the current pod template.
        workers: Every pod of the pool.
        now: Current time, on the clock of ``created_at`` and ``drain_requested_at``.
        surplus_since: When the pool first had more spare workers than it needs, from the
            previous plan (:attr:`PoolPlan.surplus_since`); None if it had not.

    Returns:
        The plan; applying it twice does no harm (deletes and drains are idempotent, and
        ``create`` counts pods already created).
    """
    delete: list[tuple[str, str]] = []
    drain: list[str] = []
    active: list[WorkerView] = []
    draining_calls = 0
    for worker in workers:
        if worker.terminating:
            continue
        if worker.phase in (PodPhase.SUCCEEDED, PodPhase.FAILED):
            delete.append((worker.name, f"worker exited ({worker.phase.value})"))
        elif worker.draining:
            reason = _drained(spec, worker, now)
            if reason:
                delete.append((worker.name, reason))
            else:
                draining_calls += 1
        else:
            active.append(worker)

    current = [w for w in active if w.template_hash == template_hash]
    old = [w for w in active if w.template_hash != template_hash]
    for worker in old:
        if worker.has_calls:
            drain.append(worker.name)
    busy = sum(1 for w in current if w.has_calls)
    # The buffer follows the calls in progress, draining workers' included: in a rollout the
    # calls move to the new template, and so must the capacity for the calls to come.
    load = busy + draining_calls + len(drain)
    desired = min(spec.max_replicas, max(spec.min_replicas, busy + spec.spare_for(load)))
    needed_spare = max(0, desired - busy)
    surge = spec.surge_for(desired) if old else 0
    # A rollout holds ``surge`` extra spare workers: calls ending on old workers give no
    # capacity back (those workers are leaving), so the new template must absorb arrivals.
    target = max(0, min(needed_spare + surge, spec.max_replicas - busy))
    spare = _newest_first([w for w in current if w.spare])
    old_spare = [w for w in old if w.spare]

    # Surplus spare workers go after ``scaleDownDelaySeconds`` (at once above maxReplicas),
    # so that a call ending and the next arriving do not delete and recreate a pod.
    surplus = max(0, len(spare) - target)
    over_max = min(surplus, max(0, busy + len(spare) - spec.max_replicas))
    since: float | None = None
    if surplus:
        since = surplus_since if surplus_since is not None else now
        if now - since >= spec.scale_down_delay_s:
            over_max, since = surplus, None
    delete += [(w.name, "scale down: more spare workers than the buffer needs")
               for w in spare[:over_max]]
    spare = spare[over_max:]

    # Old spare workers keep serving until new ones are warm, idle ones first.
    warm_new = sum(1 for w in spare if w.state is WorkerState.IDLE)
    candidates = sorted(old_spare, key=lambda w: (w.state is not WorkerState.IDLE, w.name))
    keep_old = candidates[:max(0, needed_spare - warm_new)]
    delete += [(w.name, "rollout: replaced by a worker of the new template")
               for w in old_spare if w not in keep_old]

    want = target - len(spare)
    free = target - len(spare) - len(keep_old)
    short = max(0, -free)  # above the target (maxReplicas was lowered): retire old first
    if old and needed_spare + surge > spec.max_replicas - busy:
        # maxReplicas leaves no room to surge: swap old spare workers for new ones, no more
        # than ``surge`` warming at a time, as a Deployment with maxUnavailable does.
        warming_new = len(spare) - warm_new
        short += max(0, min(want, surge - warming_new) - max(free, 0))
    short = min(short, len(keep_old))
    retire, keep_old = keep_old[len(keep_old) - short:], keep_old[:len(keep_old) - short]
    delete += [(w.name, "rollout: making room under maxReplicas") for w in retire]
    create = max(0, min(want, free + len(retire)))
    return PoolPlan(create=create, delete=tuple(delete), drain=tuple(drain), desired=desired,
                    busy=busy, load=load, spare_after=len(spare) + len(keep_old) + create,
                    rolling_out=bool(old), surplus_since=since)


def _drained(spec: PoolSpec, worker: WorkerView, now: float) -> str:
    """Why a draining worker can go now, or "" while it still has calls to finish."""
    if not worker.has_calls:
        return "drained: no calls left"
    started = worker.drain_requested_at if worker.drain_requested_at is not None else now
    if now >= started + spec.drain_timeout_s + DRAIN_DEADLINE_MARGIN_S:
        return f"drain timeout ({spec.drain_timeout_s} s) passed with calls left"
    return ""
