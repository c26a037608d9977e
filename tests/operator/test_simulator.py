"""The pool simulator: the real planner under synthetic calls, a rollout, and the CLI."""

from __future__ import annotations

import dataclasses
import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import pytest

from voxmesh_operator.planning import PoolPlan, WorkerState, WorkerView, plan_pool
from voxmesh_operator.simulator import model
from voxmesh_operator.simulator.cli import main
from voxmesh_operator.simulator.model import (
    CUT_BY_DRAIN_TIMEOUT,
    CUT_BY_POD_DELETION,
    NEW_TEMPLATE,
    PoolSimulation,
    SimulationConfig,
    generate_calls,
    simulate,
)
from voxmesh_operator.simulator.report import comparison_table, pool_svg
from voxmesh_operator.spec import IntOrPercent, PoolSpec

# 20 minutes at 0.5 calls/s, a burst of 10 every 5 minutes, 2-minute calls, 15 s pod starts;
# the template changes at 10 minutes, together with a burst (the hardest moment).
BASE = SimulationConfig(duration_s=1200, arrival_rate_per_s=0.5, burst_size=10,
                        burst_every_s=300, mean_call_s=120, start_delay_s=15,
                        rollout_at_s=600, seed=1)


def _with(buffer: int | IntOrPercent, base: SimulationConfig = BASE, *, min_replicas: int = 1,
          drain_timeout_s: int = 600) -> SimulationConfig:
    value = buffer if isinstance(buffer, IntOrPercent) else IntOrPercent(buffer)
    spec = PoolSpec(min_replicas=min_replicas, max_replicas=200, buffer=value,
                    drain_timeout_s=drain_timeout_s)
    return dataclasses.replace(base, spec=spec)


def test_a_buffer_covering_burst_and_start_delay_has_no_cold_waits_and_no_cuts() -> None:
    # A burst of 10, plus ~7.5 arrivals while a replacement warms for 15 s, plus margin.
    simulation = PoolSimulation(_with(25))
    report = simulation.run()
    assert report.calls > 500
    assert report.cold_waits == 0, report.cold_wait_times_s
    assert report.calls_cut == 0, report.calls_cut_by_cause
    assert report.calls_unserved == 0
    # The rollout finished inside the run, and only new-template pods are left.
    assert report.rollout_completed_at_s is not None
    assert 600 < report.rollout_completed_at_s < 1200
    assert set(simulation.templates()) == {NEW_TEMPLATE}
    assert report.pods_deleted_by_reason.get("drained: no calls left", 0) > 0
    # The old busy workers were drained, so draining shows up in the timeline after 600 s.
    draining = report.timeline.draining
    assert max(draining[:599]) == 0 and max(draining[600:]) > 20


def test_without_a_buffer_calls_wait_for_a_cold_start() -> None:
    cold = simulate(_with(0, min_replicas=0))
    warm = simulate(_with(25, min_replicas=0))
    assert cold.calls == warm.calls  # same seed, same calls
    assert cold.cold_waits > 0
    assert cold.wait_max_s >= BASE.start_delay_s / 2
    assert warm.cold_waits < cold.cold_waits


def test_idle_cost_grows_with_the_buffer_and_cold_waits_shrink() -> None:
    config = dataclasses.replace(BASE, duration_s=900, rollout_at_s=450)
    reports = [simulate(_with(buffer, config)) for buffer in (2, 8, 16)]
    idle = [r.idle_worker_s for r in reports]
    waits = [r.cold_waits for r in reports]
    assert idle[0] < idle[1] < idle[2], idle
    assert waits[0] > waits[1] > waits[2], waits


def test_a_short_drain_timeout_cuts_long_calls_in_a_rollout() -> None:
    config = dataclasses.replace(BASE, duration_s=900, rollout_at_s=400, mean_call_s=300)
    cut = simulate(_with(10, config, drain_timeout_s=30))
    assert cut.calls_cut > 0
    assert cut.calls_cut_by_cause == {CUT_BY_DRAIN_TIMEOUT: cut.calls_cut}
    # Nothing is cut before the timeout has run from the drain request.
    assert min(cut.cut_times_s) >= 400 + 30
    assert len(cut.cut_times_s) == cut.calls_cut
    assert cut.calls_completed + cut.calls_cut + cut.calls_unserved <= cut.calls
    # The same calls without a rollout: no drain, so no cut.
    calm = simulate(_with(10, dataclasses.replace(config, rollout_at_s=None),
                          drain_timeout_s=30))
    assert calm.calls_cut == 0


