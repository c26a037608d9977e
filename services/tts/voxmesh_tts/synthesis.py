"""One Synthesize stream: text in, segments out, with fallback between providers.

Text arrives in chunks; complete sentences (with a streaming provider, also a long enough first
clause) become segments at once, the rest waits for more text, a Flush, or the end of input. A
synthesizer task speaks the segments in order and streams audio back in ``chunk_ms`` chunks.

Two kinds of provider (see ``voxmesh_tts.providers.base``):

* a streaming provider (Cartesia) gets every segment's text the moment it exists, over one
  provider stream per turn, so it can synthesize ahead while earlier audio plays;
* a sentence provider (Piper) synthesizes each segment when its turn comes.

Providers are tried in the configured order. When the active one fails with a retryable error
or sends no audio within the first-byte deadline, the next takes over *within the segment*: if
some audio already went out, only the words not yet covered by received word timings are
spoken again by the next provider, so the caller still hears the whole answer. Later segments of
the stream stay with the provider that took over. Cancel empties the queue, cancels the
provider stream and bumps an epoch, so audio of a segment in progress is dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from voxmesh.duplex import END_OF_OUTPUT
from voxmesh.errors import InvalidInputError, ProviderError, VoxmeshError
from voxmesh.fallback import FirstByteTimeout, ProviderChain, can_fall_over, record_fallback
from voxmesh.metrics import meter
from voxmesh.telemetry import tracer
from voxmesh.text import SentenceAggregator
from voxmesh.v1 import common_pb2, tts_pb2
from voxmesh_tts.providers.base import TTSProvider, TTSStream
from voxmesh_tts.segment import Piece, SegmentOutput
from voxmesh_tts.settings import TTSSettings

_tracer = tracer("tts")
_FIRST_AUDIO = meter("tts").create_histogram(
    "voxmesh.tts.first_audio", unit="ms", description="Segment text complete to first audio")

OUTPUT_RATES = frozenset({8000, 16000, 22050, 24000, 44100, 48000})


@dataclass
class _Segment:
    id: int
    text: str
    epoch: int
    ready_at: float
    request_id: str = ""


class _Cancelled(Exception):
    """The segment was cancelled while it was being spoken."""


def validate_config(config: tts_pb2.SynthesisConfig) -> None:
    """Checks the output format and speaking rate; raises :class:`InvalidInputError`."""
    fmt = config.format
    if fmt.encoding not in (common_pb2.AUDIO_ENCODING_UNSPECIFIED,
                            common_pb2.AUDIO_ENCODING_PCM16):
        raise InvalidInputError(
            "TTS produces PCM16 only; set config.format.encoding to AUDIO_ENCODING_PCM16",
            reason="ENCODING_UNSUPPORTED", field="config.format.encoding", component="tts")
    if fmt.sample_rate_hz not in OUTPUT_RATES:
        raise InvalidInputError(
            f"output sample rate {fmt.sample_rate_hz} Hz is not supported; use one of "
            f"{sorted(OUTPUT_RATES)}",
            reason="SAMPLE_RATE_UNSUPPORTED", field="config.format.sample_rate_hz",
            component="tts")
    if (fmt.channels or 1) != 1:
        raise InvalidInputError(
            f"only mono output is produced, got {fmt.channels} channels",
            reason="CHANNELS_UNSUPPORTED", field="config.format.channels", component="tts")
    if config.speaking_rate and not 0.5 <= config.speaking_rate <= 2.0:
        raise InvalidInputError(
            f"speaking_rate must be within 0.5..2.0, got {config.speaking_rate}",
            reason="SPEAKING_RATE_OUT_OF_RANGE", field="config.speaking_rate", component="tts")


class SynthesisStream:
    """State of one Synthesize stream (a :class:`voxmesh.duplex.DuplexStream`)."""

    def __init__(self, chain: ProviderChain[TTSProvider], settings: TTSSettings,
                 config: tts_pb2.SynthesisConfig) -> None:
        """Validates the config; raises :class:`InvalidInputError`."""
        validate_config(config)
        self._chain = chain
        self._active = 0
        self._settings = settings
        self._config = config
        self._out_rate = config.format.sample_rate_hz
        self._aggregator = SentenceAggregator(
            first_clause_min_words=settings.first_clause_min_words
            if chain.primary.streaming else 0)
        self._pending_chars = 0
        self._queue: deque[_Segment] = deque()
        self._next_id = 0
        self._epoch = 0
        self._segment_index = 0
        self._sequence = 0
        self._position_ms = 0
        self._stream: TTSStream | None = None
        self._pushed: set[int] = set()
        self._retired: list[TTSStream] = []
        self._wake = asyncio.Event()
        self._closing = False
        self.output: asyncio.Queue[tts_pb2.SynthesizeResponse | object] = asyncio.Queue()

    @property
    def _provider(self) -> TTSProvider:
        return self._chain.providers[self._active]

    def push_text(self, text: str) -> None:
        """Adds text; complete sentences are queued for synthesis."""
        if len(text) > self._settings.max_chunk_chars:
            raise InvalidInputError(
                f"text chunk of {len(text)} characters exceeds the limit of "
                f"{self._settings.max_chunk_chars}",
                reason="TEXT_TOO_LONG", field="text.text", component="tts")
        if self._pending_chars + len(text) > self._settings.max_pending_chars:
            raise InvalidInputError(
                f"more than {self._settings.max_pending_chars} characters are waiting to be "
                "synthesized; send less text ahead of playback",
                reason="TEXT_BACKLOG_TOO_LONG", field="text.text", component="tts")
        for sentence in self._aggregator.push(text):
            self._enqueue(sentence)
        self._pending_chars = sum(len(s.text) for s in self._queue)

    def flush(self, request_id: str) -> None:
        """Queues whatever text is buffered, even without a sentence end."""
        rest = self._aggregator.flush()
        if rest:
            self._enqueue(rest, request_id)
        elif request_id and self._queue:
            self._queue[-1].request_id = request_id

    def cancel(self) -> None:
        """Drops buffered and queued text; audio of the segment in progress is discarded."""
        self._aggregator.flush()
        self._queue.clear()
        self._pending_chars = 0
        self._epoch += 1
        self._retire_stream()
        self.output.put_nowait(tts_pb2.SynthesizeResponse(cancelled=tts_pb2.Cancelled()))
        self._wake.set()

    def close(self) -> None:
        """Ends input; buffered text is still spoken."""
        self.flush("end-of-stream")
        self._closing = True
        if self._stream is not None:
            self._stream.end_input()
        self._wake.set()

    def handle(self, request: tts_pb2.SynthesizeRequest) -> None:
        """Applies one text or control message."""
        kind = request.WhichOneof("request")
        if kind == "text":
            self.push_text(request.text.text)
        elif kind == "flush":
            self.flush(request.flush.request_id)
        elif kind == "cancel":
            self.cancel()
        else:
            raise InvalidInputError("empty SynthesizeRequest", reason="EMPTY_REQUEST",
                                    component="tts")

    async def run(self) -> None:
        """Synthesizes queued segments in order until input is closed and the queue is empty."""
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                await self._close_retired()
                while self._queue:
                    segment = self._queue.popleft()
                    await self._speak(segment)
                    await self._close_retired()
                if self._closing and not self._queue:
                    await self.output.put(END_OF_OUTPUT)
                    return
        finally:
            # Also on cancellation (the client went away): a provider stream that is still
            # generating is cancelled by its aclose().
            if self._stream is not None:
                self._retired.append(self._stream)
                self._stream = None
            await self._close_retired()

    def _enqueue(self, text: str, request_id: str = "") -> None:
        segment = _Segment(self._next_id, text, self._epoch, time.perf_counter(), request_id)
        self._next_id += 1
        self._queue.append(segment)
        if self._provider.streaming:
            self._push(self._open_stream(), segment.id, text)
        self._wake.set()

    def _open_stream(self) -> TTSStream:
        if self._stream is None:
            config = self._config
            self._stream = self._provider.open_stream(
                sample_rate=self._out_rate, voice=config.voice, model=config.model,
                language=config.language, speaking_rate=config.speaking_rate or 1.0)
        return self._stream

    def _push(self, stream: TTSStream, segment_id: int, text: str) -> None:
        if segment_id not in self._pushed:
            self._pushed.add(segment_id)
            stream.push_text(segment_id, text)

    def _retire_stream(self) -> None:
        if self._stream is not None:
            self._stream.cancel()
            self._retired.append(self._stream)
            self._stream = None
            self._pushed.clear()

    async def _close_retired(self) -> None:
        retired, self._retired = self._retired, []
        await asyncio.gather(*(stream.aclose() for stream in retired), return_exceptions=True)

    async def _speak(self, segment: _Segment) -> None:
        with _tracer.start_as_current_span(
            "tts.segment", attributes={"voxmesh.tts.segment_index": self._segment_index,
                                       "voxmesh.tts.chars": len(segment.text)},
        ) as span:
            audio_ms, first_audio_ms = await self._speak_segment(segment)
            span.set_attribute("voxmesh.tts.audio_ms", audio_ms)
            span.set_attribute("voxmesh.tts.first_audio_ms", first_audio_ms)
            span.set_attribute("voxmesh.tts.provider", self._provider.name)
            if segment.epoch == self._epoch:
                _FIRST_AUDIO.record(first_audio_ms)
            span.set_attribute("voxmesh.tts.cancelled", segment.epoch != self._epoch)

    async def _speak_segment(self, segment: _Segment) -> tuple[int, int]:
        index = self._segment_index
        self._segment_index += 1
        out = SegmentOutput(segment.text, self._out_rate)
        progress = _Progress(index, segment)
        text_left = segment.text
        try:
            while text_left:
                provider = self._provider
                try:
                    await self._speak_with(provider, segment, text_left, out, progress)
                    break
                except VoxmeshError as error:
                    if segment.epoch != self._epoch:
                        raise _Cancelled from None
                    if (self._active == len(self._chain.providers) - 1
                            or not can_fall_over(error)):
                        raise
                    # What the failing provider already said goes out under its name.
                    await self._emit(out.end_run(), progress, out, provider.name)
                    self._fall_over(error)
                    text_left = out.aligner.remaining()
        except _Cancelled:
            return progress.audio_ms, max(progress.first_audio_ms, 0)
        tail = out.end_run()
        if not tail and out.pending_words:
            tail = b"\0\0"  # one sample, so the words and text still reach the client
        await self._emit(tail, progress, out, self._provider.name)
        await self.output.put(tts_pb2.SynthesizeResponse(segment_done=tts_pb2.SegmentDone(
            segment_index=index, audio_ms=progress.audio_ms,
            first_audio_ms=max(progress.first_audio_ms, 0), request_id=segment.request_id)))
        return progress.audio_ms, max(progress.first_audio_ms, 0)

    async def _speak_with(self, provider: TTSProvider, segment: _Segment, text: str,
                          out: SegmentOutput, progress: _Progress) -> None:
        """Speaks ``text`` (all or the rest of the segment) with one provider."""
        loop = asyncio.get_running_loop()
        deadline_s = self._chain.deadline_for(self._active)
        deadline_at = None if deadline_s is None else loop.time() + deadline_s
        pieces = self._pieces(provider, segment, text)
        out.start_run()
        audio_started = False
        try:
            while True:
                try:
                    async with asyncio.timeout_at(None if audio_started else deadline_at):
                        piece = await anext(pieces)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise FirstByteTimeout(
                        f"{provider.name} sent no audio within {deadline_s:.2f} s",
                        reason="FIRST_BYTE_DEADLINE", component=provider.name) from None
                if segment.epoch != self._epoch:
                    raise _Cancelled
                audio_started = audio_started or bool(piece.pcm16)
                if piece.pcm16 and progress.first_audio_ms < 0:
                    progress.first_audio_ms = int((time.perf_counter() - segment.ready_at)
                                                  * 1000)
                await self._emit(out.add(piece), progress, out, provider.name)
        finally:
            await pieces.aclose()

    async def _pieces(self, provider: TTSProvider, segment: _Segment,
                      text: str) -> AsyncGenerator[Piece, None]:
        if not provider.streaming:
            async for speech in provider.synthesize(
                    text, voice=self._config.voice,
                    speaking_rate=self._config.speaking_rate or 1.0):
                yield Piece(speech.pcm16, provider.sample_rate, speech.words,
                            speech.timings_estimated)
            return
        stream = self._open_stream()
        self._push(stream, segment.id, text)
        for queued in self._queue:  # after a fallback the new stream has seen none of them
            self._push(stream, queued.id, queued.text)
        if self._closing:
            stream.end_input()
        while True:
            streamed = await stream.next_piece()
            if streamed is None:
                if segment.epoch != self._epoch:
                    raise _Cancelled
                raise ProviderError(f"{provider.name} ended its stream before segment "
                                    f"{segment.id} was spoken", reason="PROVIDER_STREAM_ENDED",
                                    component=provider.name, retryable=True)
            if streamed.segment < segment.id:
                continue  # the tail of a segment that was already given up on
            yield Piece(streamed.pcm16, stream.sample_rate, streamed.words,
                        relative_to_run=True)
            if streamed.last:
                return

    def _fall_over(self, error: VoxmeshError) -> None:
        failed = self._provider
        self._retire_stream()
        self._active += 1
        record_fallback("tts", failed.name, self._provider.name, error.reason)

    async def _emit(self, pcm: bytes, progress: _Progress, out: SegmentOutput,
                    provider: str) -> None:
        """Sends audio in ``chunk_ms`` chunks; pending words and the text go on the first."""
        if not pcm:
            return
        chunk_bytes = self._out_rate * 2 * self._settings.chunk_ms // 1000
        for offset in range(0, len(pcm), chunk_bytes):
            data = pcm[offset : offset + chunk_bytes]
            message = tts_pb2.SynthesizedAudio(
                chunk=common_pb2.AudioChunk(
                    data=data, sequence=self._sequence, timestamp_ms=self._position_ms),
                segment_index=progress.index, timings_estimated=out.estimated,
                provider=provider)
            if offset == 0:
                message.words.extend(out.take_words())
                if progress.first_message:
                    message.text = progress.segment.text
                    progress.first_message = False
            self._sequence += 1
            self._position_ms += len(data) * 1000 // (2 * self._out_rate)
            await self.output.put(tts_pb2.SynthesizeResponse(audio=message))
        progress.audio_ms += len(pcm) * 1000 // (2 * self._out_rate)


@dataclass
class _Progress:
    """What has gone out for one segment."""

    index: int
    segment: _Segment
    audio_ms: int = 0
    first_audio_ms: int = -1
    first_message: bool = True
