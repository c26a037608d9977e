"""What the next provider needs to take a Recognize stream over mid-utterance.

The log keeps the stream's input since the last point where nothing was owed: the audio of the
open utterance and every Finalize not answered yet, with the Resets between them, in order.
Replaying it into a fresh engine rebuilds the state the failed provider had, so the finals the
client is waiting for still arrive, from the next provider, in the same turn.
"""

from __future__ import annotations

from dataclasses import dataclass

from voxmesh_stt.engine import Engine, FinalRequest


@dataclass(frozen=True)
class _Audio:
    data: bytes
    duration_ms: float


@dataclass(frozen=True)
class _Finalize:
    request: FinalRequest


@dataclass(frozen=True)
class _Reset:
    pass


_Op = _Audio | _Finalize | _Reset


class ReplayLog:
    """Input a stream may have to send again to another provider.

    Attributes:
        start_ms: Stream position of the first audio kept.
    """

    def __init__(self, max_audio_ms: float) -> None:
        """Creates an empty log.

        Args:
            max_audio_ms: Most audio kept while nothing is owed before it; older audio of a
                very long utterance is dropped (a batch provider could not take more anyway).
        """
        self.start_ms = 0.0
        self._max_audio_ms = max_audio_ms
        self._ops: list[_Op] = []
        self._audio_ms = 0.0

    @property
    def audio_ms(self) -> float:
        """Audio kept, in milliseconds."""
        return self._audio_ms

    def audio(self, data: bytes, duration_ms: float) -> None:
        """Records audio."""
        self._ops.append(_Audio(data, duration_ms))
        self._audio_ms += duration_ms
        self._trim_overflow()

    def finalize(self, request: FinalRequest) -> None:
        """Records a Finalize."""
        self._ops.append(_Finalize(request))

    def reset(self) -> None:
        """Records a Reset."""
        self._ops.append(_Reset())
        self.trim()

    def trim(self) -> None:
        """Forgets everything before the last utterance boundary that nothing is owed for.

        A boundary is a Reset or a final (non-speculative) Finalize: input before it can only
        matter to the Finalizes before it, and once those are answered it matters to no one.
        """
        cut = -1
        for index, op in enumerate(self._ops):
            if isinstance(op, _Finalize) and not op.request.answered:
                break
            if isinstance(op, _Reset) or (isinstance(op, _Finalize)
                                          and not op.request.speculative):
                cut = index
        if cut >= 0:
            self._drop(cut + 1)

    def replay_into(self, engine: Engine, submitted_at: float) -> None:
        """Sends the recorded input to ``engine``; answered Finalizes are not asked again.

        Args:
            engine: The next provider's engine.
            submitted_at: ``time.monotonic()`` now; deadlines of the re-sent finals count from it.
        """
        for op in self._ops:
            if isinstance(op, _Audio):
                engine.push_audio(op.data)
            elif isinstance(op, _Reset):
                engine.reset()
            elif not op.request.answered:
                op.request.submitted_at = submitted_at
                engine.finalize(op.request)
            elif not op.request.speculative:
                engine.reset()  # answered already, but it still ended an utterance

    def _trim_overflow(self) -> None:
        drop = 0
        audio_ms = self._audio_ms
        for op in self._ops:
            if audio_ms <= self._max_audio_ms:
                break
            if isinstance(op, _Finalize) and not op.request.answered:
                break
            if isinstance(op, _Audio):
                audio_ms -= op.duration_ms
            drop += 1
        if drop:
            self._drop(drop)

    def _drop(self, count: int) -> None:
        for op in self._ops[:count]:
            if isinstance(op, _Audio):
                self.start_ms += op.duration_ms
                self._audio_ms -= op.duration_ms
        del self._ops[:count]
