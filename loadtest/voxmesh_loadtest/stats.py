"""Percentiles and summaries of a run's measurements."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

PERCENTILES = (50, 90, 95, 99)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def distribution(values: Sequence[float]) -> dict[str, float | int | None]:
    """Count, min, p50/p90/p95/p99, max and mean of ``values`` (None entries when empty)."""
    if not values:
        return {"count": 0, **{f"p{q}": None for q in PERCENTILES}, "min": None, "max": None,
                "mean": None}
    return {"count": len(values), **{f"p{q}": round(percentile(values, q), 1)
                                     for q in PERCENTILES},
            "min": round(min(values), 1), "max": round(max(values), 1),
            "mean": round(sum(values) / len(values), 1)}


def summarize(run: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of a run (the JSON from :func:`runner.to_json`)."""
    calls = run["calls"]
    turns = [t for c in calls for t in c["turns"]]
    errors: Counter[str] = Counter()
    for call in calls:
        if call["error"]:
            errors[call["error"]] += 1
        for turn in call["turns"]:
            if turn["error"]:
                errors[turn["error"]] += 1
    checked = [t for t in turns if t["content_ok"] is not None]
    return {
        "calls": len(calls),
        "calls_ok": sum(1 for c in calls if c["ok"]),
        "calls_failed": sum(1 for c in calls if not c["ok"]),
        "turns": len(turns),
        "turns_answered": sum(1 for t in turns if t["voice_to_voice_ms"] is not None),
        "voice_to_voice_ms": distribution(
            [t["voice_to_voice_ms"] for t in turns if t["voice_to_voice_ms"] is not None]),
        "first_transcript_ms": distribution(
            [t["first_transcript_ms"] for t in turns if t["first_transcript_ms"] is not None]),
        "barge_in_stop_ms": distribution(
            [t["barge_in_stop_ms"] for t in turns if t["barge_in_stop_ms"] is not None]),
        "content_checked": len(checked),
        "content_failures": sum(1 for t in checked if not t["content_ok"]),
        "errors": dict(sorted(errors.items())),
        "peak_concurrency": max((n for _, n in run["concurrency"]), default=0),
    }