def test_a_pod_deleted_with_calls_counts_them_as_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    # A planner that breaks the rule once: it deletes every busy worker at t >= 300.
    deleted_at: list[float] = []

    def reckless(spec: PoolSpec, template_hash: str, workers: Sequence[WorkerView],
                 now: float, surplus_since: float | None = None) -> PoolPlan:
        plan = plan_pool(spec, template_hash, workers, now, surplus_since)
        busy = [w for w in workers if w.state is WorkerState.BUSY]
        if not deleted_at and busy and now >= 300:
            deleted_at.append(now)
            doomed = tuple((w.name, "test: reckless") for w in busy)
            return dataclasses.replace(plan, delete=plan.delete + doomed)
        return plan

    monkeypatch.setattr(model, "plan_pool", reckless)
    report = simulate(_with(10, dataclasses.replace(BASE, rollout_at_s=None)))
    assert deleted_at
    assert report.calls_cut_by_cause.get(CUT_BY_POD_DELETION, 0) > 10
    assert report.pods_deleted_by_reason["test: reckless"] == (
        report.calls_cut_by_cause[CUT_BY_POD_DELETION])


def test_same_seed_same_run_and_same_calls_for_every_buffer() -> None:
    assert simulate(_with(5)) == simulate(_with(5))
    assert generate_calls(_with(5)) == generate_calls(_with(20))
    assert generate_calls(_with(5)) != generate_calls(dataclasses.replace(_with(5), seed=2))


def test_calls_follow_the_configured_rates() -> None:
    config = dataclasses.replace(BASE, duration_s=20_000, rollout_at_s=None)
    calls = generate_calls(config)
    bursts = [c for c in calls if c.burst]
    poisson = [c for c in calls if not c.burst]
    assert len(bursts) == 10 * (20_000 // 300)
    assert len(poisson) == pytest.approx(0.5 * 20_000, rel=0.05)
    mean = sum(c.length_s for c in calls) / len(calls)
    assert mean == pytest.approx(120, rel=0.05)


def test_the_report_renders_as_svg_and_table() -> None:
    report = simulate(_with(IntOrPercent(20, percent=True)))
    root = ET.fromstring(pool_svg(report))
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    texts = " ".join(el.text or "" for el in root.iter("{http://www.w3.org/2000/svg}text"))
    assert "buffer 20%" in texts and "rollout" in texts and "time (minutes)" in texts
    table = comparison_table([report]).splitlines()
    assert table[0].split()[:3] == ["buffer", "calls", "cold"]
    assert table[1].split()[:3] == ["20%", str(report.calls), str(report.cold_waits)]


def test_cli_writes_json_and_one_svg_per_buffer(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sim"
    status = main(["--duration-s", "600", "--buffer", "3", "--buffer", "20%",
                   "--seed", "7", "--out", str(out)])
    assert status == 0
    captured = capsys.readouterr()
    assert "buffer 3:" in captured.err and "buffer 20%:" in captured.err  # progress
    rows = [line.split() for line in captured.out.splitlines()]
    assert [row[0] for row in rows if row and row[0] in ("3", "20%")] == ["3", "20%"]
    document = json.loads((out / "simulation.json").read_text())
    runs = document["runs"]
    assert [run["config"]["spec"]["buffer"] for run in runs] == ["3", "20%"]
    assert runs[0]["config"]["rollout_at_s"] == 300  # half the duration by default
    assert runs[0]["report"]["calls"] == runs[1]["report"]["calls"] > 0
    assert len(runs[0]["report"]["timeline"]["t_s"]) == 600
    for name in ("pool-buffer-3.svg", "pool-buffer-20pct.svg"):
        assert ET.parse(out / name).getroot().tag.endswith("svg")


@pytest.mark.parametrize(("argv", "message"), [
    (["--rate", "-1"], "--rate: must not be negative"),
    (["--duration-s", "soon"], "argument --duration-s: invalid float value"),
    (["--buffer", "lots"], "argument --buffer: expected a number or a percentage"),
    (["--buffer", "150%"], "buffer: a percentage must be under 100%"),
    (["--min", "5", "--max", "2"], "--min (5) must not exceed --max (2)"),
    (["--rollout-at-s", "9000"], "--rollout-at-s: must fall inside the run"),
    (["--rollout-at-s", "10", "--no-rollout"], "not allowed with argument"),
    (["--burst-every-s", "0"], "--burst-every-s: must be a positive number"),
])
def test_bad_flag_values_exit_2_with_one_line(argv: list[str], message: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("voxmesh-operator simulate: error: ")
    assert message in lines[0]
