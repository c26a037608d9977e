"""The WebSocket media transport: ``GET /ws?agent=<name>&codec=pcm16|mulaw``.

One WebSocket is one call. The session core (dispatch, NATS subjects, events, barge-in clears,
hangup, draining, ``max_calls``) is :class:`voxmesh_edge.call.Call`; this module only moves
audio and JSON between the socket and that core. Message shapes, codecs and errors are
documented in ``docs/websocket-transport.md``; in short:

* ``pcm16``: binary frames of PCM16 mono 16 kHz little-endian, 640 bytes (20 ms) each, both
  ways; text frames carry JSON: events to the caller (the same JSON as the WebRTC data channel)
  and ``{"type": "hangup"}`` from it. The call is dispatched as soon as the socket opens.
* ``mulaw``: the telephony media-stream shape (Twilio Media Streams): JSON text frames only.
  The caller sends ``connected`` (optional), ``start``, ``media`` (base64 G.711 µ-law 8 kHz)
  and ``stop``; the call is dispatched on ``start``. The edge sends ``media``, ``clear`` (on
  barge-in) and ``voxmesh`` (an event, wrapped).

Edge messages share the data channel's ``{"edge": {...}}`` namespace: ``session`` (first, once
the worker took the call), ``clear`` (pcm16 barge-in), ``barge_in_stop_ms`` and ``error``. Bad
input ends the call with an ``error`` event and a WebSocket close code; the worker's session is
hung up like a caller hangup, and caller audio received before the bad message still reaches it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import WSCloseCode, WSMsgType, web

from voxmesh import audio
from voxmesh.v1 import session_pb2
from voxmesh_edge.call import AGENT_RE, Call, CallSetupError

if TYPE_CHECKING:
    from voxmesh_edge.server import EdgeServer

log = logging.getLogger("voxmesh.edge.ws")

#: Path of the WebSocket endpoint.
WS_PATH = "/ws"
PCM16 = "pcm16"
MULAW = "mulaw"
CODECS = (PCM16, MULAW)
#: Rate of µ-law audio on a ``mulaw`` stream.
MULAW_RATE = 8_000
#: µ-law bytes in one 20 ms frame at 8 kHz.
MULAW_FRAME_BYTES = MULAW_RATE * audio.FRAME_MS // 1000
#: ``start.mediaFormat`` a ``mulaw`` stream must announce (when it announces one).
MULAW_MEDIA_FORMAT = {"encoding": "audio/x-mulaw", "sampleRate": MULAW_RATE, "channels": 1}
#: Largest message the edge reads; larger ones end the call with ``FRAME_TOO_LARGE``.
MAX_MESSAGE_BYTES = 64 * 1024
#: Largest µ-law payload in one ``media`` message (1 s), like the STT service's chunk limit.
MAX_MEDIA_BYTES = MULAW_RATE
#: A ``mulaw`` stream must send ``start`` within this many seconds of opening.
START_TIMEOUT_S = 10.0

#: aiohttp closes the socket itself (1009, no error event) above this; the edge's own check
#: (``MAX_MESSAGE_BYTES``) comes first for everything a sane client would send.
_PROTOCOL_MAX_BYTES = 1024 * 1024
#: How long closing waits for the caller's close frame.
_CLOSE_TIMEOUT_S = 1.0
#: Pings find dead peers (a telephony gateway that vanished) within this many seconds.
_HEARTBEAT_S = 20.0
#: Messages queued for the caller beyond this are dropped. The worker paces agent audio in real
#: time, so the queue only grows when the caller stops reading: 60 s of 20 ms frames.
_MAX_QUEUED = 60_000 // audio.FRAME_MS
#: How long a closing call waits for queued messages to leave.
_FLUSH_TIMEOUT_S = 1.0


class WsCallError(Exception):
    """Bad input or a refused call: becomes an ``error`` event and a close code.

    Args:
        reason: Stable upper-snake reason (see ``docs/websocket-transport.md``).
        message: Human-readable explanation.
        close_code: WebSocket close code the edge closes with.
        status: The HTTP status the same error would have on ``/offer``.
        notify_worker: A worker may hold the session: send it a hangup.
    """

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        close_code: int = WSCloseCode.POLICY_VIOLATION,
        status: int = 400,
        notify_worker: bool = False,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.close_code = int(close_code)
        self.status = status
        self.notify_worker = notify_worker

    @classmethod
    def from_setup(cls, exc: CallSetupError) -> WsCallError:
        """The WebSocket form of a dispatch or admission error."""
        if exc.status >= 500 and exc.status != 503:
            code = WSCloseCode.INTERNAL_ERROR
        elif exc.status == 503:
            code = WSCloseCode.TRY_AGAIN_LATER
        else:
            code = WSCloseCode.POLICY_VIOLATION
        return cls(
            exc.reason,
            exc.message,
            close_code=code,
            status=exc.status,
            notify_worker=exc.notify_worker,
        )

    def event(self) -> dict[str, Any]:
        """The ``{"edge": {"error": ...}}`` event sent before closing."""
        return {"edge": {"error": {
            "reason": self.reason, "message": self.message, "status": self.status}}}


def _bad(reason: str, message: str, close_code: int = WSCloseCode.POLICY_VIOLATION,
         status: int = 400) -> WsCallError:
    return WsCallError(reason, message, close_code=close_code, status=status)


def _too_large(size: int, limit: int, what: str) -> WsCallError:
    return _bad(
        "FRAME_TOO_LARGE",
        f"{what} of {size} bytes is over the limit of {limit} bytes",
        WSCloseCode.MESSAGE_TOO_BIG,
        413,
    )


class MulawDecoder:
    """Caller audio of a ``mulaw`` stream: G.711 µ-law 8 kHz in, PCM16 16 kHz 20 ms frames out."""

    def __init__(self) -> None:
        self._upsampler = audio.StreamResampler(MULAW_RATE, audio.INTERNAL_RATE, low_latency=True)
        self._framer = audio.Framer(audio.FRAME_BYTES)

    def push(self, mulaw: bytes) -> list[bytes]:
        """Decodes a payload of any length; returns every complete 640-byte frame."""
        return self._framer.push(self._upsampler.push(audio.mulaw_decode(mulaw)))

    def flush(self) -> list[bytes]:
        """The rest of the stream (filter tail, partial frame padded with silence)."""
        frames = self._framer.push(self._upsampler.push(b"", last=True))
        rest = self._framer.flush()
        return frames if rest is None else [*frames, rest]


class MulawEncoder:
    """Agent audio for a ``mulaw`` stream: PCM16 16 kHz in, G.711 µ-law 8 kHz out.

    Each 20 ms frame in gives 160 µ-law bytes out at once (a ~2 ms filter delay, no buffering).
    """

    def __init__(self) -> None:
        self._downsampler = audio.StreamDownsampler(audio.INTERNAL_RATE, MULAW_RATE)

    def push(self, pcm16_16k: bytes) -> bytes:
        """Encodes a chunk of PCM16 16 kHz (an even number of samples keeps frames whole)."""
        return audio.mulaw_encode(self._downsampler.push(pcm16_16k))

    def reset(self) -> None:
        """Forgets the filter state, so a cleared turn leaves no tail in the next one."""
        self._downsampler.reset()


@dataclass(slots=True)
class _Outgoing:
    """One message queued for the caller."""

    data: str | bytes
    #: The agent audio it carries (PCM16 16 kHz), None for events.
    pcm: bytes | None = None
    turn: int | None = None


class WebSocketCall(Call):
    """A call carried by one WebSocket: the transport-specific part of the session.

    Args:
        edge: The server that owns the call.
        session_id: The session id (uuid4 hex).
        agent: The agent the call is dispatched to.
        socket: The prepared WebSocket.
        codec: ``pcm16`` or ``mulaw``.
    """

    def __init__(
        self,
        edge: EdgeServer,
        session_id: str,
        agent: str,
        socket: web.WebSocketResponse,
        codec: str,
    ) -> None:
        super().__init__(edge, session_id, agent)
        self.transport = f"websocket-{codec}"
        self.codec = codec
        self.socket = socket
        #: ``streamSid`` of a ``mulaw`` stream (from its ``start``).
        self.stream_sid = ""
        self._outbox: deque[_Outgoing] = deque()
        self._outbox_changed = asyncio.Event()
        self._sender_running = False
        self._sending = False
        self._framer = audio.Framer(audio.FRAME_BYTES)
        self._encoder = MulawEncoder() if codec == MULAW else None
        self._decoder = MulawDecoder() if codec == MULAW else None
        self._started = False
        self._cleared_turn: int | None = None
        self._last_played_turn: int | None = None
        self._close_code: int | None = None
        self._close_message = ""
        self._dropping = False

    @property
    def queued_audio_ms(self) -> float:
        """Agent audio queued for the socket (not yet handed to it), in milliseconds."""
        return sum(len(item.pcm) / 32 for item in self._outbox if item.pcm is not None)

    # --- running the call ------------------------------------------------------------------

    async def run(self) -> None:
        """Serves the call until it ends; runs in the WebSocket handler's task.

        Errors from bad input or dispatch end the call here (an ``error`` event and a close
        code); nothing is raised for them.
        """
        try:
            if self.codec == PCM16:
                await self._start()
            await self._receive_loop()
        except CallSetupError as exc:
            await self.fail(WsCallError.from_setup(exc))
        except WsCallError as exc:
            await self.fail(exc)
        if self.ending:
            # A hangup or an error is ending the call; it closes the socket when done.
            await self.closed.wait()
        else:
            await self._flush_caller_audio()
            await self.close("connection_closed")

    async def _start(self) -> None:
        await self.start_session()
        self._started = True
        # First message: ahead of any event the worker sent while it accepted the call.
        self._outbox.appendleft(_Outgoing(self._wrap(json.dumps({"edge": {"session": {
            "session_id": self.session_id,
            "worker_id": self.worker_id,
            "agent": self.agent,
            "transport": self.transport,
            "sample_rate_hz": MULAW_RATE if self.codec == MULAW else audio.INTERNAL_RATE,
            "frame_bytes": MULAW_FRAME_BYTES if self.codec == MULAW else audio.FRAME_BYTES,
        }}}))))
        self._sender_running = True
        self._spawn(self._send_loop(), "ws-send")
        self._outbox_changed.set()

    async def _receive_loop(self) -> None:
        socket = self.socket
        opened = time.monotonic()
        while True:
            timeout = None
            if not self._started:  # only a mulaw stream waits for its start
                timeout = START_TIMEOUT_S - (time.monotonic() - opened)
                if timeout <= 0:
                    raise _bad("START_TIMEOUT", f"no 'start' within {START_TIMEOUT_S:g} s", 1008,
                               408)
            try:
                msg = await socket.receive(timeout=timeout)
            except TimeoutError:
                continue  # the deadline check above reports it
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                return
            if msg.type is WSMsgType.ERROR:
                # aiohttp already closed the socket (e.g. a message over its own size limit).
                log.info("call %s: websocket error: %s", self.session_id, msg.data)
                return
            if self.ending:
                continue  # input after a hangup is ignored
            if msg.type is WSMsgType.BINARY:
                await self._on_binary(msg.data)
            elif msg.type is WSMsgType.TEXT:
                await self._on_text(msg.data)

    async def _on_binary(self, data: bytes) -> None:
        if len(data) > MAX_MESSAGE_BYTES:
            raise _too_large(len(data), MAX_MESSAGE_BYTES, "a binary frame")
        if self.codec == MULAW:
            raise _bad(
                "UNEXPECTED_BINARY_FRAME",
                "a mulaw stream carries JSON text frames only; send audio in 'media' events",
                WSCloseCode.UNSUPPORTED_DATA,
            )
        if len(data) != audio.FRAME_BYTES:
            raise _bad(
                "INVALID_FRAME_SIZE",
                f"a binary frame must be 20 ms of PCM16 mono 16 kHz ({audio.FRAME_BYTES} bytes),"
                f" not {len(data)} bytes",
                WSCloseCode.INVALID_TEXT,
            )
        await self.publish_caller_audio(data)

    async def _on_text(self, text: str) -> None:
        if len(text) > MAX_MESSAGE_BYTES:
            raise _too_large(len(text.encode()), MAX_MESSAGE_BYTES, "a text frame")
        try:
            message = json.loads(text)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            raise _bad("INVALID_JSON", "a text frame must be a JSON object",
                       WSCloseCode.INVALID_TEXT)
        if self.codec == PCM16:
            await self._on_control(message)
        else:
            await self._on_stream_event(message)

    async def _on_control(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if not isinstance(kind, str):
            raise _bad("INVALID_MESSAGE", "field 'type' is required and must be a string",
                       WSCloseCode.INVALID_TEXT)
        if kind != "hangup":
            raise _bad("UNKNOWN_MESSAGE", f"unknown message type {kind[:40]!r}; expected 'hangup'")
        self.hangup_by_caller()

    async def _on_stream_event(self, message: dict[str, Any]) -> None:
        kind = message.get("event")
        if not isinstance(kind, str):
            raise _bad("INVALID_MESSAGE", "field 'event' is required and must be a string",
                       WSCloseCode.INVALID_TEXT)
        if kind == "media":
            if not self._started:
                raise _bad("MEDIA_BEFORE_START", "'media' before 'start'")
            await self._on_media(message)
        elif kind == "start":
            if self._started:
                raise _bad("DUPLICATE_START", "a second 'start' on the same stream")
            self._on_start_message(message)
            await self._start()
        elif kind == "stop":
            if not self._started:
                await self.close("caller_hangup", notify_worker=False)
                return
            await self._flush_caller_audio()
            self.hangup_by_caller()
        elif kind not in ("connected", "mark", "dtmf"):  # known, nothing to do
            raise _bad("UNKNOWN_MESSAGE", f"unknown event {kind[:40]!r}")

    def _on_start_message(self, message: dict[str, Any]) -> None:
        start = message.get("start")
        if not isinstance(start, dict):
            raise _bad("INVALID_MESSAGE", "'start' must carry a 'start' object",
                       WSCloseCode.INVALID_TEXT)
        media_format = start.get("mediaFormat")
        if media_format is not None and not (
            isinstance(media_format, dict)
            and media_format.get("encoding") == MULAW_MEDIA_FORMAT["encoding"]
            and media_format.get("sampleRate") == MULAW_RATE
            and media_format.get("channels", 1) == 1
        ):
            raise _bad(
                "UNSUPPORTED_MEDIA_FORMAT",
                f"mediaFormat must be {json.dumps(MULAW_MEDIA_FORMAT)}, "
                f"not {json.dumps(media_format)[:200]}",
                WSCloseCode.UNSUPPORTED_DATA,
                415,
            )
        sid = start.get("streamSid") or message.get("streamSid") or f"MZ{self.session_id}"
        if not isinstance(sid, str) or len(sid) > 128:
            raise _bad("INVALID_MESSAGE", "'streamSid' must be a string of at most 128 characters",
                       WSCloseCode.INVALID_TEXT)
        self.stream_sid = sid

    async def _on_media(self, message: dict[str, Any]) -> None:
        media = message.get("media")
        payload = media.get("payload") if isinstance(media, dict) else None
        if not isinstance(payload, str):
            raise _bad("INVALID_MESSAGE", "'media' must carry media.payload (base64 µ-law)",
                       WSCloseCode.INVALID_TEXT)
        if len(payload) > (MAX_MEDIA_BYTES + 2) // 3 * 4:
            raise _too_large(len(payload) * 3 // 4, MAX_MEDIA_BYTES, "a media payload")
        try:
            mulaw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise _bad("INVALID_PAYLOAD", "media.payload is not valid base64",
                       WSCloseCode.INVALID_TEXT) from None
        assert self._decoder is not None  # a mulaw stream has one
        for frame in self._decoder.push(mulaw):
            await self.publish_caller_audio(frame)

    async def _flush_caller_audio(self) -> None:
        # A partial frame and the resampler's tail are still the caller's audio: send them.
        decoder, self._decoder = self._decoder, None
        if decoder is not None and self._started:
            for frame in decoder.flush():
                await self.publish_caller_audio(frame)

    async def fail(self, error: WsCallError) -> None:
        """Ends the call for bad input or a refused setup: ``error`` event, then close code.

        With a worker on the session it is hung up like a caller hangup (reason
        ``caller_error:<REASON>``), so its ``ended`` summary still reaches the caller; audio
        received before the bad message has been published already.
        """
        if self.ending:
            return
        log.info("call %s: %s (%s)", self.session_id, error.reason, error.message)
        self._close_code, self._close_message = error.close_code, error.reason
        text = self._wrap(json.dumps(error.event()))
        if not self.worker_id:
            # No session yet, so nothing else is queued for the caller: send and close now.
            await self._send_now(text)
            await self.close(f"rejected: {error.reason}", notify_worker=error.notify_worker)
            return
        self._enqueue(_Outgoing(text))  # after the audio and events already queued
        await self._flush_caller_audio()
        self.hangup_by_caller(f"caller_error:{error.reason}")

    async def _send_now(self, text: str) -> None:
        try:
            await self.socket.send_str(text)
        except ConnectionError:
            pass  # the caller is gone; the close below is all that is left

    # --- towards the caller ----------------------------------------------------------------

    def _wrap(self, text: str) -> str:
        """An event as the codec carries it: as is, or as a mulaw stream's ``voxmesh`` event."""
        if self.codec != MULAW:
            return text
        # Spliced rather than re-parsed: ``text`` is a JSON object already.
        sid = json.dumps(self.stream_sid)
        return f'{{"event": "voxmesh", "streamSid": {sid}, "voxmesh": {text}}}'

    def _enqueue(self, item: _Outgoing) -> None:
        if len(self._outbox) >= _MAX_QUEUED:
            if not self._dropping:  # once per backlog, not 50 times a second
                log.warning("call %s: caller is not reading; dropping messages", self.session_id)
            self._dropping = True
            return
        self._dropping = False
        self._outbox.append(item)
        self._outbox_changed.set()

    def _play_agent_audio(self, pcm16_16k: bytes, turn_index: int | None) -> None:
        if turn_index is not None and turn_index == self._cleared_turn:
            return  # still in flight when its turn was cleared
        # Whole frames, in one message per chunk the worker published (a message costs the
        # same whatever its size).
        pcm = b"".join(self._framer.push(pcm16_16k))
        if not pcm:
            return
        if self._encoder is None:
            self._enqueue(_Outgoing(pcm, pcm, turn_index))
        else:
            payload = base64.b64encode(self._encoder.push(pcm)).decode("ascii")
            text = json.dumps({"event": "media", "streamSid": self.stream_sid,
                               "media": {"payload": payload}})
            self._enqueue(_Outgoing(text, pcm, turn_index))

    def _clear_playout(self, clear: session_pb2.ClearPlayout) -> float:
        # A pause keeps the turn: its audio may resume from where the caller stopped hearing.
        if not clear.pause and clear.turn_index:
            self._cleared_turn = clear.turn_index
        dropped = self.queued_audio_ms
        self._outbox = deque(item for item in self._outbox if item.pcm is None)
        self._framer.clear()
        if self._encoder is not None:
            self._encoder.reset()
        # Audio already handed to the socket cannot be recalled; this tells the caller to
        # flush what it buffered for playout.
        if self.codec == MULAW:
            self._enqueue(_Outgoing(json.dumps({"event": "clear", "streamSid": self.stream_sid})))
        else:
            self._enqueue(_Outgoing(json.dumps({"edge": {"clear": {
                "turn_index": clear.turn_index, "pause": clear.pause, "dropped_ms": dropped}}})))
        return dropped

    def _send_event(self, text: str) -> None:
        self._enqueue(_Outgoing(self._wrap(text)))

    async def _send_loop(self) -> None:
        socket = self.socket
        outbox_changed = self._outbox_changed
        while True:
            while not self._outbox:
                outbox_changed.clear()
                await outbox_changed.wait()
            item = self._outbox.popleft()
            if item.pcm is not None:
                self.barge_in.on_agent_audio(item.pcm)
            self._sending = True
            try:
                if isinstance(item.data, bytes):
                    await socket.send_bytes(item.data)
                else:
                    await socket.send_str(item.data)
            except ConnectionError:
                self._sender_running = False
                self.request_close("connection_lost")
                return
            finally:
                self._sending = False
            if item.turn is not None and item.turn != self._last_played_turn:
                self._last_played_turn = item.turn
                await self.report_playout_started(item.turn)

    # --- teardown --------------------------------------------------------------------------

    async def _stop_sending(self, linger: bool) -> None:
        if not linger:
            return
        deadline = time.monotonic() + _FLUSH_TIMEOUT_S
        while (self._outbox or self._sending) and self._sender_running:
            if time.monotonic() > deadline or self.socket.closed:
                return
            await asyncio.sleep(0.01)

    async def _close_transport(self) -> None:
        code = self._close_code
        message = self._close_message or self.close_reason
        if code is None:
            if self.close_reason in ("edge_draining", "edge_stopping"):
                code = WSCloseCode.GOING_AWAY
            elif self.close_reason == "edge_error":
                code = WSCloseCode.INTERNAL_ERROR
            else:
                code = WSCloseCode.OK
        # The close frame's reason is limited to 123 bytes.
        await self.socket.close(code=code, message=message.encode()[:123])


