"""When a streaming STT provider's endpointing lets the caller's turn end early.

The worker ends a turn after ``endpoint_silence_ms`` of VAD silence (448 ms by default): long
enough not to cut in at a comma. A streaming provider (Deepgram) runs its own endpointer on the
same audio and tells the STT stream what it decided (``RecognizeResponse.speech_event``):

* ENDPOINT: the provider closed the utterance after its own silence (``speech_final``), and
  the words up to there are final;
* UTTERANCE_END: no words for the provider's utterance-end gap (word-timing based, so robust
  to background noise that keeps a VAD busy);
* SPEECH_STARTED: the provider heard speech begin.

Once the provider says the utterance is over and the caller has not spoken since, a short
confirmation of silence (``min_silence_ms``) is enough: the second opinion replaces the rest of
the silence timer. Positions are milliseconds of the audio the worker sent on its STT stream,
so a hint that arrives late (network, a slow provider) is matched to the pause it is about,
never to a later one.

Pure logic: the session feeds it what it sends and hears and asks how much silence ends the
turn now.
"""

from __future__ import annotations

from dataclasses import dataclass

from voxmesh.v1 import stt_pb2

_ENDPOINT = stt_pb2.SpeechEvent.ENDPOINT
_UTTERANCE_END = stt_pb2.SpeechEvent.UTTERANCE_END
_SPEECH_STARTED = stt_pb2.SpeechEvent.SPEECH_STARTED


@dataclass
class ProviderEndpointing:
    """How much silence ends the turn, given the provider's hints.

    Attributes:
        silence_ms: The worker's own endpoint silence (``endpoint_silence_ms``).
        min_silence_ms: Silence that ends the turn once the provider reported the utterance
            over; the floor that keeps a provider's early call from cutting the caller off.
        same_speech_ms: Local speech this close after the hint's position belongs to the
            utterance the hint is about (a VAD's hangover runs past the last word's end).
    """

    silence_ms: int
    min_silence_ms: int
    same_speech_ms: int = 250
    _hint_at_ms: int | None = None
    _last_speech_ms: int = 0

    def __post_init__(self) -> None:
        """Checks the thresholds."""
        if not 0 <= self.min_silence_ms <= self.silence_ms:
            raise ValueError(
                f"min_silence_ms must be between 0 and silence_ms ({self.silence_ms}), got "
                f"{self.min_silence_ms}")

    @property
    def hinted(self) -> bool:
        """Whether a provider hint currently says the utterance is over."""
        return self._hint_at_ms is not None

    def on_speech(self, stream_ms: int) -> None:
        """Local VAD heard speech in audio sent up to ``stream_ms``.

        Speech after the hinted position means the caller went on: the hint is void.
        """
        self._last_speech_ms = max(self._last_speech_ms, stream_ms)
        if self._hint_at_ms is not None and stream_ms > self._hint_at_ms + self.same_speech_ms:
            self._hint_at_ms = None

    def on_speech_event(self, kind: int, at_ms: int) -> None:
        """A ``SpeechEvent`` from the STT stream (``SpeechEvent.Kind`` value, position)."""
        if kind == _SPEECH_STARTED:
            if self._hint_at_ms is not None and at_ms > self._hint_at_ms:
                self._hint_at_ms = None
            return
        if kind not in (_ENDPOINT, _UTTERANCE_END):
            return
        if at_ms + self.same_speech_ms < self._last_speech_ms:
            return  # about an earlier pause: the caller has spoken since
        self._hint_at_ms = max(at_ms, self._hint_at_ms or 0)

    def on_turn_end(self) -> None:
        """The turn ended (whatever decided it): hints are about the next one from now on."""
        self._hint_at_ms = None

    def required_silence_ms(self) -> int:
        """Silence after the caller's last speech that ends the turn now."""
        return self.min_silence_ms if self._hint_at_ms is not None else self.silence_ms

    def turn_over(self, silence_ms: float) -> bool:
        """Whether ``silence_ms`` of silence so far ends the turn."""
        return silence_ms >= self.required_silence_ms()
