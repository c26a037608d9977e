"""SLO thresholds from the command line, checked against a run's summary.

An SLO is ``METRIC OP NUMBER``, spaces allowed around the operator::

    p95_voice_to_voice_ms<=1500
    p99_voice_to_voice_ms <= 2500
    p95_first_transcript_ms<=800
    p95_barge_in_stop_ms<300
    error_rate<=0.01
    calls_ok>=100

``OP`` is ``<=``, ``<`` or ``>=``. ``NUMBER`` is a plain decimal (``1500``, ``0.01``, ``1e3``).
Metrics are the figures of :func:`voxmesh_loadtest.stats.summarize`:

* ``{p50,p90,p95,p99,min,max,mean}_{voice_to_voice_ms,first_transcript_ms,barge_in_stop_ms}``:
  a statistic of a per-turn latency;
* ``calls``, ``calls_ok``, ``calls_failed``, ``turns``, ``turns_answered``, ``content_checked``,
  ``content_failures``, ``peak_concurrency``: counts;
* ``error_rate``: ``calls_failed / calls``;
* ``errors_<kind>``: calls and turns that ended in that error kind (``errors_rejected``, ...).

A metric without data fails its SLO rather than passing vacuously: a latency no turn measured
(e.g. barge-in stop in a run without barge-ins), ``error_rate`` of a run without calls, or
``content_failures`` when no answer had its content checked.
"""

from __future__ import annotations

import difflib
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from voxmesh_loadtest.results import ERROR_KINDS

#: Latencies summarized per turn, and the statistics an SLO can take of them.
LATENCIES = ("voice_to_voice_ms", "first_transcript_ms", "barge_in_stop_ms")
STATISTICS = ("p50", "p90", "p95", "p99", "min", "max", "mean")
#: Counts taken as they are from the summary.
COUNTS = ("calls", "calls_ok", "calls_failed", "turns", "turns_answered", "content_checked",
          "content_failures", "peak_concurrency")
#: Comparison operators, longest first so that ``<=`` is not read as ``<``.
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "<": operator.lt,
}

METRICS: tuple[str, ...] = (
    *(f"{stat}_{latency}" for latency in LATENCIES for stat in STATISTICS),
    *COUNTS,
    "error_rate",
    *(f"errors_{kind}" for kind in ERROR_KINDS),
)

_SPEC = re.compile(r"^\s*(?P<metric>[^<>=!]*?)\s*(?P<op>[<>=!]+)\s*(?P<number>.*?)\s*$")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def _valid_metrics() -> str:
    # The full list is ~40 names; the brace form is what a person can actually read.
    return (f"valid metrics: {{{','.join(STATISTICS)}}}_{{{','.join(LATENCIES)}}}, "
            f"{', '.join(COUNTS)}, error_rate, errors_{{{','.join(ERROR_KINDS)}}}")


@dataclass(frozen=True)
class Slo:
    """One threshold.

    Attributes:
        metric: One of :data:`METRICS`.
        op: ``<=``, ``<`` or ``>=``.
        threshold: The number the metric is compared with.
    """

    metric: str
    op: str
    threshold: float

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{_number(self.threshold)}"


