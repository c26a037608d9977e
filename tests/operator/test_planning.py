"""The pool planner: table-driven cases, then hypothesis properties over random pools."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxmesh_operator.planning import (
    DRAIN_DEADLINE_MARGIN_S,
    PodPhase,
    PoolPlan,
    WorkerState,
    WorkerView,
    plan_pool,
)
from voxmesh_operator.spec import IntOrPercent, InvalidSpecError, PoolSpec

NEW, OLD = "new", "old"
IDLE, BUSY, WARMING, DRAINING = (WorkerState.IDLE, WorkerState.BUSY, WorkerState.WARMING,
                                 WorkerState.DRAINING)


def _pool(*states: tuple[str, WorkerState], **overrides: object) -> list[WorkerView]:
    workers = []
    for index, (template, state) in enumerate(states):
        fields: dict[str, object] = {
            "name": f"w{index}", "template_hash": template, "state": state,
            "sessions": 1 if state is BUSY else 0, "created_at": float(index)}
        workers.append(WorkerView(**{**fields, **overrides}))  # type: ignore[arg-type]
    return workers


# Table-driven: (case, spec, workers, expected create, expected deleted names, expected drains)
CASES = [
    ("empty pool fills to min + buffer",
     PoolSpec(min_replicas=0, buffer=IntOrPercent(2)), [], 2, set(), set()),
    ("min replicas beats a smaller buffer",
     PoolSpec(min_replicas=3, buffer=IntOrPercent(1)), [], 3, set(), set()),
    ("busy workers get a buffer on top",
     PoolSpec(min_replicas=0, buffer=IntOrPercent(2)),
     _pool((NEW, BUSY), (NEW, BUSY), (NEW, IDLE)), 1, set(), set()),
    ("max replicas caps the buffer",
     PoolSpec(min_replicas=0, max_replicas=3, buffer=IntOrPercent(2)),
     _pool((NEW, BUSY), (NEW, BUSY)), 1, set(), set()),
    ("scale down deletes warming before idle, newest first, never busy",
     PoolSpec(min_replicas=0, buffer=IntOrPercent(1), scale_down_delay_s=0),
     _pool((NEW, IDLE), (NEW, BUSY), (NEW, IDLE), (NEW, WARMING)), 0, {"w3", "w2"}, set()),
    ("busy beyond max: nothing is deleted",
     PoolSpec(min_replicas=0, max_replicas=2, buffer=IntOrPercent(1)),
     _pool((NEW, BUSY), (NEW, BUSY), (NEW, BUSY)), 0, set(), set()),
    ("percentage buffer: a fifth of the pool idle",
     PoolSpec(min_replicas=0, buffer=IntOrPercent(20, percent=True)),
     _pool(*[(NEW, BUSY)] * 8), 2, set(), set()),
    ("rollout: busy old workers drain, warming old ones go, one new one surges (25% of 2)",
     PoolSpec(min_replicas=0, buffer=IntOrPercent(2)),
     _pool((OLD, BUSY), (OLD, IDLE), (OLD, IDLE), (OLD, WARMING)), 1, {"w3"}, {"w0"}),
    ("rollout: old idle go as new ones warm",
     PoolSpec(min_replicas=0, buffer=IntOrPercent(2)),
     _pool((OLD, IDLE), (OLD, IDLE), (NEW, IDLE), (NEW, WARMING)), 0, {"w1"}, set()),
    ("rollout at maxReplicas: one old idle swapped for a new one at a time",
     PoolSpec(min_replicas=3, max_replicas=3, buffer=IntOrPercent(0),
              max_surge=IntOrPercent(1)),
     _pool((OLD, IDLE), (OLD, IDLE), (OLD, IDLE)), 1, {"w2"}, set()),
    ("rollout at maxReplicas waits while a new worker warms",
     PoolSpec(min_replicas=3, max_replicas=3, buffer=IntOrPercent(0),
              max_surge=IntOrPercent(1)),
     _pool((OLD, IDLE), (OLD, IDLE), (NEW, WARMING)), 0, set(), set()),
    ("exited pods are deleted and replaced",
     PoolSpec(min_replicas=1, buffer=IntOrPercent(0)),
     _pool((NEW, IDLE), phase=PodPhase.FAILED), 1, {"w0"}, set()),
]


@pytest.mark.parametrize(("case", "spec", "workers", "create", "deleted", "drained"), CASES,
                         ids=[case[0] for case in CASES])
def test_plan_table(case: str, spec: PoolSpec, workers: list[WorkerView], create: int,
                    deleted: set[str], drained: set[str]) -> None:
    plan = plan_pool(spec, NEW, workers, now=100.0)
    assert (plan.create, plan.deleted_names, set(plan.drain)) == (create, deleted, drained), case


def test_draining_worker_is_deleted_when_its_calls_end_or_at_the_timeout() -> None:
    spec = PoolSpec(min_replicas=0, buffer=IntOrPercent(0), drain_timeout_s=60)
    busy = WorkerView("w0", OLD, BUSY, sessions=1, drain_requested_at=0.0)
    assert plan_pool(spec, NEW, [busy], now=30.0).delete == ()
    assert plan_pool(spec, NEW, [busy], now=60.0 + DRAIN_DEADLINE_MARGIN_S).deleted_names == {
        "w0"}
    done = dataclasses.replace(busy, state=DRAINING, sessions=0)
    assert plan_pool(spec, NEW, [done], now=30.0).deleted_names == {"w0"}


def test_terminating_pods_are_left_alone_and_not_counted() -> None:
    spec = PoolSpec(min_replicas=1, buffer=IntOrPercent(0))
    plan = plan_pool(spec, NEW, _pool((NEW, IDLE), terminating=True), now=0.0)
    assert (plan.create, plan.delete) == (1, ())


@pytest.mark.parametrize(("spec", "message"), [
    ({"minReplicas": 5, "maxReplicas": 2}, "minReplicas (5) must not exceed maxReplicas (2)"),
    ({"buffer": "120%"}, "buffer: a percentage must be under 100%"),
    ({"buffer": "lots"}, "buffer: expected a number or a percentage"),
    ({"updateStrategy": {"maxSurge": -1}}, "updateStrategy.maxSurge: must not be negative"),
])
def test_invalid_spec_names_the_field(spec: dict, message: str) -> None:
    with pytest.raises(InvalidSpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        PoolSpec.from_resource(spec)


# Properties over random pools ---------------------------------------------------------------

specs = st.builds(
    lambda low, extra, buffer, percent, surge, timeout, delay: PoolSpec(
        min_replicas=low, max_replicas=low + extra,
        buffer=IntOrPercent(min(buffer * 10, 90), True) if percent else IntOrPercent(buffer),
        max_surge=IntOrPercent(surge), drain_timeout_s=timeout, scale_down_delay_s=delay),
    st.integers(0, 6), st.integers(1, 8), st.integers(0, 5), st.booleans(), st.integers(0, 3),
    st.integers(0, 120), st.sampled_from([0, 30]),
)
workers_strategy = st.lists(
    st.builds(
        WorkerView,
        name=st.just(""),
        template_hash=st.sampled_from([NEW, OLD]),
        state=st.sampled_from(list(WorkerState)),
        sessions=st.integers(0, 2),
        created_at=st.floats(0, 100),
        drain_requested_at=st.one_of(st.none(), st.floats(0, 200)),
        phase=st.sampled_from([PodPhase.RUNNING, PodPhase.RUNNING, PodPhase.PENDING,
                               PodPhase.FAILED]),
        terminating=st.booleans(),
    ),
    max_size=14,
).map(lambda ws: [dataclasses.replace(w, name=f"w{i}") for i, w in enumerate(ws)])


def _consistent(worker: WorkerView) -> WorkerView:
    # A heartbeat never says idle with calls, or busy without.
    if worker.state is BUSY and worker.sessions == 0:
        return dataclasses.replace(worker, sessions=1)
    if worker.state in (IDLE, WARMING) and worker.sessions:
        return dataclasses.replace(worker, sessions=0)
    return worker


def _plan(spec: PoolSpec, workers: list[WorkerView]) -> tuple[PoolPlan, list[WorkerView]]:
    pool = [_consistent(w) for w in workers]
    return plan_pool(spec, NEW, pool, now=150.0), pool


@settings(max_examples=400, deadline=None)
@given(specs, workers_strategy)
def test_a_busy_worker_is_never_deleted(spec: PoolSpec, workers: list[WorkerView]) -> None:
    plan, pool = _plan(spec, workers)
    for worker in pool:
        if worker.name in plan.deleted_names and worker.has_calls:
            exited = worker.phase in (PodPhase.SUCCEEDED, PodPhase.FAILED)
            timed_out = (worker.draining and worker.drain_requested_at is not None
                         and 150.0 >= worker.drain_requested_at + spec.drain_timeout_s)
            assert exited or timed_out, (worker, plan)


@settings(max_examples=400, deadline=None)
@given(specs, workers_strategy)
def test_spare_covers_the_buffer_whenever_max_allows(spec: PoolSpec,
                                                    workers: list[WorkerView]) -> None:
    plan, pool = _plan(spec, workers)
    buffer = spec.spare_for(plan.load)
    assert plan.spare_after >= min(buffer, spec.max_replicas - plan.busy), plan
    # The counts are what applying the plan leaves behind.
    gone = plan.deleted_names | set(plan.drain)
    left = [w for w in pool if w.name not in gone and w.spare and not w.terminating
            and w.phase not in (PodPhase.SUCCEEDED, PodPhase.FAILED)]
    assert plan.spare_after == len(left) + plan.create, plan


@settings(max_examples=400, deadline=None)
@given(specs, workers_strategy)
def test_no_plan_exceeds_max_replicas(spec: PoolSpec, workers: list[WorkerView]) -> None:
    plan, _ = _plan(spec, workers)
    assert plan.active_after <= max(spec.max_replicas, plan.busy), plan


@settings(max_examples=200, deadline=None)
@given(specs, workers_strategy)
def test_a_rollout_converges_without_touching_calls(spec: PoolSpec,
                                                    workers: list[WorkerView]) -> None:
    """Applying plans, with new workers warming one step later, ends on the new template."""
    spec = dataclasses.replace(spec, scale_down_delay_s=0)
    pool = [_consistent(w) for w in workers if not w.terminating]
    serial = len(pool)
    for step in range(40):
        now = 150.0 + step
        plan = plan_pool(spec, NEW, pool, now=now)
        gone = plan.deleted_names
        pool = [
            dataclasses.replace(w, state=IDLE) if w.state is WARMING and w.phase is not
            PodPhase.FAILED else w
            for w in pool if w.name not in gone
        ]
        # Calls on draining workers end after a while; that is what a drain waits for.
        pool = [dataclasses.replace(w, drain_requested_at=now) if w.name in plan.drain else
                dataclasses.replace(w, state=DRAINING, sessions=0) if w.draining else w
                for w in pool]
        for _ in range(plan.create):
            pool.append(WorkerView(f"w{serial}", NEW, WARMING, created_at=now))
            serial += 1
    assert all(w.template_hash == NEW for w in pool), pool
    busy = sum(1 for w in pool if w.has_calls)
    assert len(pool) == max(spec.desired_workers(busy), busy)


def test_surplus_spare_workers_go_only_after_the_scale_down_delay() -> None:
    spec = PoolSpec(min_replicas=0, buffer=IntOrPercent(1), scale_down_delay_s=60)
    pool = _pool((NEW, IDLE), (NEW, IDLE), (NEW, IDLE))
    first = plan_pool(spec, NEW, pool, now=100.0)
    assert (first.delete, first.surplus_since) == ((), 100.0)
    later = plan_pool(spec, NEW, pool, now=130.0, surplus_since=first.surplus_since)
    assert (later.delete, later.surplus_since) == ((), 100.0)
    due = plan_pool(spec, NEW, pool, now=160.0, surplus_since=later.surplus_since)
    assert (len(due.delete), due.surplus_since) == (2, None)
    # Above maxReplicas (lowered), the excess goes at once.
    capped = plan_pool(dataclasses.replace(spec, max_replicas=2), NEW, pool, now=100.0)
    assert len(capped.delete) == 1


def test_a_rollout_keeps_the_buffer_sized_on_the_calls_moving_over() -> None:
    """60 calls on the old template: the new one gets the 20 % buffer of 60, plus the surge."""
    spec = PoolSpec(min_replicas=1, max_replicas=200, buffer=IntOrPercent(20, percent=True),
                    max_surge=IntOrPercent(5))
    pool = _pool(*[(OLD, BUSY)] * 60, *[(OLD, IDLE)] * 15)
    plan = plan_pool(spec, NEW, pool, now=0.0)
    assert len(plan.drain) == 60
    assert plan.deleted_names == set()  # the old idle workers stay until new ones are warm
    assert plan.spare_after == 15 + 5 and plan.create == 5
