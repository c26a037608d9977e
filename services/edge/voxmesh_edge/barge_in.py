"""Barge-in stop latency, measured where it is defined: at the edge.

From the caller's speech onset as the edge receives it, to the last agent audio packet the edge
sends before the worker's pause/clear takes effect. Both WebRTC legs (the caller's jitter
buffers, typically 100+ ms round trip with aiortc) are outside it, so the figure is what the
platform controls.
"""

from __future__ import annotations

import math
import time

import numpy as np

from voxmesh.metrics import meter

LOUD_DBFS = -35.0
#: Quiet this long before a loud caller frame makes that frame a new onset.
ONSET_QUIET_S = 0.3

_STOP = meter("edge").create_histogram(
    "voxmesh.edge.barge_in_stop", unit="ms",
    description="Caller speech onset at the edge -> last agent audio packet sent (barge-in)")


def level_dbfs(pcm16: bytes) -> float:
    """RMS level of PCM16 audio in dBFS (-120 for silence)."""
    samples = np.frombuffer(pcm16, dtype="<i2").astype(np.float32)
    if not samples.size:
        return -120.0
    # A dot product: a third of np.mean's cost, and this runs on every frame of every call.
    mean_square = float(samples @ samples) / samples.size
    return 10 * math.log10(mean_square / 32768**2) if mean_square else -120.0


class BargeInMeter:
    """Watches one call's caller and agent audio; :meth:`on_clear` yields a measurement.

    Args:
        jitter_ms: Depth of the edge's receive jitter buffer. Caller audio is seen here after
            it was decoded, which is this long after its packet reached the edge, so onsets
            are moved back by it.
    """

    def __init__(self, jitter_ms: float = 0.0) -> None:
        """Starts with no onset and no agent audio."""
        self._jitter_s = jitter_ms / 1000
        self._onset: float | None = None
        self._last_caller_loud = -math.inf
        self._last_agent_loud = -math.inf
        self._measured_onset: float | None = None

    def on_caller_audio(self, pcm16: bytes, now: float | None = None) -> None:
        """Feeds a caller frame as received."""
        now = time.monotonic() if now is None else now
        if level_dbfs(pcm16) > LOUD_DBFS:
            if now - self._last_caller_loud > ONSET_QUIET_S:
                self._onset = now - self._jitter_s
            self._last_caller_loud = now

    def on_agent_audio(self, pcm16: bytes, now: float | None = None) -> None:
        """Feeds an agent frame as it is sent to the caller."""
        if level_dbfs(pcm16) > LOUD_DBFS:
            self._last_agent_loud = time.monotonic() if now is None else now

    def on_clear(self) -> float | None:
        """The worker stopped agent audio; returns the stop latency in ms, once per onset.

        None when there is no caller onset to blame (a clear without speech) or the agent was
        already quiet when the caller started.
        """
        onset = self._onset
        if onset is None or onset == self._measured_onset:
            return None
        self._measured_onset = onset
        if self._last_agent_loud < onset:
            return None
        stop_ms = (self._last_agent_loud - onset) * 1000
        _STOP.record(stop_ms)
        return round(stop_ms, 1)
