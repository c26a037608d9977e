"""Which words of a streaming recognizer belong to which utterance, decided by their times.

A streaming recognizer (Deepgram) sends results for windows of the audio: interims that are
replaced by the next result, and finals that are not. The service's client decides where
utterances end (Finalize, Reset) at positions in the audio it sent, while results for earlier
audio may still be on their way. Assigning each word by its start time keeps that race
harmless: a word that started before a boundary belongs to the utterance before it, whenever
its result arrives.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class TimedWord:
    """A recognized word with its stream-relative times, in seconds."""

    text: str
    start_s: float
    end_s: float
    confidence: float = 0.0


def join_words(words: Iterable[TimedWord]) -> str:
    """The words as one line of text."""
    return " ".join(word.text for word in words if word.text)


def mean_confidence(words: list[TimedWord]) -> float:
    """Average word confidence; 0 without words."""
    return sum(w.confidence for w in words) / len(words) if words else 0.0


class UtteranceText:
    """Final and interim words of a stream, grouped into utterances by time.

    Attributes:
        open_from_s: Start of the open utterance (the last Finalize or Reset position).
        finalized_to_s: End of the audio the recognizer has finalized.
    """

    def __init__(self) -> None:
        self.open_from_s = 0.0
        self.finalized_to_s = 0.0
        self._finals: list[TimedWord] = []
        self._interim: list[TimedWord] = []
        self._keep_from_s = 0.0

    @property
    def has_interim(self) -> bool:
        """Whether words are heard that the recognizer has not finalized yet."""
        return any(w.start_s >= self.open_from_s for w in self._interim)

    def add(self, words: Iterable[TimedWord], *, end_s: float, is_final: bool) -> None:
        """Takes one result: a final adds its words, an interim replaces the previous interim.

        Args:
            words: The result's words.
            end_s: End of the audio window the result covers.
            is_final: Whether the recognizer will not revise these words.
        """
        kept = [w for w in words if w.start_s >= self._keep_from_s]
        if is_final:
            self._finals.extend(kept)
            # An interim covers audio after the last final; this final replaces it.
            self._interim = []
            self.finalized_to_s = max(self.finalized_to_s, end_s)
        else:
            self._interim = kept

    def words(self, start_s: float, end_s: float | None = None, *,
              interim: bool = True) -> list[TimedWord]:
        """Words that started in ``[start_s, end_s)``, finals first, then the interim ones."""
        def inside(word: TimedWord) -> bool:
            return word.start_s >= start_s and (end_s is None or word.start_s < end_s)

        chosen = [w for w in self._finals if inside(w)]
        if interim:
            chosen += [w for w in self._interim if inside(w)]
        return chosen

    def open_words(self) -> list[TimedWord]:
        """The open utterance so far: its finalized words, then the interim ones."""
        return self.words(self.open_from_s)

    def start_next(self, at_s: float) -> None:
        """Closes the open utterance at ``at_s``; later words belong to the next one."""
        self.open_from_s = max(self.open_from_s, at_s)

    def forget_before(self, at_s: float) -> None:
        """Drops words that started before ``at_s``; no utterance needs them any more."""
        self._keep_from_s = max(self._keep_from_s, at_s)
        self._finals = [w for w in self._finals if w.start_s >= self._keep_from_s]
        self._interim = [w for w in self._interim if w.start_s >= self._keep_from_s]
