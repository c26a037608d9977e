"""The audio and words of one segment on their way to the client."""

from __future__ import annotations

from dataclasses import dataclass, field

from voxmesh.audio import StreamResampler
from voxmesh.v1 import common_pb2
from voxmesh_tts.providers.base import WordAligner


@dataclass
class Piece:
    """Audio and/or words from whichever provider is speaking the segment.

    Attributes:
        pcm16: PCM16 mono at ``sample_rate``.
        sample_rate: Rate of ``pcm16``.
        words: (word, start_ms, end_ms), relative to the piece (sentence providers) or to the
            start of this provider's part of the segment (streaming providers).
        estimated: The word timings are estimated, not aligned.
        relative_to_run: Words count from the start of the provider's part of the segment.
    """

    pcm16: bytes
    sample_rate: int
    words: list[tuple[str, int, int]] = field(default_factory=list)
    estimated: bool = False
    relative_to_run: bool = False


class SegmentOutput:
    """Resamples a segment's audio and places its words on the segment's timeline.

    A segment is resampled as one stream, and the filter is flushed once at its end: flushing
    per piece would end the stream mid-sentence. When a second provider takes over in the middle
    (a fallback), its audio may come at another rate; the first provider's part is flushed
    there (:meth:`end_run`) and the rest is one stream again.
    """

    def __init__(self, text: str, out_rate: int) -> None:
        """Starts an empty segment speaking ``text`` at ``out_rate`` Hz."""
        self.aligner = WordAligner(text)
        self._out_rate = out_rate
        self._resampler: StreamResampler | None = None
        #: Source audio received so far, in ms: the timeline of the segment's words.
        self.position_ms = 0.0
        self._run_start_ms = 0.0
        self.pending_words: list[common_pb2.WordTiming] = []
        self.estimated = False

    def start_run(self) -> None:
        """A provider starts (or takes over) speaking the segment here."""
        self._run_start_ms = self.position_ms

    def add(self, piece: Piece) -> bytes:
        """Takes a piece; returns the resampled audio ready to send (may be empty)."""
        origin = self._run_start_ms if piece.relative_to_run else self.position_ms
        for word, start_ms, end_ms in piece.words:
            self.aligner.match(word)
            self.pending_words.append(common_pb2.WordTiming(
                word=word, start_ms=round(origin + start_ms), end_ms=round(origin + end_ms)))
        if piece.words:
            self.estimated = piece.estimated
        if not piece.pcm16:
            return b""
        out = b""
        if self._resampler is None or self._resampler.in_rate != piece.sample_rate:
            out = self.end_run()
            self._resampler = StreamResampler(piece.sample_rate, self._out_rate)
        self.position_ms += len(piece.pcm16) * 1000 / (2 * piece.sample_rate)
        return out + self._resampler.push(piece.pcm16)

    def end_run(self) -> bytes:
        """Flushes the resampler of the provider speaking so far."""
        if self._resampler is None:
            return b""
        resampler, self._resampler = self._resampler, None
        return resampler.push(b"", last=True)

    def take_words(self) -> list[common_pb2.WordTiming]:
        """The words not sent yet; they go out with the next chunk."""
        words, self.pending_words = self.pending_words, []
        return words
