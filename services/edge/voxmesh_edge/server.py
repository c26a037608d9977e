"""The edge: terminates caller connections and bridges them to agent workers on NATS.

Two transports carry calls, each a subclass of :class:`voxmesh_edge.call.Call` (the session
core: dispatch, NATS subjects, events, barge-in clears, hangup, teardown):

* WebRTC (:class:`WebRTCCall`), for browsers: ``POST /offer`` with an SDP offer. Caller audio is
  converted to PCM16 16 kHz 20 ms frames and published on ``media.in``; agent audio from
  ``media.out`` is played through :class:`AgentAudioTrack`; ``SessionEvent`` s are forwarded as
  JSON on the ``events`` data channel, where the caller also sends ``hangup``.
* WebSocket (:class:`voxmesh_edge.ws.WebSocketCall`), for load generators and telephony media
  streams: ``GET /ws`` (see ``docs/websocket-transport.md``).

Both share admission (draining, ``max_calls``), dispatch errors and draining. The subject
contract is documented in ``docs/nats-subjects.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from importlib import resources
from typing import Any

import nats.errors
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcdatachannel import RTCDataChannel
from nats.aio.client import Client as NatsClient

from voxmesh import audio
from voxmesh.natsconn import connect_nats
from voxmesh.v1 import session_pb2
from voxmesh_edge import ws
from voxmesh_edge.barge_in import BargeInMeter
from voxmesh_edge.call import AGENT_RE, TURN_HEADER, Call, CallSetupError, epoch_ms
from voxmesh_edge.media import (
    WEBRTC_RATE,
    FrameConverter,
    PacedAudioTrack,
    set_audio_jitter_frames,
)
from voxmesh_edge.settings import EdgeSettings

__all__ = [
    "TURN_HEADER",
    "AgentAudioTrack",
    "Call",
    "CallSetupError",
    "EdgeServer",
    "OfferError",
    "WebRTCCall",
    "epoch_ms",
    "error_response",
    "serve",
]

log = logging.getLogger("voxmesh.edge")

#: Label of the data channel the page opens for session events.
EVENTS_CHANNEL = "events"
#: Text message the page sends on the events channel to end the call.
HANGUP_MESSAGE = "hangup"

#: Agent audio buffered beyond this is dropped (the worker paces in real time, so this only
#: fills when the caller's connection never starts pulling).
_MAX_BUFFER_S = 60
#: Events kept while the data channel is not open yet.
_MAX_PENDING_EVENTS = 500
#: How long a closing call waits for the last events to leave the data channel.
_FLUSH_TIMEOUT_S = 1.0
_ICE_GATHER_TIMEOUT_S = 5.0

#: The name this error had when only WebRTC offers could fail.
OfferError = CallSetupError


def error_response(status: int, reason: str, message: str) -> web.Response:
    """JSON error body used by every non-2xx answer: ``{"error": {"reason", "message"}}``."""
    return web.json_response({"error": {"reason": reason, "message": message}}, status=status)


class AgentAudioTrack(PacedAudioTrack):
    """The track that plays agent audio to the caller: 20 ms s16 48 kHz frames, in real time.

    The frames carry the mono agent signal on both channels of a stereo frame (see
    :class:`~voxmesh_edge.media.PacedAudioTrack` for why).

    Audio arrives as PCM16 16 kHz from ``media.out`` through :meth:`push`; silence is sent while
    the buffer is empty. :meth:`clear` drops everything buffered (barge-in).

    Args:
        on_playout_started: Awaited with the turn index when the first frame of a new turn is
            returned from :meth:`recv`, i.e. handed to the encoder and sent.
    """

    def __init__(
        self,
        on_playout_started: Callable[[int], Awaitable[None]] | None = None,
        barge_in: BargeInMeter | None = None,
    ) -> None:
        super().__init__(WEBRTC_RATE)
        self._on_playout_started = on_playout_started
        self._barge_in = barge_in
        self._resampler = audio.StreamResampler(
            audio.INTERNAL_RATE, WEBRTC_RATE, low_latency=True
        )
        self._buffer = bytearray()
        self._written = 0  # bytes ever appended to the buffer
        self._consumed = 0  # bytes ever taken from (or dropped from) the buffer
        self._sent = 0  # bytes of agent audio ever sent
        self._turn_marks: deque[tuple[int, int]] = deque()  # (byte position, turn index)
        self._last_pushed_turn: int | None = None
        self._last_played_turn: int | None = None
        self._cleared_turn: int | None = None
        self._starved = False
        self._max_bytes = _MAX_BUFFER_S * WEBRTC_RATE * 2

    @property
    def buffered_ms(self) -> float:
        """Agent audio waiting to be sent, in milliseconds."""
        return len(self._buffer) / 2 / WEBRTC_RATE * 1000

    @property
    def sent_ms(self) -> float:
        """Agent audio sent so far on this call, in milliseconds."""
        return self._sent / 2 / WEBRTC_RATE * 1000

    def push(self, pcm16_16k: bytes, turn_index: int | None) -> None:
        """Queues agent audio (PCM16 mono 16 kHz) of a turn.

        Frames of a turn that was cleared (still in flight when the clear arrived) are dropped.
        """
        if turn_index is not None and turn_index == self._cleared_turn:
            return
        if turn_index is not None and turn_index != self._last_pushed_turn:
            self._last_pushed_turn = turn_index
            self._turn_marks.append((self._written, turn_index))
        pcm = self._resampler.push(pcm16_16k)
        if len(self._buffer) + len(pcm) > self._max_bytes:
            log.warning("agent audio buffer full (%d s); dropping a chunk", _MAX_BUFFER_S)
            return
        self._buffer.extend(pcm)
        self._written += len(pcm)
        if len(self._buffer) >= self.frame_bytes:
            self.audio_ready()

    def clear(self, turn_index: int = 0) -> float:
        """Drops all buffered agent audio now; returns how many milliseconds were dropped.

        Args:
            turn_index: The turn being cleared (from ``ClearPlayout``); its late frames are
                ignored too. 0 when unknown.
        """
        dropped = self.buffered_ms
        if turn_index:
            self._cleared_turn = turn_index
        self._buffer.clear()
        self._consumed = self._written
        self._turn_marks.clear()
        # Forget the filter state too, so no tail of the old turn leaks into the next one.
        self._resampler = audio.StreamResampler(
            audio.INTERNAL_RATE, WEBRTC_RATE, low_latency=True
        )
        self._starved = False
        return dropped

    async def next_pcm(self) -> bytes:
        """Takes the next frame from the buffer; silence when there is none."""
        size = self.frame_bytes
        available = len(self._buffer)
        if available == 0 or (available < size and not self._starved):
            # A partial frame gets one period to be completed before it is padded and sent, so
            # that jitter in the worker's pacing does not cut holes in the middle of speech.
            self._starved = available > 0
            return bytes(size)
        self._starved = False
        take = min(size, available)
        pcm = bytes(self._buffer[:take])
        if self._barge_in is not None:
            self._barge_in.on_agent_audio(pcm)
        del self._buffer[:take]
        self._consumed += take
        self._sent += take
        # Each mark is where a new turn begins in the byte stream; the newest one reached wins.
        started: int | None = None
        while self._turn_marks and self._turn_marks[0][0] < self._consumed:
            started = self._turn_marks.popleft()[1]
        if started is not None and started != self._last_played_turn:
            self._last_played_turn = started
            if self._on_playout_started is not None:
                await self._on_playout_started(started)
        return pcm + bytes(size - take)


class WebRTCCall(Call):
    """A call carried by an aiortc peer connection: the WebRTC part of the session.

    Args:
        edge: The server that owns the call.
        session_id: The session id (uuid4 hex).
        agent: The agent the call is dispatched to.
    """

    transport = "webrtc"

    def __init__(self, edge: EdgeServer, session_id: str, agent: str) -> None:
        super().__init__(
            edge, session_id, agent, jitter_ms=edge.settings.jitter_frames * audio.FRAME_MS
        )
        self.pc: RTCPeerConnection | None = None
        self.track = AgentAudioTrack(self.report_playout_started, self.barge_in)
        self.channel: RTCDataChannel | None = None
        self._pending_events: list[str] = []

    # --- setup -----------------------------------------------------------------------------

    async def negotiate(self, sdp: str) -> RTCSessionDescription:
        """Accepts the caller's offer, dispatches the call to a worker and returns the answer.

        Raises:
            CallSetupError: The offer is invalid or no worker took the call.
        """
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc = pc
        self._wire(pc)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        except Exception as exc:  # aiortc raises ValueError and friends for bad SDP
            raise CallSetupError(400, "INVALID_SDP", f"the SDP offer is invalid: {exc}") from None
        if not any(t.kind == "audio" for t in pc.getTransceivers()):
            raise CallSetupError(400, "INVALID_SDP", "the SDP offer has no audio section")
        await self.start_session()
        pc.addTrack(self.track)
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
        await self._wait_ice_gathering(pc)
        local = pc.localDescription
        if local is None:  # pragma: no cover - set by setLocalDescription
            raise CallSetupError(500, "INTERNAL", "no local description after negotiation")
        return local

    @staticmethod
    async def _wait_ice_gathering(pc: RTCPeerConnection) -> None:
        # aiortc gathers during setLocalDescription; this only guards against future changes.
        deadline = time.monotonic() + _ICE_GATHER_TIMEOUT_S
        while pc.iceGatheringState != "complete":
            if time.monotonic() > deadline:
                raise CallSetupError(
                    500, "ICE_GATHERING_TIMEOUT", "ICE gathering did not complete"
                )
            await asyncio.sleep(0.02)

    def _wire(self, pc: RTCPeerConnection) -> None:
        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio":
                if set_audio_jitter_frames(pc, track, self.edge.settings.jitter_frames) is None:
                    log.warning("cannot tune aiortc's jitter buffer; using its default")
                self._spawn(self._pump_caller_audio(track), "caller-audio")

        @pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            if channel.label != EVENTS_CHANNEL or self.channel is not None:
                return
            self.channel = channel

            @channel.on("message")
            def on_message(message: str | bytes) -> None:
                if message == HANGUP_MESSAGE:
                    self.hangup_by_caller()

            @channel.on("open")
            def on_open() -> None:
                self._flush_pending_events()

            if channel.readyState == "open":
                self._flush_pending_events()

        @pc.on("connectionstatechange")
        def on_connection_state() -> None:
            state = pc.connectionState
            log.debug("call %s: connection %s", self.session_id, state)
            if state in ("failed", "closed"):
                self.request_close(f"connection_{state}")

    # --- media and events ------------------------------------------------------------------

    async def _pump_caller_audio(self, track: MediaStreamTrack) -> None:
        converter = FrameConverter()
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            for pcm in converter.push(frame):  # type: ignore[arg-type]
                await self.publish_caller_audio(pcm)

    def _play_agent_audio(self, pcm16_16k: bytes, turn_index: int | None) -> None:
        self.track.push(pcm16_16k, turn_index)

    def _clear_playout(self, clear: session_pb2.ClearPlayout) -> float:
        # A pause keeps the turn: its audio may resume from where the caller stopped hearing.
        return self.track.clear(0 if clear.pause else clear.turn_index)

    def _send_event(self, text: str) -> None:
        channel = self.channel
        if channel is not None and channel.readyState == "open":
            channel.send(text)
        elif len(self._pending_events) < _MAX_PENDING_EVENTS:
            self._pending_events.append(text)

    def _flush_pending_events(self) -> None:
        channel = self.channel
        if channel is None or channel.readyState != "open":
            return
        pending, self._pending_events = self._pending_events, []
        for text in pending:
            channel.send(text)

    # --- teardown --------------------------------------------------------------------------

    async def _stop_sending(self, linger: bool) -> None:
        if linger:
            await self._wait_events_flushed()
        self.track.stop()

    async def _close_transport(self) -> None:
        if self.pc is not None:
            await self.pc.close()

    async def _wait_events_flushed(self) -> None:
        deadline = time.monotonic() + _FLUSH_TIMEOUT_S
        while time.monotonic() < deadline:
            channel = self.channel
            if channel is None or channel.readyState != "open" or self.pc is None:
                return
            sctp = self.pc.sctp
            queued = len(getattr(sctp, "_outbound_queue", ())) + len(
                getattr(sctp, "_sent_queue", ())
            )
            if channel.bufferedAmount == 0 and queued == 0:
                return
            await asyncio.sleep(0.02)


def _load_page() -> str:
    return resources.files("voxmesh_edge").joinpath("static/index.html").read_text("utf-8")


class EdgeServer:
    """The edge's HTTP server and its live calls.

    Args:
        settings: Edge settings.
        nc: A connected NATS client (not closed by the server).
        edge_id: Identifies this edge in dispatch requests; defaults to ``<hostname>-<pid>``.
    """

    def __init__(self, settings: EdgeSettings, nc: NatsClient, *, edge_id: str = "") -> None:
        self.settings = settings
        self.nc = nc
        self.edge_id = edge_id or f"{socket.gethostname()}-{os.getpid()}"
        self.calls: dict[str, Call] = {}
        self.draining = False
        self.url = ""
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        self._page = _load_page()
        self.app = web.Application()
        self.app.router.add_get("/", self._handle_index)
        self.app.router.add_get("/healthz", self._handle_healthz)
        self.app.router.add_get("/livez", self._handle_livez)
        self.app.router.add_post("/offer", self._handle_offer)
        self.app.router.add_get(ws.WS_PATH, self._handle_ws)

    async def start(self) -> str:
        """Starts listening; returns the base URL (with the real port when ``port`` is 0)."""
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.host, self.settings.port)
        await site.start()
        self._runner = runner
        port = self.settings.port
        for address in runner.addresses:
            if isinstance(address, tuple) and len(address) >= 2:
                port = int(address[1])
                break
        self.url = f"http://{self.settings.host}:{port}"
        log.info("edge listening on %s", self.url)
        return self.url

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Runs a coroutine in a task the server owns (cancelled by :meth:`stop`)."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("edge task failed", exc_info=task.exception())

    def check_accepting(self) -> None:
        """Raises :class:`CallSetupError` (503 ``EDGE_DRAINING``) once the edge is draining."""
        if self.draining:
            raise CallSetupError(
                503, "EDGE_DRAINING", "this edge is shutting down; connect to another edge"
            )

    def admit(self, call: Call) -> None:
        """Registers a new call of any transport; they share ``max_calls``.

        Raises:
            CallSetupError: 503 ``EDGE_AT_CAPACITY`` when the edge already carries
                ``max_calls`` calls.
        """
        if len(self.calls) >= self.settings.max_calls:
            raise CallSetupError(
                503,
                "EDGE_AT_CAPACITY",
                f"this edge already carries {self.settings.max_calls} calls; try again shortly",
            )
        self.calls[call.session_id] = call
        self._idle.clear()

    def forget(self, call: Call) -> None:
        """Removes a finished call."""
        if self.calls.get(call.session_id) is call:
            del self.calls[call.session_id]
        if not self.calls:
            self._idle.set()

    async def drain(self, grace_s: float | None = None) -> None:
        """Stops accepting calls, waits for live ones to end, then hangs up the rest.

        Args:
            grace_s: How long live calls may continue; defaults to ``drain_grace_s``.
        """
        grace = self.settings.drain_grace_s if grace_s is None else grace_s
        self.draining = True
        if self.calls:
            log.info("draining: waiting up to %g s for %d call(s)", grace, len(self.calls))
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=grace)
        except TimeoutError:
            log.info("drain grace over; hanging up %d call(s)", len(self.calls))
        await self.hangup_all("edge_draining")

    async def hangup_all(self, reason: str) -> None:
        """Ends every live call, telling its worker ``reason``."""
        calls = list(self.calls.values())
        await asyncio.gather(*(call.close(reason) for call in calls), return_exceptions=True)

    async def stop(self) -> None:
        """Hangs up every call, stops owned tasks and the HTTP server."""
        self.draining = True
        await self.hangup_all("edge_stopping")
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- HTTP handlers ---------------------------------------------------------------------

    async def _handle_index(self, request: web.Request) -> web.Response:
        return web.Response(text=self._page, content_type="text/html", charset="utf-8")

    async def _handle_livez(self, request: web.Request) -> web.Response:
        # Liveness: the event loop answers. NATS and draining are readiness (/healthz), so an
        # outage of either never gets the pod restarted.
        return web.json_response({"status": "alive"})

    async def _handle_healthz(self, request: web.Request) -> web.Response:
        if self.draining:
            return web.json_response({"status": "draining"}, status=503)
        if not self.nc.is_connected:
            return web.json_response({"status": "nats_disconnected"}, status=503)
        return web.json_response({"status": "ok"})

    async def _handle_offer(self, request: web.Request) -> web.Response:
        try:
            self.check_accepting()
        except CallSetupError as exc:
            return error_response(exc.status, exc.reason, exc.message)
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return error_response(400, "INVALID_JSON", "the request body must be a JSON object")
        if not isinstance(body, dict):
            return error_response(400, "INVALID_JSON", "the request body must be a JSON object")
        sdp = body.get("sdp")
        if not isinstance(sdp, str) or not sdp.strip():
            return error_response(
                400, "INVALID_OFFER", "field 'sdp' is required and must be a non-empty string"
            )
        if body.get("type", "offer") != "offer":
            return error_response(400, "INVALID_OFFER", "field 'type' must be 'offer'")
        agent = body.get("agent") or self.settings.agent
        if not isinstance(agent, str) or not AGENT_RE.match(agent):
            return error_response(
                400, "INVALID_AGENT", "field 'agent' may only contain letters, digits, - and _"
            )
        call = WebRTCCall(self, uuid.uuid4().hex, agent)
        try:
            self.admit(call)
        except CallSetupError as exc:
            return error_response(exc.status, exc.reason, exc.message)
        try:
            answer = await call.negotiate(sdp)
        except CallSetupError as exc:
            log.info("offer rejected (%s): %s", exc.reason, exc.message)
            self.spawn(call.close(f"rejected: {exc.reason}", notify_worker=exc.notify_worker))
            return error_response(exc.status, exc.reason, exc.message)
        except Exception:
            log.exception("call %s: negotiation failed", call.session_id)
            self.spawn(call.close("edge_error"))
            return error_response(500, "INTERNAL", "the edge failed to set up the call")
        except BaseException:  # cancelled: the HTTP request went away
            self.spawn(call.close("offer_cancelled"))
            raise
        return web.json_response(
            {
                "sdp": answer.sdp,
                "type": answer.type,
                "session_id": call.session_id,
                "worker_id": call.worker_id,
            }
        )

    async def _handle_ws(self, request: web.Request) -> web.StreamResponse:
        socket = ws.new_socket()
        if not socket.can_prepare(request).ok:
            return error_response(
                426, "WEBSOCKET_REQUIRED", f"{ws.WS_PATH} is a WebSocket endpoint; send an Upgrade"
            )
        await socket.prepare(request)
        # Refusals travel on the socket: a browser's WebSocket cannot read an HTTP error body.
        await ws.serve_call(self, request, socket)
        return socket


async def serve(settings: EdgeSettings) -> None:
    """Runs the edge until SIGTERM or SIGINT, then drains and exits.

    Args:
        settings: Edge settings.
    """
    try:
        nc = await connect_nats(settings.nats_url, "voxmesh-edge")
    except (OSError, nats.errors.Error) as exc:
        raise SystemExit(
            f"edge: cannot connect to NATS at {settings.nats_url}: {exc or type(exc).__name__}"
        ) from None
    edge = EdgeServer(settings, nc)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await edge.start()
        await stop.wait()
        log.info("signal received: draining (grace %g s)", settings.drain_grace_s)
        await edge.drain()
    finally:
        await edge.stop()
        with contextlib.suppress(nats.errors.Error):
            await nc.drain()
    log.info("edge stopped")
