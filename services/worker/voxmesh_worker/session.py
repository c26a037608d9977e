"""The session runtime: one :class:`CallSession` per call.

It is the only place that knows about turns. Audio from the edge goes through VAD and
turn-taking; speech is streamed to STT; when the caller's turn ends, the transcript goes to the
LLM, sentences go to TTS as they complete, and audio is paced back to the edge. Caller speech
while the agent is answering interrupts it: the LLM and TTS streams are cancelled, playout is
flushed, and the context keeps only the words the caller heard.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import grpc
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from opentelemetry.trace import Span, SpanKind

from voxmesh import subjects
from voxmesh.audio import FRAME_MS
from voxmesh.errors import error_from_rpc
from voxmesh.pii import redact
from voxmesh.text import SentenceAggregator
from voxmesh.toolcalls import ParsedToolCall
from voxmesh.v1 import common_pb2, llm_pb2, session_pb2, stt_pb2, tts_pb2
from voxmesh_worker import instruments
from voxmesh_worker.clients import ServiceClients
from voxmesh_worker.playout import Playout
from voxmesh_worker.settings import WorkerSettings
from voxmesh_worker.tools import ToolResult, ToolRunner
from voxmesh_worker.turn_trace import TurnTrace, start_session_span
from voxmesh_worker.turns import TurnDetector, TurnSignal
from voxmesh_worker.vad import SileroVAD

log = logging.getLogger("voxmesh.worker.session")

INTERNAL_FORMAT = common_pb2.AudioFormat(
    encoding=common_pb2.AUDIO_ENCODING_PCM16, sample_rate_hz=16000, channels=1
)
State = session_pb2.AgentState.State


def _ms(seconds: float) -> int:
    return max(0, int(round(seconds * 1000)))


@dataclass
class _Segment:
    """A sentence of the agent's answer, with estimated word timings relative to its audio."""

    text: str
    turn_offset_ms: int
    words: list[tuple[str, int, int]] = field(default_factory=list)


@dataclass
class Turn:
    """One exchange: the caller's utterance and the agent's answer."""

    index: int
    transcript: asyncio.Future[str]
    speech_end: float
    speech_end_wall: float
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    decided_at: float = 0.0
    metrics: session_pb2.TurnMetrics = field(default_factory=session_pb2.TurnMetrics)
    segments: list[_Segment] = field(default_factory=list)
    audio_ms: int = 0
    generated: str = ""
    first_sentence_at: float = 0.0
    trace: TurnTrace | None = None
    playout_span: Span | None = None


_STAGE_FIELDS = ("endpointing_ms", "stt_final_ms", "llm_first_token_ms", "first_sentence_ms",
                 "tts_first_audio_ms", "edge_first_packet_ms")


def _record_turn_metrics(metrics: session_pb2.TurnMetrics, interrupted: bool) -> None:
    instruments.TURNS.add(1, {"interrupted": interrupted})
    if interrupted:
        instruments.INTERRUPTIONS.add(1)
    if metrics.voice_to_voice_ms:
        instruments.VOICE_TO_VOICE.record(metrics.voice_to_voice_ms)
    for name in _STAGE_FIELDS:
        value = getattr(metrics, name)
        if value:
            instruments.STAGE.record(value, {"stage": name.removesuffix("_ms")})


class ServiceCallError(Exception):
    """A call to a model service failed; the turn is lost but the call goes on."""

    def __init__(self, component: str, exc: grpc.RpcError) -> None:
        detail = error_from_rpc(exc)
        detail.component = detail.component or component
        detail.message = f"{component} failed: {detail.message}"
        super().__init__(detail.message)
        self.detail = detail


class SessionFatalError(Exception):
    """The call cannot go on (e.g. STT is gone)."""

    def __init__(self, detail: common_pb2.ErrorDetail) -> None:
        super().__init__(detail.message)
        self.detail = detail


