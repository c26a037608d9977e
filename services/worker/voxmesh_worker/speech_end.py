"""Where the caller's speech ended, to the millisecond, and when their turn is due to end.

The VAD judges 32 ms windows of audio that arrives in 20 ms frames. Counting silent windows
ends a turn up to a window and a frame late, depending on where the last word happened to fall:
on average ~25 ms of every answer's latency, and a spread that shows up in every p95. Instead:

* a speech window's quiet tail (:class:`~voxmesh_worker.vad.VadWindow`) places the end of the
  speech within 2 ms;
* arrival times map audio positions to the monotonic clock. Caller audio is real time, so the
  last sample of a chunk was spoken when the chunk arrived, give or take a transport delay that
  is the same for every sample;
* the turn ends exactly ``silence_ms`` after the speech did: by the judged audio when it covers
  that point, else by a timer while no audio is left to judge.

Pure bookkeeping: the session feeds it audio and VAD verdicts, and asks for times.
"""

from __future__ import annotations

from dataclasses import dataclass

from voxmesh_worker.vad import WINDOW_MS, VadWindow

#: PCM16 mono at 16 kHz.
_BYTES_PER_MS = 32


@dataclass
class SpeechEndClock:
    """The caller's audio timeline: how much arrived, how much was judged, where speech ended.

    Attributes:
        speech_floor: Windows at or above this probability end the silence (the turn
            detector's hysteresis band counts, too: it does not add silence either).
        speech_end_ms: Audio position (ms from the start of the call) where speech last ended.
    """

    speech_floor: float
    speech_end_ms: float = 0.0
    _received_ms: float = 0.0
    _arrived_at: float = 0.0
    _judged_ms: float = 0.0

    def on_audio(self, size_bytes: int, arrived_at: float) -> None:
        """A chunk of caller audio arrived at ``arrived_at`` (monotonic seconds)."""
        self._received_ms += size_bytes / _BYTES_PER_MS
        self._arrived_at = arrived_at

    def on_window(self, window: VadWindow) -> None:
        """The VAD judged the next 32 ms window."""
        self._judged_ms += WINDOW_MS
        if window.probability >= self.speech_floor:
            self.speech_end_ms = self._judged_ms - window.quiet_tail_ms

    @property
    def judged_silence_ms(self) -> float:
        """Silence after the last speech within the audio judged so far."""
        return self._judged_ms - self.speech_end_ms

    def time_of(self, position_ms: float) -> float:
        """When the sample at ``position_ms`` was spoken, on the monotonic clock."""
        return self._arrived_at - (self._received_ms - position_ms) / 1000

    @property
    def speech_end(self) -> float:
        """When the caller's speech last ended, on the monotonic clock."""
        return self.time_of(self.speech_end_ms)

    def due(self, silence_ms: float) -> float:
        """When ``silence_ms`` of silence after the last speech will have passed (monotonic)."""
        return self.time_of(self.speech_end_ms + silence_ms)
