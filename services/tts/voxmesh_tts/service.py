"""gRPC servicer of ``voxmesh.v1.TextToSpeech``.

Text arrives in chunks; complete sentences are queued for synthesis at once, the rest waits for
more text, a Flush, or the end of input. A synthesizer task works through the queue one segment
at a time and streams audio back in ``chunk_ms`` pieces. Cancel empties the queue and bumps an
epoch, so audio of a segment that was being synthesized is dropped rather than sent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from opentelemetry.trace import SpanKind

from voxmesh.audio import StreamResampler
from voxmesh.duplex import END_OF_OUTPUT, read_config, serve_duplex
from voxmesh.errors import InvalidInputError, VoxmeshError, abort
from voxmesh.metrics import meter
from voxmesh.telemetry import extract, tracer
from voxmesh.text import SentenceAggregator
from voxmesh.v1 import common_pb2, tts_pb2, tts_pb2_grpc
from voxmesh_tts.providers.base import TTSProvider
from voxmesh_tts.settings import TTSSettings

log = logging.getLogger("voxmesh.tts")
_tracer = tracer("tts")
_FIRST_AUDIO = meter("tts").create_histogram(
    "voxmesh.tts.first_audio", unit="ms", description="Segment text complete to first audio")

OUTPUT_RATES = frozenset({8000, 16000, 22050, 24000, 44100, 48000})


@dataclass
class _Segment:
    text: str
    epoch: int
    ready_at: float
    request_id: str = ""


class SynthesisStream:
    """State of one Synthesize stream."""

    def __init__(
        self, provider: TTSProvider, settings: TTSSettings, config: tts_pb2.SynthesisConfig
    ) -> None:
        """Validates the config; raises :class:`InvalidInputError`."""
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
        self._provider = provider
        self._settings = settings
        self._config = config
        self._out_rate = fmt.sample_rate_hz
        self._aggregator = SentenceAggregator()
        self._pending_chars = 0
        self._queue: deque[_Segment] = deque()
        self._epoch = 0
        self._segment_index = 0
        self._sequence = 0
        self._position_ms = 0
        self._wake = asyncio.Event()
        self._closing = False
        self.output: asyncio.Queue[tts_pb2.SynthesizeResponse | object] = asyncio.Queue()

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
        self.output.put_nowait(tts_pb2.SynthesizeResponse(cancelled=tts_pb2.Cancelled()))

    def close(self) -> None:
        """Ends input; buffered text is still spoken."""
        self.flush("end-of-stream")
        self._closing = True
        self._wake.set()

    def _enqueue(self, text: str, request_id: str = "") -> None:
        self._queue.append(_Segment(text, self._epoch, time.perf_counter(), request_id))
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
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                segment = self._queue.popleft()
                await self._speak(segment)
            if self._closing and not self._queue:
                await self.output.put(END_OF_OUTPUT)
                return

    async def _speak(self, segment: _Segment) -> None:
        with _tracer.start_as_current_span(
            "tts.segment", attributes={"voxmesh.tts.segment_index": self._segment_index,
                                       "voxmesh.tts.chars": len(segment.text)},
        ) as span:
            audio_ms, first_audio_ms = await self._speak_segment(segment)
            span.set_attribute("voxmesh.tts.audio_ms", audio_ms)
            span.set_attribute("voxmesh.tts.first_audio_ms", first_audio_ms)
            if segment.epoch == self._epoch:
                _FIRST_AUDIO.record(first_audio_ms)
            span.set_attribute("voxmesh.tts.cancelled", segment.epoch != self._epoch)

    async def _emit(self, pcm: bytes, index: int, words: list[common_pb2.WordTiming],
                    timings_estimated: bool, text: str) -> bool:
        """Sends resampled audio in ``chunk_ms`` chunks; words and text go on the first.

        Returns:
            Whether anything was sent (the resampler may hold back a short piece).
        """
        chunk_bytes = self._out_rate * 2 * self._settings.chunk_ms // 1000
        for offset in range(0, len(pcm), chunk_bytes):
            data = pcm[offset : offset + chunk_bytes]
            message = tts_pb2.SynthesizedAudio(
                chunk=common_pb2.AudioChunk(
                    data=data, sequence=self._sequence, timestamp_ms=self._position_ms
                ),
                segment_index=index,
                timings_estimated=timings_estimated,
            )
            if offset == 0:
                message.words.extend(words)
                if text:
                    message.text = text
            self._sequence += 1
            self._position_ms += len(data) * 1000 // (2 * self._out_rate)
            await self.output.put(tts_pb2.SynthesizeResponse(audio=message))
        return bool(pcm)

    async def _speak_segment(self, segment: _Segment) -> tuple[int, int]:
        index = self._segment_index
        self._segment_index += 1
        # One resampler for the whole segment, flushed once at its end: a provider may return
        # a sentence in several pieces, and flushing each would end the stream mid-sentence.
        resampler = StreamResampler(self._provider.sample_rate, self._out_rate)
        first_audio_ms = -1
        audio_ms = piece_ms = 0
        first_message, estimated = True, False
        words: list[common_pb2.WordTiming] = []
        async for piece in self._provider.synthesize(
            segment.text,
            voice=self._config.voice,
            speaking_rate=self._config.speaking_rate or 1.0,
        ):
            if segment.epoch != self._epoch:
                return audio_ms, max(first_audio_ms, 0)  # cancelled while synthesizing
            if first_audio_ms < 0:
                first_audio_ms = int((time.perf_counter() - segment.ready_at) * 1000)
            pcm = resampler.push(piece.pcm16)
            # Timings are relative to the piece's start in the provider's audio.
            words += [
                common_pb2.WordTiming(word=w, start_ms=s + piece_ms, end_ms=e + piece_ms)
                for w, s, e in piece.words
            ]
            piece_ms += len(piece.pcm16) * 1000 // (2 * self._provider.sample_rate)
            estimated = estimated or piece.timings_estimated
            if await self._emit(pcm, index, words, estimated,
                                segment.text if first_message else ""):
                first_message, words = False, []
            audio_ms += len(pcm) * 1000 // (2 * self._out_rate)
        if segment.epoch == self._epoch:
            tail = resampler.push(b"", last=True)
            if not tail and words:
                tail = b"\0\0"  # one sample, so the words and text still reach the client
            await self._emit(tail, index, words, estimated,
                             segment.text if first_message else "")
            audio_ms += len(tail) * 1000 // (2 * self._out_rate)
        if segment.epoch == self._epoch:
            await self.output.put(
                tts_pb2.SynthesizeResponse(
                    segment_done=tts_pb2.SegmentDone(
                        segment_index=index,
                        audio_ms=audio_ms,
                        first_audio_ms=max(first_audio_ms, 0),
                        request_id=segment.request_id,
                    )
                )
            )
        return audio_ms, max(first_audio_ms, 0)


class TextToSpeechServicer(tts_pb2_grpc.TextToSpeechServicer):
    """Serves Synthesize streams with one provider."""

    def __init__(self, provider: TTSProvider, settings: TTSSettings) -> None:
        """Creates the servicer."""
        self._provider = provider
        self._settings = settings

    async def Synthesize(  # noqa: N802 - gRPC method name
        self,
        request_iterator: AsyncIterator[tts_pb2.SynthesizeRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[tts_pb2.SynthesizeResponse]:
        """See ``tts.proto``."""
        requests = request_iterator.__aiter__()
        first = await read_config(
            requests, context, config_field="config", stream_name="Synthesize", component="tts"
        )
        if first is None:
            return
        try:
            stream = SynthesisStream(self._provider, self._settings, first.config)
        except VoxmeshError as exc:
            await abort(context, exc)
        yield tts_pb2.SynthesizeResponse(
            ready=tts_pb2.SynthesizerReady(
                provider=self._provider.name,
                voice=first.config.voice or self._provider.default_voice,
            )
        )
        with _tracer.start_as_current_span(
            "tts.synthesize", context=extract(context.invocation_metadata()),
            kind=SpanKind.SERVER,
            attributes={"voxmesh.tts.provider": self._provider.name,
                        "voxmesh.session.id": first.config.turn.session_id,
                        "voxmesh.turn.index": first.config.turn.turn_index},
        ):
            async for response in serve_duplex(
                requests, stream, context, config_field="config", component="tts",
                log_rejection=lambda e: log.info("stream rejected: %s (%s)", e.reason, e.message),
            ):
                yield response
