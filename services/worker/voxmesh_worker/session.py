"""The session runtime: one :class:`CallSession` per call.

It is the only place that knows about turns. Audio from the edge goes through VAD and
turn-taking; speech is streamed to STT; when the caller's turn ends, the transcript goes to the
LLM (:mod:`.answer`), sentences go to TTS as they complete (:mod:`.speech`), and audio is paced
back to the edge (:mod:`.playout`).

Three rules keep the conversation honest:

* Nothing the caller says is lost. If they go on talking after an endpoint (or the turn looks
  unfinished, :mod:`.turn_completion`), the unanswered words are carried into the next turn.
* Caller sound while the agent talks pauses the agent at once; it is then judged
  (:mod:`.interruptions`). Noise and "uh-huh" resume the agent where it paused; anything else
  cancels the answer.
* The context keeps only what the caller heard: an interrupted answer is cut at the last word
  played out before the pause.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import grpc
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from opentelemetry.trace import Span, SpanKind

from voxmesh import subjects
from voxmesh.audio import FRAME_MS
from voxmesh.errors import error_from_rpc
from voxmesh.pii import redact
from voxmesh.v1 import common_pb2, llm_pb2, session_pb2, stt_pb2
from voxmesh_worker import instruments
from voxmesh_worker.answer import CallerNotDone, TurnAnswer
from voxmesh_worker.background import BackgroundTasks, result_message, spoken_result
from voxmesh_worker.clients import ServiceClients
from voxmesh_worker.guardrails import Guardrails
from voxmesh_worker.interruptions import HeldPlayout, is_backchannel
from voxmesh_worker.playout import Playout
from voxmesh_worker.provider_endpointing import ProviderEndpointing
from voxmesh_worker.settings import WorkerSettings
from voxmesh_worker.speech import INTERNAL_FORMAT, ServiceCallError, Turn, TurnSpeech, ms_since
from voxmesh_worker.speech_end import SpeechEndClock
from voxmesh_worker.tools import ToolRunner
from voxmesh_worker.turn_completion import Verdict, classify, merge_utterances
from voxmesh_worker.turn_trace import TurnTrace, start_session_span
from voxmesh_worker.turns import TurnDetector, TurnSignal
from voxmesh_worker.vad import WINDOW_MS, VadBatcher, VadStream

log = logging.getLogger("voxmesh.worker.session")

State = session_pb2.AgentState.State
_TRANSCRIPT_TIMEOUT_S = 15

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


class SessionFatalError(Exception):
    """The call cannot go on (e.g. STT is gone)."""

    def __init__(self, detail: common_pb2.ErrorDetail) -> None:
        """Carries the error reported to the caller."""
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
        vad: VadBatcher,
        tools: ToolRunner | None = None,
    ) -> None:
        """Creates the session; :meth:`start` subscribes, :meth:`run` drives it."""
        self.session_id = session_id
        self._nc = nc
        self._clients = clients
        self._settings = settings
        self._vad = vad
        self._vad_stream = VadStream()
        self._tools = tools
        self._guardrails = Guardrails(
            clients.guardrails, agent=settings.agent,
            timeout_s=settings.guardrails_timeout_ms / 1000,
            fail_open=settings.guardrails_fail_open)
        self._background = BackgroundTasks(session_id, nc, clients.subagents)
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
        #: A streaming STT provider's endpointer (Deepgram) can end a turn before the silence
        #: timer: after its ENDPOINT, a short confirmed pause is enough.
        self._provider_endpointing = ProviderEndpointing(
            silence_ms=settings.endpoint_silence_ms,
            min_silence_ms=min(settings.speculative_pause_ms, settings.endpoint_silence_ms))
        #: Milliseconds of audio sent on the STT stream (the position of provider hints).
        self._stt_position_ms = 0
        #: Caller audio and its arrival time (monotonic), in order.
        self._audio_in: asyncio.Queue[tuple[common_pb2.AudioChunk, float]] = asyncio.Queue(
            maxsize=500)
        self._speech_end = SpeechEndClock(speech_floor=settings.vad_threshold - 0.15)
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
        #: Caller audio not sent to STT yet (see ``WorkerSettings.stt_chunk_ms``).
        self._stt_pending = bytearray()
        self._last_speech = 0.0
        self._last_speech_wall = 0.0
        #: Index of the last turn the agent answered (turn 0 is the greeting).
        self._turn_index = 0
        #: The turn being answered, and its voice.
        self._turn: Turn | None = None
        self._speech: TurnSpeech | None = None
        self._turn_task: asyncio.Task[None] | None = None
        #: Transcripts of utterances not answered yet; the next turn answers them together.
        self._carried: list[asyncio.Future[str]] = []
        #: Agent audio paused by caller sound that is still being judged.
        self._held: HeldPlayout | None = None
        self._judge_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._subscriptions: list[Any] = []
        self._ended = asyncio.Event()
        self._end_reason = ""
        self._state = State.STATE_UNSPECIFIED
        self._playout = Playout(
            nc, session_id, lead_ms=settings.playout_lead_ms, on_first_frame=self._on_first_frame,
            message_ms=settings.playout_message_ms)

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
        await self._background.start()

    async def run(self) -> str:
        """Drives the call until hangup, a fatal error or :meth:`end`; returns the reason."""
        self._session_span = start_session_span(
            self.session_id, self._settings.agent, self._settings.worker_id)
        await self._emit(started=session_pb2.SessionStarted(
            worker_id=self._settings.worker_id, agent=self._settings.agent,
            greeting=self._settings.greeting))
        await self._set_state(State.STATE_LISTENING)
        self._spawn(self._playout.run(), "playout")
        self._spawn(self._audio_loop(), "audio")
        self._spawn(self._stt_loop(), "stt")
        if self._background.enabled:
            self._spawn(self._speak_task_results(), "task-results")
        if self._settings.greeting:
            self._turn_task = asyncio.create_task(self._greet(), name="greeting")
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
        for task in (self._judge_task, self._turn_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        for sub in self._subscriptions:
            await sub.unsubscribe()
        self._vad.forget(self._vad_stream)
        await self._background.stop()
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

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        """Runs a task the session owns: cancelled at shutdown, its failure ends the call."""
        task = asyncio.create_task(coro, name=f"{self.session_id[:8]}-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if isinstance(exc, SessionFatalError):
            self._spawn(self._fatal(exc.detail), "fatal")
        elif exc is not None:
            log.error("session %s task %s failed", self.session_id, task.get_name(),
                      exc_info=exc)
            detail = common_pb2.ErrorDetail(reason="WORKER_INTERNAL", component="worker",
                                            message=f"internal error in {task.get_name()}")
            self._spawn(self._fatal(detail), "fatal")

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
        arrived_at = time.monotonic()
        chunk = common_pb2.AudioChunk()
        chunk.ParseFromString(msg.data)
        if self._audio_in.full():
            self._audio_in.get_nowait()  # fall behind by dropping the oldest, never block NATS
        self._audio_in.put_nowait((chunk, arrived_at))

    async def _on_control(self, msg: Msg) -> None:
        control = session_pb2.SessionControl()
        control.ParseFromString(msg.data)
        kind = control.WhichOneof("control")
        if kind == "hangup":
            self.end(f"hangup: {control.hangup.reason or 'caller'}")
        elif kind == "audit":
            self._spawn(self._on_audit(control.audit), "audit")
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
        while True:
            received = await self._next_audio()
            if received is None:
                # Nothing more arrived and the endpoint silence after the caller's speech has
                # passed: their turn is over now, not at the next window.
                if self._detector.user_speaking:
                    await self._on_turn_signal(self._detector.end_turn())
                continue
            chunk, arrived_at = received
            self._speech_end.on_audio(len(chunk.data), arrived_at)
            windows = await self._vad.process(self._vad_stream, chunk.data)
            was_speaking = self._detector.user_speaking
            if was_speaking:
                await self._send_audio(chunk.data)
            else:
                self._preroll.append(chunk.data)
            for window in windows:
                probability = window.probability
                self._speech_end.on_window(window)
                self._recent_probabilities.append(round(probability, 2))
                if probability >= self._settings.vad_threshold:
                    self._provider_endpointing.on_speech(self._stt_position_ms)
                    self._last_speech = self._speech_end.speech_end
                    self._last_speech_wall = time.time() - (time.monotonic() - self._last_speech)
                    await self._count_held_speech()
                signal = self._detector.update(probability)
                if (signal is None and self._detector.user_speaking
                        and self._provider_endpointing.turn_over(
                            self._speech_end.judged_silence_ms)):
                    signal = self._detector.end_turn()
                await self._on_turn_signal(signal)

    async def _next_audio(self) -> tuple[common_pb2.AudioChunk, float] | None:
        """The next chunk of caller audio and its arrival time; None when the turn is due.

        While the caller has the floor, waiting for audio is bounded by the moment the endpoint
        silence after their speech will have passed.
        """
        if not self._detector.user_speaking or not self._audio_in.empty():
            return await self._audio_in.get()
        due = self._speech_end.due(self._provider_endpointing.required_silence_ms())
        try:
            async with asyncio.timeout_at(due):
                return await self._audio_in.get()
        except TimeoutError:
            return None

    async def _on_turn_signal(self, signal: TurnSignal | None) -> None:
        if signal in (TurnSignal.SPEECH_STARTED, TurnSignal.END_OF_TURN):
            self._provider_endpointing.on_turn_end()
        await self._pause_or_resume_on_onset()
        if signal is TurnSignal.SPEECH_STARTED:
            await self._on_speech_started()
        elif signal is TurnSignal.PAUSE:
            await self._on_pause()
        elif signal is TurnSignal.END_OF_TURN:
            await self._on_end_of_turn()

    async def _send_audio(self, pcm: bytes) -> None:
        self._stt_pending += pcm
        self._stt_position_ms += len(pcm) // 32  # 16 kHz PCM16: 32 bytes per millisecond
        if len(self._stt_pending) >= self._settings.stt_chunk_ms * 32:
            self._flush_stt_audio()

    def _flush_stt_audio(self) -> None:
        if self._stt_pending:
            chunk = common_pb2.AudioChunk(data=bytes(self._stt_pending),
                                          sequence=self._stt_sequence)
            self._stt_sequence += 1
            self._stt_pending.clear()
            self._stt_requests.put_nowait(stt_pb2.RecognizeRequest(audio=chunk))

    def _send_stt(self, request: stt_pb2.RecognizeRequest) -> None:
        """Queues a control request on the STT stream, after the audio it is about."""
        self._flush_stt_audio()
        self._stt_requests.put_nowait(request)

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
        if self._held is not None:
            self._held.tentative = False  # the sound is speech now; it is judged when it ends
        elif await self._pause_agent() is None and self._answer_in_progress():
            # Nothing audible yet: the caller is still talking. Drop the answer in the making;
            # its words are carried into the turn this speech will end.
            await self._cancel_turn()

    def _answer_in_progress(self) -> bool:
        task, turn = self._turn_task, self._turn
        return (task is not None and not task.done() and turn is not None
                and not turn.finished_speaking)

    async def _pause_agent(self) -> HeldPlayout | None:
        """Stops the agent's audio now (fast barge-in) if it is talking; judged later."""
        turn, speech = self._turn, self._speech
        if not self._answer_in_progress() or speech is None or not speech.audible:
            return None
        assert turn is not None
        heard_ms = await self._playout.pause(turn.index)
        self._held = HeldPlayout(turn.index, heard_ms, time.monotonic())
        if turn.trace is not None:
            turn.trace.span.add_event("playout.paused", {"voxmesh.heard_ms": heard_ms})
        log.debug("caller sound while speaking; recent VAD %s", self._recent_probabilities)
        return self._held

    async def _pause_or_resume_on_onset(self) -> None:
        """The first speech windows pause the agent; a blip that stops short resumes it."""
        held, onset_ms = self._held, self._detector.onset_ms
        if held is None:
            if onset_ms >= self._settings.pause_speech_ms:
                await self._pause_agent()
        elif held.tentative and onset_ms == 0 and not self._detector.user_speaking:
            await self._resume(held, None, "a blip, not speech")

    async def _count_held_speech(self) -> None:
        held = self._held
        if held is None:
            return
        held.speech_ms += WINDOW_MS
        if held.speech_ms >= max(self._settings.sure_interruption_ms,
                                 self._settings.min_interruption_ms):
            # Long speech is an interruption whatever its words; stop generating now.
            await self._confirm_interruption()

    async def _request_final(self, speculative: bool) -> asyncio.Future[str]:
        request_id = uuid.uuid4().hex[:12]
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._finals[request_id] = future
        span = self._user_turn_trace().child(
            "stt", kind=SpanKind.CLIENT, **{"voxmesh.stt.speculative": speculative})
        future.add_done_callback(lambda _: span.end())
        self._send_stt(stt_pb2.RecognizeRequest(finalize=stt_pb2.Finalize(
            request_id=request_id, speculative=speculative,
            trace_context=TurnTrace.carrier(span))))
        return future

    async def _on_pause(self) -> None:
        # Speculative STT: transcribe what was said so far while waiting to see whether the
        # caller goes on. STT keeps the audio, so if they do, the next final covers it all.
        if self._settings.speculative_stt:
            self._speculative = await self._request_final(speculative=True)

    async def _on_end_of_turn(self) -> None:
        # The pause that preceded the endpoint already asked for the whole utterance; use that
        # result and drop the audio. Without one (endpoint <= pause setting), ask now.
        if self._speculative is not None:
            transcript, self._speculative = self._speculative, None
            self._send_stt(stt_pb2.RecognizeRequest(reset=stt_pb2.Reset()))
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
        turn.metrics.endpointing_ms = max(0, round((turn.decided_at - turn.speech_end) * 1000))
        turn.trace, self._pending_trace = self._user_turn_trace(), None
        turn.metrics.trace_id = turn.trace.trace_id
        turn.trace.record("endpointing", turn.speech_end_wall, time.time(),
                          **{"voxmesh.endpointing.silence_ms": self._settings.endpoint_silence_ms})
        held = self._held
        if held is None:
            self._start_turn(turn)
        elif held.speech_ms < self._settings.min_interruption_ms:
            await self._resume(held, turn, "too short to be an interruption")
        elif self._judge_task is not None and not self._judge_task.done():
            # A second utterance while the first is judged: the caller is taking the floor.
            self._judge_task.cancel()
            await self._confirm_interruption()
            self._start_turn(turn)
        else:
            self._judge_task = asyncio.create_task(self._judge(held, turn), name="judge")
            self._judge_task.add_done_callback(self._task_done)

    async def _stt_loop(self) -> None:
        async def requests() -> AsyncIterator[stt_pb2.RecognizeRequest]:
            yield stt_pb2.RecognizeRequest(config=stt_pb2.StreamConfig(
                turn=common_pb2.TurnRef(session_id=self.session_id),
                format=INTERNAL_FORMAT, language=self._settings.stt_language,
                interim_results=True, keyterms=self._settings.stt_keyterms))
            while (request := await self._stt_requests.get()) is not None:
                yield request

        call = self._clients.stt.Recognize(requests())
        try:
            async for response in call:
                kind = response.WhichOneof("response")
                if kind == "speech_event":
                    # Acted on by the audio loop at its next window, which owns turn state.
                    self._provider_endpointing.on_speech_event(
                        response.speech_event.kind, response.speech_event.at_ms)
                    continue
                if kind == "provider_switched":
                    switched = response.provider_switched
                    log.info("session %s: speech recognition moved from %s to %s (%s)",
                             self.session_id[:8], switched.from_provider,
                             switched.to_provider, switched.reason)
                    continue
                if kind != "transcript":
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

    # ----------------------------------------------------------------- interruptions

    async def _judge(self, held: HeldPlayout, turn: Turn) -> None:
        """Caller sound paused the agent: resume it, or let the caller have the floor."""
        try:
            text = await asyncio.wait_for(asyncio.shield(turn.transcript),
                                          _TRANSCRIPT_TIMEOUT_S)
        except TimeoutError:
            text = ""
        if is_backchannel(text):
            if self._detector.user_speaking:
                return  # they went on talking: the next endpoint judges again
            await self._resume(held, turn, f"backchannel {text!r}" if text else "no words")
            return
        await self._confirm_interruption()
        self._start_turn(turn)

    async def _resume(self, held: HeldPlayout, turn: Turn | None, why: str) -> None:
        """A false interruption: the agent carries on from where it paused."""
        self._held = None
        self._playout.resume()
        instruments.FALSE_INTERRUPTIONS.add(1)
        log.info("session %s: agent resumes after %d ms of caller sound (%s)", self.session_id,
                 held.speech_ms, why)
        answering = self._turn
        if answering is not None and answering.trace is not None:
            answering.trace.span.add_event("playout.resumed", {"voxmesh.reason": why})
        if turn is not None and turn.trace is not None:
            turn.trace.span.set_attribute("voxmesh.turn.false_interruption", True)
            turn.trace.finish(turn_index=0, interrupted=False, discarded=True,
                              voice_to_voice_ms=0, metrics={})

    async def _confirm_interruption(self) -> None:
        if self._held is not None:
            self._held = None
            await self._cancel_turn()
            if cancelled := await self._background.cancel():
                await self._commit_results(cancelled)

    async def _cancel_turn(self) -> None:
        task = self._turn_task
        if task is None or task.done():
            return
        log.info("session %s: caller speech cancels turn %d", self.session_id,
                 self._turn.index if self._turn else 0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    # ----------------------------------------------------------------- answering

    def _start_turn(self, turn: Turn) -> None:
        carried, self._carried = self._carried, []
        previous = self._turn_task
        self._turn_task = asyncio.create_task(
            self._run_turn(turn, carried, previous), name=f"turn-{turn.index}")

    async def _run_turn(self, turn: Turn, carried: list[asyncio.Future[str]],
                        previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            # The last answer has been heard in full and is only being recorded.
            await asyncio.gather(previous, return_exceptions=True)
        self._turn, self._speech = turn, None
        interrupted = False
        try:
            texts = [await asyncio.wait_for(asyncio.shield(t), _TRANSCRIPT_TIMEOUT_S)
                     for t in [*carried, turn.transcript]]
            turn.metrics.stt_final_ms = ms_since(turn.speech_end)
            user_text = merge_utterances(texts)
            if not user_text:
                return  # noise, or words Whisper could not make out: keep listening
            if self._settings.text_turn_detection and (verdict := classify(user_text)) in (
                    Verdict.INCOMPLETE_SHORT, Verdict.INCOMPLETE_LONG):
                await self._wait_for_more(turn, verdict, "text")
            checked = await self._guardrails.check_input(turn.ref(self.session_id), user_text)
            if checked.rules and turn.trace is not None:
                turn.trace.span.set_attribute("voxmesh.guardrails.input_rules", checked.rules)
            self._turn_index = turn.index
            # What leaves the session is what policy lets through (redacted), never the raw
            # words of a blocked input.
            shown = redact(user_text) if checked.blocked else checked.text
            self._trace_text(turn, "voxmesh.turn.user_text", shown)
            await self._emit(user_transcript=session_pb2.UserTranscript(
                turn_index=turn.index, text=shown, is_final=True))
            await self._set_state(State.STATE_THINKING)
            if checked.blocked:
                log.info("session %s turn %d: input declined by guardrails (%s)",
                         self.session_id, turn.index, ", ".join(checked.rules))
                await self._answer(turn, decline=checked.text)
            else:
                await self._answer(turn, checked.text)
        except asyncio.CancelledError:
            speech = self._speech if self._turn is turn else None
            if speech is not None and speech.audible:
                interrupted = True
                await asyncio.shield(self._on_interrupted(turn, speech))
            else:
                await asyncio.shield(self._carry_over(turn, carried))
            raise
        except ServiceCallError as exc:
            log.warning("session %s turn %d failed: %s %s", self.session_id, turn.index,
                        exc.detail.component, exc.detail.reason)
            await self._emit_error(exc.detail, fatal=False)
        except TimeoutError:
            await self._emit_error(common_pb2.ErrorDetail(
                reason="STT_FINAL_TIMEOUT", component="stt",
                message=f"no final transcript within {_TRANSCRIPT_TIMEOUT_S} s"), fatal=False)
        finally:
            if not interrupted and not self._ended.is_set():
                await self._set_state(State.STATE_LISTENING)
            if self._turn_index == turn.index and (turn.metrics.voice_to_voice_ms or interrupted):
                turn.metrics.interrupted = interrupted
                await self._emit(turn_metrics=turn.metrics)
                _record_turn_metrics(turn.metrics, interrupted)
                m = turn.metrics
                log.info("session %s turn %d: voice-to-voice %d ms (stt final %d, llm first "
                         "token %d, first sentence %d, tts %d)%s", self.session_id, turn.index,
                         m.voice_to_voice_ms, m.stt_final_ms, m.llm_first_token_ms,
                         m.first_sentence_ms, m.tts_first_audio_ms,
                         ", interrupted" if interrupted else "")
            if turn.trace is not None:
                turn.trace.finish(
                    turn_index=turn.index, interrupted=interrupted,
                    discarded=self._turn_index != turn.index,
                    voice_to_voice_ms=turn.metrics.voice_to_voice_ms,
                    metrics={name: getattr(turn.metrics, name) for name in _STAGE_FIELDS})

    async def _wait_for_more(self, turn: Turn, verdict: Verdict, source: str) -> None:
        """The caller seems unfinished: wait for them (speech onset cancels this turn)."""
        wait_ms = (self._settings.max_endpointing_ms if verdict is Verdict.INCOMPLETE_SHORT
                   else self._settings.long_pause_ms)
        remaining = turn.speech_end + wait_ms / 1000 - time.monotonic()
        instruments.UNFINISHED_TURNS.add(1, {"verdict": verdict.name.lower(), "source": source})
        log.info("session %s: turn looks unfinished (%s by %s); waiting %.1f s for more",
                 self.session_id, verdict.value, source, max(0.0, remaining))
        await self._set_state(State.STATE_LISTENING)
        span = turn.trace.child("turn_completion.wait") if turn.trace else None
        if span is not None:
            span.set_attributes({"voxmesh.turn_completion.verdict": verdict.value,
                                 "voxmesh.turn_completion.source": source})
        try:
            await asyncio.sleep(max(0.0, remaining))
        finally:
            if span is not None:
                span.end()
        # The caller stayed silent: answer what they said, measured from now.
        turn.speech_end = time.monotonic()
        turn.speech_end_wall = time.time()

    async def _answer(self, turn: Turn, user_text: str = "", *, decline: str = "") -> None:
        """Speaks the answer to ``user_text`` (or only ``decline``, for a blocked input)."""
        output_checks = self._guardrails.output(turn.ref(self.session_id))
        async with TurnSpeech(turn, session_id=self.session_id, clients=self._clients,
                              settings=self._settings, playout=self._playout,
                              on_sentence_audio=self._on_sentence_audio(turn)) as speech:
            self._speech = speech
            answer = TurnAnswer(turn, speech, session_id=self.session_id, clients=self._clients,
                                settings=self._settings, tools=self._tools,
                                tool_definitions=self._tool_definitions, keep_running=self._spawn,
                                output_checks=output_checks,
                                start_task=self._background.starter(turn.ref(self.session_id)))
            try:
                if decline:
                    await speech.say(decline)
                else:
                    output_checks.open()
                    await answer.run(
                        user_text, ask_turn_completion=self._settings.turn_completion_tags)
            except CallerNotDone as exc:
                await self._wait_for_more(turn, exc.verdict, "llm")
                await self._set_state(State.STATE_THINKING)
                await answer.run(user_text, ask_turn_completion=False)
            finally:
                output_checks.close()
            await speech.finish()
        turn.finished_speaking = True
        if turn.playout_span is not None:
            turn.playout_span.end()
        spoken = speech.spoken_text()
        self._trace_text(turn, "voxmesh.turn.agent_text", spoken)
        await self._emit(agent_text=session_pb2.AgentText(
            turn_index=turn.index, text=spoken, is_final=True))
        # The context gets what was said: filler and apology lines included.
        await self._commit_heard(turn, spoken, interrupted=False)

    def _on_sentence_audio(self, turn: Turn) -> Any:
        async def callback(spoken_so_far: str) -> None:
            await self._set_state(State.STATE_SPEAKING)
            await self._emit(agent_text=session_pb2.AgentText(
                turn_index=turn.index, text=spoken_so_far, is_final=False))
        return callback

    async def _greet(self) -> None:
        """Speaks the agent's greeting as turn 0; the context records what was heard of it."""
        await self._announce(self._settings.greeting, 0)

    async def _announce(self, text: str, index: int) -> None:
        """Speaks a fixed line as turn ``index`` (no LLM); the context records what was heard."""
        now = time.monotonic()
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        done.set_result("")
        turn = Turn(index=index, transcript=done, speech_end=now, speech_end_wall=0.0)
        self._turn, self._speech = turn, None
        try:
            await self._speak_line(turn, text)
        except asyncio.CancelledError:
            if self._speech is not None and self._speech.audible:
                await asyncio.shield(self._on_interrupted(turn, self._speech))
            raise
        except ServiceCallError as exc:
            await self._emit_error(exc.detail, fatal=False)
        finally:
            if not self._ended.is_set() and self._turn is turn:
                await self._set_state(State.STATE_LISTENING)

    async def _speak_line(self, turn: Turn, text: str) -> None:
        """Says ``text`` as the whole of ``turn`` (no LLM) and records it as heard."""
        async with TurnSpeech(turn, session_id=self.session_id, clients=self._clients,
                              settings=self._settings, playout=self._playout,
                              on_sentence_audio=self._on_sentence_audio(turn)) as speech:
            self._speech = speech
            turn.generated = text
            await speech.say(text)
            await speech.finish()
        turn.finished_speaking = True
        await self._emit(agent_text=session_pb2.AgentText(
            turn_index=turn.index, text=text, is_final=True))
        await self._commit_heard(turn, text, interrupted=False)

    async def _on_audit(self, verdict: session_pb2.AuditVerdict) -> None:
        """The guardrails audit judged a finished turn: warn, correct, or end the call."""
        action = session_pb2.AuditVerdict.Action.Name(verdict.action).removeprefix("ACTION_")
        log.warning("session %s: audit of turn %d says %s (%s)", self.session_id,
                    verdict.turn_index, action, verdict.reason)
        await self._emit_error(common_pb2.ErrorDetail(
            reason=f"AUDIT_{action}", component="guardrails",
            message=f"audit of turn {verdict.turn_index}: {verdict.reason}"), fatal=False)
        if verdict.say and verdict.action in (session_pb2.AuditVerdict.ACTION_CORRECT,
                                              session_pb2.AuditVerdict.ACTION_END):
            # At the next turn boundary: never over the caller, never over an answer.
            for _ in range(200):
                if not self._detector.user_speaking and (
                        self._turn_task is None or self._turn_task.done()):
                    break
                await asyncio.sleep(0.05)
            else:
                await self._cancel_turn()
            self._turn_index += 1
            self._turn_task = asyncio.create_task(
                self._announce(verdict.say, self._turn_index), name="audit-line")
            await asyncio.gather(self._turn_task, return_exceptions=True)
        if verdict.action == session_pb2.AuditVerdict.ACTION_END:
            self.end(f"audit: {verdict.reason}")

    async def _speak_task_results(self) -> None:
        """Background results are spoken at the next turn boundary, as an agent turn."""
        finished = self._background.finished
        results: list[llm_pb2.ToolResultMessage] = []
        # A result cut short by the caller is said again once; it is in context already.
        repeating = False
        while True:
            if not results:
                task, status = await finished.get()
                results.append(result_message(task, status))
            await self._wait_for_turn_boundary()
            while not repeating and not finished.empty():
                results.append(result_message(*finished.get_nowait()))
            self._turn_index += 1
            now = time.monotonic()
            done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            done.set_result("")
            turn = Turn(index=self._turn_index, transcript=done, speech_end=now,
                        speech_end_wall=0.0)
            assert self._session_span is not None
            turn.trace = TurnTrace(self._session_span, self.session_id, time.time())
            turn.trace.span.set_attribute("voxmesh.turn.initiated_by", "task_result")
            self._turn_task = asyncio.create_task(
                self._run_result_turn(turn, results, repeat=repeating),
                name=f"results-{turn.index}")
            await asyncio.gather(self._turn_task, return_exceptions=True)
            if turn.cut_short and not repeating:
                repeating = True  # the caller heard the start only: say it again, once
            elif turn.audible or not self._turn_task.cancelled():
                results, repeating = [], False  # spoken: the context has them
            # else: the caller spoke first; say them at the next boundary

    async def _wait_for_turn_boundary(self) -> None:
        """Returns once neither the caller nor the agent is talking (or about to)."""
        # Polled: "idle" spans the VAD, the held playout and the turn task; a 50 ms look is
        # far below what a caller notices, and no event has to be kept in sync with all three.
        while True:
            if not (self._detector.user_speaking or self._held is not None
                    or (self._turn_task is not None and not self._turn_task.done())):
                return
            await asyncio.sleep(0.05)

    async def _run_result_turn(self, turn: Turn, results: list[llm_pb2.ToolResultMessage],
                               repeat: bool = False) -> None:
        self._turn, self._speech = turn, None
        interrupted = False
        line = " ".join(filter(None, (spoken_result(r) for r in results)))
        try:
            if not repeat:
                await self._commit_results(results)
            if line:
                await self._speak_line(turn, f"As I was saying, {line}" if repeat else line)
        except asyncio.CancelledError:
            speech = self._speech if self._turn is turn else None
            if speech is not None and speech.audible:
                interrupted = True
                # Cut off before a single word: said again at the next boundary.
                heard = speech.heard_text()
                turn.audible = bool(heard)
                turn.cut_short = bool(heard) and len(heard.split()) < len(line.split())
                await asyncio.shield(self._on_interrupted(turn, speech))
            else:
                # Nothing heard: forget the half-made turn; the results are spoken later.
                await asyncio.shield(self._discard_unheard(turn))
            raise
        except ServiceCallError as exc:
            await self._emit_error(exc.detail, fatal=False)
        finally:
            if not interrupted and not self._ended.is_set():
                await self._set_state(State.STATE_LISTENING)
            assert turn.trace is not None
            turn.trace.finish(turn_index=turn.index, interrupted=interrupted, discarded=False,
                              voice_to_voice_ms=0, metrics={})

    async def _commit_results(self, results: list[llm_pb2.ToolResultMessage]) -> None:
        try:
            await self._clients.llm.CommitToolResults(llm_pb2.CommitToolResultsRequest(
                turn=common_pb2.TurnRef(session_id=self.session_id, turn_index=self._turn_index),
                results=results), timeout=2)
        except grpc.RpcError as exc:
            log.warning("committing tool results failed: %s", error_from_rpc(exc).message)

    def _on_first_frame(self, turn_index: int) -> None:
        turn = self._turn
        if turn is not None and turn.index == turn_index and turn_index > 0:
            turn.metrics.voice_to_voice_ms = ms_since(turn.speech_end)
            if turn.trace is not None:
                turn.playout_span = turn.trace.child("playout")

    async def _on_interrupted(self, turn: Turn, speech: TurnSpeech) -> None:
        heard = speech.heard_text()  # before the clear: the playout knows the pause point
        await self._playout.clear(turn.index)
        await self._commit_heard(turn, heard, interrupted=True)
        self._trace_text(turn, "voxmesh.turn.agent_text", heard)
        await self._emit(agent_text=session_pb2.AgentText(
            turn_index=turn.index, text=heard, is_final=True, interrupted=True))
        await self._set_state(State.STATE_LISTENING)

    async def _carry_over(self, turn: Turn, carried: list[asyncio.Future[str]]) -> None:
        """The caller went on before hearing an answer: keep their words for the next turn."""
        self._carried = [*carried, turn.transcript, *self._carried]
        await self._discard_unheard(turn)

    async def _discard_unheard(self, turn: Turn) -> None:
        """Forgets a turn the caller heard nothing of (its index is reused)."""
        if self._turn_index == turn.index:  # the LLM had started: forget its half-turn
            self._turn_index = turn.index - 1
            try:
                await self._clients.llm.DiscardTurn(
                    llm_pb2.DiscardTurnRequest(turn=turn.ref(self.session_id)), timeout=2)
            except grpc.RpcError as exc:
                log.warning("discarding turn %d failed: %s", turn.index,
                            error_from_rpc(exc).message)

    async def _commit_heard(self, turn: Turn, text: str, *, interrupted: bool) -> None:
        try:
            await self._clients.llm.CommitHeard(llm_pb2.CommitHeardRequest(
                turn=turn.ref(self.session_id), heard_text=text, interrupted=interrupted),
                timeout=2)
        except grpc.RpcError as exc:
            log.warning("commit of heard text failed: %s", error_from_rpc(exc).message)

    def _trace_text(self, turn: Turn, attribute: str, text: str) -> None:
        """Records what was said on the turn span, redacted, only when the agent opts in."""
        if self._settings.trace_transcripts and turn.trace is not None:
            turn.trace.span.set_attribute(attribute, redact(text))
