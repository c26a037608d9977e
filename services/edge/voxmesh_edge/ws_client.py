"""A scriptable WebSocket caller for the edge, interchangeable with :class:`WebRTCCaller`.

It speaks the edge's WebSocket transport (``docs/websocket-transport.md``) in either codec:
``pcm16`` (binary PCM16 16 kHz frames) or ``mulaw`` (the telephony media-stream shape, µ-law
8 kHz in base64 JSON). A load generator swaps transports by swapping the class; its reports name
the transport from :attr:`WebSocketCaller.transport`.

Example::

    caller = WebSocketCaller("http://127.0.0.1:8080", codec="mulaw")
    await caller.connect()
    sent_at = await caller.play(question_pcm16_16k)
    first, end, answer = await caller.wait_agent_audio(start_after=sent_at, timeout=15)
    await caller.hangup()

Audio in and out is PCM16 mono 16 kHz whatever the codec (the caller converts); times are
:func:`time.monotonic` seconds. Like a telephony stream, the caller sends audio continuously
(silence between :meth:`WebSocketCaller.play` calls) in real time, one 20 ms frame per period.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
import uuid
from typing import Any
from urllib.parse import urlencode

import aiohttp

from voxmesh import audio
from voxmesh_edge.caller_waits import CallWaits
from voxmesh_edge.client import (
    DEFAULT_THRESHOLD_DBFS,
    AgentAudio,
    CallRejectedError,
    _PlaybackTrack,
)
from voxmesh_edge.ws import (
    CODECS,
    MULAW,
    MULAW_MEDIA_FORMAT,
    PCM16,
    WS_PATH,
    MulawDecoder,
    MulawEncoder,
)

log = logging.getLogger("voxmesh.edge.ws_client")


#: When the sender falls this far behind real time, it resynchronizes instead of bursting.
_MAX_LAG_S = 0.2


class WebSocketCaller(CallWaits):
    """Calls the edge over its WebSocket transport, with :class:`WebRTCCaller`'s interface.

    Args:
        edge_url: Base URL of the edge, e.g. ``http://127.0.0.1:8080`` (``ws://`` works too).
        agent: Agent to call.
        codec: ``pcm16`` or ``mulaw``.
        connect_timeout: Seconds allowed for the socket to open and a worker to take the call.
    """

    def __init__(
        self,
        edge_url: str,
        agent: str = "default",
        *,
        codec: str = PCM16,
        connect_timeout: float = 10.0,
    ) -> None:
        if codec not in CODECS:
            raise ValueError(f"codec must be one of {', '.join(CODECS)}, not {codec!r}")
        self.edge_url = edge_url.rstrip("/")
        self.agent = agent
        self.codec = codec
        self.connect_timeout = connect_timeout
        #: The transport this caller uses, for reports: ``websocket-pcm16``/``websocket-mulaw``.
        self.transport = f"websocket-{codec}"
        #: Session id assigned by the edge (set by :meth:`connect`).
        self.session_id: str | None = None
        #: Worker that took the call (set by :meth:`connect`).
        self.worker_id: str | None = None
        #: Every event received, as the JSON dicts the WebRTC data channel carries: the
        #: ``SessionEvent`` s and the edge's own ``{"edge": {...}}`` messages.
        self.events: list[dict[str, Any]] = []
        #: Agent audio received so far.
        self.agent_audio = AgentAudio()
        #: Receive times of the edge's playout clears (barge-in): ``edge.clear`` on pcm16,
        #: ``{"event": "clear"}`` on mulaw.
        self.cleared: list[float] = []
        #: The edge's ``error`` event (``reason``, ``message``, ``status``), if it sent one.
        self.error: dict[str, Any] | None = None
        #: Close code of the socket, once closed.
        self.close_code: int | None = None
        #: ``streamSid`` this caller announces on a mulaw stream.
        self.stream_sid = f"MZ{uuid.uuid4().hex}"
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._track = _PlaybackTrack()
        self._encoder = MulawEncoder()
        self._decoder = MulawDecoder()
        self._framer = audio.Framer(audio.FRAME_BYTES)
        self._sequence = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._sender: asyncio.Task[None] | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self._session = asyncio.Event()
        self._ended = asyncio.Event()

    @property
    def ended(self) -> bool:
        """True once the socket has closed."""
        return self._ended.is_set()

    async def __aenter__(self) -> WebSocketCaller:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.hangup()

    def _url(self) -> str:
        base = self.edge_url
        for http, ws in (("http://", "ws://"), ("https://", "wss://")):
            if base.startswith(http):
                base = ws + base[len(http):]
        return f"{base}{WS_PATH}?{urlencode({'agent': self.agent, 'codec': self.codec})}"

    async def connect(self) -> None:
        """Opens the socket and waits until a worker has taken the call.

        Raises:
            CallRejectedError: The edge refused the call (reason and HTTP-equivalent status
                from its ``error`` event), e.g. ``NO_WORKER_AVAILABLE`` or ``EDGE_DRAINING``.
            TimeoutError: No worker took the call within ``connect_timeout``.
            ConnectionError: The edge closed the socket without saying why.
            aiohttp.ClientError: The edge could not be reached.
        """
        self._http = aiohttp.ClientSession()
        try:
            try:
                async with asyncio.timeout(self.connect_timeout):
                    self._ws = await self._http.ws_connect(self._url(), autoping=True)
                    if self.codec == MULAW:
                        await self._send_start()
                    self._spawn(self._receive(self._ws))
                    await self._wait_session()
            except TimeoutError:
                raise TimeoutError(
                    f"the WebSocket call did not start in {self.connect_timeout:g} s"
                ) from None
        except BaseException:
            await self._shutdown()
            raise
        self._sender = asyncio.create_task(self._send_audio(self._ws))
        self._tasks.add(self._sender)
        self._sender.add_done_callback(self._tasks.discard)

    async def _send_start(self) -> None:
        await self._send_json({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await self._send_json({
            "event": "start",
            "sequenceNumber": self._next_sequence(),
            "streamSid": self.stream_sid,
            "start": {
                "streamSid": self.stream_sid,
                "tracks": ["inbound"],
                "mediaFormat": MULAW_MEDIA_FORMAT,
                "customParameters": {},
            },
        })

    async def _wait_session(self) -> None:
        session = asyncio.ensure_future(self._session.wait())
        ended = asyncio.ensure_future(self._ended.wait())
        try:
            await asyncio.wait([session, ended], return_when=asyncio.FIRST_COMPLETED)
        finally:
            session.cancel()
            ended.cancel()
        if self._session.is_set():
            return
        if self.error is not None:
            raise CallRejectedError(
                str(self.error.get("reason", "UNKNOWN")),
                str(self.error.get("message", "")),
                int(self.error.get("status", 0)),
            )
        raise ConnectionError(
            f"the edge closed the WebSocket (code {self.close_code}) before the call started"
        )

    def _next_sequence(self) -> str:
        self._sequence += 1
        return str(self._sequence)

    async def _send_json(self, message: dict[str, Any]) -> None:
        assert self._ws is not None  # connect() opened it
        await self._ws.send_str(json.dumps(message))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- receiving -------------------------------------------------------------------------

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            async for msg in ws:
                received_at = time.monotonic()
                if msg.type is aiohttp.WSMsgType.BINARY:
                    for pcm in self._framer.push(msg.data):
                        self.agent_audio.append(received_at, pcm)
                elif msg.type is aiohttp.WSMsgType.TEXT:
                    self._on_text(msg.data, received_at)
                elif msg.type is aiohttp.WSMsgType.ERROR:
                    log.warning("WebSocket error: %s", msg.data)
                    break
                self._notify()
        finally:
            self.close_code = ws.close_code
            self._track.stop()  # a pending play() fails now rather than at hangup()
            self._ended.set()
            self._notify()

    def _on_text(self, text: str, received_at: float) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            log.warning("non-JSON text frame from the edge: %.80r", text)
            return
        if not isinstance(message, dict):
            return
        if self.codec == PCM16:
            self._on_event(message, received_at)
            return
        kind = message.get("event")
        if kind == "media":
            payload = base64.b64decode(message["media"]["payload"])
            for pcm in self._decoder.push(payload):
                self.agent_audio.append(received_at, pcm)
        elif kind == "clear":
            self.cleared.append(received_at)
        elif kind == "voxmesh" and isinstance(message.get("voxmesh"), dict):
            self._on_event(message["voxmesh"], received_at)

    def _on_event(self, event: dict[str, Any], received_at: float) -> None:
        self.events.append(event)
        edge = event.get("edge")
        if not isinstance(edge, dict):
            return
        if isinstance(session := edge.get("session"), dict):
            self.session_id = session.get("session_id")
            self.worker_id = session.get("worker_id")
            self._session.set()
        if isinstance(error := edge.get("error"), dict):
            self.error = error
        if "clear" in edge:
            self.cleared.append(received_at)

    # --- sending ---------------------------------------------------------------------------

    async def _send_audio(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        period = audio.FRAME_MS / 1000
        start = time.monotonic()
        sent = 0
        while not ws.closed:
            pcm = await self._track.next_pcm()
            try:
                if self.codec == PCM16:
                    await ws.send_bytes(pcm)
                else:
                    await self._send_media(pcm)
            except ConnectionError:
                return
            sent += 1
            due = start + sent * period
            now = time.monotonic()
            if now - due > _MAX_LAG_S:
                start = now - sent * period  # the loop stalled: resync rather than burst
            elif due > now:
                await asyncio.sleep(due - now)

    async def _send_media(self, pcm: bytes) -> None:
        sequence = self._next_sequence()
        await self._send_json({
            "event": "media",
            "sequenceNumber": sequence,
            "streamSid": self.stream_sid,
            "media": {
                "track": "inbound",
                "chunk": sequence,
                "timestamp": str(int(sequence) * audio.FRAME_MS),
                "payload": base64.b64encode(self._encoder.push(pcm)).decode("ascii"),
            },
        })

    async def play(self, pcm16_16k: bytes) -> float:
        """Sends audio (PCM16 mono 16 kHz) in real time, after anything queued before.

        Returns:
            ``time.monotonic()`` at which the last sample was sent.

        Raises:
            ConnectionError: The call ended before all of the audio was sent.
        """
        if self._ended.is_set():
            raise ConnectionError("the call has ended")
        return await self._track.enqueue(pcm16_16k)

    # --- waiting ---------------------------------------------------------------------------

    async def _changed(self, limit_s: float) -> None:
        """Returns when something arrives or the call ends, or after ``limit_s``."""
        future = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(future, max(0.0, limit_s))

    async def wait_agent_audio(
        self,
        start_after: float,
        silence_ms: int = 800,
        timeout: float = 15.0,  # noqa: ASYNC109 - part of the documented API
        *,
        threshold_dbfs: float = DEFAULT_THRESHOLD_DBFS,
    ) -> tuple[float, float, bytes]:
        """Waits for the agent to speak after ``start_after`` and then fall silent.

        The edge sends agent audio only while the agent speaks, so an answer also ends when no
        frame has come for ``silence_ms`` after the last loud one.

        Args:
            start_after: Only frames received after this ``time.monotonic()`` count.
            silence_ms: Quiet after the last loud frame that ends the answer.
            timeout: Seconds to wait for the whole answer.
            threshold_dbfs: Frames louder than this count as agent speech.

        Returns:
            ``(first_audio_time, end_time, pcm)``: receive time of the first loud frame, of the
            last loud frame, and the audio from the first to the last loud frame.

        Raises:
            TimeoutError: No complete answer within ``timeout``.
            ConnectionError: The call ended first.
        """
        frames = self.agent_audio.frames
        quiet_needed = max(1, silence_ms // audio.FRAME_MS)
        index, first, last = 0, -1, -1
        deadline = time.monotonic() + timeout
        while True:
            while index < len(frames):
                if frames[index][0] > start_after:
                    if self.agent_audio.level_dbfs(index) > threshold_dbfs:
                        first = index if first < 0 else first
                        last = index
                    elif first >= 0 and index - last >= quiet_needed:
                        break
                index += 1
            now = time.monotonic()
            if first >= 0 and (
                index < len(frames) or now >= frames[last][0] + silence_ms / 1000
            ):
                pcm = b"".join(p for _, p in frames[first : last + 1])
                return frames[first][0], frames[last][0], pcm
            if now >= deadline:
                raise TimeoutError(f"timed out after {timeout:g} s waiting for the agent's answer")
            if self._ended.is_set():
                raise ConnectionError("the call ended while waiting for the agent's answer")
            # Unlike WebRTC, nothing arrives while the agent is quiet: wake up when the quiet
            # period would be over, too.
            wake = deadline if first < 0 else min(deadline, frames[last][0] + silence_ms / 1000)
            await self._changed(wake - now)

    # --- ending ----------------------------------------------------------------------------

    async def hangup(self, wait_s: float = 3.0) -> None:
        """Tells the edge to end the call, waits for it to close (``wait_s`` at most), closes.

        pcm16 sends ``{"type": "hangup"}``, mulaw ``{"event": "stop"}``; the edge forwards the
        worker's ``ended`` event, then closes the socket.
        """
        ws = self._ws
        if ws is not None and not ws.closed and not self._ended.is_set():
            await self._stop_sender()  # nothing may follow the hangup
            if self.codec == PCM16:
                message: dict[str, Any] = {"type": "hangup"}
            else:
                message = {"event": "stop", "sequenceNumber": self._next_sequence(),
                           "streamSid": self.stream_sid, "stop": {}}
            try:
                await ws.send_str(json.dumps(message))
            except ConnectionError:
                pass
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait_s):
                        await self._ended.wait()
        await self._shutdown()

    async def close(self) -> None:
        """Closes the socket without telling the edge first (like a lost network)."""
        await self._shutdown()

    async def _stop_sender(self) -> None:
        sender, self._sender = self._sender, None
        if sender is not None:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)

    async def _shutdown(self) -> None:
        self._track.stop()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._ws is not None and not self._ws.closed:
            await self._ws.close()
        if self._http is not None:
            await self._http.close()
        self._ended.set()
        self._notify()

