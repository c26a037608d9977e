"""A streaming provider (Deepgram-style) serving a Recognize stream.

Audio and control messages go to the provider's stream as they arrive (held in order while the
connection opens); interims and speech events come back as they happen, finals in the order
they were asked for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from voxmesh.v1 import stt_pb2
from voxmesh_stt.engine import EngineSink, FinalRequest, final_span, words_to_proto
from voxmesh_stt.providers.base import (
    InterimResult,
    RecognitionResult,
    SpeechEventKind,
    SpeechHint,
    StreamingSTTProvider,
    StreamOptions,
    STTStream,
)

_EVENT_KINDS = {
    SpeechEventKind.SPEECH_STARTED: stt_pb2.SpeechEvent.SPEECH_STARTED,
    SpeechEventKind.ENDPOINT: stt_pb2.SpeechEvent.ENDPOINT,
    SpeechEventKind.UTTERANCE_END: stt_pb2.SpeechEvent.UTTERANCE_END,
}

_Pending = tuple[FinalRequest, Awaitable[RecognitionResult], int]


class StreamingEngine:
    """Forwards a Recognize stream to a :class:`StreamingSTTProvider`."""

    max_utterance_ms: float | None = None

    def __init__(
        self,
        provider: StreamingSTTProvider,
        options: StreamOptions,
        *,
        interim_results: bool,
        sink: EngineSink,
        start_ms: float = 0.0,
    ) -> None:
        """Creates the engine; :meth:`run` opens the provider's stream.

        Args:
            provider: The provider.
            options: Format, language and keyterms of the stream.
            interim_results: Send interim transcripts.
            sink: Where results go.
            start_ms: Stream position of the first audio this engine gets (the provider counts
                from 0).
        """
        self.provider_name = provider.name
        self._provider = provider
        self._options = options
        self._interim_results = interim_results
        self._sink = sink
        self._offset_ms = int(start_ms)
        self._stream: STTStream | None = None
        self._held: list[Callable[[STTStream], None]] = []
        self._finals: asyncio.Queue[_Pending | None] = asyncio.Queue()

    def push_audio(self, data: bytes) -> None:
        """Sends audio (held until the connection is open)."""
        self._apply(lambda stream: stream.send_audio(data))

    def finalize(self, request: FinalRequest) -> None:
        """Asks the provider for the open utterance's text."""
        self._apply(lambda stream: self._submit(stream, request))

    def reset(self) -> None:
        """Drops the open utterance."""
        self._apply(lambda stream: stream.reset())

    def end_input(self) -> None:
        """Closes the provider's stream once every final asked for is answered."""
        self._apply(lambda _: self._finals.put_nowait(None))

    def _apply(self, operation: Callable[[STTStream], None]) -> None:
        if self._stream is None:
            self._held.append(operation)
        else:
            operation(self._stream)

    def _submit(self, stream: STTStream, request: FinalRequest) -> None:
        self._finals.put_nowait((request, stream.finalize(speculative=request.speculative),
                                 time.time_ns()))

    async def run(self) -> None:
        """Opens the stream, then forwards its events and answers finals until it ends."""
        stream = await self._provider.open_stream(self._options)
        self._stream = stream
        for operation in self._held:
            operation(stream)
        self._held.clear()
        tasks = {asyncio.create_task(self._forward_events(stream), name="stt-stream-events"),
                 asyncio.create_task(self._answer_finals(stream), name="stt-stream-finals")}
        try:
            while tasks:
                done, tasks = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def aclose(self) -> None:
        """Closes the provider's stream."""
        if self._stream is not None:
            await self._stream.aclose()

    async def _answer_finals(self, stream: STTStream) -> None:
        while (pending := await self._finals.get()) is not None:
            request, answer, asked_ns = pending
            with final_span(request, self.provider_name, start_ns=asked_ns) as span:
                result = await answer
                processing_ms = (time.time_ns() - asked_ns) // 1_000_000
                span.set_attribute("voxmesh.stt.processing_ms", processing_ms)
                span.set_attribute("voxmesh.stt.empty", not result.text)
            self._sink.final(request, stt_pb2.Transcript(
                text=result.text, is_final=True, start_ms=request.start_ms,
                end_ms=request.end_ms, confidence=result.confidence,
                words=words_to_proto(result.words, self._offset_ms),
                request_id=request.request_id, processing_ms=processing_ms,
                provider=self.provider_name))
        stream.end_input()

    async def _forward_events(self, stream: STTStream) -> None:
        async for event in stream.events():
            if isinstance(event, SpeechHint):
                self._sink.send(stt_pb2.RecognizeResponse(speech_event=stt_pb2.SpeechEvent(
                    kind=_EVENT_KINDS[event.kind], at_ms=event.at_ms + self._offset_ms)))
            elif self._interim_results and event.text:
                self._sink.send(stt_pb2.RecognizeResponse(transcript=self._interim(event)))

    def _interim(self, event: InterimResult) -> stt_pb2.Transcript:
        return stt_pb2.Transcript(
            text=event.text, is_final=False, start_ms=event.start_ms + self._offset_ms,
            end_ms=event.end_ms + self._offset_ms, confidence=event.confidence,
            words=words_to_proto(event.words, self._offset_ms), provider=self.provider_name)
