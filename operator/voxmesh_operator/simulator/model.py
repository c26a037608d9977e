"""The simulated cluster: calls, worker pods and the reconcile loop around the real planner.

Time advances in fixed steps (``SimulationConfig.step_s``). Within a step, in this order:
warming pods that reached their start delay become warm, calls that reached their length end,
draining workers past their drain timeout end their remaining calls (the worker's own timer),
new calls arrive and are dispatched, and on every reconcile tick the pods are shown to
:func:`~voxmesh_operator.planning.plan_pool` as :class:`WorkerView` values and its plan is
applied (drain, delete, create) the way :mod:`voxmesh_operator.reconcile` applies it.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter, deque
from dataclasses import dataclass, field

from voxmesh_operator.planning import PodPhase, PoolPlan, WorkerState, WorkerView, plan_pool
from voxmesh_operator.spec import IntOrPercent, PoolSpec

#: Template hashes before and after the rollout.
OLD_TEMPLATE = "tmpl-before"
NEW_TEMPLATE = "tmpl-after"

#: Why a call was cut: the worker's drain timer ended it (the planner's rule 2 allows the pod's
#: deletion only after that), or its pod was deleted while it was still running.
CUT_BY_DRAIN_TIMEOUT = "drain timeout"
CUT_BY_POD_DELETION = "pod deleted"

#: The longest warm-up before the measured run: the initial pool is created and warmed with
#: no calls, so the run starts from a settled pool rather than an empty cluster.
MAX_WARM_UP_S = 3600.0

STATES = (WorkerState.WARMING, WorkerState.IDLE, WorkerState.BUSY, WorkerState.DRAINING)


class ConfigError(ValueError):
    """A configuration value the simulation cannot run with.

    Attributes:
        field: The :class:`SimulationConfig` attribute at fault.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    """What to simulate.

    Attributes:
        duration_s: Length of the measured run (after the initial pool has warmed).
        arrival_rate_per_s: Mean rate of the Poisson call arrivals.
        burst_size: Extra calls arriving together every ``burst_every_s`` (0: no bursts).
        burst_every_s: Period of the bursts; the first one comes at ``burst_every_s``.
        burst_spread_s: The calls of a burst arrive uniformly within this many seconds.
        mean_call_s: Mean call length.
        call_sigma: Shape of the lognormal call length (the sigma of its logarithm); 0.6 puts
            the 99th percentile near 3.4 times the mean.
        start_delay_s: Mean time from pod creation to a warm worker (scheduling, image,
            model connections).
        start_delay_cv: Coefficient of variation of the start delay (gamma distributed).
        reconcile_interval_s: Time between two reconciles of the pool.
        step_s: Simulation time step; ``1`` and ``reconcile_interval_s`` must be multiples.
        spec: The pool's spec (buffer, min/max, capacity per worker, drain timeout, surge).
        rollout_at_s: When the pod template changes, or None for no rollout.
        seed: Seed of every random draw; the same seed gives the same calls for any spec.
    """

    duration_s: float = 3600.0
    arrival_rate_per_s: float = 0.5
    burst_size: int = 10
    burst_every_s: float = 300.0
    burst_spread_s: float = 2.0
    mean_call_s: float = 120.0
    call_sigma: float = 0.6
    start_delay_s: float = 15.0
    start_delay_cv: float = 0.25
    reconcile_interval_s: float = 1.0
    step_s: float = 0.25
    spec: PoolSpec = PoolSpec(min_replicas=1, max_replicas=200, buffer=IntOrPercent(15))
    rollout_at_s: float | None = 1800.0
    seed: int = 1

    def __post_init__(self) -> None:
        positive = {"duration_s": self.duration_s, "burst_every_s": self.burst_every_s,
                    "mean_call_s": self.mean_call_s, "step_s": self.step_s,
                    "reconcile_interval_s": self.reconcile_interval_s}
        for name, value in positive.items():
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(name, f"must be a positive number of seconds, got {value}")
        not_negative = {"arrival_rate_per_s": self.arrival_rate_per_s,
                        "burst_size": self.burst_size, "burst_spread_s": self.burst_spread_s,
                        "call_sigma": self.call_sigma, "start_delay_s": self.start_delay_s,
                        "start_delay_cv": self.start_delay_cv}
        for name, value in not_negative.items():
            if not math.isfinite(value) or value < 0:
                raise ConfigError(name, f"must not be negative, got {value}")
        for name, seconds in (("1 s sampling", 1.0),
                              ("reconcile_interval_s", self.reconcile_interval_s)):
            if not _is_multiple(seconds, self.step_s):
                raise ConfigError("step_s", f"{name} must be a whole number of steps of "
                                            f"{self.step_s} s")
        if self.rollout_at_s is not None and not 0 < self.rollout_at_s < self.duration_s:
            raise ConfigError("rollout_at_s", f"must fall inside the run (0 to "
                                              f"{self.duration_s:g} s), got {self.rollout_at_s}")


