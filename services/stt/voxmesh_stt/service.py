"""gRPC servicer of ``voxmesh.v1.SpeechToText``.

One ``Recognize`` stream holds one :class:`RecognitionStream`: it validates what arrives, buffers
the current utterance at the provider's rate, and runs decodes one at a time on a decoder task.
Finals are decoded as soon as they are asked for; an interim is decoded only when no final is
waiting, and is dropped if a final or reset made it stale, so a client never sees an interim
after the final of the same audio.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
from opentelemetry.trace import SpanKind

from voxmesh.audio import StreamResampler, mulaw_decode
from voxmesh.duplex import END_OF_OUTPUT, read_config, serve_duplex
from voxmesh.errors import InvalidInputError, VoxmeshError, abort
from voxmesh.metrics import meter
from voxmesh.telemetry import extract, tracer
from voxmesh.v1 import common_pb2, stt_pb2, stt_pb2_grpc
from voxmesh_stt.providers.base import STTProvider
from voxmesh_stt.settings import STTSettings

log = logging.getLogger("voxmesh.stt")
_tracer = tracer("stt")
_PROCESSING = meter("stt").create_histogram(
    "voxmesh.stt.processing", unit="ms", description="Time to transcribe one utterance")

PCM16_RATES = frozenset({8000, 16000, 22050, 24000, 32000, 44100, 48000})


@dataclass
class _FinalJob:
    request_id: str
    audio: bytes
    start_ms: int
    end_ms: int
    speculative: bool = False
    trace_context: dict[str, str] = field(default_factory=dict)


class RecognitionStream:
    """State of one Recognize stream."""

    def __init__(
        self,
        provider: STTProvider,
        settings: STTSettings,
        config: stt_pb2.StreamConfig,
    ) -> None:
        """Validates the config and prepares buffers; raises :class:`InvalidInputError`."""
        self._provider = provider
        self._settings = settings
        self._config = config
        fmt = config.format
        channels = fmt.channels or 1
        if fmt.encoding == common_pb2.AUDIO_ENCODING_PCM16:
            if fmt.sample_rate_hz not in PCM16_RATES:
                raise InvalidInputError(
                    f"sample rate {fmt.sample_rate_hz} Hz is not supported for PCM16; use one of "
                    f"{sorted(PCM16_RATES)}",
                    reason="SAMPLE_RATE_UNSUPPORTED",
                    field="config.format.sample_rate_hz",
                    component="stt",
                )
        elif fmt.encoding == common_pb2.AUDIO_ENCODING_MULAW:
            if fmt.sample_rate_hz != 8000:
                raise InvalidInputError(
                    f"mu-law audio must be 8000 Hz, got {fmt.sample_rate_hz} Hz",
                    reason="SAMPLE_RATE_UNSUPPORTED",
                    field="config.format.sample_rate_hz",
                    component="stt",
                )
        else:
            raise InvalidInputError(
                "config.format.encoding must be AUDIO_ENCODING_PCM16 or AUDIO_ENCODING_MULAW",
                reason="ENCODING_UNSUPPORTED",
                field="config.format.encoding",
                component="stt",
            )
        if channels != 1:
            raise InvalidInputError(
                f"only mono audio is accepted, got {channels} channels",
                reason="CHANNELS_UNSUPPORTED",
                field="config.format.channels",
                component="stt",
            )
        self._mulaw = fmt.encoding == common_pb2.AUDIO_ENCODING_MULAW
        self._in_rate = fmt.sample_rate_hz
        bytes_per_sample = 1 if self._mulaw else 2
        self._max_chunk_bytes = self._in_rate * bytes_per_sample * settings.max_chunk_ms // 1000
        self._bytes_per_ms = self._in_rate * bytes_per_sample / 1000
        self._resampler = StreamResampler(self._in_rate, provider.sample_rate)
        self._max_utterance_bytes = int(provider.sample_rate * 2 * settings.max_utterance_s)

        self._utterance = bytearray()
        self._utterance_start_ms = 0
        self._position_ms = 0.0
        self._next_sequence = 0
        self._bytes_since_interim = 0
        self._interim_every = int(provider.sample_rate * 2 * settings.interim_interval_s)
        self._epoch = 0
        self._finals: deque[_FinalJob] = deque()
        self._interim_wanted = False
        self._wake = asyncio.Event()
        self._closing = False
        self.output: asyncio.Queue[stt_pb2.RecognizeResponse | object] = asyncio.Queue()

    def push_audio(self, chunk: common_pb2.AudioChunk) -> None:
        """Validates and buffers one audio chunk."""
        data = chunk.data
        if len(data) > self._max_chunk_bytes:
            raise InvalidInputError(
                f"audio chunk of {len(data)} bytes exceeds the limit of {self._max_chunk_bytes} "
                f"bytes ({self._settings.max_chunk_ms} ms at {self._in_rate} Hz)",
                reason="FRAME_TOO_LARGE",
                field="audio.data",
                component="stt",
            )
        if not self._mulaw and len(data) % 2:
            raise InvalidInputError(
                f"PCM16 audio chunk has an odd length ({len(data)} bytes)",
                reason="MALFORMED_AUDIO",
                field="audio.data",
                component="stt",
            )
        if chunk.sequence < self._next_sequence:
            raise InvalidInputError(
                f"audio chunk sequence {chunk.sequence} arrived after {self._next_sequence - 1}; "
                "chunks must be sent in order",
                reason="OUT_OF_ORDER",
                field="audio.sequence",
                component="stt",
            )
        self._next_sequence = chunk.sequence + 1
        if not data:
            return
        pcm = mulaw_decode(data) if self._mulaw else data
        self._position_ms += len(data) / self._bytes_per_ms
        resampled = self._resampler.push(pcm)
        self._utterance.extend(resampled)
        self._bytes_since_interim += len(resampled)
        if len(self._utterance) >= self._max_utterance_bytes:
            self.finalize("max-utterance")
        elif self._config.interim_results and self._bytes_since_interim >= self._interim_every:
            self._bytes_since_interim = 0
            self._interim_wanted = True
            self._wake.set()

    def finalize(
        self,
        request_id: str,
        speculative: bool = False,
        trace_context: dict[str, str] | None = None,
    ) -> None:
        """Queues a final for the audio buffered since the previous final.

        A speculative final keeps the audio buffered, so a later final covers it again.
        """
        end_ms = int(self._position_ms)
        self._finals.append(
            _FinalJob(request_id, bytes(self._utterance), self._utterance_start_ms, end_ms,
                      speculative, dict(trace_context or {}))
        )
        if not speculative:
            self._start_new_utterance(end_ms)
        self._wake.set()

    def reset(self) -> None:
        """Drops buffered audio."""
        self._start_new_utterance(int(self._position_ms))

    def close(self) -> None:
        """Ends input: what is buffered is still transcribed (nothing is lost)."""
        if self._utterance:
            self.finalize("end-of-stream")
        self._closing = True
        self._wake.set()

    def _start_new_utterance(self, start_ms: int) -> None:
        self._utterance.clear()
        self._utterance_start_ms = start_ms
        self._bytes_since_interim = 0
        self._interim_wanted = False
        self._epoch += 1

    def handle(self, request: stt_pb2.RecognizeRequest) -> None:
        """Applies one audio or control message."""
        kind = request.WhichOneof("request")
        if kind == "audio":
            self.push_audio(request.audio)
        elif kind == "finalize":
            finalize = request.finalize
            self.finalize(finalize.request_id, finalize.speculative, dict(finalize.trace_context))
        elif kind == "reset":
            self.reset()
        else:
            raise InvalidInputError("empty RecognizeRequest", reason="EMPTY_REQUEST",
                                    component="stt")

    async def run(self) -> None:
        """Decodes finals and interims one at a time until the stream is closed."""
        language = self._config.language
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._finals:
                job = self._finals.popleft()
                with _tracer.start_as_current_span(
                    "stt.transcribe", context=extract(job.trace_context), kind=SpanKind.SERVER,
                    attributes={"voxmesh.stt.provider": self._provider.name,
                                "voxmesh.stt.audio_ms": job.end_ms - job.start_ms,
                                "voxmesh.stt.speculative": job.speculative},
                ) as span:
                    result = await self._provider.transcribe(job.audio, language)
                    span.set_attribute("voxmesh.stt.processing_ms", result.processing_ms)
                    _PROCESSING.record(result.processing_ms, {"speculative": job.speculative})
                    span.set_attribute("voxmesh.stt.empty", not result.text)
                await self.output.put(
                    stt_pb2.RecognizeResponse(
                        transcript=stt_pb2.Transcript(
                            text=result.text,
                            is_final=True,
                            start_ms=job.start_ms,
                            end_ms=job.end_ms,
                            confidence=result.confidence,
                            request_id=job.request_id,
                            processing_ms=result.processing_ms,
                        )
                    )
                )
            if self._interim_wanted and not self._closing:
                self._interim_wanted = False
                epoch, audio = self._epoch, bytes(self._utterance)
                result = await self._provider.transcribe(audio, language)
                if epoch == self._epoch and not self._finals and result.text:
                    await self.output.put(
                        stt_pb2.RecognizeResponse(
                            transcript=stt_pb2.Transcript(
                                text=result.text,
                                is_final=False,
                                start_ms=self._utterance_start_ms,
                                end_ms=int(self._position_ms),
                                confidence=result.confidence,
                                processing_ms=result.processing_ms,
                            )
                        )
                    )
            if self._closing and not self._finals:
                await self.output.put(END_OF_OUTPUT)
                return


class SpeechToTextServicer(stt_pb2_grpc.SpeechToTextServicer):
    """Serves Recognize streams with one provider."""

    def __init__(self, provider: STTProvider, settings: STTSettings) -> None:
        """Creates the servicer."""
        self._provider = provider
        self._settings = settings

    async def Recognize(  # noqa: N802 - gRPC method name
        self,
        request_iterator: AsyncIterator[stt_pb2.RecognizeRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[stt_pb2.RecognizeResponse]:
        """See ``stt.proto``."""
        requests = request_iterator.__aiter__()
        first = await read_config(
            requests, context, config_field="config", stream_name="Recognize", component="stt"
        )
        if first is None:
            return
        try:
            stream = RecognitionStream(self._provider, self._settings, first.config)
        except VoxmeshError as exc:
            await abort(context, exc)
        yield stt_pb2.RecognizeResponse(
            ready=stt_pb2.RecognizerReady(provider=self._provider.name, model=self._provider.model)
        )
        async for response in serve_duplex(
            requests, stream, context, config_field="config", component="stt",
            log_rejection=lambda e: log.info("stream rejected: %s (%s)", e.reason, e.message),
        ):
            yield response