@dataclass(frozen=True)
class SloResult:
    """One threshold checked against a run.

    Attributes:
        name: The SLO as written back (``p95_voice_to_voice_ms<=1500``).
        metric: The metric.
        op: The operator.
        threshold: The threshold.
        actual: The run's value; None when the run has no data for it.
        passed: The run met the threshold (never true without data).
        message: One line for people, e.g. ``p95_voice_to_voice_ms = 1320 (<= 1500): passed``.
    """

    name: str
    metric: str
    op: str
    threshold: float
    actual: float | None
    passed: bool
    message: str

    def describe(self) -> str:
        """The one-line message, for the command line."""
        return self.message

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def parse_slo(text: str) -> Slo:
    """Parses one ``METRIC OP NUMBER`` string.

    Raises:
        ValueError: The message quotes the SLO and names the part that is wrong (the metric, with
            the valid ones listed; the operator; or the number).
    """
    match = _SPEC.match(text)
    if match is None:
        raise ValueError(f"SLO {text!r}: no comparison; write METRIC<=NUMBER, METRIC<NUMBER or "
                         f"METRIC>=NUMBER (e.g. p95_voice_to_voice_ms<=1500)")
    metric, op, number = match["metric"], match["op"], match["number"]
    if not metric:
        raise ValueError(f"SLO {text!r}: no metric before {op!r}; {_valid_metrics()}")
    if metric not in METRICS:
        close = difflib.get_close_matches(metric, METRICS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ValueError(f"SLO {text!r}: unknown metric {metric!r}{hint}; {_valid_metrics()}")
    if op not in OPERATORS:
        raise ValueError(f"SLO {text!r}: unsupported operator {op!r}; use <=, < or >=")
    if not _NUMBER.match(number):
        what = repr(number) if number else "nothing"
        raise ValueError(f"SLO {text!r}: threshold must be a number, got {what} after {op!r}")
    return Slo(metric, op, float(number))


def parse_slos(texts: Iterable[str]) -> list[Slo]:
    """Parses each string with :func:`parse_slo` (e.g. a repeated ``--slo`` option).

    Raises:
        ValueError: The first bad SLO, as :func:`parse_slo` describes it.
    """
    return [parse_slo(text) for text in texts]


def metric_value(summary: Mapping[str, Any], metric: str) -> tuple[float | None, str]:
    """The value of ``metric`` in a :func:`~voxmesh_loadtest.stats.summarize` summary.

    Returns:
        ``(value, "")``, or ``(None, why)`` when the run has no data for the metric.

    Raises:
        ValueError: ``metric`` is not one of :data:`METRICS`.
    """
    if metric == "error_rate":
        if not summary["calls"]:
            return None, "no calls were made"
        return summary["calls_failed"] / summary["calls"], ""
    if metric.startswith("errors_") and metric[len("errors_"):] in ERROR_KINDS:
        return float(summary["errors"].get(metric[len("errors_"):], 0)), ""
    if metric == "content_failures" and not summary["content_checked"]:
        return None, "no answer had its content checked"
    if metric in COUNTS:
        return float(summary[metric]), ""
    stat, _, latency = metric.partition("_")
    if stat in STATISTICS and latency in LATENCIES:
        value = summary[latency][stat]
        if value is None:
            return None, f"no turn measured {latency}"
        return float(value), ""
    raise ValueError(f"unknown metric {metric!r}; {_valid_metrics()}")


def check(summary: Mapping[str, Any], slos: Sequence[Slo]) -> list[SloResult]:
    """Checks each SLO against a run's summary, in order.

    Args:
        summary: :func:`voxmesh_loadtest.stats.summarize` of the run.
        slos: Parsed thresholds.

    Returns:
        One result per SLO; a metric without data fails with a message saying so.
    """
    results = []
    for slo in slos:
        actual, missing = metric_value(summary, slo.metric)
        if actual is None:
            passed = False
            message = f"{slo.metric}: no data ({missing}): failed"
        else:
            passed = OPERATORS[slo.op](actual, slo.threshold)
            message = (f"{slo.metric} = {_number(actual)} ({slo.op} {_number(slo.threshold)}): "
                       f"{'passed' if passed else 'failed'}")
        results.append(SloResult(str(slo), slo.metric, slo.op, slo.threshold, actual, passed,
                                 message))
    return results


def all_passed(results: Iterable[SloResult]) -> bool:
    """Every SLO passed (true for none): the run's exit status follows this."""
    return all(result.passed for result in results)


def _number(value: float) -> str:
    # Thresholds are typed as integers far more often than not; print them back that way.
    if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.1f}" if abs(value) >= 1 else f"{value:.4g}"
