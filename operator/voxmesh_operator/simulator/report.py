"""Simulation results as a stacked-area SVG, a plain-text table and JSON.

The SVG is written by hand, as ``bench/bench_plot.py`` does: the operator image carries no
plotting library.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from voxmesh_operator.planning import WorkerState
from voxmesh_operator.simulator.model import SimulationConfig, SimulationReport

#: Bottom to top: the busy workers carry the calls, the buffer sits on them.
STACK_ORDER = (WorkerState.BUSY, WorkerState.IDLE, WorkerState.WARMING, WorkerState.DRAINING)
STATE_COLORS = {
    WorkerState.BUSY: "#4f6fa8",
    WorkerState.IDLE: "#82b366",
    WorkerState.WARMING: "#d6b656",
    WorkerState.DRAINING: "#e08a4f",
}
WAIT_COLOR = "#c0392b"
CUT_COLOR = "#222222"
#: A stacked area is drawn from at most this many samples (every second of a long run would
#: be a few points per pixel: a bigger file and no more detail).
MAX_PLOT_POINTS = 1200


def buffer_slug(buffer: str) -> str:
    """A file-name-safe form of a buffer (``"20%"`` becomes ``"20pct"``)."""
    return buffer.replace("%", "pct")


def write_pool_svg(path: Path, report: SimulationReport) -> None:
    """Writes :func:`pool_svg` of ``report`` to ``path``."""
    path.write_text(pool_svg(report))


def pool_svg(report: SimulationReport) -> str:
    """Workers by state over time, stacked, with the rollout and each cold wait and cut call.

    Args:
        report: One simulation run.

    Returns:
        A standalone SVG document.
    """
    width, height = 960, 500
    left, right, top, bottom = 64, 200, 84, 56
    plot_w, plot_h = width - left - right, height - top - bottom
    timeline = report.timeline
    duration = report.duration_s
    minutes = duration >= 600
    unit = 60.0 if minutes else 1.0

    totals = [sum(timeline.series(state)[i] for state in STACK_ORDER)
              for i in range(len(timeline.t_s))]
    y_top = max([1, *totals, *timeline.waiting])
    y_step = _nice_step(y_top, 8)
    y_max = math.ceil(y_top / y_step) * y_step

    def x_of(t: float) -> float:
        return left + plot_w * t / duration

    def y_of(count: float) -> float:
        return top + plot_h * (1 - count / y_max)

    rollout = (f"rollout at {report.rollout_at_s:g} s, done in "
               f"{report.rollout_duration_s:g} s" if report.rollout_duration_s is not None
               else f"rollout at {report.rollout_at_s:g} s, not done by the end"
               if report.rollout_at_s is not None else "no rollout")
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{left}" y="22" font-size="15" font-weight="bold">'
        f'{escape(f"Pool workers by state, buffer {report.buffer}")}</text>',
        f'<text x="{left}" y="42">{escape(_headline(report))}; {escape(rollout)}</text>',
    ]

    # The stacked areas, one polygon per state: its top edge forwards, its bottom edge back.
    stride = max(1, math.ceil(len(timeline.t_s) / MAX_PLOT_POINTS))
    indices = list(range(0, len(timeline.t_s), stride))
    if timeline.t_s and indices[-1] != len(timeline.t_s) - 1:
        indices.append(len(timeline.t_s) - 1)
    base = [0] * len(indices)
    for state in STACK_ORDER:
        series = timeline.series(state)
        upper = [base[k] + series[i] for k, i in enumerate(indices)]
        if any(upper[k] != base[k] for k in range(len(indices))):
            edge = [f"{x_of(timeline.t_s[i]):.1f},{y_of(upper[k]):.1f}"
                    for k, i in enumerate(indices)]
            edge += [f"{x_of(timeline.t_s[i]):.1f},{y_of(base[k]):.1f}"
                     for k, i in reversed(list(enumerate(indices)))]
            parts.append(f'<polygon points="{" ".join(edge)}" fill="{STATE_COLORS[state]}" '
                         f'stroke="none"><title>{state.value}</title></polygon>')
        base = upper
    if any(timeline.waiting):
        line = " ".join(f"{x_of(timeline.t_s[i]):.1f},{y_of(timeline.waiting[i]):.1f}"
                        for i in indices)
        parts.append(f'<polyline points="{line}" fill="none" stroke="{WAIT_COLOR}" '
                     'stroke-width="1.5"><title>calls waiting</title></polyline>')

    # Axes, grid and ticks.
    for index in range(round(y_max / y_step) + 1):
        count = index * y_step
        y = y_of(count)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" '
                     'stroke="#dddddd" stroke-width="0.5"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{count:g}</text>')
    x_step = _nice_step(duration / unit, 12)
    for index in range(math.floor(duration / unit / x_step) + 1):
        value = index * x_step
        x = x_of(value * unit)
        parts.append(f'<line x1="{x:.1f}" y1="{top + plot_h}" x2="{x:.1f}" '
                     f'y2="{top + plot_h + 5}" stroke="black"/>')
        parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 18}" text-anchor="middle">'
                     f'{value:g}</text>')
    parts += [
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="black"/>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'stroke="black"/>',
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 14}" text-anchor="middle">'
        f'time ({"minutes" if minutes else "seconds"})</text>',
        f'<text x="16" y="{top + plot_h / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 16 {top + plot_h / 2:.1f})">pods (and calls waiting)</text>',
    ]

    # Rollout markers, and a strip of ticks above the plot for each cold wait and cut call.
    if report.rollout_at_s is not None:
        parts += _vertical_marker(x_of(report.rollout_at_s), top, top + plot_h, "rollout",
                                  "6,4", 14)
    if report.rollout_completed_at_s is not None:
        parts += _vertical_marker(x_of(report.rollout_completed_at_s), top, top + plot_h,
                                  "rollout done", "2,3", 28)
    parts += _tick_strip([x_of(t) for t in report.cold_wait_times_s], top - 26, WAIT_COLOR,
                         "cold wait")
    parts += _tick_strip([x_of(t) for t in report.cut_times_s], top - 14, CUT_COLOR, "call cut")

    parts += _legend(left + plot_w + 20, top)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _headline(report: SimulationReport) -> str:
    waits = (f"{report.cold_waits} cold waits (p95 {report.wait_p95_s:.1f} s)"
             if report.cold_waits else "no cold waits")
    return (f"{report.calls} calls, {waits}, {report.calls_cut} cut, "
            f"{report.idle_worker_s / 3600:.1f} idle worker-hours")


def _nice_step(span: float, max_ticks: int) -> float:
    """A 1, 2 or 5 times a power of ten step giving at most ``max_ticks`` ticks."""
    if span <= 0:
        return 1.0
    raw = span / max_ticks
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if factor * power >= raw:
            return float(max(factor * power, 1))
    return float(10 * power)


def _vertical_marker(x: float, y_from: float, y_to: float, label: str, dash: str,
                     label_dy: float) -> list[str]:
    return [f'<line x1="{x:.1f}" y1="{y_from}" x2="{x:.1f}" y2="{y_to}" stroke="black" '
            f'stroke-dasharray="{dash}" stroke-width="1.2"/>',
            f'<text x="{x + 4:.1f}" y="{y_from + label_dy}" font-size="11">{label}</text>']


def _tick_strip(xs: Sequence[float], y: float, color: str, label: str) -> list[str]:
    # Many events land on the same pixel; one tick per half pixel keeps the file small.
    positions = sorted({round(x * 2) / 2 for x in xs})
    if not positions:
        return []
    path = " ".join(f"M{x:.1f},{y:.1f}v8" for x in positions)
    return [f'<path d="{path}" stroke="{color}" stroke-width="1"><title>{label}: '
            f'{len(xs)}</title></path>']


def _legend(x: float, y: float) -> list[str]:
    parts = []
    for state in reversed(STACK_ORDER):
        parts.append(f'<rect x="{x}" y="{y}" width="14" height="14" '
                     f'fill="{STATE_COLORS[state]}"/>')
        parts.append(f'<text x="{x + 20}" y="{y + 11}">{state.value}</text>')
        y += 22
    parts += [
        f'<line x1="{x}" y1="{y + 7}" x2="{x + 14}" y2="{y + 7}" stroke="{WAIT_COLOR}" '
        'stroke-width="1.5"/>',
        f'<text x="{x + 20}" y="{y + 11}">calls waiting</text>',
        f'<path d="M{x + 7},{y + 25}v8" stroke="{WAIT_COLOR}"/>',
        f'<text x="{x + 20}" y="{y + 33}">a call waited (cold start)</text>',
        f'<path d="M{x + 7},{y + 47}v8" stroke="{CUT_COLOR}"/>',
        f'<text x="{x + 20}" y="{y + 55}">a call was cut</text>',
        f'<line x1="{x}" y1="{y + 73}" x2="{x + 14}" y2="{y + 73}" stroke="black" '
        'stroke-dasharray="6,4"/>',
        f'<text x="{x + 20}" y="{y + 77}">template change</text>',
        f'<line x1="{x}" y1="{y + 95}" x2="{x + 14}" y2="{y + 95}" stroke="black" '
        'stroke-dasharray="2,3"/>',
        f'<text x="{x + 20}" y="{y + 99}">last old pod gone</text>',
    ]
    return parts


def comparison_table(reports: Sequence[SimulationReport]) -> str:
    """One row per run: cold waits and their length, cut calls, and what the buffer cost.

    Args:
        reports: Runs to compare (typically one per buffer, same seed).

    Returns:
        A fixed-width text table, newline-terminated.
    """
    header = ("buffer", "calls", "cold waits", "p50 wait s", "p95 wait s", "max wait s",
              "calls cut", "idle worker-s", "warming worker-s", "peak pods", "pods created",
              "rollout s")
    rows = [header]
    for report in reports:
        rollout = ("-" if report.rollout_at_s is None else
                   "not done" if report.rollout_duration_s is None else
                   f"{report.rollout_duration_s:g}")
        rows.append((report.buffer, str(report.calls), str(report.cold_waits),
                     f"{report.wait_p50_s:.1f}", f"{report.wait_p95_s:.1f}",
                     f"{report.wait_max_s:.1f}", str(report.calls_cut),
                     f"{report.idle_worker_s:.0f}", f"{report.warming_worker_s:.0f}",
                     str(report.peak_workers), str(report.pods_created), rollout))
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True))
             for row in rows]
    return "\n".join(lines) + "\n"


def config_dict(config: SimulationConfig) -> dict[str, Any]:
    """The configuration as plain JSON values (the buffer as written: ``5`` or ``"20%"``)."""
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
              if f.name != "spec"}
    spec = config.spec
    values["spec"] = {
        "min_replicas": spec.min_replicas, "max_replicas": spec.max_replicas,
        "buffer": str(spec.buffer), "max_sessions_per_worker": spec.max_sessions_per_worker,
        "drain_timeout_s": spec.drain_timeout_s, "max_surge": str(spec.max_surge),
        "scale_down_delay_s": spec.scale_down_delay_s,
    }
    return values


def report_dict(report: SimulationReport) -> dict[str, Any]:
    """A run as plain JSON values, with the derived figures spelled out."""
    values = dataclasses.asdict(report)
    values["idle_worker_s"] = report.idle_worker_s
    values["warming_worker_s"] = report.warming_worker_s
    values["rollout_duration_s"] = report.rollout_duration_s
    return values


def simulation_json(configs: Sequence[SimulationConfig],
                    reports: Sequence[SimulationReport]) -> str:
    """The runs and the configuration of each, as a JSON document."""
    runs = [{"config": config_dict(config), "report": report_dict(report)}
            for config, report in zip(configs, reports, strict=True)]
    return json.dumps({"runs": runs}) + "\n"
