"""A local server that speaks Deepgram's live streaming protocol, for tests and benchmarks.

The official ``deepgram-sdk`` talks to it unmodified through its base-URL setting. What it
implements, from Deepgram's documentation:

* ``GET /v1/listen`` WebSocket with the options as query parameters, authenticated with
  ``Authorization: Token <key>``; a wrong key gets HTTP 401 at the handshake
  (https://developers.deepgram.com/reference/speech-to-text/listen-streaming,
  https://developers.deepgram.com/docs/stt-troubleshooting-websocket-data-and-net-errors);
* binary frames of raw audio (``encoding=linear16|mulaw``, ``sample_rate``);
* ``Results`` messages {type, channel_index, duration, start, is_final, speech_final,
  from_finalize, channel.alternatives[0].{transcript, confidence, words[{word, start, end,
  confidence, punctuated_word}]}, metadata{request_id, model_info, model_uuid}}; interim
  results with ``interim_results=true``, ``speech_final`` after ``endpointing`` ms of silence
  (https://developers.deepgram.com/docs/understand-endpointing-interim-results);
* ``SpeechStarted`` {type, channel, timestamp} with ``vad_events=true``
  (https://developers.deepgram.com/docs/speech-started);
* ``UtteranceEnd`` {type, channel, last_word_end} after ``utterance_end_ms`` without words
  (https://developers.deepgram.com/docs/utterance-end);
* control messages ``Finalize`` (flush; the result carries ``from_finalize: true``, and none
  comes when there is nothing to flush, https://developers.deepgram.com/docs/finalize),
  ``KeepAlive`` (no reply; without audio or KeepAlive for the idle timeout, 10 s at Deepgram,
  the stream closes with 1011 NET-0001, https://developers.deepgram.com/docs/audio-keep-alive)
  and ``CloseStream`` (flush, a ``Metadata`` message, then a normal close,
  https://developers.deepgram.com/docs/close-stream).

What is simplified: speech detection is a level threshold on 20 ms frames, not a model, and
word times are spread evenly over the speech in each result. The transcriber is pluggable: a
scripted one for deterministic tests, or a real recognizer (local Whisper) for end-to-end
calls. For tests it can also drop connections mid-stream and delay results.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from voxmesh.audio import mulaw_decode, resample, rms_dbfs

FRAME_MS = 20
#: Deepgram's message for a stream closed for lack of data (NET-0001).
NET_0001 = "Deepgram did not receive audio data or a text message within the timeout window."
MODEL_INFO = {"name": "fake-nova-3", "version": "2025-01-01.0", "arch": "nova-3"}


class Transcriber(Protocol):
    """Turns the audio of one result into words."""

    async def transcribe(self, pcm16k: bytes, *, segment: int, final: bool) -> list[str]:
        """The words heard in ``pcm16k`` (16 kHz PCM16).

        Args:
            pcm16k: Audio from the last final to now.
            segment: How many finals with words came before on this connection.
            final: Whether the result will be final (an interim may be a prefix).
        """


class ScriptedTranscriber:
    """Deterministic words: segment ``n`` says ``phrases[n]``; an interim says as many of its
    words as fit at ``words_per_second``."""

    def __init__(self, phrases: Sequence[str], words_per_second: float = 3.0) -> None:
        self.phrases = list(phrases)
        self.words_per_second = words_per_second

    async def transcribe(self, pcm16k: bytes, *, segment: int, final: bool) -> list[str]:
        words = self.phrases[segment % len(self.phrases)].split()
        if final:
            return words
        seconds = len(pcm16k) / 32000
        return words[:max(1, math.ceil(seconds * self.words_per_second))]


class WhisperTranscriber:
    """Local Whisper (tiny.en) as the fake's recognizer; one model, loaded on first use."""

    def __init__(self) -> None:
        self._stt: Any = None
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        """Loads the model now rather than in the first result's time."""
        from voxmesh_stt.providers.whisper_local import WhisperLocalSTT

        async with self._lock:
            if self._stt is None:
                stt = WhisperLocalSTT(cpu_threads=1)
                await stt.load()
                self._stt = stt

    async def transcribe(self, pcm16k: bytes, *, segment: int, final: bool) -> list[str]:
        await self.load()
        async with self._lock:
            result = await self._stt.transcribe(pcm16k, "en")
        return result.text.split()

    async def aclose(self) -> None:
        if self._stt is not None:
            await self._stt.aclose()


