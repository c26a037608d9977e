"""The transport-independent core of a call: dispatch, the session's NATS subjects, teardown.

A :class:`Call` is one caller's session on NATS. It dispatches the call to a worker, publishes
caller audio on ``media.in``, and hands what arrives for the caller (agent audio from
``media.out``, barge-in clears from ``media.control``, ``SessionEvent`` s as JSON) to its
transport. Transports are subclasses that implement the hooks at the bottom of the class:
:class:`voxmesh_edge.server.WebRTCCall` (aiortc) and :class:`voxmesh_edge.ws.WebSocketCall`.

The call ends when the caller hangs up (:meth:`Call.hangup_by_caller`), its connection goes
away, the worker sends ``SessionEvent.ended``, or the edge drains. The worker is told with
``SessionControl.hangup`` unless it ended the call itself. After a caller hangup the edge waits
briefly for the worker's ``ended`` event and forwards it before closing.

The subject contract is documented in ``docs/nats-subjects.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import nats.errors
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from opentelemetry.trace import SpanKind

from voxmesh import audio, subjects
from voxmesh.telemetry import extract, tracer
from voxmesh.v1 import common_pb2, session_pb2
from voxmesh_edge.barge_in import BargeInMeter

if TYPE_CHECKING:
    from voxmesh_edge.server import EdgeServer

_tracer = tracer("edge")

log = logging.getLogger("voxmesh.edge")

#: NATS header carrying the turn index of agent audio on ``media.out``.
TURN_HEADER = "Voxmesh-Turn"
#: Agent names a caller may ask for (they become part of the dispatch subject).
AGENT_RE = re.compile(r"^[A-Za-z0-9_-]+$")

#: After the caller hangs up, how long the edge waits for the worker's ``ended`` event (the
#: call summary) so it can still be forwarded to the caller.
_ENDED_WAIT_S = 2.0


def epoch_ms() -> int:
    """Current Unix time in milliseconds."""
    return time.time_ns() // 1_000_000


#: First pause before asking the workers again when none could take the call.
DISPATCH_RETRY_FIRST_S = 0.025
#: Longest pause between dispatch attempts.
DISPATCH_RETRY_MAX_S = 0.25


class CallSetupError(Exception):
    """A call that cannot be set up; each transport turns it into its own error answer.

    Args:
        status: HTTP status of the error (WebRTC answers with it; WebSocket calls report it).
        reason: Stable upper-snake reason, as listed in ``docs/errors.md``.
        message: Human-readable explanation.
        notify_worker: A worker may hold the session (e.g. it answered after the timeout):
            send it a hangup.
    """

    def __init__(self, status: int, reason: str, message: str, *, notify_worker: bool = False):
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.notify_worker = notify_worker


def _turn_of(msg: Msg) -> int | None:
    value = (msg.headers or {}).get(TURN_HEADER)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


class Call(ABC):
    """One caller's session on NATS, independent of the transport that carries its media.

    Args:
        edge: The server that owns the call.
        session_id: The session id (uuid4 hex).
        agent: The agent the call is dispatched to.
        jitter_ms: Depth of the transport's receive jitter buffer (for the barge-in meter).
    """

    #: Which transport carries the call: ``webrtc``, ``websocket-pcm16`` or ``websocket-mulaw``.
    transport = ""

    def __init__(
        self, edge: EdgeServer, session_id: str, agent: str, *, jitter_ms: float = 0.0
    ) -> None:
        self.edge = edge
        self.session_id = session_id
        self.agent = agent
        self.worker_id = ""
        self.barge_in = BargeInMeter(jitter_ms=jitter_ms)
        self.closed = asyncio.Event()
        self.close_reason = ""
        self._nc = edge.nc
        self._subs: list[Subscription] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._hanging_up = False
        self._worker_ended = asyncio.Event()
        self._in_sequence = 0
        self._publish_failed = False
        #: Trace context sent by the worker with the first frame of each turn.
        self._turn_traces: dict[int, dict[str, str]] = {}

    @property
    def ending(self) -> bool:
        """True once the call is closing or a caller hangup is under way."""
        return self._closing or self._hanging_up

    # --- setup -----------------------------------------------------------------------------

    async def start_session(self) -> None:
        """Subscribes to the session's subjects, then asks a worker to take the call.

        Sets :attr:`worker_id`.

        Raises:
            CallSetupError: No worker took the call, or NATS is unreachable.
        """
        # Subscribe before dispatching so nothing the worker sends right away is missed.
        await self._subscribe()
        self.worker_id = await self._dispatch()

    async def _subscribe(self) -> None:
        nc = self._nc
        sid = self.session_id
        self._subs = [
            await nc.subscribe(subjects.media_out(sid), cb=self._on_media_out),
            await nc.subscribe(subjects.media_control(sid), cb=self._on_media_control),
            await nc.subscribe(subjects.events(sid), cb=self._on_event),
        ]

    async def _dispatch(self) -> str:
        """Finds a worker for the call, retrying briefly while none has a free slot.

        A worker joins the dispatch queue group only while it has capacity, and NATS has
        no subscriber for a moment while a worker reconnects or a rollout swaps pods. So "no
        responders" and a retryable decline (``WORKER_FULL``) are retried with a short backoff
        until ``dispatch_timeout_s`` has passed since the call arrived; only then is the call
        refused. A worker that declines for any other reason refuses the call at once.
        """
        settings = self.edge.settings
        request = session_pb2.DispatchRequest(
            session_id=self.session_id,
            agent=self.agent,
            edge_id=self.edge.edge_id,
            format=common_pb2.AudioFormat(
                encoding=common_pb2.AUDIO_ENCODING_PCM16,
                sample_rate_hz=audio.INTERNAL_RATE,
                channels=1,
            ),
            requested_at_ms=epoch_ms(),
        ).SerializeToString()
        started = time.monotonic()
        deadline = started + settings.dispatch_timeout_s
        backoff_s = DISPATCH_RETRY_FIRST_S
        while True:
            reply = await self._request_worker(request, deadline)
            if reply is not None and reply.accepted:
                break
            if reply is not None and not reply.error.retryable:
                why = reply.error.message or reply.error.reason or "no reason given"
                raise CallSetupError(
                    503,
                    "NO_WORKER_AVAILABLE",
                    f"worker '{reply.worker_id or '?'}' declined the call: {why}",
                )
            if time.monotonic() + backoff_s >= deadline:
                raise CallSetupError(
                    503,
                    "NO_WORKER_AVAILABLE",
                    f"no worker for agent '{self.agent}' has free capacity; try again shortly",
                )
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, DISPATCH_RETRY_MAX_S)
        log.info(
            "call %s: agent %s, worker %s accepted in %.0f ms (%s)",
            self.session_id,
            self.agent,
            reply.worker_id,
            (time.monotonic() - started) * 1000,
            self.transport,
        )
        return reply.worker_id

    async def _request_worker(
        self, request: bytes, deadline: float
    ) -> session_pb2.DispatchReply | None:
        """Sends one dispatch request; ``None`` when no worker is subscribed right now."""
        settings = self.edge.settings
        try:
            msg = await self._nc.request(
                subjects.dispatch(self.agent),
                request,
                timeout=max(deadline - time.monotonic(), 0.001),
            )
        except nats.errors.NoRespondersError:
            return None
        except nats.errors.TimeoutError:
            raise CallSetupError(
                503,
                "NO_WORKER_AVAILABLE",
                f"no worker for agent '{self.agent}' answered within "
                f"{settings.dispatch_timeout_s:g} s",
                notify_worker=True,
            ) from None
        except nats.errors.Error as exc:
            raise CallSetupError(
                503, "NATS_UNAVAILABLE", f"the edge cannot reach NATS: {type(exc).__name__}"
            ) from None
        reply = session_pb2.DispatchReply()
        try:
            reply.ParseFromString(msg.data)
        except DecodeError:
            raise CallSetupError(
                503, "NO_WORKER_AVAILABLE", "a worker sent an unreadable dispatch reply"
            ) from None
        return reply

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Runs a coroutine in a task the call owns (cancelled by :meth:`close`)."""
        if self._closing:
            coro.close()
            return
        task = asyncio.create_task(coro, name=f"{name}-{self.session_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- media and events ------------------------------------------------------------------

    async def publish_caller_audio(self, pcm: bytes) -> None:
        """Publishes one 20 ms frame of caller audio (PCM16 mono 16 kHz) on ``media.in``."""
        chunk = common_pb2.AudioChunk(
            data=pcm,
            sequence=self._in_sequence,
            timestamp_ms=self._in_sequence * audio.FRAME_MS,
        )
        self._in_sequence += 1
        self.barge_in.on_caller_audio(pcm)
        await self._publish(subjects.media_in(self.session_id), chunk.SerializeToString())

    async def _publish(self, subject: str, payload: bytes) -> None:
        try:
            await self._nc.publish(subject, payload)
        except nats.errors.Error as exc:
            if not self._publish_failed:  # once per call, not 50 times a second
                log.warning("call %s: publish to NATS failed: %s", self.session_id, exc)
            self._publish_failed = True
        else:
            self._publish_failed = False

    async def _on_media_out(self, msg: Msg) -> None:
        chunk = common_pb2.AudioChunk()
        try:
            chunk.ParseFromString(msg.data)
        except DecodeError:
            log.warning("call %s: unreadable AudioChunk on media.out", self.session_id)
            return
        if len(chunk.data) % 2:
            log.warning("call %s: odd-sized PCM16 chunk on media.out", self.session_id)
            return
        turn_index = _turn_of(msg)
        if turn_index is not None and msg.headers and "traceparent" in msg.headers:
            self._turn_traces[turn_index] = dict(msg.headers)
        self._play_agent_audio(chunk.data, turn_index)

    async def _on_media_control(self, msg: Msg) -> None:
        control = session_pb2.MediaControl()
        try:
            control.ParseFromString(msg.data)
        except DecodeError:
            log.warning("call %s: unreadable MediaControl", self.session_id)
            return
        if control.HasField("clear"):
            dropped = self._clear_playout(control.clear)
            if (stop_ms := self.barge_in.on_clear()) is not None:
                self._send_event(json.dumps({"edge": {"barge_in_stop_ms": stop_ms}}))
            log.debug(
                "call %s: clear (turn %d), dropped %.0f ms",
                self.session_id,
                control.clear.turn_index,
                dropped,
            )

    async def _on_event(self, msg: Msg) -> None:
        event = session_pb2.SessionEvent()
        try:
            event.ParseFromString(msg.data)
        except DecodeError:
            log.warning("call %s: unreadable SessionEvent", self.session_id)
            return
        text = json.dumps(json_format.MessageToDict(event, preserving_proto_field_name=True))
        self._send_event(text)
        if event.HasField("error") and event.error.fatal:
            log.warning(
                "call %s: fatal error from worker: %s", self.session_id, event.error.detail.reason
            )
        if event.HasField("ended"):
            self._worker_ended.set()
            if not self._hanging_up:  # else _hangup_by_caller closes the call
                self.request_close("worker_ended", notify_worker=False, linger=True)

    async def report_playout_started(self, turn_index: int) -> None:
        """Tells the worker that the first packet of a turn's audio was sent to the caller."""
        carrier = self._turn_traces.pop(turn_index, None)
        if carrier is not None:
            # A zero-length span marks when the answer's first packet left the edge.
            _tracer.start_span(
                "edge.first_packet", context=extract(carrier), kind=SpanKind.PRODUCER,
                attributes={"voxmesh.session.id": self.session_id,
                            "voxmesh.turn.index": turn_index,
                            "voxmesh.edge.transport": self.transport},
            ).end()
        control = session_pb2.SessionControl(
            playout_started=session_pb2.PlayoutStarted(turn_index=turn_index, at_ms=epoch_ms())
        )
        await self._publish(subjects.control(self.session_id), control.SerializeToString())

    # --- teardown --------------------------------------------------------------------------

    def hangup_by_caller(self, reason: str = "caller_hangup") -> None:
        """Ends the call on the caller's behalf, once; later calls do nothing.

        The worker is told (``Hangup.reason`` = ``reason``); its ``ended`` event is forwarded
        if it comes within two seconds, then the call closes.
        """
        if self._closing or self._hanging_up:
            return
        self._hanging_up = True
        self.edge.spawn(self._hangup_by_caller(reason))

    async def _hangup_by_caller(self, reason: str) -> None:
        control = session_pb2.SessionControl(hangup=session_pb2.Hangup(reason=reason))
        await self._publish(subjects.control(self.session_id), control.SerializeToString())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._worker_ended.wait(), _ENDED_WAIT_S)
        await self.close(reason, notify_worker=False, linger=True)

    def request_close(
        self, reason: str, *, notify_worker: bool = True, linger: bool = False
    ) -> None:
        """Schedules :meth:`close` from a callback (safe to call from the call's own tasks)."""
        if not self._closing:
            self.edge.spawn(self.close(reason, notify_worker=notify_worker, linger=linger))

    async def close(self, reason: str, *, notify_worker: bool = True, linger: bool = False) -> None:
        """Ends the call: tells the worker, unsubscribes, stops tasks and closes the connection.

        Idempotent; a second caller waits for the first to finish.

        Args:
            reason: Why the call ends, sent to the worker in ``Hangup.reason``.
            notify_worker: Publish ``SessionControl.hangup`` (not when the worker ended it).
            linger: Give queued messages to the caller up to a second to leave first.
        """
        if self._closing:
            await self.closed.wait()
            return
        self._closing = True
        self.close_reason = reason
        try:
            if notify_worker:
                control = session_pb2.SessionControl(hangup=session_pb2.Hangup(reason=reason))
                await self._publish(subjects.control(self.session_id), control.SerializeToString())
            for sub in self._subs:
                with contextlib.suppress(nats.errors.Error):
                    await sub.unsubscribe()
            self._subs.clear()
            await self._stop_sending(linger)
            current = asyncio.current_task()
            tasks = [t for t in self._tasks if t is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._close_transport()
        finally:
            self.edge.forget(self)
            self.closed.set()
            if self.worker_id:
                log.info("call %s ended: %s", self.session_id, reason)

    # --- transport hooks -------------------------------------------------------------------

    @abstractmethod
    def _play_agent_audio(self, pcm16_16k: bytes, turn_index: int | None) -> None:
        """Queues agent audio (PCM16 mono 16 kHz, as the worker paced it) for the caller."""

    @abstractmethod
    def _clear_playout(self, clear: session_pb2.ClearPlayout) -> float:
        """Drops queued agent audio now (barge-in); returns how many milliseconds were dropped.

        A pause (``clear.pause``) keeps the turn: its later frames still play. Otherwise late
        frames of ``clear.turn_index`` are dropped too.
        """

    @abstractmethod
    def _send_event(self, text: str) -> None:
        """Sends (or queues) one event to the caller: a JSON object as text."""

    @abstractmethod
    async def _stop_sending(self, linger: bool) -> None:
        """Stops sending to the caller; with ``linger``, first lets queued events leave."""

    @abstractmethod
    async def _close_transport(self) -> None:
        """Closes the caller's connection (after the call's tasks were cancelled)."""
