"""A scriptable WebRTC caller for the edge: the ``voxmesh call`` CLI, end-to-end and load tests.

Example::

    caller = WebRTCCaller("http://127.0.0.1:8080")
    await caller.connect()
    sent_at = await caller.play(question_pcm16_16k)
    first, end, answer = await caller.wait_agent_audio(start_after=sent_at, timeout=15)
    print(f"voice-to-voice: {(first - sent_at) * 1000:.0f} ms")
    await caller.hangup()

Audio in and out is PCM16 mono 16 kHz (the platform's internal format); times are
:func:`time.monotonic` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from typing import Any

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcdatachannel import RTCDataChannel

from voxmesh import audio
from voxmesh_edge.caller_waits import CallWaits
from voxmesh_edge.media import (
    DEFAULT_JITTER_FRAMES,
    WEBRTC_RATE,
    FrameConverter,
    LowDelayAudioBuffer,
    PacedAudioTrack,
    set_audio_jitter_frames,
)

log = logging.getLogger("voxmesh.edge.client")


#: Agent audio louder than this (RMS of a 20 ms frame) counts as speech.
DEFAULT_THRESHOLD_DBFS = -45.0


class CallRejectedError(Exception):
    """The edge refused the call (HTTP 4xx/5xx), e.g. ``NO_WORKER_AVAILABLE``.

    Attributes:
        reason: Stable upper-snake reason from the edge's JSON error body.
        message: Human-readable explanation.
        status: HTTP status code.
    """

    def __init__(self, reason: str, message: str, status: int = 0) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.status = status


class _PlaybackTrack(PacedAudioTrack):
    """Plays queued PCM16 16 kHz audio in real time, silence otherwise.

    Args:
        sample_rate: Rate of the frames it returns. A WebRTC track should use 48 kHz, Opus's
            rate: aiortc's encoder resamples anything else through a resampler that holds
            back a whole frame, which would add 20 ms to every caller utterance.
    """

    def __init__(self, sample_rate: int = audio.INTERNAL_RATE) -> None:
        super().__init__(sample_rate)
        self._resampler = audio.StreamResampler(
            audio.INTERNAL_RATE, sample_rate, low_latency=True
        )
        self._buffer = bytearray()
        self._queued = 0  # bytes ever queued
        self._sent = 0  # bytes ever sent
        self._waiters: deque[tuple[int, asyncio.Future[float]]] = deque()

    def enqueue(self, pcm: bytes) -> asyncio.Future[float]:
        """Queues audio; the future resolves with the time its last sample was sent."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        pcm = self._resampler.push(pcm)
        self._buffer.extend(pcm)
        self._queued += len(pcm)
        self._waiters.append((self._queued, future))
        return future

    async def next_pcm(self) -> bytes:
        size = self.frame_bytes
        take = min(size, len(self._buffer))
        pcm = bytes(self._buffer[:take])
        del self._buffer[:take]
        self._sent += take
        now = time.monotonic()
        while self._waiters and self._waiters[0][0] <= self._sent:
            _, future = self._waiters.popleft()
            if not future.done():
                future.set_result(now)
        return pcm + bytes(size - take)

    def stop(self) -> None:
        for _, future in self._waiters:
            if not future.done():
                future.set_exception(ConnectionError("the call ended before the audio was sent"))
        self._waiters.clear()
        super().stop()


