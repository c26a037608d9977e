"""Deepgram live streaming STT (the ``/v1/listen`` WebSocket) through the official deepgram-sdk.

How the service's stream maps onto Deepgram's (https://developers.deepgram.com/reference/
speech-to-text/listen-streaming):

* audio is forwarded as it arrives, in its own encoding: PCM16 as ``encoding=linear16`` at its
  rate, G.711 mu-law as ``encoding=mulaw&sample_rate=8000`` (no resampling);
* ``Results`` (interim and final) are grouped into the client's utterances by word time (see
  :mod:`voxmesh_stt.providers.utterance`); every change of the open utterance's text is an
  :class:`~voxmesh_stt.providers.base.InterimResult`;
* ``speech_final`` is an ENDPOINT hint, ``UtteranceEnd`` an UTTERANCE_END hint,
  ``SpeechStarted`` (``vad_events=true``) a SPEECH_STARTED hint;
* a final Finalize sends Deepgram's ``Finalize`` and answers with the final words up to that
  point once a result covers them (``from_finalize``, or any final reaching that far); a
  speculative Finalize answers at once with the finals plus the current interim, sending
  nothing (or, with ``speculative_flush``, flushes like a final one but keeps the utterance
  open); Reset forgets the open utterance's words;
* ``KeepAlive`` goes out whenever nothing was sent for ``keepalive_s`` (Deepgram closes a
  stream after 10 s without data, NET-0001); ``CloseStream`` ends the stream.

The SDK is an optional extra (``pip install 'voxmesh[cloud]'``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from voxmesh.credentials import rejected_key_error
from voxmesh.errors import ConfigError, ProviderError, VoxmeshError
from voxmesh_stt.providers.base import (
    InterimResult,
    ProviderUnavailableError,
    RecognitionResult,
    SpeechEventKind,
    SpeechHint,
    StreamEvent,
    StreamingSTTProvider,
    StreamOptions,
    STTStream,
    WordTiming,
)
from voxmesh_stt.providers.utterance import (
    TimedWord,
    UtteranceText,
    join_words,
    mean_confidence,
)

if TYPE_CHECKING:
    from deepgram import DeepgramClientEnvironment
    from deepgram.listen.v1.socket_client import AsyncV1SocketClient

log = logging.getLogger("voxmesh.stt.deepgram")

SETTING_ENV = "VOXMESH_STT_API_KEY"
VENDOR_ENV = "DEEPGRAM_API_KEY"
#: Audio shorter than this between the last final and a Finalize holds nothing to wait for.
_EPSILON_S = 0.02
#: Results reaching this close to the audio sent mean Deepgram keeps up with the stream.
_CAUGHT_UP_S = 0.5
_FINALIZE = "Finalize"
_CLOSE_STREAM = "CloseStream"
_INSTALL_HINT = "the deepgram provider needs deepgram-sdk: pip install 'voxmesh[cloud]'"


@dataclass(frozen=True)
class DeepgramOptions:
    """Recognition settings of the Deepgram provider.

    Attributes:
        model: Deepgram model id.
        language: Language when the stream's config has none.
        endpointing_ms: Silence that makes Deepgram close an utterance (``speech_final``);
            0 disables endpointing.
        utterance_end_ms: Word gap that makes Deepgram send ``UtteranceEnd``; 0 disables it.
        vad_events: Ask for ``SpeechStarted`` messages.
        smart_format: Deepgram's formatting of numbers, dates and punctuation.
        keepalive_s: Idle time after which a ``KeepAlive`` is sent (Deepgram's limit is 10 s).
        finalize_timeout_s: Longest wait for the result of a ``Finalize`` while interim words
            are pending; then the interim words are taken as they are.
        quiet_finalize_timeout_s: The same wait when no interim words are pending and
            Deepgram's results keep up with the audio: Deepgram may not answer a ``Finalize``
            that has no significant audio to flush.
        connect_timeout_s: Longest wait for the WebSocket handshake.
        speculative_flush: Answer a speculative Finalize like a final one (Deepgram's
            ``Finalize`` flushes the words so far) but keep the utterance open. Off: answer at
            once with the finals plus the current interim, sending nothing, which can miss the
            last words when Deepgram's interims lag behind the audio.
    """

    model: str = "nova-3"
    language: str = "en-US"
    endpointing_ms: int = 300
    utterance_end_ms: int = 1000
    vad_events: bool = True
    smart_format: bool = True
    keepalive_s: float = 4.0
    finalize_timeout_s: float = 1.5
    quiet_finalize_timeout_s: float = 0.3
    connect_timeout_s: float = 5.0
    speculative_flush: bool = False


def deepgram_environment(base_url: str) -> DeepgramClientEnvironment:
    """The SDK environment for ``base_url`` (empty: Deepgram's production endpoints).

    Args:
        base_url: ``https://host[:port][/prefix]`` or ``wss://…`` (``http``/``ws`` for a local
            server); the REST and WebSocket URLs are derived from it.

    Raises:
        ConfigError: An unsupported scheme.
    """
    from deepgram import DeepgramClientEnvironment

    if not base_url:
        return DeepgramClientEnvironment.PRODUCTION
    parts = urlsplit(base_url.rstrip("/"))
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.netloc:
        raise ConfigError(
            f"VOXMESH_STT_BASE_URL must look like https://host or wss://host, got {base_url!r}")
    secure = parts.scheme in ("https", "wss")
    location = parts.netloc + parts.path
    rest = f"{'https' if secure else 'http'}://{location}"
    socket = f"{'wss' if secure else 'ws'}://{location}"
    return DeepgramClientEnvironment(base=rest, production=socket, agent=socket, agent_rest=rest)


class DeepgramSTT(StreamingSTTProvider):
    """Deepgram streaming recognition (nova-3 by default)."""

    name = "deepgram"
    #: Retries of a failed connection happen within a turn: one, quickly, then fall over.
    max_attempts = 2

    def __init__(
        self, *, api_key: SecretStr, base_url: str = "", options: DeepgramOptions | None = None
    ) -> None:
        """Creates the provider; :meth:`load` checks the key.

        Args:
            api_key: Deepgram API key (see :func:`voxmesh.credentials.resolve_api_key`).
            base_url: Deepgram's URL; empty for production (see :func:`deepgram_environment`).
            options: Recognition settings.

        Raises:
            ConfigError: deepgram-sdk is not installed, or ``base_url`` is malformed.
        """
        super().__init__()
        try:
            from deepgram import AsyncDeepgramClient
        except ImportError as exc:  # pragma: no cover - the cloud extra is in every image
            raise ConfigError(_INSTALL_HINT) from exc
        self.options = options or DeepgramOptions()
        self.model = self.options.model
        self.base_url = base_url
        self._client = AsyncDeepgramClient(
            api_key=api_key.get_secret_value(), environment=deepgram_environment(base_url))

    def __repr__(self) -> str:
        return f"DeepgramSTT(model={self.model!r}, base_url={self.base_url or 'production'!r})"

    async def load(self) -> None:
        """Opens and closes one stream, so that a rejected key fails before SERVING.

        Raises:
            ProviderError: ``PROVIDER_AUTH_FAILED`` for a rejected key; a retryable error when
                Deepgram cannot be reached.
        """
        options = StreamOptions(encoding="linear16", sample_rate=16_000)

        async def check() -> None:
            async with self._connect(options) as socket:
                await socket.send_close_stream()

        await self.with_retries(check)
        log.info("deepgram: key accepted (%s, model %s)", self.base_url or "production",
                 self.model)

    def connect_params(self, options: StreamOptions) -> dict[str, Any]:
        """The query parameters of a stream (the SDK encodes lists as repeated parameters)."""
        settings = self.options
        params: dict[str, Any] = {
            "model": settings.model,
            "language": options.language or settings.language,
            "encoding": options.encoding,
            "sample_rate": options.sample_rate,
            "channels": 1,
            # Speculative finals and UtteranceEnd both need interim results.
            "interim_results": True,
            "punctuate": True,
            "smart_format": settings.smart_format,
            "vad_events": settings.vad_events,
            "endpointing": settings.endpointing_ms if settings.endpointing_ms > 0 else False,
        }
        if settings.utterance_end_ms > 0:
            params["utterance_end_ms"] = settings.utterance_end_ms
        if options.keyterms:
            if settings.model.startswith("nova-3"):
                params["keyterm"] = list(options.keyterms)
            else:
                log.debug("deepgram: keyterms need a nova-3 model; %s ignores them",
                          settings.model)
        return params

    @contextlib.asynccontextmanager
    async def _connect(self, options: StreamOptions) -> AsyncIterator[AsyncV1SocketClient]:
        async with contextlib.AsyncExitStack() as stack:
            async with asyncio.timeout(self.options.connect_timeout_s):
                socket = await stack.enter_async_context(
                    self._client.listen.v1.connect(**self.connect_params(options)))
            yield socket

    async def _open_stream(self, options: StreamOptions) -> STTStream:
        stack = AsyncExitStack()
        try:
            socket = await stack.enter_async_context(self._connect(options))
        except BaseException:
            await stack.aclose()
            raise
        return DeepgramStream(self, socket, stack, options)

    def translate_error(self, exc: BaseException) -> VoxmeshError:
        """Classifies SDK and WebSocket failures; messages never carry the key."""
        from deepgram.core.api_error import ApiError
        from websockets.exceptions import ConnectionClosed, InvalidHandshake

        if isinstance(exc, VoxmeshError):
            return exc
        if isinstance(exc, ApiError):
            status = exc.status_code or 0
            if status in (401, 403):
                return rejected_key_error(self.name, SETTING_ENV, VENDOR_ENV)
            if status == 429 or status >= 500:
                return ProviderUnavailableError(
                    f"deepgram refused the stream with HTTP {status}; another provider may answer",
                    reason="PROVIDER_RATE_LIMITED" if status == 429 else "PROVIDER_UNAVAILABLE",
                    component=self.name)
            return ProviderError(
                f"deepgram rejected the stream's parameters with HTTP {status} (check model "
                f"{self.model!r}, language and audio format)",
                reason="PROVIDER_REJECTED_REQUEST", component=self.name, retryable=False)
        if isinstance(exc, ConnectionClosed):
            code = exc.rcvd.code if exc.rcvd is not None else 1006
            reason = exc.rcvd.reason if exc.rcvd is not None else "no close frame"
            if code == 1008:  # DATA-0000: Deepgram could not decode the audio
                return ProviderError(
                    f"deepgram could not decode the audio (close {code}: {reason})",
                    reason="PROVIDER_REJECTED_AUDIO", component=self.name, retryable=False)
            return ProviderUnavailableError(
                f"deepgram closed the stream (close {code}: {reason})",
                reason="PROVIDER_DISCONNECTED", component=self.name)
        if isinstance(exc, (OSError, TimeoutError, InvalidHandshake)):
            return ProviderUnavailableError(
                f"deepgram is unreachable: {type(exc).__name__}",
                reason="PROVIDER_UNREACHABLE", component=self.name)
        return super().translate_error(exc)


@dataclass
class _PendingFinal:
    """A final Finalize waiting for Deepgram to finalize the audio up to ``end_s``."""

    start_s: float
    end_s: float
    future: asyncio.Future[RecognitionResult]
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


class DeepgramStream(STTStream):
    """One ``/v1/listen`` connection: a sender task, a receiver task and the utterance state."""

    provider: DeepgramSTT

    def __init__(self, provider: DeepgramSTT, socket: AsyncV1SocketClient,
                 exit_stack: AsyncExitStack, options: StreamOptions) -> None:
        """Starts sending and receiving on an open connection (the stream owns both tasks)."""
        super().__init__(provider)
        self._socket = socket
        self._exit_stack = exit_stack
        self._settings = provider.options
        self._bytes_per_s = options.bytes_per_second
        self._sent_bytes = 0
        self._heard_to_s = 0.0
        self._text = UtteranceText()
        self._pending: deque[_PendingFinal] = deque()
        self._outbox: asyncio.Queue[bytes | str] = asyncio.Queue()
        self._events_out: asyncio.Queue[StreamEvent | None] = asyncio.Queue()
        self._interim_text = ""
        self._ending = False
        self._error: VoxmeshError | None = None
        self._sender = asyncio.create_task(self._send_loop(), name="deepgram-send")
        self._receiver = asyncio.create_task(self._receive_loop(), name="deepgram-receive")

    # ------------------------------------------------------------------ the service's side

    def send_audio(self, data: bytes) -> None:
        """Queues audio; it is sent in order, ahead of any later control message."""
        if self._error is None and not self._ending and data:
            self._sent_bytes += len(data)
            self._outbox.put_nowait(data)

    def finalize(self, *, speculative: bool) -> Awaitable[RecognitionResult]:
        """See :meth:`STTStream.finalize`."""
        future: asyncio.Future[RecognitionResult] = asyncio.get_running_loop().create_future()
        if self._error is not None:
            future.set_exception(self._error)
            future.exception()  # the caller re-raises it; don't warn about it as well
            return future
        if speculative and not self._settings.speculative_flush:
            future.set_result(self._result(self._text.open_words()))
            return future
        at_s = self._position_s()
        pending = _PendingFinal(self._text.open_from_s, at_s, future)
        interim_pending = self._text.has_interim
        if not speculative:
            self._text.start_next(at_s)
        if not interim_pending and at_s - max(pending.start_s, self._text.finalized_to_s) <= (
                _EPSILON_S):
            # Deepgram has finalized all of it already.
            future.set_result(self._result(self._text.words(pending.start_s, at_s)))
            self._forget_settled()
            return future
        self._pending.append(pending)
        self._outbox.put_nowait(_FINALIZE)
        # A Finalize with nothing to flush may go unanswered; one that Deepgram is merely slow
        # to answer must not be cut short with missing words.
        quiet = not interim_pending and self._heard_to_s >= at_s - _CAUGHT_UP_S
        wait_s = (self._settings.quiet_finalize_timeout_s if quiet
                  else self._settings.finalize_timeout_s)
        pending.timer = asyncio.get_running_loop().call_later(wait_s, self._expire, pending)
        return future

    def reset(self) -> None:
        """See :meth:`STTStream.reset`."""
        self._text.start_next(self._position_s())
        self._interim_text = ""
        self._forget_settled()

    def end_input(self) -> None:
        """Sends ``CloseStream`` after the queued audio; Deepgram flushes, then closes."""
        if not self._ending:
            self._ending = True
            self._outbox.put_nowait(_CLOSE_STREAM)

    async def aclose(self) -> None:
        """Stops both tasks and closes the connection."""
        for task in (self._sender, self._receiver):
            task.cancel()
        await asyncio.gather(self._sender, self._receiver, return_exceptions=True)
        for pending in self._pending:
            self._settle(pending, None)
        self._pending.clear()
        # A peer that stopped answering must not hold the stream open for the close timeout.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await self._exit_stack.aclose()

    async def _events(self) -> AsyncIterator[StreamEvent]:
        while (event := await self._events_out.get()) is not None:
            yield event
        if self._error is not None:
            raise self._error

    # ------------------------------------------------------------------ Deepgram's side

    async def _send_loop(self) -> None:
        socket, keepalive_s = self._socket, self._settings.keepalive_s
        try:
            while True:
                try:
                    async with asyncio.timeout(keepalive_s):
                        item = await self._outbox.get()
                except TimeoutError:
                    await socket.send_keep_alive()
                    continue
                if isinstance(item, bytes):
                    await socket.send_media(item)
                elif item == _FINALIZE:
                    await socket.send_finalize()
                else:
                    await socket.send_close_stream()
                    return
        except Exception as exc:  # noqa: BLE001 - translated and handed to the service
            self._fail(exc)

    async def _receive_loop(self) -> None:
        from deepgram.listen.v1.types import (
            ListenV1Error,
            ListenV1Results,
            ListenV1SpeechStarted,
            ListenV1UtteranceEnd,
        )

        try:
            async for message in self._socket:
                if isinstance(message, ListenV1Results):
                    self._on_results(message)
                elif isinstance(message, ListenV1SpeechStarted):
                    self._hint(SpeechEventKind.SPEECH_STARTED, message.timestamp)
                elif isinstance(message, ListenV1UtteranceEnd):
                    self._hint(SpeechEventKind.UTTERANCE_END, message.last_word_end)
                elif isinstance(message, ListenV1Error):
                    log.warning("deepgram error message: %s: %s", message.variant,
                                message.description)
        except Exception as exc:  # noqa: BLE001 - translated and handed to the service
            self._fail(exc)
            return
        if not self._ending:
            self._fail(ProviderUnavailableError(
                "deepgram closed the stream unasked", reason="PROVIDER_DISCONNECTED",
                component=self.provider.name))
            return
        # Deepgram flushed everything before closing: what is pending has all its words.
        for pending in list(self._pending):
            self._settle(pending, self._text.words(pending.start_s, pending.end_s))
        self._pending.clear()
        self._events_out.put_nowait(None)

    def _on_results(self, message: Any) -> None:
        start = float(message.start)
        end_s = start + float(message.duration)
        alternative = message.channel.alternatives[0] if message.channel.alternatives else None
        words: list[TimedWord] = []
        if alternative is not None:
            words = [TimedWord(w.punctuated_word or w.word, float(w.start), float(w.end),
                               float(w.confidence)) for w in alternative.words]
            if not words and alternative.transcript.strip():
                words = [TimedWord(alternative.transcript.strip(), start, end_s,
                                   float(alternative.confidence))]
        is_final = bool(message.is_final)
        self._heard_to_s = max(self._heard_to_s, end_s)
        self._text.add(words, end_s=end_s, is_final=is_final)
        if is_final:
            self._settle_covered(end_s, from_finalize=bool(message.from_finalize))
        open_words = self._text.open_words()
        text = join_words(open_words)
        if text != self._interim_text:
            self._interim_text = text
            self._events_out.put_nowait(InterimResult(
                text=text, start_ms=_ms(self._text.open_from_s), end_ms=_ms(end_s),
                confidence=mean_confidence(open_words), words=_timings(open_words)))
        if message.speech_final:
            self._hint(SpeechEventKind.ENDPOINT, end_s)

    def _hint(self, kind: SpeechEventKind, at_s: float) -> None:
        self._events_out.put_nowait(SpeechHint(kind, _ms(float(at_s))))

    # ------------------------------------------------------------------ pending finals

    def _position_s(self) -> float:
        return self._sent_bytes / self._bytes_per_s

    def _settle_covered(self, end_s: float, *, from_finalize: bool) -> None:
        """A final arrived: answer the pending finals it completes, oldest first."""
        while self._pending:
            pending = self._pending[0]
            if not (from_finalize or end_s >= pending.end_s - _EPSILON_S):
                break
            from_finalize = False  # one from_finalize result answers one Finalize
            self._pending.popleft()
            self._settle(pending, self._text.words(pending.start_s, pending.end_s))
        self._forget_settled()

    def _expire(self, pending: _PendingFinal) -> None:
        """No result completed the Finalize in time: the interim words stand in."""
        if pending in self._pending:
            self._pending.remove(pending)
            log.debug("deepgram: no result for Finalize at %.2f s; using interim words",
                      pending.end_s)
            self._settle(pending, self._text.words(pending.start_s, pending.end_s))
            self._forget_settled()

    def _settle(self, pending: _PendingFinal, words: list[TimedWord] | None) -> None:
        if pending.timer is not None:
            pending.timer.cancel()
        if pending.future.done():
            return
        if words is None:
            pending.future.cancel()
        else:
            pending.future.set_result(self._result(words))

    def _forget_settled(self) -> None:
        oldest = self._pending[0].start_s if self._pending else self._text.open_from_s
        self._text.forget_before(min(oldest, self._text.open_from_s))

    def _result(self, words: list[TimedWord]) -> RecognitionResult:
        return RecognitionResult(text=join_words(words), confidence=mean_confidence(words),
                                 words=list(_timings(words)))

    def _fail(self, exc: BaseException) -> None:
        if self._error is not None:
            return
        self._error = self.provider.translate_error(exc)
        log.warning("deepgram stream failed: %s (%s)", self._error.reason, self._error.message)
        for pending in self._pending:
            if pending.timer is not None:
                pending.timer.cancel()
            if not pending.future.done():
                pending.future.set_exception(self._error)
                pending.future.exception()  # awaited by the service, or abandoned on fallback
        self._pending.clear()
        self._events_out.put_nowait(None)


def _timings(words: list[TimedWord]) -> tuple[WordTiming, ...]:
    return tuple(WordTiming(w.text, _ms(w.start_s), _ms(w.end_s)) for w in words)