async def _refuse(socket: web.WebSocketResponse, codec: str, error: WsCallError) -> None:
    log.info("websocket call refused (%s): %s", error.reason, error.message)
    text = json.dumps(error.event())
    if codec == MULAW:
        text = json.dumps({"event": "voxmesh", "streamSid": "", "voxmesh": error.event()})
    try:
        await socket.send_str(text)
    except ConnectionError:
        pass
    await socket.close(code=error.close_code, message=error.reason.encode())


def new_socket() -> web.WebSocketResponse:
    """The server side of a call's WebSocket, configured for media."""
    return web.WebSocketResponse(
        max_msg_size=_PROTOCOL_MAX_BYTES,
        timeout=_CLOSE_TIMEOUT_S,
        heartbeat=_HEARTBEAT_S,
        compress=False,  # audio does not deflate; the CPU is better spent on calls
    )


async def serve_call(
    edge: EdgeServer, request: web.Request, socket: web.WebSocketResponse
) -> None:
    """Serves one call on a prepared WebSocket (``GET /ws``) until it ends.

    Refusals (draining, capacity, bad query, no worker) are sent as an ``error`` event and a
    close code.
    """
    codec = request.query.get("codec", PCM16)
    agent = request.query.get("agent") or edge.settings.agent
    try:
        edge.check_accepting()
        if codec not in CODECS:
            raise _bad("INVALID_CODEC", f"codec must be one of {', '.join(CODECS)}, "
                       f"not {codec[:40]!r}")
        if not AGENT_RE.match(agent):
            raise _bad("INVALID_AGENT", "query 'agent' may only contain letters, digits, - and _")
        call = WebSocketCall(edge, uuid.uuid4().hex, agent, socket, codec)
        edge.admit(call)
    except CallSetupError as exc:
        await _refuse(socket, codec, WsCallError.from_setup(exc))
        return
    except WsCallError as exc:
        await _refuse(socket, codec, exc)
        return
    try:
        await call.run()
    except Exception:
        log.exception("call %s: websocket transport failed", call.session_id)
        await call.fail(WsCallError(
            "INTERNAL", "the edge failed while serving the call",
            close_code=WSCloseCode.INTERNAL_ERROR, status=500))
        await call.closed.wait()
    except BaseException:  # cancelled: the server is shutting down
        edge.spawn(call.close("edge_stopping"))
        raise