def _is_multiple(value: float, step: float) -> bool:
    ratio = value / step
    return ratio >= 1 and abs(ratio - round(ratio)) < 1e-9


@dataclass(frozen=True, slots=True)
class Timeline:
    """Pool state counts, sampled every second of the measured run.

    Attributes:
        t_s: Sample times, seconds from the start of the run.
        warming: Pods started but not warm yet.
        idle: Warm workers without calls, taking calls.
        busy: Workers with calls, taking more if they have capacity.
        draining: Workers finishing their calls, taking none.
        waiting: Calls queued for a warm worker.
    """

    t_s: tuple[float, ...] = ()
    warming: tuple[int, ...] = ()
    idle: tuple[int, ...] = ()
    busy: tuple[int, ...] = ()
    draining: tuple[int, ...] = ()
    waiting: tuple[int, ...] = ()

    def series(self, state: WorkerState) -> tuple[int, ...]:
        """The counts of one state."""
        values: tuple[int, ...] = getattr(self, state.value)
        return values


@dataclass(frozen=True, slots=True)
class SimulationReport:
    """What one simulation run measured (times in seconds from the start of the run).

    Attributes:
        buffer: The spec's buffer, as written (``"5"`` or ``"20%"``).
        duration_s: Length of the run.
        calls: Calls that arrived.
        calls_completed: Calls that ended on their own.
        cold_waits: Calls that found no warm worker with free capacity and had to wait.
        wait_p50_s: Median wait of the calls that waited (0 when none did).
        wait_p95_s: 95th percentile wait of the calls that waited.
        wait_max_s: Longest wait.
        calls_unserved: Calls still waiting when the run ended (counted in ``cold_waits``).
        calls_cut: Calls ended by the platform rather than by the caller.
        calls_cut_by_cause: ``calls_cut`` by cause (drain timeout, pod deleted).
        worker_seconds: Integral of the pod count per state over the run.
        peak_workers: Most pods at any moment (all states).
        pods_created: Pods the planner created during the run.
        pods_deleted_by_reason: Pods the planner deleted during the run, by its reason.
        rollout_at_s: When the template changed, or None.
        rollout_completed_at_s: When the last pod of the old template was gone, or None
            (no rollout, or it did not finish within the run).
        cold_wait_times_s: Arrival time of each call that waited.
        cut_times_s: Time each call was cut.
        timeline: Pod counts per state, every second.
    """

    buffer: str
    duration_s: float
    calls: int
    calls_completed: int
    cold_waits: int
    wait_p50_s: float
    wait_p95_s: float
    wait_max_s: float
    calls_unserved: int
    calls_cut: int
    calls_cut_by_cause: dict[str, int]
    worker_seconds: dict[str, float]
    peak_workers: int
    pods_created: int
    pods_deleted_by_reason: dict[str, int]
    rollout_at_s: float | None
    rollout_completed_at_s: float | None
    cold_wait_times_s: tuple[float, ...]
    cut_times_s: tuple[float, ...]
    timeline: Timeline

    @property
    def idle_worker_s(self) -> float:
        """Seconds of warm workers without calls: the cost of the buffer."""
        return self.worker_seconds[WorkerState.IDLE.value]

    @property
    def warming_worker_s(self) -> float:
        """Seconds of pods starting up: paid for, serving no one."""
        return self.worker_seconds[WorkerState.WARMING.value]

    @property
    def rollout_duration_s(self) -> float | None:
        """From the template change to the last old pod gone, or None."""
        if self.rollout_at_s is None or self.rollout_completed_at_s is None:
            return None
        return self.rollout_completed_at_s - self.rollout_at_s


@dataclass(frozen=True, slots=True)
class Call:
    """One synthetic call.

    Attributes:
        arrives_at_s: Arrival time, seconds from the start of the run.
        length_s: How long the caller stays once connected.
        burst: Part of a burst rather than of the Poisson stream.
    """

    arrives_at_s: float
    length_s: float
    burst: bool = False


