"""Cartesia Sonic over the TTS WebSocket, through the official ``cartesia`` SDK.

One WebSocket per process, opened in :meth:`CartesiaTTS.load` (which is also the key check: the
handshake answers 401 to a bad key) and reopened on the next turn if it drops. Each agent turn
is one Cartesia *context* (https://docs.cartesia.ai/api-reference/tts/websocket): every segment
(a speakable clause or sentence) is sent with ``continue: true`` as soon as the service has it,
followed by a manual flush, so the audio of each segment carries its own ``flush_id`` and ends
with ``flush_done`` (https://docs.cartesia.ai/use-the-api/tts-websocket/context-flushing-and-flush-i-ds).
Word timestamps (``add_timestamps``) are reported, not estimated. A barge-in sends
``{"context_id", "cancel": true}``; events that arrive for the context afterwards are dropped.
Audio comes back as raw ``pcm_s16le`` at the rate the caller of the service asked for, so the
service does not resample it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr

from voxmesh.credentials import rejected_key_error
from voxmesh.errors import ConfigError, ProviderError, VoxmeshError
from voxmesh_tts.providers.base import (
    SpeechPiece,
    StreamedPiece,
    TTSProvider,
    TTSStream,
    WordAligner,
)

if TYPE_CHECKING:
    from cartesia.lib._tts import AsyncTTSResourceConnection

log = logging.getLogger("voxmesh.tts.cartesia")

SETTING_ENV = "VOXMESH_TTS_API_KEY"
VENDOR_ENV = "CARTESIA_API_KEY"
DEFAULT_MODEL = "sonic-2"
#: The voice of Cartesia's API examples; agents normally name their own.
DEFAULT_VOICE = "a0e99841-438c-4a64-b679-ae501e7d6091"
# Models before Sonic 3 take speed as a coarse enum; Sonic 3 and later take
# generation_config.speed in 0.6-1.5 (https://docs.cartesia.ai/build-with-cartesia/sonic-3/
# volume-speed-emotion).
_ENUM_SPEED_MODELS = ("sonic-2", "sonic-turbo", "sonic-english", "sonic-multilingual")
_CLOSE_TIMEOUT_S = 1.0


def websocket_urls(base_url: str) -> tuple[str | None, str | None]:
    """Splits the ``base_url`` setting into the SDK's HTTP and WebSocket base URLs.

    Empty means Cartesia's production URLs (the SDK's defaults). The SDK would turn any HTTP
    base into ``wss://``, so a plain-text local server needs its ``ws://`` URL given as well.

    Raises:
        ConfigError: Not an http(s) or ws(s) URL.
    """
    if not base_url:
        return None, None
    parts = urlsplit(base_url)
    pairs = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
    if parts.scheme not in pairs or not parts.netloc:
        raise ConfigError(f"VOXMESH_TTS_BASE_URL must be an http(s):// or ws(s):// URL, got "
                          f"{base_url!r}")
    http_scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return (urlunsplit(parts._replace(scheme=http_scheme)),
            urlunsplit(parts._replace(scheme=pairs[parts.scheme])))


class _RedactingLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The WebSocket library's logger, with the key masked: it logs handshake headers at DEBUG."""

    def __init__(self, logger: logging.Logger, secret: str) -> None:
        super().__init__(logger, {})
        self._secret = secret

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if self.isEnabledFor(level):
            text = str(msg) % args if args else str(msg)
            self.logger.log(level, text.replace(self._secret, "**********"), **kwargs)


def _request_options(
    *, context_id: str, sample_rate: int, voice: str, model: str, language: str,
    speaking_rate: float,
) -> dict[str, Any]:
    """The fields every generation request of a context repeats unchanged."""
    request: dict[str, Any] = {
        "context_id": context_id,
        "model_id": model,
        "voice": {"mode": "id", "id": voice},
        "output_format": {"container": "raw", "encoding": "pcm_s16le",
                          "sample_rate": sample_rate},
        "add_timestamps": True,
    }
    if language:
        request["language"] = language.split("-")[0].lower()  # Cartesia takes "en", not "en-US"
    if abs(speaking_rate - 1.0) > 1e-3:
        if model.startswith(_ENUM_SPEED_MODELS):
            if speaking_rate < 0.85 or speaking_rate > 1.15:
                request["speed"] = "slow" if speaking_rate < 1.0 else "fast"
        else:
            request["generation_config"] = {"speed": min(1.5, max(0.6, speaking_rate))}
    return request


