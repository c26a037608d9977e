"""Turn-taking: decides, window by window, when the caller starts and stops speaking.

Three thresholds on silence after speech:

* ``speculative_pause_ms``: ask STT for a final now. If the caller stays silent, the transcript
  is ready by the time the turn ends; if they go on, the next final covers the rest.
* ``endpoint_silence_ms``: the caller's turn is over.

Speech for ``min_speech_ms`` starts a turn (and is what interrupts the agent).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from voxmesh_worker.vad import WINDOW_MS


class TurnSignal(enum.Enum):
    """What a VAD window means for the conversation."""

    SPEECH_STARTED = "speech_started"
    PAUSE = "pause"
    END_OF_TURN = "end_of_turn"


@dataclass
class TurnDetector:
    """Hysteresis state machine over Silero speech probabilities."""

    threshold: float
    min_speech_ms: int
    speculative_pause_ms: int
    endpoint_silence_ms: int
    user_speaking: bool = False
    _speech_ms: int = 0
    _silence_ms: int = 0
    _pause_signalled: bool = False

    @property
    def onset_ms(self) -> int:
        """Speech heard so far that has not (yet) started a turn."""
        return 0 if self.user_speaking else self._speech_ms

    @property
    def silence_ms(self) -> int:
        """Silence since the caller's last speech, while they have the floor."""
        return self._silence_ms if self.user_speaking else 0

    def end_turn(self) -> TurnSignal:
        """Ends the caller's turn now (the STT provider's endpointer confirmed it)."""
        self.user_speaking, self._speech_ms, self._silence_ms = False, 0, 0
        self._pause_signalled = False
        return TurnSignal.END_OF_TURN

    def update(self, probability: float) -> TurnSignal | None:
        """Feeds one 32 ms window; returns a signal when something changes."""
        if probability >= self.threshold:
            self._speech_ms += WINDOW_MS
            self._silence_ms = 0
            self._pause_signalled = False
            if not self.user_speaking and self._speech_ms >= self.min_speech_ms:
                self.user_speaking = True
                return TurnSignal.SPEECH_STARTED
            return None
        # Below threshold - 0.15 counts as silence; in between keeps the current state.
        if probability >= self.threshold - 0.15:
            return None
        if not self.user_speaking:
            self._speech_ms = 0
            return None
        self._silence_ms += WINDOW_MS
        if self._silence_ms >= self.endpoint_silence_ms:
            self.user_speaking = False
            self._speech_ms = 0
            self._pause_signalled = False
            return TurnSignal.END_OF_TURN
        if self._silence_ms >= self.speculative_pause_ms and not self._pause_signalled:
            self._pause_signalled = True
            return TurnSignal.PAUSE
        return None