class AgentAudio:
    """Agent audio received so far: PCM16 mono 16 kHz in 20 ms frames with receive times."""

    def __init__(self) -> None:
        #: ``(time.monotonic() when its packet or message arrived, 640 bytes of PCM16)`` per 20 ms
        #: frame.
        self.frames: list[tuple[float, bytes]] = []
        self._levels: list[float] = []

    def __len__(self) -> int:
        return len(self.frames)

    def append(self, received_at: float, pcm: bytes) -> None:
        """Adds one received frame."""
        self.frames.append((received_at, pcm))
        self._levels.append(audio.rms_dbfs(pcm))

    def level_dbfs(self, index: int) -> float:
        """RMS level of frame ``index`` in dBFS."""
        return self._levels[index]

    def pcm(self, start: float | None = None, end: float | None = None) -> bytes:
        """Concatenated audio of the frames received in ``[start, end]`` (monotonic seconds)."""
        return b"".join(
            pcm
            for at, pcm in self.frames
            if (start is None or at >= start) and (end is None or at <= end)
        )

    def first_silence_after(
        self, after: float, quiet_ms: int = 200, threshold_dbfs: float = DEFAULT_THRESHOLD_DBFS
    ) -> float | None:
        """Receive time of the first frame of the first ``quiet_ms`` of silence after ``after``.

        Measures barge-in at the caller: when the agent's audio stopped once the caller spoke.
        """
        needed = max(1, quiet_ms // audio.FRAME_MS)
        run_start, run = 0.0, 0
        for index, (received, _) in enumerate(self.frames):
            if received <= after:
                continue
            if self._levels[index] <= threshold_dbfs:
                if run == 0:
                    run_start = received
                run += 1
                if run >= needed:
                    return run_start
            else:
                run = 0
        return None

    @property
    def duration_s(self) -> float:
        """Seconds of audio received in total."""
        return len(self.frames) * audio.FRAME_MS / 1000


class WebRTCCaller(CallWaits):
    """Calls the edge over WebRTC like the browser page does, from Python (aiortc).

    Args:
        edge_url: Base URL of the edge, e.g. ``http://127.0.0.1:8080``.
        agent: Agent to call.
        connect_timeout: Seconds allowed for the offer/answer and for the media to start.
    """

    def __init__(
        self, edge_url: str, agent: str = "default", *, connect_timeout: float = 10.0
    ) -> None:
        self.edge_url = edge_url.rstrip("/")
        self.agent = agent
        self.connect_timeout = connect_timeout
        #: The transport this caller uses, for reports (``WebSocketCaller`` says
        #: ``websocket-pcm16`` or ``websocket-mulaw``).
        self.transport = "webrtc"
        #: Session id assigned by the edge (set by :meth:`connect`).
        self.session_id: str | None = None
        #: Worker that took the call (set by :meth:`connect`).
        self.worker_id: str | None = None
        #: Every ``SessionEvent`` received, as the JSON dicts the edge sends.
        self.events: list[dict[str, Any]] = []
        #: Agent audio received so far.
        self.agent_audio = AgentAudio()
        self.pc: RTCPeerConnection | None = None
        self.channel: RTCDataChannel | None = None
        self._track = _PlaybackTrack(WEBRTC_RATE)
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiters: list[asyncio.Future[None]] = []
        self._connected = asyncio.Event()
        self._channel_open = asyncio.Event()
        self._ended = asyncio.Event()

    @property
    def ended(self) -> bool:
        """True once the peer connection has closed or failed."""
        return self._ended.is_set()

    async def __aenter__(self) -> WebRTCCaller:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.hangup()

    async def connect(self) -> None:
        """Negotiates the call and waits until the connection is up.

        Raises:
            CallRejectedError: The edge answered with an HTTP error (reason from its JSON body).
            TimeoutError: The connection did not come up within ``connect_timeout``.
            ConnectionError: The WebRTC connection failed.
            aiohttp.ClientError: The edge could not be reached.
        """
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc = pc
        channel = pc.createDataChannel("events")
        self.channel = channel
        pc.addTrack(self._track)
        self._wire(pc, channel)
        try:
            await pc.setLocalDescription(await pc.createOffer())
            local = pc.localDescription
            answer = await self._post_offer({"sdp": local.sdp, "type": local.type})
            self.session_id = answer["session_id"]
            self.worker_id = answer.get("worker_id")
            await pc.setRemoteDescription(
                RTCSessionDescription(sdp=answer["sdp"], type=answer["type"])
            )
            await self._wait_connected()
        except BaseException:
            await self._shutdown()
            raise

    async def _wait_connected(self) -> None:
        # Connected means media flows and the events channel is open.
        async def up() -> None:
            await self._connected.wait()
            await self._channel_open.wait()

        connected = asyncio.ensure_future(up())
        ended = asyncio.ensure_future(self._ended.wait())
        try:
            await asyncio.wait(
                [connected, ended],
                timeout=self.connect_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            connected.cancel()
            ended.cancel()
        if connected.done() and not connected.cancelled():
            return
        if self._ended.is_set():
            raise ConnectionError("the WebRTC connection to the edge failed")
        raise TimeoutError(f"the WebRTC connection did not come up in {self.connect_timeout:g} s")

    async def _post_offer(self, body: dict[str, str]) -> dict[str, Any]:
        body = {**body, "agent": self.agent}
        timeout = aiohttp.ClientTimeout(total=self.connect_timeout)
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.post(f"{self.edge_url}/offer", json=body) as response,
        ):
            text = await response.text()
            if response.status != 200:
                reason, message = f"HTTP_{response.status}", text[:200]
                with contextlib.suppress(ValueError, LookupError, AttributeError, TypeError):
                    error = json.loads(text)["error"]
                    reason, message = error["reason"], error["message"]
                raise CallRejectedError(reason, message, response.status)
            answer: dict[str, Any] = json.loads(text)
            return answer

    def _wire(self, pc: RTCPeerConnection, channel: RTCDataChannel) -> None:
        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio":
                # Agent audio is timed when its packet arrives, before this caller's own
                # buffering and decoding (the WebSocket caller times each message on arrival).
                buffer = set_audio_jitter_frames(pc, track, DEFAULT_JITTER_FRAMES)
                arrivals = buffer if isinstance(buffer, LowDelayAudioBuffer) else None
                self._spawn(self._receive_audio(track, arrivals))

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "connected":
                self._connected.set()
            elif pc.connectionState in ("failed", "closed"):
                self._ended.set()
                self._notify()

        @channel.on("open")
        def on_open() -> None:
            self._channel_open.set()

        @channel.on("message")
        def on_message(message: str | bytes) -> None:
            if isinstance(message, bytes):
                return
            try:
                event = json.loads(message)
            except ValueError:
                log.warning("non-JSON message on the events channel: %.80r", message)
                return
            self.events.append(event)
            self._notify()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _receive_audio(
        self, track: MediaStreamTrack, arrivals: LowDelayAudioBuffer | None
    ) -> None:
        converter = FrameConverter()
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            arrived = arrivals.arrival_of(frame.pts) if arrivals is not None else None
            received_at = arrived if arrived is not None else time.monotonic()
            for pcm in converter.push(frame):  # type: ignore[arg-type]
                self.agent_audio.append(received_at, pcm)
            self._notify()

    async def play(self, pcm16_16k: bytes) -> float:
        """Sends audio (PCM16 mono 16 kHz) in real time, after anything queued before.

        Returns:
            ``time.monotonic()`` at which the last sample was sent.
        """
        return await self._track.enqueue(pcm16_16k)

    async def wait_agent_audio(
        self,
        start_after: float,
        silence_ms: int = 800,
        timeout: float = 15.0,  # noqa: ASYNC109 - part of the documented API
        *,
        threshold_dbfs: float = DEFAULT_THRESHOLD_DBFS,
    ) -> tuple[float, float, bytes]:
        """Waits for the agent to speak after ``start_after`` and then fall silent.

        Args:
            start_after: Only frames received after this ``time.monotonic()`` count.
            silence_ms: Quiet audio received after the last loud frame that ends the answer.
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
        state = {"index": 0, "first": -1, "last": -1}

        def check() -> tuple[float, float, bytes] | None:
            index = state["index"]
            while index < len(frames):
                if frames[index][0] > start_after:
                    if self.agent_audio.level_dbfs(index) > threshold_dbfs:
                        if state["first"] < 0:
                            state["first"] = index
                        state["last"] = index
                    elif state["first"] >= 0 and index - state["last"] >= quiet_needed:
                        first, last = state["first"], state["last"]
                        pcm = b"".join(p for _, p in frames[first : last + 1])
                        return frames[first][0], frames[last][0], pcm
                index += 1
            state["index"] = index
            return None

        return await self._wait_until(check, timeout, "the agent's answer")

    async def hangup(self, wait_s: float = 3.0) -> None:
        """Tells the edge to end the call, waits for it to close (``wait_s`` at most), closes."""
        channel, pc = self.channel, self.pc
        if pc is not None and channel is not None and channel.readyState == "open":
            channel.send("hangup")
            # The edge forwards the worker's `ended` event, then closes the connection; closing
            # first could drop the message (SCTP is aborted on close).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._ended.wait()
        await self._shutdown()

    async def close(self) -> None:
        """Closes the connection without telling the edge first (like a lost network)."""
        await self._shutdown()

    async def _shutdown(self) -> None:
        self._track.stop()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.pc is not None:
            await self.pc.close()
        self._ended.set()
        self._notify()
