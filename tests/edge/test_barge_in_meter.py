"""The edge's barge-in stop latency: caller onset in, last agent packet out."""

from __future__ import annotations

import numpy as np

from voxmesh_edge.barge_in import BargeInMeter, level_dbfs

LOUD = (np.sin(np.arange(320) / 3) * 8000).astype("<i2").tobytes()
QUIET = bytes(640)


def test_level() -> None:
    assert level_dbfs(QUIET) == -120.0
    assert -16 < level_dbfs(LOUD) < -14  # RMS of a 8000-peak sine: -15.3 dBFS


def test_stop_latency_counts_from_the_onset_moved_back_by_the_jitter_buffer() -> None:
    meter = BargeInMeter(jitter_ms=40)
    meter.on_caller_audio(QUIET, now=10.0)
    meter.on_agent_audio(LOUD, now=10.0)
    meter.on_caller_audio(LOUD, now=10.1)  # decoded 40 ms after its packet arrived
    meter.on_caller_audio(LOUD, now=10.12)  # same utterance: not a new onset
    meter.on_agent_audio(LOUD, now=10.13)
    meter.on_agent_audio(QUIET, now=10.15)  # cleared: silence from here
    assert meter.on_clear() == 70.0  # 10.13 - (10.1 - 0.04)
    assert meter.on_clear() is None  # one measurement per onset


def test_no_measurement_without_an_onset_or_when_the_agent_was_already_quiet() -> None:
    meter = BargeInMeter()
    meter.on_agent_audio(LOUD, now=1.0)
    assert meter.on_clear() is None
    meter.on_caller_audio(LOUD, now=2.0)
    assert meter.on_clear() is None  # the agent's last sound was before the caller started