def generate_calls(config: SimulationConfig) -> list[Call]:
    """The calls of a run, in arrival order; they depend on the seed, never on the spec.

    Each kind of draw has its own random stream, so the arrivals and call lengths are the
    same for every buffer compared under one seed.
    """
    arrivals: list[tuple[float, bool]] = []
    poisson = random.Random(f"{config.seed}:arrivals")
    if config.arrival_rate_per_s > 0:
        at = poisson.expovariate(config.arrival_rate_per_s)
        while at < config.duration_s:
            arrivals.append((at, False))
            at += poisson.expovariate(config.arrival_rate_per_s)
    bursts = random.Random(f"{config.seed}:bursts")
    burst_at = config.burst_every_s
    while config.burst_size and burst_at < config.duration_s:
        for _ in range(config.burst_size):
            at = burst_at + bursts.uniform(0.0, config.burst_spread_s)
            if at < config.duration_s:
                arrivals.append((at, True))
        burst_at += config.burst_every_s
    arrivals.sort()
    lengths = random.Random(f"{config.seed}:lengths")
    # Lognormal with the configured mean: E[X] = exp(mu + sigma^2 / 2).
    mu = math.log(config.mean_call_s) - config.call_sigma ** 2 / 2
    return [Call(at, lengths.lognormvariate(mu, config.call_sigma), burst)
            for at, burst in arrivals]


@dataclass(slots=True)
class _Pod:
    name: str
    template_hash: str
    created_at: float
    warm_at: float
    warm: bool = False
    drain_requested_at: float | None = None
    calls: set[int] = field(default_factory=set)

    def heartbeat(self) -> tuple[WorkerState, int]:
        """The state and session count its last heartbeat reported.

        Workers beat on every change of state or session count, and every couple of seconds
        besides, so the operator's registry never holds a stale beat here.
        """
        if self.drain_requested_at is not None:
            return WorkerState.DRAINING, len(self.calls)
        if not self.warm:
            return WorkerState.WARMING, 0
        return (WorkerState.BUSY if self.calls else WorkerState.IDLE), len(self.calls)

    def takes_calls(self, capacity: int) -> bool:
        """In the dispatch queue group: warm, not draining, with free capacity."""
        return self.warm and self.drain_requested_at is None and len(self.calls) < capacity


@dataclass(slots=True)
class _CallState:
    call: Call
    started_at: float | None = None
    waited: bool = False
    outcome: str = ""  # "", "completed", or a cut cause
    pod: str = ""