@dataclass
class ConnectionRecord:
    """What one client connection sent and got (for assertions)."""

    params: dict[str, list[str]]
    headers: dict[str, str]
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    audio_bytes: int = 0
    controls: list[str] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    dropped: bool = False
    drop_at_bytes: int | None = None

    def param(self, name: str, default: str = "") -> str:
        """The first value of a query parameter."""
        return self.params.get(name, [default])[0]

    def sent_of(self, kind: str) -> list[dict[str, Any]]:
        """Messages of one type the server sent."""
        return [m for m in self.sent if m.get("type") == kind]


class FakeDeepgram:
    """The server. ``async with FakeDeepgram(...) as fake:`` serves on a free loopback port.

    Attributes:
        api_key: The only key accepted.
        connections: One record per accepted connection, in order.
        rejected: Handshakes refused for a bad key.
        drop_after_audio_s: Abort a connection (no close frame) once it sent this much audio.
        result_delay_s: Hold every result this long before sending it.
        handshake_delay_s: Hold every opening handshake this long.
        idle_timeout_s: Close with 1011 NET-0001 after this long without audio or KeepAlive.
    """

    def __init__(
        self,
        transcriber: Transcriber,
        *,
        api_key: str = "fake-deepgram-key",
        idle_timeout_s: float = 10.0,
        interim_interval_s: float | None = 0.5,
        speech_threshold_dbfs: float = -40.0,
    ) -> None:
        self.transcriber = transcriber
        self.api_key = api_key
        self.idle_timeout_s = idle_timeout_s
        self.interim_interval_s = interim_interval_s
        self.speech_threshold_dbfs = speech_threshold_dbfs
        self.drop_after_audio_s: float | None = None
        self.result_delay_s = 0.0
        self.handshake_delay_s = 0.0
        self.connections: list[ConnectionRecord] = []
        self.rejected = 0
        self._server: Server | None = None
        self._live: set[ServerConnection] = set()
        self.port = 0

    @property
    def base_url(self) -> str:
        """What ``VOXMESH_STT_BASE_URL`` should be."""
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> FakeDeepgram:
        self._server = await serve(self._handle, "127.0.0.1", 0,
                                   process_request=self._check_request, compression=None)
        self.port = next(iter(self._server.sockets)).getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def drop_all(self) -> None:
        """Cuts every open connection without a close frame (a network failure)."""
        for connection in list(self._live):
            connection.transport.abort()

    def drop_later(self, audio_s: float) -> None:
        """Cuts each open connection once it has sent ``audio_s`` more seconds of audio."""
        for record in self.connections:
            if record.close_code is None and not record.dropped:
                rate = 8000 if record.param("encoding") == "mulaw" else int(
                    record.param("sample_rate", "16000"))
                width = 1 if record.param("encoding") == "mulaw" else 2
                record.drop_at_bytes = record.audio_bytes + int(audio_s * rate * width)

    async def _check_request(self, connection: ServerConnection,
                             request: Request) -> Response | None:
        if self.handshake_delay_s:
            await asyncio.sleep(self.handshake_delay_s)
        if urlsplit(request.path).path != "/v1/listen":
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        if request.headers.get("Authorization") != f"Token {self.api_key}":
            self.rejected += 1
            response = connection.respond(HTTPStatus.UNAUTHORIZED, json.dumps({
                "err_code": "INVALID_AUTH", "err_msg": "Invalid credentials.",
                "request_id": str(uuid.uuid4())}))
            response.headers["dg-error"] = "Invalid credentials."
            return response
        return None

    async def _handle(self, connection: ServerConnection) -> None:
        request = connection.request
        assert request is not None
        record = ConnectionRecord(
            params=parse_qs(urlsplit(request.path).query),
            headers={k: v for k, v in _items(request.headers) if k.lower() != "authorization"})
        self.connections.append(record)
        self._live.add(connection)
        stream = _Stream(self, connection, record)
        try:
            await stream.serve()
        finally:
            self._live.discard(connection)


