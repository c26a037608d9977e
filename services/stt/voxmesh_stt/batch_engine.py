"""A batch provider (Whisper-style) serving a Recognize stream.

The engine buffers the current utterance at the provider's rate and runs decodes one at a time
on its own task. Finals are decoded as soon as they are asked for; an interim is decoded only
when no final is waiting, and is dropped if a final or reset made it stale, so a client never
sees an interim after the final of the same audio.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from voxmesh.audio import StreamResampler, mulaw_decode
from voxmesh.v1 import stt_pb2
from voxmesh_stt.engine import AudioInput, EngineSink, FinalRequest, final_span
from voxmesh_stt.providers.base import STTProvider
from voxmesh_stt.settings import STTSettings


@dataclass
class _FinalJob:
    request: FinalRequest
    audio: bytes


class BatchEngine:
    """Buffers utterances and transcribes them whole with an :class:`STTProvider`."""

    def __init__(
        self,
        provider: STTProvider,
        audio: AudioInput,
        settings: STTSettings,
        *,
        language: str,
        interim_results: bool,
        sink: EngineSink,
        start_ms: float = 0.0,
    ) -> None:
        """Creates the engine.

        Args:
            provider: The provider.
            audio: The stream's audio format.
            settings: Service settings (interim interval, longest utterance).
            language: BCP-47 language of the stream.
            interim_results: Send interim transcripts.
            sink: Where results go.
            start_ms: Stream position of the first audio this engine gets.
        """
        self.provider_name = provider.name
        self.max_utterance_ms: float | None = settings.max_utterance_s * 1000
        self._provider = provider
        self._audio = audio
        self._language = language
        self._interim_results = interim_results
        self._sink = sink
        self._resampler = StreamResampler(audio.rate, provider.sample_rate)
        self._utterance = bytearray()
        self._utterance_start_ms = int(start_ms)
        self._position_ms = start_ms
        self._bytes_since_interim = 0
        self._interim_every = int(provider.sample_rate * 2 * settings.interim_interval_s)
        self._epoch = 0
        self._finals: deque[_FinalJob] = deque()
        self._interim_wanted = False
        self._wake = asyncio.Event()
        self._closing = False

    def push_audio(self, data: bytes) -> None:
        """Buffers audio at the provider's rate; asks for an interim every interval."""
        pcm = mulaw_decode(data) if self._audio.mulaw else data
        self._position_ms += len(data) / self._audio.bytes_per_ms
        resampled = self._resampler.push(pcm)
        self._utterance.extend(resampled)
        self._bytes_since_interim += len(resampled)
        if self._interim_results and self._bytes_since_interim >= self._interim_every:
            self._bytes_since_interim = 0
            self._interim_wanted = True
            self._wake.set()

    def finalize(self, request: FinalRequest) -> None:
        """Queues a decode of the buffered utterance; a speculative one keeps the audio."""
        self._finals.append(_FinalJob(request, bytes(self._utterance)))
        if not request.speculative:
            self._start_new_utterance()
        self._wake.set()

    def reset(self) -> None:
        """Drops buffered audio."""
        self._start_new_utterance()

    def end_input(self) -> None:
        """Finishes the queued finals, then :meth:`run` returns."""
        self._closing = True
        self._wake.set()

    async def aclose(self) -> None:
        """Nothing to release: the provider's inference thread outlives streams."""

    def _start_new_utterance(self) -> None:
        self._utterance.clear()
        self._utterance_start_ms = int(self._position_ms)
        self._bytes_since_interim = 0
        self._interim_wanted = False
        self._epoch += 1

    async def run(self) -> None:
        """Decodes finals and interims one at a time until input ended and finals are done."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._finals:
                await self._decode_final(self._finals.popleft())
            if self._interim_wanted and not self._closing:
                self._interim_wanted = False
                await self._decode_interim()
            if self._closing and not self._finals:
                return

    async def _decode_final(self, job: _FinalJob) -> None:
        request = job.request
        with final_span(request, self.provider_name) as span:
            result = await self._provider.transcribe(job.audio, self._language)
            span.set_attribute("voxmesh.stt.processing_ms", result.processing_ms)
            span.set_attribute("voxmesh.stt.empty", not result.text)
        self._sink.final(request, stt_pb2.Transcript(
            text=result.text, is_final=True, start_ms=request.start_ms, end_ms=request.end_ms,
            confidence=result.confidence, request_id=request.request_id,
            processing_ms=result.processing_ms, provider=self.provider_name))

    async def _decode_interim(self) -> None:
        epoch, audio = self._epoch, bytes(self._utterance)
        result = await self._provider.transcribe(audio, self._language)
        if epoch == self._epoch and not self._finals and result.text:
            self._sink.send(stt_pb2.RecognizeResponse(transcript=stt_pb2.Transcript(
                text=result.text, is_final=False, start_ms=self._utterance_start_ms,
                end_ms=int(self._position_ms), confidence=result.confidence,
                processing_ms=result.processing_ms, provider=self.provider_name)))