class PoolSimulation:
    """One run: a pool under synthetic calls, reconciled by :func:`plan_pool`.

    Args:
        config: What to simulate.
    """

    def __init__(self, config: SimulationConfig) -> None:
        self.config = config
        self.spec = config.spec
        self._starts = random.Random(f"{config.seed}:start-delays")
        self._dispatch_choice = random.Random(f"{config.seed}:dispatch")
        self._pods: dict[str, _Pod] = {}
        self._serial = 0
        self._surplus_since: float | None = None
        self._template = OLD_TEMPLATE
        self._calls = [_CallState(call) for call in generate_calls(config)]
        self._next_arrival = 0
        self._queue: deque[int] = deque()
        self._endings: list[tuple[float, int]] = []  # (end time, call index), a heap
        self._step = 0
        self._origin = 0.0  # absolute time of the start of the measured run
        self._pods_created = 0
        self._deleted: Counter[str] = Counter()
        self._cut_times: list[float] = []
        self._rollout_done_at: float | None = None
        # Pod counts per state, recomputed only after something changed (most steps change
        # nothing, and counting every pod every step dominated the run time).
        self._counts_cache: dict[str, int] | None = None

    def templates(self) -> Counter[str]:
        """Pods per template hash, as things stand (after :meth:`run`: at the end of the run)."""
        return Counter(pod.template_hash for pod in self._pods.values())

    def _now(self) -> float:
        return self._step * self.config.step_s

    def run(self) -> SimulationReport:
        """Warms the initial pool, then runs the calls; returns what was measured."""
        self._warm_up()
        config = self.config
        steps = round(config.duration_s / config.step_s)
        steps_per_second = round(1.0 / config.step_s)
        worker_seconds = dict.fromkeys((s.value for s in STATES), 0.0)
        samples: dict[str, list[float]] = {name: [] for name in
                                           ("t_s", "warming", "idle", "busy", "draining",
                                            "waiting")}
        peak = len(self._pods)
        self._pods_created = 0
        self._deleted.clear()
        start_step = self._step
        for index in range(1, steps + 1):
            self._step = start_step + index
            now = self._now()
            if (config.rollout_at_s is not None and self._template == OLD_TEMPLATE
                    and now - self._origin >= config.rollout_at_s):
                self._template = NEW_TEMPLATE
            self._advance(now)
            self._arrive(now)
            self._dispatch(now)
            if self._is_reconcile_tick():
                self._reconcile(now)
                if (self._template == NEW_TEMPLATE and self._rollout_done_at is None
                        and all(p.template_hash == NEW_TEMPLATE for p in self._pods.values())):
                    self._rollout_done_at = now - self._origin
            counts = self._counts()
            for state, count in counts.items():
                worker_seconds[state] += count * config.step_s
            peak = max(peak, len(self._pods))
            if index % steps_per_second == 0:
                samples["t_s"].append(round(now - self._origin, 6))
                for state, count in counts.items():
                    samples[state].append(count)
                samples["waiting"].append(len(self._queue))
        return self._report(worker_seconds, peak, samples)

    def _warm_up(self) -> None:
        """Reconciles with no calls until the initial pool is created, warm and settled."""
        limit = round(MAX_WARM_UP_S / self.config.step_s)
        while self._step < limit:
            self._step += 1
            now = self._now()
            self._advance(now)
            if self._is_reconcile_tick():
                plan = self._reconcile(now)
                settled = not (plan.create or plan.delete or plan.drain)
                if settled and all(pod.warm for pod in self._pods.values()):
                    break
        self._origin = self._now()

    def _is_reconcile_tick(self) -> bool:
        every = round(self.config.reconcile_interval_s / self.config.step_s)
        return self._step % every == 0

    def _advance(self, now: float) -> None:
        """Pods warm up, calls end, and drain timers run out."""
        for pod in self._pods.values():
            if not pod.warm and pod.warm_at <= now:
                pod.warm = True
                self._counts_cache = None
        while self._endings and self._endings[0][0] <= now:
            _, index = heapq.heappop(self._endings)
            state = self._calls[index]
            if state.outcome:  # cut earlier; its ending no longer happens
                continue
            state.outcome = "completed"
            self._pods[state.pod].calls.discard(index)
            self._counts_cache = None
        timeout = self.spec.drain_timeout_s
        for pod in self._pods.values():
            if (pod.calls and pod.drain_requested_at is not None
                    and now >= pod.drain_requested_at + timeout):
                # The worker's own drain timer: it ends what is left with an error event.
                self._cut(pod, CUT_BY_DRAIN_TIMEOUT, now)

    def _arrive(self, now: float) -> None:
        relative = now - self._origin
        while (self._next_arrival < len(self._calls)
               and self._calls[self._next_arrival].call.arrives_at_s <= relative):
            self._queue.append(self._next_arrival)
            self._next_arrival += 1

    def _dispatch(self, now: float) -> None:
        """Hands queued calls, oldest first, to workers in the dispatch group.

        The dispatch subject is a NATS queue group: any subscribed worker may answer, so the
        worker is drawn at random among those with free capacity, whatever their template.
        """
        if not self._queue:
            return
        capacity = self.spec.max_sessions_per_worker
        free = [pod for pod in self._pods.values() if pod.takes_calls(capacity)]
        while self._queue and free:
            index = self._queue.popleft()
            slot = self._dispatch_choice.randrange(len(free))
            pod = free[slot]
            state = self._calls[index]
            state.started_at = now
            self._counts_cache = None
            state.pod = pod.name
            pod.calls.add(index)
            heapq.heappush(self._endings, (now + state.call.length_s, index))
            if len(pod.calls) >= capacity:
                free[slot] = free[-1]
                free.pop()
        for index in self._queue:
            self._calls[index].waited = True

    def _reconcile(self, now: float) -> PoolPlan:
        """Plans with the real planner and applies the plan as the operator does."""
        workers = []
        for pod in self._pods.values():
            state, sessions = pod.heartbeat()
            workers.append(WorkerView(
                name=pod.name, template_hash=pod.template_hash, state=state,
                sessions=sessions, created_at=pod.created_at,
                drain_requested_at=pod.drain_requested_at, phase=PodPhase.RUNNING))
        # The surplus timer lives in the pool's status in the cluster; here, on the simulation.
        plan = plan_pool(self.spec, self._template, workers, now,
                         surplus_since=self._surplus_since)
        self._surplus_since = plan.surplus_since
        if plan.create or plan.delete or plan.drain:
            self._counts_cache = None
        for name in plan.drain:
            # The drain annotation and the NATS request; the worker leaves dispatch at once.
            self._pods[name].drain_requested_at = now
        for name, reason in plan.delete:
            pod = self._pods.pop(name)
            if pod.calls:
                self._cut(pod, CUT_BY_POD_DELETION, now)
            self._deleted[reason] += 1
        for _ in range(plan.create):
            self._create_pod(now)
        # A pod deleted or drained may have been the only one free for a queued call; a
        # created one is not warm yet, so nothing new can be dispatched here.
        return plan

    def _create_pod(self, now: float) -> None:
        self._serial += 1
        name = f"pool-{self._template[-5:]}-{self._serial:05d}"
        self._pods[name] = _Pod(name=name, template_hash=self._template, created_at=now,
                                warm_at=now + self._start_delay())
        self._pods_created += 1

    def _start_delay(self) -> float:
        mean, cv = self.config.start_delay_s, self.config.start_delay_cv
        if mean == 0 or cv == 0:
            return mean
        shape = 1 / cv ** 2
        return self._starts.gammavariate(shape, mean / shape)

    def _cut(self, pod: _Pod, cause: str, now: float) -> None:
        self._counts_cache = None
        for index in pod.calls:
            self._calls[index].outcome = cause
            self._cut_times.append(round(now - self._origin, 6))
        pod.calls.clear()

    def _counts(self) -> dict[str, int]:
        if self._counts_cache is None:
            counts = Counter(pod.heartbeat()[0] for pod in self._pods.values())
            self._counts_cache = {state.value: counts[state] for state in STATES}
        return self._counts_cache

    def _report(self, worker_seconds: dict[str, float], peak: int,
                samples: dict[str, list[float]]) -> SimulationReport:
        end = self.config.duration_s
        arrived = self._calls[:self._next_arrival]
        waits: list[float] = []
        wait_times: list[float] = []
        for state in arrived:
            if not state.waited:
                continue
            started = (state.started_at - self._origin if state.started_at is not None
                       else end)
            waits.append(started - state.call.arrives_at_s)
            wait_times.append(round(state.call.arrives_at_s, 3))
        waits.sort()
        cut = Counter(s.outcome for s in arrived
                      if s.outcome not in ("", "completed"))
        timeline = Timeline(
            t_s=tuple(samples["t_s"]),
            **{name: tuple(int(v) for v in samples[name])
               for name in ("warming", "idle", "busy", "draining", "waiting")})
        return SimulationReport(
            buffer=str(self.spec.buffer),
            duration_s=self.config.duration_s,
            calls=len(arrived),
            calls_completed=sum(1 for s in arrived if s.outcome == "completed"),
            cold_waits=len(waits),
            wait_p50_s=round(percentile(waits, 50), 3),
            wait_p95_s=round(percentile(waits, 95), 3),
            wait_max_s=round(waits[-1], 3) if waits else 0.0,
            calls_unserved=sum(1 for s in arrived if s.started_at is None),
            calls_cut=sum(cut.values()),
            calls_cut_by_cause=dict(sorted(cut.items())),
            worker_seconds={k: round(v, 3) for k, v in worker_seconds.items()},
            peak_workers=peak,
            pods_created=self._pods_created,
            pods_deleted_by_reason=dict(sorted(self._deleted.items())),
            rollout_at_s=self.config.rollout_at_s,
            rollout_completed_at_s=self._rollout_done_at,
            cold_wait_times_s=tuple(wait_times),
            cut_times_s=tuple(self._cut_times),
            timeline=timeline,
        )


def percentile(ordered: list[float], q: float) -> float:
    """The ``q``-th percentile of sorted values, linearly interpolated (0 for none)."""
    if not ordered:
        return 0.0
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def simulate(config: SimulationConfig) -> SimulationReport:
    """Runs one simulation.

    Args:
        config: What to simulate.

    Returns:
        Cold-start waits, cut calls, worker-seconds per state and the pool's timeline.
    """
    return PoolSimulation(config).run()