def _items(headers: Headers) -> list[tuple[str, str]]:
    return list(headers.raw_items())


class _Stream:
    """One connection: frames the audio, decides results and sends them in order."""

    def __init__(self, server: FakeDeepgram, connection: ServerConnection,
                 record: ConnectionRecord) -> None:
        self.server, self.connection, self.record = server, connection, record
        self.encoding = record.param("encoding", "linear16")
        self.rate = 8000 if self.encoding == "mulaw" else int(record.param("sample_rate", "16000"))
        self.width = 1 if self.encoding == "mulaw" else 2
        self.frame_bytes = self.rate * 2 * FRAME_MS // 1000
        self.interim = record.param("interim_results") == "true"
        endpointing = record.param("endpointing", "10")
        self.endpointing_ms = 0 if endpointing == "false" else int(endpointing)
        self.utterance_end_ms = int(record.param("utterance_end_ms", "0"))
        self.vad_events = record.param("vad_events") == "true"
        self.pcm = bytearray()  # PCM16 at self.rate
        self.speech: list[bool] = []  # per frame
        self.final_to = 0  # first frame not finalized yet
        self.in_speech = False
        self.silent_frames = 0
        self.last_interim = 0
        self.segment = 0
        self.last_word_end: float | None = None
        self.outbox: asyncio.Queue[tuple[str, Any] | None] = asyncio.Queue()

    async def serve(self) -> None:
        sender = asyncio.create_task(self._send_loop())
        gone = False
        try:
            await self._receive_loop()
        except ConnectionClosed as exc:
            gone = True
            self.record.close_code = exc.rcvd.code if exc.rcvd else 1006
        finally:
            self.outbox.put_nowait(None)
            if gone or self.record.dropped:
                sender.cancel()  # nobody is listening for what is still queued
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await sender

    async def _receive_loop(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.server.idle_timeout_s):
                    message = await self.connection.recv()
            except TimeoutError:
                self.outbox.put_nowait(("close", (1011, f"NET-0001 {NET_0001}")))
                return
            if isinstance(message, bytes):
                self._on_audio(message)
                limit = self.server.drop_after_audio_s
                if limit is not None and self.record.drop_at_bytes is None:
                    self.record.drop_at_bytes = int(limit * self.rate * self.width)
                if (self.record.drop_at_bytes is not None
                        and self.record.audio_bytes >= self.record.drop_at_bytes):
                    self.record.dropped = True
                    self.connection.transport.abort()
                    return
                continue
            kind = json.loads(message).get("type", "")
            self.record.controls.append(kind)
            if kind == "Finalize":
                self._result(from_finalize=True)
            elif kind == "CloseStream":
                self._result(from_finalize=False)
                self.outbox.put_nowait(("metadata", None))
                self.outbox.put_nowait(("close", (1000, "")))
                return

    # -------------------------------------------------------------- deciding what to send

    def _on_audio(self, data: bytes) -> None:
        self.record.audio_bytes += len(data)
        self.pcm.extend(mulaw_decode(data) if self.encoding == "mulaw" else data)
        while len(self.speech) * self.frame_bytes + self.frame_bytes <= len(self.pcm):
            start = len(self.speech) * self.frame_bytes
            frame = bytes(self.pcm[start:start + self.frame_bytes])
            self._on_frame(rms_dbfs(frame) >= self.server.speech_threshold_dbfs)

    def _on_frame(self, speech: bool) -> None:
        self.speech.append(speech)
        now = len(self.speech)
        if speech:
            if not self.in_speech and self.vad_events:
                self.outbox.put_nowait(("message", {
                    "type": "SpeechStarted", "channel": [0, 1],
                    "timestamp": round((now - 1) * FRAME_MS / 1000, 3)}))
            self.in_speech = True
            self.silent_frames = 0
        elif self.in_speech:
            self.silent_frames += 1
            if self.endpointing_ms and self.silent_frames * FRAME_MS >= self.endpointing_ms:
                self.in_speech = False
                self._result(speech_final=True)
                return
        if self.utterance_end_ms and self.interim and not speech:
            self.outbox.put_nowait(("utterance_end?", now * FRAME_MS / 1000))
        interval = self.server.interim_interval_s
        if (self.interim and interval is not None and self.in_speech
                and (now - max(self.last_interim, self.final_to)) * FRAME_MS >= interval * 1000):
            self.last_interim = now
            self.outbox.put_nowait(("results", (self.final_to, now, False, False, False)))

    def _result(self, *, speech_final: bool = False, from_finalize: bool = False) -> None:
        """A final over the audio since the last final (nothing when there is none)."""
        now = len(self.speech)
        if now <= self.final_to:
            return
        self.outbox.put_nowait(("results", (self.final_to, now, True, speech_final,
                                            from_finalize)))
        self.final_to = now

    # -------------------------------------------------------------- sending, in order

    async def _send_loop(self) -> None:
        while (item := await self.outbox.get()) is not None:
            kind, value = item
            if kind == "results":
                await self._send_results(*value)
            elif kind == "message":
                await self._send(value)
            elif kind == "utterance_end?":
                if (self.last_word_end is not None
                        and (value - self.last_word_end) * 1000 >= self.utterance_end_ms):
                    await self._send({"type": "UtteranceEnd", "channel": [0, 1],
                                      "last_word_end": self.last_word_end})
                    self.last_word_end = None
            elif kind == "metadata":
                await self._send({
                    "type": "Metadata", "transaction_key": "deprecated",
                    "request_id": self.record.request_id, "sha256": "0" * 64,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                    "duration": round(len(self.speech) * FRAME_MS / 1000, 3), "channels": 1})
            elif kind == "close":
                code, reason = value
                self.record.close_code = code
                await self.connection.close(code, reason)
                return

    async def _send(self, message: dict[str, Any]) -> None:
        self.record.sent.append(message)
        await self.connection.send(json.dumps(message))

    async def _send_results(self, first: int, end: int, is_final: bool, speech_final: bool,
                            from_finalize: bool) -> None:
        start_s, end_s = first * FRAME_MS / 1000, end * FRAME_MS / 1000
        spoken = [i for i in range(first, end) if self.speech[i]]
        words: list[dict[str, Any]] = []
        if spoken:
            pcm = bytes(self.pcm[first * self.frame_bytes:end * self.frame_bytes])
            pcm16k = resample(pcm, self.rate, 16000) if self.rate != 16000 else pcm
            texts = await self.server.transcriber.transcribe(
                pcm16k, segment=self.segment, final=is_final)
            words = _timed(texts, spoken[0] * FRAME_MS / 1000, (spoken[-1] + 1) * FRAME_MS / 1000)
        if is_final and words:
            self.segment += 1
            self.last_word_end = words[-1]["end"]
        if self.server.result_delay_s:
            await asyncio.sleep(self.server.result_delay_s)
        transcript = " ".join(w["punctuated_word"] for w in words)
        await self._send({
            "type": "Results", "channel_index": [0, 1],
            "duration": round(end_s - start_s, 3), "start": round(start_s, 3),
            "is_final": is_final, "speech_final": speech_final, "from_finalize": from_finalize,
            "channel": {"alternatives": [{
                "transcript": transcript, "confidence": 0.95 if words else 0.0,
                "words": words}]},
            "metadata": {"request_id": self.record.request_id, "model_info": MODEL_INFO,
                         "model_uuid": "00000000-0000-0000-0000-000000000000"},
        })


def _timed(texts: list[str], start_s: float, end_s: float) -> list[dict[str, Any]]:
    """Words spread evenly over ``[start_s, end_s)``."""
    if not texts:
        return []
    step = (end_s - start_s) / len(texts)
    return [{"word": text.strip(".,?!").lower(), "punctuated_word": text,
             "start": round(start_s + i * step, 3), "end": round(start_s + (i + 1) * step, 3),
             "confidence": 0.95} for i, text in enumerate(texts)]