@dataclass
class _Segment:
    id: int
    aligner: WordAligner
    #: Context audio before this segment's first sample, in ms; set by its first event.
    start_ms: float | None = None
    done: bool = False


class CartesiaStream(TTSStream):
    """One Cartesia context: the segments of one agent turn."""

    provider: CartesiaTTS

    def __init__(self, provider: CartesiaTTS, *, sample_rate: int, voice: str, model: str,
                 language: str, speaking_rate: float) -> None:
        """Creates the context and starts its sender (which connects if needed)."""
        super().__init__(provider, sample_rate)
        self.context_id = uuid.uuid4().hex
        self._request = _request_options(
            context_id=self.context_id, sample_rate=sample_rate, voice=voice, model=model,
            language=language, speaking_rate=speaking_rate)
        self.connection: AsyncTTSResourceConnection | None = None
        self._outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._inbox: asyncio.Queue[Any] = asyncio.Queue()
        self._segments: list[_Segment] = []
        self._ready: deque[StreamedPiece] = deque()
        self._context_ms = 0.0
        self._sent_any = False
        self._input_ended = False
        self._cancelled = False
        self._ended = False
        self._sender = asyncio.create_task(self._send(), name=f"cartesia-send-{self.context_id}")

    def push_text(self, segment: int, text: str) -> None:
        """Sends the segment with ``continue: true``, then a flush that closes it."""
        if self._cancelled or self._input_ended:
            return
        self._segments.append(_Segment(segment, WordAligner(text)))
        # Transcripts of a context are joined verbatim, so each one ends with a space.
        self._outbox.put_nowait({**self._request, "transcript": text + " ", "continue": True})
        self._outbox.put_nowait({**self._request, "transcript": "", "continue": True,
                                 "flush": True})

    def end_input(self) -> None:
        """Closes the context (``continue: false``); Cartesia answers ``done`` at the end."""
        if self._cancelled or self._input_ended:
            return
        self._input_ended = True
        self._outbox.put_nowait({**self._request, "transcript": "", "continue": False})

    def cancel(self) -> None:
        """Drops unsent text and tells Cartesia to stop the context."""
        if self._cancelled:
            return
        self._cancelled = True
        while not self._outbox.empty():
            self._outbox.get_nowait()
        if self._sent_any and not self._ended:
            self._outbox.put_nowait({"context_id": self.context_id, "cancel": True})
        self._outbox.put_nowait(None)
        self._inbox.put_nowait(None)  # wakes a reader waiting for the next event

    async def aclose(self) -> None:
        """Cancels the context if it is still generating, then stops the sender."""
        finished = self._input_ended and all(segment.done for segment in self._segments)
        if not (self._ended or finished):
            self.cancel()
        else:
            self._outbox.put_nowait(None)
        done, _ = await asyncio.wait({self._sender}, timeout=_CLOSE_TIMEOUT_S)
        if not done:
            self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)
        self.provider.detach(self)

    def deliver(self, item: Any) -> None:
        """Called by the connection's reader with an event or the connection's failure."""
        self._inbox.put_nowait(item)

    async def _send(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            connection = await self.provider.attach(self)
            while (message := await self._outbox.get()) is not None:
                await connection.send(cast(Any, message))
                self._sent_any = True
        except asyncio.CancelledError:
            raise
        except ConnectionClosed:
            # The connection's reader reports the closure to this stream, after the events
            # that arrived before it; reporting it here could overtake that audio.
            if self.connection is None:
                self.deliver(ProviderError("cartesia closed the connection", component="cartesia",
                                           reason="PROVIDER_DISCONNECTED", retryable=True))
        except Exception as exc:  # noqa: BLE001 - handed to the reading side, which raises it
            self.deliver(exc)

    async def _next_piece(self) -> StreamedPiece | None:
        while not self._ready:
            if self._cancelled or self._ended:
                return None
            item = await self._inbox.get()
            if self._cancelled:
                return None
            if isinstance(item, BaseException):
                raise item
            self._handle(item)
        return self._ready.popleft()

    def _handle(self, event: Any) -> None:
        kind = getattr(event, "type", "")
        if kind == "chunk":
            segment = self._segment_for(event.flush_id)
            if segment is not None:
                self._start(segment)
                pcm = event.audio or b""
                self._context_ms += len(pcm) * 1000 / (2 * self.sample_rate)
                self._ready.append(StreamedPiece(segment.id, pcm16=pcm))
            if event.done:
                self._finish()
        elif kind == "timestamps":
            self._timestamps(event)
        elif kind == "flush_done":
            segment = self._segment_for(event.flush_id)
            if segment is not None:
                self._close_through(segment)
        elif kind == "done":
            self._finish()
        elif kind == "error":
            raise self.provider.event_error(event)

    def _segment_for(self, flush_id: int | None) -> _Segment | None:
        """The segment an event belongs to: by flush id, else the oldest one still open."""
        if flush_id is not None and 1 <= flush_id <= len(self._segments):
            segment = self._segments[flush_id - 1]
            return None if segment.done else segment
        return next((s for s in self._segments if not s.done), None)

    def _start(self, segment: _Segment) -> None:
        # Audio of a later segment means the earlier ones are complete (pieces stay in order).
        for earlier in self._segments:
            if earlier is segment:
                break
            if not earlier.done:
                self._close(earlier)
        if segment.start_ms is None:
            segment.start_ms = self._context_ms

    def _timestamps(self, event: Any) -> None:
        stamps = event.word_timestamps
        segment = self._segment_for(event.flush_id)
        if stamps is None or segment is None:
            return
        self._start(segment)
        offset = segment.start_ms or 0.0
        # Timestamps count from the start of the context's audio; pieces count per segment.
        words = [
            (segment.aligner.match(word), max(0, round(start * 1000 - offset)),
             max(0, round(end * 1000 - offset)))
            for word, start, end in zip(stamps.words, stamps.start, stamps.end, strict=False)
        ]
        if words:
            self._ready.append(StreamedPiece(segment.id, words=words))

    def _close(self, segment: _Segment) -> None:
        segment.done = True
        self._ready.append(StreamedPiece(segment.id, last=True))

    def _close_through(self, segment: _Segment) -> None:
        for candidate in self._segments:
            if not candidate.done:
                self._close(candidate)
            if candidate is segment:
                break

    def _finish(self) -> None:
        for segment in self._segments:
            if not segment.done:
                self._close(segment)
        self._ended = True
        self.provider.detach(self)


class CartesiaTTS(TTSProvider):
    """Cartesia Sonic, streaming text in and audio with word timestamps out."""

    name = "cartesia"
    streaming = True
    default_voice = DEFAULT_VOICE
    #: Rate of :meth:`synthesize` (the streaming path uses the rate the stream asks for).
    sample_rate = 24_000

    def __init__(self, *, api_key: SecretStr, base_url: str = "",
                 connect_timeout_s: float = 5.0) -> None:
        """Creates the provider; :meth:`load` connects.

        Args:
            api_key: Cartesia API key (sent as ``Authorization: Bearer``, never logged).
            base_url: Empty for Cartesia's production API, else an http(s) or ws(s) base URL.
            connect_timeout_s: Time to open the WebSocket, per attempt.

        Raises:
            ConfigError: The SDK is missing or the URL is malformed.
        """
        super().__init__()
        try:
            from cartesia import AsyncCartesia
        except ImportError:
            raise ConfigError("cartesia: the Cartesia SDK is not installed; install "
                              "voxmesh[cloud] (pip install 'cartesia>=2')") from None
        http_url, ws_url = websocket_urls(base_url)
        secret = api_key.get_secret_value()
        self._client = AsyncCartesia(api_key=secret, base_url=http_url,
                                     websocket_base_url=ws_url, max_retries=0)
        self._connect_options = {
            "open_timeout": connect_timeout_s,
            "logger": _RedactingLogger(logging.getLogger("voxmesh.tts.cartesia.websocket"),
                                       secret),
        }
        self._connection: AsyncTTSResourceConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._connect_lock = asyncio.Lock()
        self._streams: dict[str, CartesiaStream] = {}

    def __repr__(self) -> str:
        """Names the provider without its key."""
        return f"CartesiaTTS(connected={self._connection is not None})"

    async def load(self) -> None:
        """Opens the WebSocket, which checks the key (a rejected key raises here)."""
        await self._connected()

    async def aclose(self) -> None:
        """Closes the WebSocket and stops its reader."""
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._connection is not None:
            connection, self._connection = self._connection, None
            await asyncio.gather(connection.close(), return_exceptions=True)
        await super().aclose()

    def _open_stream(self, *, sample_rate: int, voice: str, model: str, language: str,
                     speaking_rate: float) -> TTSStream:
        return CartesiaStream(self, sample_rate=sample_rate, voice=voice,
                              model=model or DEFAULT_MODEL, language=language,
                              speaking_rate=speaking_rate)

    async def _synthesize(self, text: str, voice: str, speaking_rate: float) -> list[SpeechPiece]:
        stream = self.open_stream(sample_rate=self.sample_rate, voice=voice,
                                  speaking_rate=speaking_rate)
        try:
            stream.push_text(0, text)
            stream.end_input()
            pcm, words = bytearray(), []
            while (piece := await stream.next_piece()) is not None:
                pcm += piece.pcm16
                words += piece.words
                if piece.last:
                    break
            return [SpeechPiece(pcm16=bytes(pcm), words=words)]
        finally:
            await stream.aclose()

    async def attach(self, stream: CartesiaStream) -> AsyncTTSResourceConnection:
        """Routes the stream's context to it; connects first if there is no live WebSocket."""
        connection = await self._connected()
        stream.connection = connection
        self._streams[stream.context_id] = stream
        return connection

    def detach(self, stream: CartesiaStream) -> None:
        """Stops routing events of the stream's context (later ones are dropped)."""
        if self._streams.get(stream.context_id) is stream:
            del self._streams[stream.context_id]

    async def _connected(self) -> AsyncTTSResourceConnection:
        async with self._connect_lock:
            if self._connection is None:
                connection = await self.with_retries(self._connect)
                self._connection = connection
                self._reader = asyncio.create_task(self._read(connection),
                                                   name="cartesia-reader")
            return self._connection

    async def _connect(self) -> AsyncTTSResourceConnection:
        manager = self._client.tts.websocket_connect(
            websocket_connection_options=cast(Any, self._connect_options))
        return await manager.enter()

    async def _read(self, connection: AsyncTTSResourceConnection) -> None:
        """Routes events to their contexts until the WebSocket closes, then fails its streams."""
        failure: Exception
        try:
            while True:
                event = await connection.recv()
                context_id = getattr(event, "context_id", None)
                if context_id is None:  # a connection-wide error concerns every context
                    for stream in list(self._streams.values()):
                        stream.deliver(event)
                elif (target := self._streams.get(context_id)) is not None:
                    target.deliver(event)
                # Cartesia sends faster than real time; without a yield a burst of queued
                # messages would all be parsed before any turn sees its first chunk.
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a closed socket or garbage: same outcome
            failure = exc
        if self._connection is connection:
            self._connection = None
        error = self.translate_error(failure)
        log.warning("cartesia connection lost (%s); open turns fall over", error.reason)
        for stream in [s for s in self._streams.values() if s.connection is connection]:
            self.detach(stream)
            stream.deliver(error)

    def event_error(self, event: Any) -> VoxmeshError:
        """The error for an ``{"type": "error"}`` event."""
        status = getattr(event, "status_code", None)
        extra = getattr(event, "model_extra", None) or {}
        detail = ": ".join(str(part) for part in (getattr(event, "title", None),
                                                   getattr(event, "message", None)) if part)
        return self._status_error(status, detail or str(extra.get("error", "unknown error")))

    def _status_error(self, status: int | None, detail: str) -> VoxmeshError:
        if status in (401, 403):
            return rejected_key_error(self.name, SETTING_ENV, VENDOR_ENV)
        if status is None or status == 429 or status >= 500:
            return ProviderError(f"cartesia failed (HTTP {status}): {detail}",
                                 reason="PROVIDER_UNAVAILABLE", component=self.name,
                                 retryable=True)
        return ProviderError(f"cartesia rejected the request (HTTP {status}): {detail}",
                             reason="PROVIDER_REJECTED_REQUEST", component=self.name,
                             retryable=False)

    def translate_error(self, exc: BaseException) -> VoxmeshError:
        """Rejected keys are fatal; dropped connections, 429, 5xx and timeouts are retryable."""
        from cartesia import APIConnectionError, APIStatusError
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

        if isinstance(exc, VoxmeshError):
            return exc
        if isinstance(exc, InvalidStatus):
            return self._status_error(exc.response.status_code, "WebSocket handshake refused")
        if isinstance(exc, APIStatusError):
            return self._status_error(exc.status_code, type(exc).__name__)
        if isinstance(exc, ConnectionClosed):
            code = exc.rcvd.code if exc.rcvd is not None else "none"
            return ProviderError(f"cartesia closed the connection (close code {code})",
                                 reason="PROVIDER_DISCONNECTED", component=self.name,
                                 retryable=True)
        if isinstance(exc, (OSError, TimeoutError, InvalidHandshake, APIConnectionError)):
            return ProviderError(f"cartesia is unreachable: {type(exc).__name__}: {exc}",
                                 reason="PROVIDER_UNAVAILABLE", component=self.name,
                                 retryable=True)
        return super().translate_error(exc)
