"""gRPC servicer of ``voxmesh.v1.SpeechToText``, with fallback along the provider list.

One ``Recognize`` stream holds one :class:`RecognitionStream`. It validates what arrives, hands
audio and control messages to the engine of the stream's current provider, and keeps a
:class:`~voxmesh_stt.replay.ReplayLog` of the open utterance. When the provider fails with a
retryable error (a dropped connection, a 5xx) or misses ``first_byte_deadline_ms`` on a
Finalize, the next provider in ``VOXMESH_STT_PROVIDER`` gets the logged audio and the Finalizes
still owed, so the client's final arrives in the same turn; the stream stays on that provider
to its end (a new stream tries the first provider again). The client sees a
``provider_switched`` message, the turn's trace a ``provider.fallback`` event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from voxmesh.duplex import END_OF_OUTPUT, read_config, serve_duplex
from voxmesh.errors import InvalidInputError, VoxmeshError, abort
from voxmesh.fallback import FirstByteTimeout, ProviderChain, can_fall_over, record_fallback
from voxmesh.metrics import meter
from voxmesh.v1 import common_pb2, stt_pb2, stt_pb2_grpc
from voxmesh_stt.batch_engine import BatchEngine
from voxmesh_stt.engine import AudioInput, Engine, FinalRequest, fallback_span
from voxmesh_stt.providers.base import AnySTTProvider, StreamingSTTProvider, StreamOptions
from voxmesh_stt.replay import ReplayLog
from voxmesh_stt.settings import STTSettings
from voxmesh_stt.streaming_engine import StreamingEngine

log = logging.getLogger("voxmesh.stt")
_PROCESSING = meter("stt").create_histogram(
    "voxmesh.stt.processing", unit="ms", description="Time to transcribe one utterance")


class RecognitionStream:
    """State of one Recognize stream: validation, the current engine and the fallback log."""

    def __init__(
        self,
        chain: ProviderChain[AnySTTProvider],
        settings: STTSettings,
        config: stt_pb2.StreamConfig,
    ) -> None:
        """Validates the config and prepares the first provider; raises InvalidInputError."""
        self._audio = AudioInput.from_config(config, settings)
        self._chain = chain
        self._settings = settings
        self._config = config
        self._index = 0
        # With nothing to fall over to, no audio needs keeping.
        has_backup = len(chain.providers) > 1
        self._log = ReplayLog(
            max_audio_ms=settings.max_utterance_s * 1000 if has_backup else 0.0)
        self._pending: list[FinalRequest] = []
        self._position_ms = 0.0
        self._utterance_start_ms = 0.0
        self._next_sequence = 0
        self._closing = False
        self._pending_changed = asyncio.Event()
        self.output: asyncio.Queue[stt_pb2.RecognizeResponse | object] = asyncio.Queue()
        self._engine = self._new_engine(start_ms=0.0)

    @property
    def provider(self) -> AnySTTProvider:
        """The provider serving the stream now."""
        return self._chain.providers[self._index]

    # ------------------------------------------------------------------ input

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

    def push_audio(self, chunk: common_pb2.AudioChunk) -> None:
        """Validates one audio chunk and passes it on."""
        data = chunk.data
        if len(data) > self._audio.max_chunk_bytes:
            raise InvalidInputError(
                f"audio chunk of {len(data)} bytes exceeds the limit of "
                f"{self._audio.max_chunk_bytes} bytes ({self._settings.max_chunk_ms} ms at "
                f"{self._audio.rate} Hz)",
                reason="FRAME_TOO_LARGE", field="audio.data", component="stt")
        if not self._audio.mulaw and len(data) % 2:
            raise InvalidInputError(
                f"PCM16 audio chunk has an odd length ({len(data)} bytes)",
                reason="MALFORMED_AUDIO", field="audio.data", component="stt")
        if chunk.sequence < self._next_sequence:
            raise InvalidInputError(
                f"audio chunk sequence {chunk.sequence} arrived after {self._next_sequence - 1}; "
                "chunks must be sent in order",
                reason="OUT_OF_ORDER", field="audio.sequence", component="stt")
        self._next_sequence = chunk.sequence + 1
        if not data:
            return
        duration_ms = len(data) / self._audio.bytes_per_ms
        self._position_ms += duration_ms
        self._log.audio(data, duration_ms)
        self._engine.push_audio(data)
        limit = self._engine.max_utterance_ms
        if limit is not None and self._position_ms - self._utterance_start_ms >= limit:
            self.finalize("max-utterance")

    def finalize(
        self,
        request_id: str,
        speculative: bool = False,
        trace_context: dict[str, str] | None = None,
    ) -> None:
        """Asks for a final of the audio since the previous final.

        A speculative final keeps the utterance open, so a later final covers it again.
        """
        request = FinalRequest(request_id, speculative, int(self._utterance_start_ms),
                               int(self._position_ms), dict(trace_context or {}),
                               submitted_at=time.monotonic())
        self._pending.append(request)
        self._log.finalize(request)
        self._engine.finalize(request)
        if not speculative:
            self._utterance_start_ms = self._position_ms
        self._pending_changed.set()

    def reset(self) -> None:
        """Drops the open utterance."""
        self._utterance_start_ms = self._position_ms
        self._log.reset()
        self._engine.reset()

    def close(self) -> None:
        """Ends input: what is buffered is still transcribed (nothing is lost)."""
        if self._position_ms > self._utterance_start_ms:
            self.finalize("end-of-stream")
        self._closing = True
        self._engine.end_input()

    # ------------------------------------------------------------------ output (EngineSink)

    def final(self, request: FinalRequest, transcript: stt_pb2.Transcript) -> None:
        """Sends the answer to ``request``."""
        if request.answered:
            return
        request.answered = True
        self._pending.remove(request)
        self._log.trim()
        self._pending_changed.set()
        _PROCESSING.record(transcript.processing_ms, {"speculative": request.speculative})
        self.output.put_nowait(stt_pb2.RecognizeResponse(transcript=transcript))

    def send(self, response: stt_pb2.RecognizeResponse) -> None:
        """Sends an interim transcript or a speech event."""
        self.output.put_nowait(response)

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        """Runs the current engine; on a fall-over-able failure, the next provider takes over."""
        try:
            while True:
                try:
                    await self._run_engine()
                except VoxmeshError as exc:
                    if self._index + 1 >= len(self._chain.providers) or not can_fall_over(exc):
                        raise
                    await self._fall_over(exc)
                    continue
                await self.output.put(END_OF_OUTPUT)
                return
        finally:
            await self._engine.aclose()

    async def _run_engine(self) -> None:
        """Runs the engine, watching the first-byte deadline of the oldest unanswered final."""
        deadline_s = self._chain.deadline_for(self._index)
        task = asyncio.create_task(self._engine.run(), name=f"stt-{self.provider.name}")
        changed: asyncio.Future[Any] | None = None
        try:
            while True:
                self._pending_changed.clear()
                changed = watch = asyncio.ensure_future(self._pending_changed.wait())
                done, _ = await asyncio.wait({task, watch}, timeout=self._time_left(deadline_s),
                                             return_when=asyncio.FIRST_COMPLETED)
                watch.cancel()
                if task in done:
                    task.result()
                    return
                if not done and (left := self._time_left(deadline_s)) is not None and left <= 0:
                    raise FirstByteTimeout(
                        f"{self.provider.name} gave no final within {deadline_s:.2f} s",
                        reason="FIRST_BYTE_DEADLINE", component=self.provider.name)
        finally:
            # The watcher too: a stream that ends cancels this inside the wait.
            tasks: list[asyncio.Future[Any]] = [task, *([changed] if changed is not None else [])]
            for pending in tasks:
                pending.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _time_left(self, deadline_s: float | None) -> float | None:
        if deadline_s is None or not self._pending:
            return None
        return max(0.0, self._pending[0].submitted_at + deadline_s - time.monotonic())

    async def _fall_over(self, error: VoxmeshError) -> None:
        failed = self.provider.name
        await self._engine.aclose()
        self._index += 1
        successor = self.provider.name
        turn_context = self._pending[0].trace_context if self._pending else {}
        with fallback_span(turn_context, failed, successor):
            record_fallback("stt", failed, successor, error.reason)
        self.output.put_nowait(stt_pb2.RecognizeResponse(provider_switched=stt_pb2.ProviderSwitched(
            from_provider=failed, to_provider=successor, reason=error.reason)))
        self._engine = self._new_engine(start_ms=self._log.start_ms)
        self._log.replay_into(self._engine, submitted_at=time.monotonic())
        if self._closing:
            self._engine.end_input()

    def _new_engine(self, start_ms: float) -> Engine:
        provider, config = self.provider, self._config
        if isinstance(provider, StreamingSTTProvider):
            options = StreamOptions(
                encoding="mulaw" if self._audio.mulaw else "linear16",
                sample_rate=self._audio.rate, language=config.language,
                keyterms=tuple(config.keyterms))
            return StreamingEngine(provider, options, interim_results=config.interim_results,
                                   sink=self, start_ms=start_ms)
        return BatchEngine(provider, self._audio, self._settings, language=config.language,
                           interim_results=config.interim_results, sink=self, start_ms=start_ms)


class SpeechToTextServicer(stt_pb2_grpc.SpeechToTextServicer):
    """Serves Recognize streams with an ordered list of providers."""

    def __init__(self, chain: ProviderChain[AnySTTProvider], settings: STTSettings) -> None:
        """Creates the servicer."""
        self._chain = chain
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
            stream = RecognitionStream(self._chain, self._settings, first.config)
        except VoxmeshError as exc:
            await abort(context, exc)
        primary = self._chain.primary
        yield stt_pb2.RecognizeResponse(
            ready=stt_pb2.RecognizerReady(provider=primary.name, model=primary.model))
        async for response in serve_duplex(
            requests, stream, context, config_field="config", component="stt",
            log_rejection=lambda e: log.info("stream rejected: %s (%s)", e.reason, e.message),
        ):
            yield response
