"""A local server that speaks Cartesia's TTS WebSocket protocol, for tests and benchmarks.

The official ``cartesia`` SDK talks to it unmodified through its base-URL settings. Message
shapes follow Cartesia's documentation:

* handshake ``GET /tts/websocket``; the key in ``Authorization: Bearer``, ``X-API-Key`` or the
  ``api_key`` query parameter, the version in the ``Cartesia-Version`` header or the
  ``cartesia_version`` query parameter (https://docs.cartesia.ai/use-the-api/api-conventions,
  https://docs.cartesia.ai/reference/web-socket/stream-speech/stream-speech); a bad key is
  refused with HTTP 401;
* requests ``{model_id, transcript, voice: {mode: "id", id}, output_format: {container: "raw",
  encoding: "pcm_s16le", sample_rate}, context_id, continue, flush, add_timestamps, language}``
  and ``{context_id, cancel: true}``; responses ``chunk`` (base64 ``data``, ``done``,
  ``status_code``, ``step_time``, ``context_id``, ``flush_id``), ``timestamps``
  (``word_timestamps: {words, start, end}`` in seconds from the start of the context's audio),
  ``flush_done``, ``done`` and ``error`` (https://docs.cartesia.ai/api-reference/tts/websocket,
  https://docs.cartesia.ai/2024-11-13/api-reference/tts/websocket);
* contexts and continuations: transcripts of a context are joined verbatim
  (https://docs.cartesia.ai/api-reference/tts/working-with-web-sockets/contexts); a manual flush
  (``flush: true``, empty transcript) generates what is buffered and increments ``flush_id``
  (https://docs.cartesia.ai/use-the-api/tts-websocket/context-flushing-and-flush-i-ds).

The fake generates buffered text on a flush or on ``continue: false`` (Cartesia may also start
earlier on its own). Audio comes from a pluggable backend: :class:`ToneBackend` (fast,
deterministic) or :class:`PiperBackend` (real speech, so an STT can check what a caller
heard); word timestamps are estimated from the text. Test controls: :attr:`FakeCartesia.api_key`
(anything else is refused), :attr:`~FakeCartesia.first_chunk_delay_s`,
:meth:`~FakeCartesia.drop_after` (end the TCP connection mid-stream),
:attr:`~FakeCartesia.realtime_factor` (pace the chunks) and :attr:`~FakeCartesia.fail_next`
(answer the next generation with an error event).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

SAMPLE_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
# The fake's own handshake logging would echo the test key; keep it out of captured logs.
_quiet = logging.getLogger("fake_cartesia.server")
_quiet.disabled = True


class AudioBackend(Protocol):
    """Turns text into PCM16 mono audio with (word, start_ms, end_ms) timings."""

    async def render(self, text: str, sample_rate: int) -> tuple[bytes, list[tuple[str, int, int]]]:
        """Audio for ``text`` at ``sample_rate``."""
        ...


class ToneBackend:
    """A tone burst per word at a fixed speaking rate (the latency-model provider's audio)."""

    def __init__(self, words_per_minute: float = 180.0) -> None:
        """Speaks at ``words_per_minute``."""
        self.words_per_minute = words_per_minute

    async def render(self, text: str, sample_rate: int) -> tuple[bytes, list[tuple[str, int, int]]]:
        """Tone audio; a few ms of numpy, done inline."""
        from voxmesh_tts.providers.base import estimate_word_timings
        from voxmesh_tts.providers.latency_model import render_tone, speech_duration_ms

        duration_ms = speech_duration_ms(text, self.words_per_minute)
        words = estimate_word_timings(text, duration_ms)
        return render_tone(words, duration_ms, sample_rate), words


class PiperBackend:
    """Real speech from the local Piper voice (``voxmesh_tts.providers.piper_local``)."""

    def __init__(self) -> None:
        """Creates the backend; :meth:`load` loads the voice."""
        from voxmesh_tts.providers.piper_local import PiperLocalTTS

        self._piper = PiperLocalTTS()

    async def load(self) -> None:
        """Loads the voice (about 2 s)."""
        await self._piper.load()

    async def aclose(self) -> None:
        """Releases the voice's thread."""
        await self._piper.aclose()

    async def render(self, text: str, sample_rate: int) -> tuple[bytes, list[tuple[str, int, int]]]:
        """Piper audio resampled to ``sample_rate``, with word timings spread over it."""
        from voxmesh.audio import StreamResampler
        from voxmesh_tts.providers.base import estimate_word_timings

        pieces = [piece async for piece in self._piper.synthesize(text)]
        pcm = b"".join(piece.pcm16 for piece in pieces)
        pcm = StreamResampler(self._piper.sample_rate, sample_rate).push(pcm, last=True)
        return pcm, estimate_word_timings(text, len(pcm) * 1000 // (2 * sample_rate))


@dataclass
class Handshake:
    """One connection attempt as the server saw it."""

    headers: dict[str, str]
    query: dict[str, str]
    accepted: bool


@dataclass
class _Context:
    id: str
    connection: ServerConnection
    request: dict[str, Any]
    pending: str = ""
    flush_id: int = 1
    audio_ms: float = 0.0
    chunks_sent: int = 0
    cancelled: bool = False
    ended: bool = False
    jobs: asyncio.Queue[tuple[str, str, int]] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None


class FakeCartesia:
    """The fake server. Use ``async with FakeCartesia(ToneBackend()) as fake``.

    Attributes:
        api_key: The only key accepted.
        first_chunk_delay_s: Delay before the first chunk of every context.
        realtime_factor: Audio seconds sent per wall second; None sends as fast as rendered.
        fail_next: ``(status_code, title)``: the next generation request gets an error event.
        messages: Every request message received, in order.
        handshakes: Every connection attempt.
        contexts: Context ids, in order of their first message.
        timestamps: Word timestamps sent per context: (word, start_s, end_s) from the start of
            the context's audio.
        drops: Connections dropped on command.
    """

    def __init__(self, backend: AudioBackend, *, api_key: str = "test-cartesia-key",
                 chunk_ms: int = 40) -> None:
        """Creates the server; :meth:`start` listens on a free loopback port."""
        self.backend = backend
        self.api_key = api_key
        self.chunk_ms = chunk_ms
        self.first_chunk_delay_s = 0.0
        self.realtime_factor: float | None = None
        self.fail_next: tuple[int, str] | None = None
        self.messages: list[dict[str, Any]] = []
        self.handshakes: list[Handshake] = []
        self.contexts: list[str] = []
        self.timestamps: dict[str, list[tuple[str, float, float]]] = {}
        self.drops = 0
        self._drop_after: int | None = None
        self._drop_in_context = 0
        self._live: dict[str, _Context] = {}
        self._done_chunks: dict[str, int] = {}
        self._server: Server | None = None
        self._port = 0

    @property
    def url(self) -> str:
        """Base URL for the SDK (``VOXMESH_TTS_BASE_URL``)."""
        return f"http://127.0.0.1:{self._port}"

    @property
    def ws_url(self) -> str:
        """URL of the TTS WebSocket."""
        return f"ws://127.0.0.1:{self._port}/tts/websocket"

    async def __aenter__(self) -> FakeCartesia:
        """Starts the server."""
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Stops the server."""
        await self.stop()

    async def start(self) -> None:
        """Listens on a free loopback port."""
        self._server = await serve(self._serve, "127.0.0.1", 0,
                                   process_request=self._check_handshake, logger=_quiet,
                                   compression=None)
        self._port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Closes every connection and stops listening."""
        for context in list(self._live.values()):
            await self._stop_context(context)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def drop_after(self, chunks: int, *, context_index: int | None = None) -> None:
        """Ends the connection (no close frame) after sending ``chunks`` more audio chunks.

        Args:
            chunks: Chunks to send first.
            context_index: Count only chunks of the context with this index in
                :attr:`contexts` (0 is the first context ever opened); None counts any.
        """
        self._drop_after = chunks
        self._drop_in_context = -1 if context_index is None else context_index

    def requests(self, context_id: str) -> list[dict[str, Any]]:
        """Generation requests of one context, in order."""
        return [m for m in self.messages
                if m.get("context_id") == context_id and "transcript" in m]

    def cancelled(self) -> list[str]:
        """Context ids the client cancelled, in order."""
        return [m["context_id"] for m in self.messages if m.get("cancel")]

    def chunks_sent(self, context_id: str) -> int:
        """Audio chunks sent for a context so far."""
        context = self._live.get(context_id)
        return context.chunks_sent if context is not None else self._done_chunks.get(
            context_id, 0)

    def _check_handshake(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        headers = {key.lower(): value for key, value in request.headers.raw_items()}
        auth = headers.get("authorization", "")
        key = (auth[7:] if auth.lower().startswith("bearer ") else headers.get("x-api-key")
               or query.get("api_key", ""))
        version = query.get("cartesia_version") or headers.get("cartesia-version", "")
        accepted = url.path == "/tts/websocket" and key == self.api_key and bool(version)
        self.handshakes.append(Handshake(headers, query, accepted))
        if url.path != "/tts/websocket":
            return connection.respond(HTTPStatus.NOT_FOUND, "Not found\n")
        if key != self.api_key:
            return connection.respond(HTTPStatus.UNAUTHORIZED, "Invalid API key\n")
        if not version:
            return connection.respond(HTTPStatus.BAD_REQUEST, "Cartesia-Version is required\n")
        return None

    async def _serve(self, connection: ServerConnection) -> None:
        try:
            async for raw in connection:
                message = json.loads(raw)
                self.messages.append(message)
                await self._on_message(connection, message)
        except ConnectionClosed:
            pass
        finally:
            for context in [c for c in self._live.values() if c.connection is connection]:
                await self._stop_context(context)

    async def _on_message(self, connection: ServerConnection, message: dict[str, Any]) -> None:
        context_id = str(message.get("context_id") or uuid.uuid4())
        if message.get("cancel"):
            if (context := self._live.get(context_id)) is not None:
                context.cancelled = True
                await self._stop_context(context)
            return
        problem = _invalid(message)
        if problem is not None:
            await _send(connection, _error(context_id, 400, "Invalid request", problem))
            return
        if self.fail_next is not None:
            status, title = self.fail_next
            self.fail_next = None
            await _send(connection, _error(context_id, status, title, "injected by the test"))
            return
        context = self._live.get(context_id)
        if context is None:
            if context_id in self.contexts:
                return  # a cancelled or finished context: nothing more is generated
            context = _Context(context_id, connection, message)
            self.contexts.append(context_id)
            self._live[context_id] = context
            context.task = asyncio.create_task(self._generate(context))
        context.pending += str(message.get("transcript", ""))
        if message.get("flush"):
            context.jobs.put_nowait(("flush", context.pending, context.flush_id))
            context.pending = ""
            context.flush_id += 1
        if not message.get("continue", False):
            context.jobs.put_nowait(("end", context.pending, context.flush_id))
            context.pending = ""

    async def _generate(self, context: _Context) -> None:
        rate = int(context.request["output_format"]["sample_rate"])
        first = True
        try:
            while True:
                kind, text, flush_id = await context.jobs.get()
                if text.strip():
                    pcm, words = await self.backend.render(text.strip(), rate)
                    if first and self.first_chunk_delay_s:
                        await asyncio.sleep(self.first_chunk_delay_s)
                    first = False
                    if not await self._stream_audio(context, pcm, words, rate, flush_id):
                        return
                if kind == "flush":
                    await _send(context.connection, {
                        "type": "flush_done", "done": False, "flush_done": True,
                        "flush_id": flush_id, "status_code": 206, "context_id": context.id})
                else:
                    await _send(context.connection, {"type": "done", "done": True,
                                                     "status_code": 206,
                                                     "context_id": context.id})
                    context.ended = True
                    self._forget(context)
                    return
        except ConnectionClosed:
            return

    async def _stream_audio(self, context: _Context, pcm: bytes, words: list[tuple[str, int, int]],
                            rate: int, flush_id: int) -> bool:
        """Sends chunks with the timestamps of the words they complete; False if dropped."""
        chunk_bytes = rate * 2 * self.chunk_ms // 1000
        offset_ms = context.audio_ms
        pending = list(words)
        for start in range(0, len(pcm), chunk_bytes):
            data = pcm[start : start + chunk_bytes]
            if self.realtime_factor:
                await asyncio.sleep(len(data) / (2 * rate) / self.realtime_factor)
            await _send(context.connection, {
                "type": "chunk", "data": base64.b64encode(data).decode(), "done": False,
                "status_code": 206, "step_time": 1.0, "context_id": context.id,
                "flush_id": flush_id})
            context.chunks_sent += 1
            if self._should_drop(context):
                await self._abort(context.connection)
                return False
            end_ms = (start + len(data)) * 1000 / (2 * rate)
            done = [w for w in pending if w[2] <= end_ms + 1]
            pending = pending[len(done):]
            if done:
                await self._send_timestamps(context, flush_id, done, offset_ms)
        if pending:
            await self._send_timestamps(context, flush_id, pending, offset_ms)
        context.audio_ms += len(pcm) * 1000 / (2 * rate)
        return True

    async def _send_timestamps(self, context: _Context, flush_id: int,
                               words: list[tuple[str, int, int]], offset_ms: float) -> None:
        message = _timestamps(context.id, flush_id, words, offset_ms)
        stamps = message["word_timestamps"]
        self.timestamps.setdefault(context.id, []).extend(
            zip(stamps["words"], stamps["start"], stamps["end"], strict=True))
        await _send(context.connection, message)

    async def _abort(self, connection: ServerConnection) -> None:
        """Ends the TCP stream without a WebSocket close frame (the client sees close 1006).

        A half-close (FIN after the data already written) rather than a close: closing a socket
        with unread input makes the kernel send a reset, and the client's kernel then discards
        chunks it had received but not yet handed over, so what the client saw before the drop
        would vary from run to run.
        """
        self.drops += 1
        for context in [c for c in self._live.values() if c.connection is connection]:
            await self._stop_context(context)  # nothing more goes out on this connection
        transport = connection.transport
        if transport.can_write_eof():
            transport.write_eof()
        else:  # pragma: no cover - TCP on loopback can always half-close
            transport.close()

    def _should_drop(self, context: _Context) -> bool:
        if self._drop_after is None:
            return False
        if self._drop_in_context >= 0 and (
                self._drop_in_context >= len(self.contexts)
                or self.contexts[self._drop_in_context] != context.id):
            return False
        self._drop_after -= 1
        if self._drop_after > 0:
            return False
        self._drop_after = None
        return True

    def _forget(self, context: _Context) -> None:
        self._done_chunks[context.id] = context.chunks_sent
        self._live.pop(context.id, None)

    async def _stop_context(self, context: _Context) -> None:
        self._forget(context)
        if context.task is not None and context.task is not asyncio.current_task():
            context.task.cancel()
            await asyncio.gather(context.task, return_exceptions=True)


def _invalid(message: dict[str, Any]) -> str | None:
    """Why a generation request is malformed, or None."""
    for name in ("model_id", "voice", "output_format", "transcript"):
        if name not in message:
            return f"missing field {name!r}"
    voice = message["voice"]
    if not (isinstance(voice, str) or (isinstance(voice, dict) and voice.get("id"))):
        return "voice must be {'mode': 'id', 'id': ...}"
    fmt = message["output_format"]
    if fmt.get("container") != "raw" or fmt.get("encoding") != "pcm_s16le":
        return "this fake only produces raw pcm_s16le"
    if fmt.get("sample_rate") not in SAMPLE_RATES:
        return f"sample_rate must be one of {SAMPLE_RATES}"
    return None


def _timestamps(context_id: str, flush_id: int, words: list[tuple[str, int, int]],
                offset_ms: float) -> dict[str, Any]:
    # Cartesia reports bare words ("Hello, world!" -> "Hello", "world").
    return {"type": "timestamps", "done": False, "status_code": 206, "context_id": context_id,
            "flush_id": flush_id, "word_timestamps": {
                "words": [re.sub(r"^\W+|\W+$", "", word) or word for word, _, _ in words],
                "start": [(offset_ms + start) / 1000 for _, start, _ in words],
                "end": [(offset_ms + end) / 1000 for _, _, end in words]}}


def _error(context_id: str, status: int, title: str, message: str) -> dict[str, Any]:
    return {"type": "error", "done": True, "status_code": status, "context_id": context_id,
            "title": title, "message": message, "error": f"{title}: {message}"}


async def _send(connection: ServerConnection, message: dict[str, Any]) -> None:
    await connection.send(json.dumps(message))