class CallSession:
    """Runs one call from dispatch to hangup."""

    def __init__(
        self,
        *,
        session_id: str,
        nc: NatsClient,
        clients: ServiceClients,
        settings: WorkerSettings,
        vad_session: Any,
        vad_executor: Executor,
        tools: ToolRunner | None = None,
    ) -> None:
        """Creates the session; :meth:`start` subscribes, :meth:`run` drives it."""
        self.session_id = session_id
        self._nc = nc
        self._clients = clients
        self._settings = settings
        self._vad = SileroVAD(vad_session)
        self._vad_executor = vad_executor
        self._tools = tools
        self._tool_definitions = [
            llm_pb2.ToolDefinition(name=t.name, description=t.description,
                                   parameters_json_schema=json.dumps(t.parameters))
            for t in (tools.definitions if tools is not None else [])]
        self._detector = TurnDetector(
            threshold=settings.vad_threshold,
            min_speech_ms=settings.min_speech_ms,
            speculative_pause_ms=settings.speculative_pause_ms,
            endpoint_silence_ms=settings.endpoint_silence_ms,
        )
        self._audio_in: asyncio.Queue[common_pb2.AudioChunk] = asyncio.Queue(maxsize=500)
        self._stt_requests: asyncio.Queue[stt_pb2.RecognizeRequest | None] = asyncio.Queue()
        self._finals: dict[str, asyncio.Future[str]] = {}
        #: Final requested at the latest pause; it covers all of the utterance so far.
        self._speculative: asyncio.Future[str] | None = None
        self._recent_probabilities: deque[float] = deque(maxlen=8)
        self._session_span: Span | None = None
        #: Trace of the user turn in progress (from speech onset until its answer is started).
        self._pending_trace: TurnTrace | None = None
        self._preroll: deque[bytes] = deque(maxlen=max(1, settings.preroll_ms // FRAME_MS))
        self._stt_sequence = 0
        self._last_speech = 0.0
        self._last_speech_wall = 0.0
        self._turn_index = 0
        self._turn: Turn | None = None
        self._turn_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._subscriptions: list[Any] = []
        self._ended = asyncio.Event()
        self._end_reason = ""
        self._state = State.STATE_UNSPECIFIED
        self._playout = Playout(
            nc, session_id, lead_ms=settings.playout_lead_ms, on_first_frame=self._on_first_frame
        )

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Subscribes to the call's subjects.

        Done before the dispatch is accepted, so no audio published right after the acceptance
        is lost.
        """
        sid = self.session_id
        self._subscriptions = [
            await self._nc.subscribe(subjects.media_in(sid), cb=self._on_media),
            await self._nc.subscribe(subjects.control(sid), cb=self._on_control),
        ]

    async def run(self) -> str:
        """Drives the call until hangup, a fatal error or :meth:`end`; returns the reason."""
        self._session_span = start_session_span(
            self.session_id, self._settings.agent, self._settings.worker_id)
        await self._emit(started=session_pb2.SessionStarted(
            worker_id=self._settings.worker_id, agent=self._settings.agent))
        await self._set_state(State.STATE_LISTENING)
        self._spawn(self._playout.run(), "playout")
        self._spawn(self._audio_loop(), "audio")
        self._spawn(self._stt_loop(), "stt")
        try:
            await self._ended.wait()
        finally:
            await self._shutdown()
        return self._end_reason

    def end(self, reason: str) -> None:
        """Ends the call (hangup, drain timeout)."""
        if not self._ended.is_set():
            self._end_reason = reason
            self._ended.set()

    async def _shutdown(self) -> None:
        if self._turn_task is not None:
            self._turn_task.cancel()
            await asyncio.gather(self._turn_task, return_exceptions=True)
        for sub in self._subscriptions:
            await sub.unsubscribe()
        await self._stt_requests.put(None)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self._clients.llm.EndSession(
                llm_pb2.EndSessionRequest(session_id=self.session_id), timeout=2
            )
        except grpc.RpcError:
            pass  # no stored context (no turn happened) or the service is gone: nothing to do
        await self._emit(ended=session_pb2.SessionEnded(
            reason=self._end_reason, turns=self._turn_index))
        if self._pending_trace is not None:
            self._pending_trace.finish(turn_index=0, interrupted=False, discarded=True,
                                       voice_to_voice_ms=0, metrics={})
        if self._session_span is not None:
            self._session_span.set_attributes({"voxmesh.session.turns": self._turn_index,
                                               "voxmesh.session.end_reason": self._end_reason})
            self._session_span.end()

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=f"{self.session_id[:8]}-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if isinstance(exc, SessionFatalError):
            asyncio.get_running_loop().create_task(self._fatal(exc.detail))
        elif exc is not None:
            log.error("session %s task %s failed", self.session_id, task.get_name(),
                      exc_info=exc)
            detail = common_pb2.ErrorDetail(reason="WORKER_INTERNAL", component="worker",
                                            message=f"internal error in {task.get_name()}")
            asyncio.get_running_loop().create_task(self._fatal(detail))

    async def _emit_error(self, detail: common_pb2.ErrorDetail, fatal: bool) -> None:
        instruments.ERRORS.add(1, {"component": detail.component or "worker",
                                   "code": detail.reason, "fatal": fatal})
        await self._emit(error=session_pb2.SessionError(detail=detail, fatal=fatal))

    async def _fatal(self, detail: common_pb2.ErrorDetail) -> None:
        log.warning("session %s ends: %s (%s)", self.session_id, detail.reason, detail.message)
        await self._emit_error(detail, fatal=True)
        self.end(f"error: {detail.reason}")

    # ----------------------------------------------------------------- NATS callbacks

    async def _on_media(self, msg: Msg) -> None:
        chunk = common_pb2.AudioChunk()
        chunk.ParseFromString(msg.data)
        if self._audio_in.full():
            self._audio_in.get_nowait()  # fall behind by dropping the oldest, never block NATS
        self._audio_in.put_nowait(chunk)

    async def _on_control(self, msg: Msg) -> None:
        control = session_pb2.SessionControl()
        control.ParseFromString(msg.data)
        kind = control.WhichOneof("control")
        if kind == "hangup":
            self.end(f"hangup: {control.hangup.reason or 'caller'}")
        elif kind == "playout_started":
            turn = self._turn
            started = control.playout_started
            if turn is not None and turn.index == started.turn_index and turn.speech_end_wall:
                edge_ms = started.at_ms - int(turn.speech_end_wall * 1000)
                turn.metrics.edge_first_packet_ms = max(0, edge_ms)

    async def _emit(self, **event: Any) -> None:
        message = session_pb2.SessionEvent(
            session_id=self.session_id, at_ms=int(time.time() * 1000), **event
        )
        await self._nc.publish(subjects.events(self.session_id), message.SerializeToString())

    async def _set_state(self, state: session_pb2.AgentState.State) -> None:
        if state != self._state:
            self._state = state
            await self._emit(agent_state=session_pb2.AgentState(state=state))

    # ----------------------------------------------------------------- listening

    async def _audio_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            chunk = await self._audio_in.get()
            probabilities = await loop.run_in_executor(
                self._vad_executor, self._vad.process, chunk.data
            )
            was_speaking = self._detector.user_speaking
            if was_speaking:
                await self._send_audio(chunk.data)
            else:
                self._preroll.append(chunk.data)
            for probability in probabilities:
                self._recent_probabilities.append(round(probability, 2))
                if probability >= self._settings.vad_threshold:
                    self._last_speech = time.monotonic()
                    self._last_speech_wall = time.time()
                signal = self._detector.update(probability)
                if signal is TurnSignal.SPEECH_STARTED:
                    await self._on_speech_started()
                elif signal is TurnSignal.PAUSE:
                    await self._on_pause()
                elif signal is TurnSignal.END_OF_TURN:
                    await self._on_end_of_turn()

    async def _send_audio(self, pcm: bytes) -> None:
        chunk = common_pb2.AudioChunk(data=pcm, sequence=self._stt_sequence)
        self._stt_sequence += 1
        await self._stt_requests.put(stt_pb2.RecognizeRequest(audio=chunk))

    def _user_turn_trace(self) -> TurnTrace:
        if self._pending_trace is None:
            assert self._session_span is not None
            onset = time.time() - self._settings.min_speech_ms / 1000
            self._pending_trace = TurnTrace(self._session_span, self.session_id, onset)
        return self._pending_trace

    async def _on_speech_started(self) -> None:
        self._user_turn_trace()
        # The pre-roll holds the onset the VAD needed min_speech_ms to be sure about.
        while self._preroll:
            await self._send_audio(self._preroll.popleft())
        if self._turn_task is not None and not self._turn_task.done():
            log.debug("speech onset while answering; recent VAD %s", self._recent_probabilities)
            await self._interrupt()

    async def _request_final(self, speculative: bool) -> asyncio.Future[str]:
        request_id = uuid.uuid4().hex[:12]
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._finals[request_id] = future
        span = self._user_turn_trace().child(
            "stt", kind=SpanKind.CLIENT, **{"voxmesh.stt.speculative": speculative})
        future.add_done_callback(lambda _: span.end())
        await self._stt_requests.put(stt_pb2.RecognizeRequest(finalize=stt_pb2.Finalize(
            request_id=request_id, speculative=speculative,
            trace_context=TurnTrace.carrier(span))))
        return future

    async def _on_pause(self) -> None:
        # Speculative STT: transcribe what was said so far while waiting to see whether the
        # caller goes on. STT keeps the audio, so if they do, the next final covers it all.
        self._speculative = await self._request_final(speculative=True)

    async def _on_end_of_turn(self) -> None:
        # The pause that preceded the endpoint already asked for the whole utterance; use that
        # result and drop the audio. Without one (endpoint <= pause setting), ask now.
        if self._speculative is not None:
            transcript, self._speculative = self._speculative, None
            await self._stt_requests.put(stt_pb2.RecognizeRequest(reset=stt_pb2.Reset()))
        else:
            transcript = await self._request_final(speculative=False)
        # The index is provisional until the transcript proves this was speech (see _run_turn).
        turn = Turn(
            index=self._turn_index + 1,
            transcript=transcript,
            speech_end=self._last_speech,
            speech_end_wall=self._last_speech_wall,
            decided_at=time.monotonic(),
        )
        turn.metrics.turn_index = turn.index
        turn.metrics.turn_id = turn.id
        turn.metrics.endpointing_ms = _ms(turn.decided_at - turn.speech_end)
        turn.trace, self._pending_trace = self._user_turn_trace(), None
        turn.trace.record("endpointing", turn.speech_end_wall, time.time(),
                          **{"voxmesh.endpointing.silence_ms": self._settings.endpoint_silence_ms})
        self._turn = turn
        self._turn_task = asyncio.create_task(self._run_turn(turn), name=f"turn-{turn.index}")

    async def _stt_loop(self) -> None:
        async def requests() -> AsyncIterator[stt_pb2.RecognizeRequest]:
            yield stt_pb2.RecognizeRequest(config=stt_pb2.StreamConfig(
                turn=common_pb2.TurnRef(session_id=self.session_id),
                format=INTERNAL_FORMAT, language="en-US", interim_results=True))
            while (request := await self._stt_requests.get()) is not None:
                yield request

        call = self._clients.stt.Recognize(requests())
        try:
            async for response in call:
                if response.WhichOneof("response") != "transcript":
                    continue
                transcript = response.transcript
                if transcript.is_final:
                    future = self._finals.pop(transcript.request_id, None)
                    if future is not None and not future.done():
                        future.set_result(transcript.text)
                else:
                    await self._emit(user_transcript=session_pb2.UserTranscript(
                        turn_index=self._turn_index + 1, text=transcript.text, is_final=False))
        except grpc.RpcError as exc:
            detail = error_from_rpc(exc)
            detail.component = detail.component or "stt"
            detail.message = f"speech recognition stream lost: {detail.message}"
            raise SessionFatalError(detail) from exc
        finally:
            call.cancel()
        detail = common_pb2.ErrorDetail(reason="STT_STREAM_ENDED", component="stt",
                                        message="speech recognition stream ended unexpectedly")
        if not self._ended.is_set():
            raise SessionFatalError(detail)

    # ----------------------------------------------------------------- answering

    async def _interrupt(self) -> None:
        task = self._turn_task
        if task is None or task.done():
            return
        log.info("session %s: barge-in on turn %d", self.session_id,
                 self._turn.index if self._turn else 0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def _run_turn(self, turn: Turn) -> None:
        interrupted = False
        try:
            user_text = (await asyncio.wait_for(asyncio.shield(turn.transcript), 15)).strip()
            turn.metrics.stt_final_ms = _ms(time.monotonic() - turn.speech_end)
            if not user_text:
                return  # noise, or words Whisper could not make out: keep listening
            self._turn_index = turn.index
            self._trace_text(turn, "voxmesh.turn.user_text", user_text)
            await self._emit(user_transcript=session_pb2.UserTranscript(
                turn_index=turn.index, text=user_text, is_final=True))
            await self._set_state(State.STATE_THINKING)
            await self._answer(turn, user_text)
        except asyncio.CancelledError:
            if self._turn_index == turn.index:  # an answer was under way
                interrupted = True
                await asyncio.shield(self._on_interrupted(turn))
            raise
        except ServiceCallError as exc:
            log.warning("session %s turn %d failed: %s %s", self.session_id, turn.index,
                        exc.detail.component, exc.detail.reason)
            await self._emit_error(exc.detail, fatal=False)
        except TimeoutError:
            await self._emit_error(common_pb2.ErrorDetail(
                reason="STT_FINAL_TIMEOUT", component="stt",
                message="no final transcript within 15 s"), fatal=False)
        finally:
            if not interrupted and not self._ended.is_set():
                await self._set_state(State.STATE_LISTENING)
            if self._turn_index == turn.index and (turn.metrics.voice_to_voice_ms or interrupted):
                turn.metrics.interrupted = interrupted
                await self._emit(turn_metrics=turn.metrics)
                _record_turn_metrics(turn.metrics, interrupted)
            if turn.trace is not None:
                turn.trace.finish(
                    turn_index=turn.index, interrupted=interrupted,
                    discarded=self._turn_index != turn.index,
                    voice_to_voice_ms=turn.metrics.voice_to_voice_ms,
                    metrics={name: getattr(turn.metrics, name) for name in _STAGE_FIELDS})

    async def _answer(self, turn: Turn, user_text: str) -> None:
        settings = self._settings
        ref = common_pb2.TurnRef(session_id=self.session_id, turn_index=turn.index,
                                 turn_id=turn.id)
        tts_requests: asyncio.Queue[tts_pb2.SynthesizeRequest | None] = asyncio.Queue()

        async def tts_input() -> AsyncIterator[tts_pb2.SynthesizeRequest]:
            yield tts_pb2.SynthesizeRequest(config=tts_pb2.SynthesisConfig(
                turn=ref, format=INTERNAL_FORMAT, voice=settings.tts_voice,
                speaking_rate=settings.speaking_rate))
            while (request := await tts_requests.get()) is not None:
                yield request

        assert turn.trace is not None
        tts_span = turn.trace.child("tts", kind=SpanKind.CLIENT)
        self._playout.set_trace_headers(turn.index, TurnTrace.carrier(turn.trace.span))
        tts_call = self._clients.tts.Synthesize(tts_input(), metadata=TurnTrace.metadata(tts_span))
        tts_reader = asyncio.create_task(self._read_tts(turn, tts_call), name="tts-reader")
        llm_start = time.monotonic()

        async def speak(sentence: str) -> None:
            if not turn.first_sentence_at:
                turn.first_sentence_at = time.monotonic()
                turn.metrics.first_sentence_ms = _ms(turn.first_sentence_at - llm_start)
            await tts_requests.put(tts_pb2.SynthesizeRequest(text=tts_pb2.TextChunk(
                text=sentence + " ")))
            await tts_requests.put(tts_pb2.SynthesizeRequest(flush=tts_pb2.Flush()))

        request = llm_pb2.GenerateRequest(
            turn=ref, user_text=user_text, system_prompt=settings.system_prompt,
            max_tokens=settings.max_tokens, temperature=settings.temperature,
            tools=self._tool_definitions)
        try:
            for step in range(settings.max_tool_steps + 1):
                calls = await self._generate(turn, request, speak, llm_start)
                if not calls:
                    break
                if step == settings.max_tool_steps:
                    log.warning("session %s turn %d: tool step cap (%d) reached",
                                self.session_id, turn.index, settings.max_tool_steps)
                results = await self._run_tools(turn, calls, speak)
                request = llm_pb2.GenerateRequest(
                    turn=ref, system_prompt=settings.system_prompt,
                    max_tokens=settings.max_tokens, temperature=settings.temperature,
                    tools=request.tools, tool_results=results)
            await tts_requests.put(None)
            await tts_reader
            tts_span.set_attribute("voxmesh.tts.first_audio_ms", turn.metrics.tts_first_audio_ms)
            tts_span.end()
            self._playout.end_turn(turn.index)
            await self._playout.wait_drained()
            if turn.playout_span is not None:
                turn.playout_span.end()
            self._trace_text(turn, "voxmesh.turn.agent_text", turn.generated.strip())
            await self._emit(agent_text=session_pb2.AgentText(
                turn_index=turn.index, text=turn.generated.strip(), is_final=True))
        finally:
            tts_call.cancel()
            if not tts_reader.done():
                tts_reader.cancel()
                await asyncio.gather(tts_reader, return_exceptions=True)

    async def _generate(
        self, turn: Turn, request: llm_pb2.GenerateRequest,
        speak: Callable[[str], Awaitable[None]], llm_start: float,
    ) -> list[llm_pb2.ToolCall]:
        """One LLM step: speaks its text as sentences complete; returns the tool calls."""
        assert turn.trace is not None
        llm_span = turn.trace.child("llm", kind=SpanKind.CLIENT)
        llm_call = self._clients.llm.Generate(request, metadata=TurnTrace.metadata(llm_span))
        aggregator = SentenceAggregator(
            first_clause_min_words=0 if turn.generated else self._settings.first_clause_min_words)
        calls: list[llm_pb2.ToolCall] = []
        try:
            async for event in _guarded(llm_call, "llm"):
                kind = event.WhichOneof("event")
                if kind == "delta":
                    if not turn.metrics.llm_first_token_ms:
                        turn.metrics.llm_first_token_ms = _ms(time.monotonic() - llm_start)
                    turn.generated += event.delta.text
                    for sentence in aggregator.push(event.delta.text):
                        await speak(sentence)
                elif kind == "tool_call":
                    calls.append(event.tool_call)
                elif kind == "done":
                    turn.metrics.llm_completion_tokens += event.done.completion_tokens
            if rest := aggregator.flush():
                await speak(rest)
        finally:
            llm_call.cancel()
            llm_span.set_attributes({
                "voxmesh.llm.first_token_ms": turn.metrics.llm_first_token_ms,
                "voxmesh.llm.first_sentence_ms": turn.metrics.first_sentence_ms,
                "voxmesh.llm.tool_calls": len(calls)})
            llm_span.end()
        return calls

    async def _run_tools(
        self, turn: Turn, calls: list[llm_pb2.ToolCall], speak: Callable[[str], Awaitable[None]]
    ) -> list[llm_pb2.ToolResultMessage]:
        """Speaks the tools' filler lines at once, runs the calls concurrently, returns results."""
        runner = self._tools
        parsed = [_parsed_call(call) for call in calls]
        if runner is not None:
            for filler in dict.fromkeys(runner.filler(call.name) for call in parsed):
                if filler:
                    turn.generated += (" " if turn.generated else "") + filler
                    await speak(filler)
        trace = turn.trace
        assert trace is not None

        async def run_one(call: ParsedToolCall, call_id: str) -> llm_pb2.ToolResultMessage:
            span = trace.child("tool")
            span.set_attribute("voxmesh.tool.name", call.name)
            if runner is None:
                result = ToolResult(call.name, "rejected", "this agent has no tools")
            else:
                result = await runner.run(call)
            span.set_attribute("voxmesh.tool.status", result.status)
            span.end()
            log.info("session %s turn %d: tool %s -> %s (%d ms)", self.session_id, turn.index,
                     call.name, result.status, result.duration_ms)
            return llm_pb2.ToolResultMessage(call_id=call_id, name=call.name,
                                             content_json=result.to_message())

        return list(await asyncio.gather(
            *(run_one(call, raw.call_id) for call, raw in zip(parsed, calls, strict=True))))

    async def _read_tts(self, turn: Turn, call: Any) -> None:
        async for response in _guarded(call, "tts"):
            kind = response.WhichOneof("response")
            if kind != "audio":
                continue
            audio = response.audio
            if not turn.metrics.tts_first_audio_ms and turn.first_sentence_at:
                turn.metrics.tts_first_audio_ms = _ms(time.monotonic() - turn.first_sentence_at)
            if audio.text:  # first chunk of a segment
                turn.segments.append(_Segment(audio.text, turn.audio_ms))
                await self._set_state(State.STATE_SPEAKING)
                spoken = " ".join(s.text for s in turn.segments)
                await self._emit(agent_text=session_pb2.AgentText(
                    turn_index=turn.index, text=spoken, is_final=False))
            if audio.words and turn.segments:
                segment = turn.segments[-1]
                segment.words.extend((w.word, w.start_ms, w.end_ms) for w in audio.words)
            turn.audio_ms += len(audio.chunk.data) * 1000 // 32000
            self._playout.enqueue(turn.index, audio.chunk.data)

    def _on_first_frame(self, turn_index: int) -> None:
        turn = self._turn
        if turn is not None and turn.index == turn_index:
            turn.metrics.voice_to_voice_ms = _ms(time.monotonic() - turn.speech_end)
            if turn.trace is not None:
                turn.playout_span = turn.trace.child("playout")

    async def _on_interrupted(self, turn: Turn) -> None:
        await self._playout.clear(turn.index)
        heard = self._heard_text(turn)
        try:
            await self._clients.llm.CommitHeard(llm_pb2.CommitHeardRequest(
                turn=common_pb2.TurnRef(session_id=self.session_id, turn_index=turn.index,
                                        turn_id=turn.id),
                heard_text=heard, interrupted=True), timeout=2)
        except grpc.RpcError as exc:
            log.warning("commit of heard text failed: %s", error_from_rpc(exc).message)
        self._trace_text(turn, "voxmesh.turn.agent_text", heard)
        await self._emit(agent_text=session_pb2.AgentText(
            turn_index=turn.index, text=heard, is_final=True, interrupted=True))
        await self._set_state(State.STATE_LISTENING)

    def _trace_text(self, turn: Turn, attribute: str, text: str) -> None:
        """Records what was said on the turn span, redacted, only when the agent opts in."""
        if self._settings.trace_transcripts and turn.trace is not None:
            turn.trace.span.set_attribute(attribute, redact(text))

    def _heard_text(self, turn: Turn) -> str:
        """Words whose (estimated) end was played out before the interruption."""
        heard_ms = self._playout.published_ms(turn.index) - self._settings.playout_lead_ms
        words = []
        for segment in turn.segments:
            for word, _start, end in segment.words:
                if segment.turn_offset_ms + end <= heard_ms:
                    words.append(word)
        return " ".join(words)


def _parsed_call(call: llm_pb2.ToolCall) -> ParsedToolCall:
    """The worker's view of an LLM tool call; unreadable arguments become a rejection."""
    try:
        arguments = json.loads(call.arguments_json or "{}")
    except json.JSONDecodeError:
        return ParsedToolCall(call.name, raw=call.arguments_json,
                              error="tool call arguments are not valid JSON")
    if not isinstance(arguments, dict):
        return ParsedToolCall(call.name, error="tool call arguments must be an object")
    return ParsedToolCall(call.name, arguments)


async def _guarded(call: AsyncIterator[Any], component: str) -> AsyncIterator[Any]:
    """Iterates a gRPC stream, naming the service in any failure."""
    try:
        async for item in call:
            yield item
    except grpc.RpcError as exc:
        raise ServiceCallError(component, exc) from exc
