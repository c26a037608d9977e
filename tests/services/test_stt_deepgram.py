"""The STT service with the Deepgram provider, against a local Deepgram-protocol server.

The real gRPC servicer runs on loopback with the official deepgram-sdk talking to
``fake_deepgram`` (tests/support) through ``VOXMESH_STT_BASE_URL``; fallback tests put the real
local Whisper behind it. Spans and the fallback counter go to in-memory exporters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import pytest_asyncio
from fake_deepgram import ConnectionRecord, FakeDeepgram, ScriptedTranscriber
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import SecretStr

from voxmesh import fallback
from voxmesh.audio import mulaw_encode
from voxmesh.cli.caller_audio import CallerVoice
from voxmesh.cli.stack import free_port
from voxmesh.errors import ConfigError, ProviderError
from voxmesh.fallback import ProviderChain
from voxmesh.v1 import common_pb2, stt_pb2, stt_pb2_grpc
from voxmesh_stt import engine
from voxmesh_stt.providers import create_provider, create_provider_chain
from voxmesh_stt.providers.base import AnySTTProvider
from voxmesh_stt.providers.whisper_local import WhisperLocalSTT
from voxmesh_stt.service import SpeechToTextServicer
from voxmesh_stt.settings import STTSettings

pytestmark = pytest.mark.asyncio(loop_scope="session")

PHRASES = ["hello there friend", "book a table for two", "thanks a lot"]
EVENT = stt_pb2.SpeechEvent
FRAME_BYTES = 640  # 20 ms at 16 kHz


def speech(seconds: float, rate: int = 16000) -> bytes:
    """A loud tone: the fake's level detector hears it as speech."""
    t = np.arange(int(rate * seconds)) / rate
    return (8000 * np.sin(2 * np.pi * 220 * t)).astype("<i2").tobytes()


def silence(seconds: float, rate: int = 16000) -> bytes:
    return b"\0\0" * int(rate * seconds)


@dataclass
class Telemetry:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader

    def fallbacks(self) -> list[dict[str, object]]:
        data = self.metrics.get_metrics_data()
        points: list[dict[str, object]] = []
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == "voxmesh.provider.fallbacks":
                        points += [{**dict(p.attributes or {}), "value": p.value}
                                   for p in metric.data.data_points
                                   if isinstance(p, NumberDataPoint)]
        return points


@pytest.fixture
def telemetry(monkeypatch: pytest.MonkeyPatch) -> Telemetry:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    monkeypatch.setattr(engine, "_tracer", tracer_provider.get_tracer("test"))
    monkeypatch.setattr(fallback, "_FALLBACKS", meter.create_counter("voxmesh.provider.fallbacks"))
    return Telemetry(spans, reader)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def whisper() -> AsyncIterator[WhisperLocalSTT]:
    provider = WhisperLocalSTT(cpu_threads=2)
    await provider.load()
    yield provider
    await provider.aclose()


@pytest_asyncio.fixture(loop_scope="session")
async def fake() -> AsyncIterator[FakeDeepgram]:
    async with FakeDeepgram(ScriptedTranscriber(PHRASES)) as server:
        yield server


def _settings(fake: FakeDeepgram, **overrides: object) -> STTSettings:
    values: dict[str, object] = {"provider": "deepgram", "api_key": SecretStr(fake.api_key),
                                 "base_url": fake.base_url, **overrides}
    return STTSettings(**values)  # type: ignore[arg-type]


@asynccontextmanager
async def serve_stt(fake: FakeDeepgram, backup: AnySTTProvider | None = None,
                    **overrides: object) -> AsyncIterator[stt_pb2_grpc.SpeechToTextStub]:
    """The STT servicer on loopback: deepgram (against ``fake``), then ``backup`` if given."""
    settings = _settings(fake, **overrides)
    deepgram = create_provider("deepgram", settings)
    await deepgram.load()
    deadline_ms = settings.first_byte_deadline_ms
    chain: ProviderChain[AnySTTProvider] = ProviderChain(
        "stt", [deepgram, backup] if backup else [deepgram],
        first_byte_deadline_s=deadline_ms / 1000 if deadline_ms else None)
    server = grpc.aio.server()
    stt_pb2_grpc.add_SpeechToTextServicer_to_server(SpeechToTextServicer(chain, settings), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield stt_pb2_grpc.SpeechToTextStub(channel)
    finally:
        await server.stop(None)
        await deepgram.aclose()


class Recognition:
    """One Recognize stream: sends in order, collects every response as it arrives."""

    def __init__(self, stub: stt_pb2_grpc.SpeechToTextStub, config: stt_pb2.StreamConfig,
                 ) -> None:
        self._call = stub.Recognize(timeout=60)
        self._config = config
        self.responses: list[stt_pb2.RecognizeResponse] = []
        self._arrived = asyncio.Condition()
        self._sequence = 0
        self._reader: asyncio.Task[None] | None = None
        self.ready: stt_pb2.RecognizerReady | None = None

    async def __aenter__(self) -> Recognition:
        await self._call.write(stt_pb2.RecognizeRequest(config=self._config))
        first = await self._call.read()
        self.ready = first.ready
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._call.cancel()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    async def _read(self) -> None:
        while (response := await self._call.read()) != grpc.aio.EOF:
            async with self._arrived:
                self.responses.append(response)
                self._arrived.notify_all()

    async def send(self, audio: bytes, chunk: int = FRAME_BYTES) -> None:
        for offset in range(0, len(audio), chunk):
            await self._call.write(stt_pb2.RecognizeRequest(audio=common_pb2.AudioChunk(
                data=audio[offset:offset + chunk], sequence=self._sequence)))
            self._sequence += 1

    async def wait_for(self, predicate: Callable[[stt_pb2.RecognizeResponse], bool],
                       within_s: float = 20) -> stt_pb2.RecognizeResponse:
        async with asyncio.timeout(within_s), self._arrived:
            while True:
                for response in self.responses:
                    if predicate(response):
                        return response
                await self._arrived.wait()

    async def finalize(self, request_id: str, speculative: bool = False,
                       within_s: float = 20) -> stt_pb2.Transcript:
        await self._call.write(stt_pb2.RecognizeRequest(finalize=stt_pb2.Finalize(
            request_id=request_id, speculative=speculative)))
        response = await self.wait_for(lambda r: r.transcript.is_final
                                       and r.transcript.request_id == request_id, within_s)
        return response.transcript

    async def reset(self) -> None:
        await self._call.write(stt_pb2.RecognizeRequest(reset=stt_pb2.Reset()))

    async def close(self) -> list[stt_pb2.RecognizeResponse]:
        await self._call.done_writing()
        assert self._reader is not None
        await asyncio.wait_for(self._reader, 30)
        return self.responses

    async def status(self) -> tuple[grpc.StatusCode, str]:
        return await self._call.code(), await self._call.details()

    def interims(self) -> list[stt_pb2.Transcript]:
        return [r.transcript for r in self.responses
                if r.HasField("transcript") and not r.transcript.is_final]

    def events(self) -> list[stt_pb2.SpeechEvent]:
        return [r.speech_event for r in self.responses if r.HasField("speech_event")]

    def switches(self) -> list[stt_pb2.ProviderSwitched]:
        return [r.provider_switched for r in self.responses if r.HasField("provider_switched")]


def streams(fake: FakeDeepgram) -> list[ConnectionRecord]:
    """The fake's stream connections; the first connection is load()'s key check."""
    check, *rest = fake.connections
    assert check.controls == ["CloseStream"] and not check.audio_bytes
    return rest


def pcm16_config(rate: int = 16000, interim: bool = True, keyterms: tuple[str, ...] = (),
                 language: str = "") -> stt_pb2.StreamConfig:
    return stt_pb2.StreamConfig(
        format=common_pb2.AudioFormat(encoding=common_pb2.AUDIO_ENCODING_PCM16,
                                      sample_rate_hz=rate, channels=1),
        interim_results=interim, keyterms=list(keyterms), language=language)


# ---------------------------------------------------------------------------- recognition


async def test_interim_and_final_results_carry_text_and_word_timings(fake: FakeDeepgram) -> None:
    speech_s = 1.2
    async with serve_stt(fake) as stub, Recognition(stub, pcm16_config()) as rec:
        assert rec.ready is not None and rec.ready.provider == "deepgram"
        assert rec.ready.model == "nova-3"
        await rec.send(speech(speech_s) + silence(0.1))
        final = await rec.finalize("u1")
        await rec.close()
    phrase = PHRASES[0].split()
    assert final.text == PHRASES[0] and final.provider == "deepgram"
    assert final.start_ms == 0 and final.end_ms == round((speech_s + 0.1) * 1000)
    assert [w.word for w in final.words] == phrase
    starts = [w.start_ms for w in final.words]
    assert starts == sorted(starts) and final.words[0].start_ms == 0
    assert final.words[-1].end_ms == round(speech_s * 1000)  # the speech, not the silence
    assert all(w.start_ms < w.end_ms for w in final.words)
    interims = rec.interims()
    assert interims, "interim results were asked for"
    for interim in interims:
        assert interim.provider == "deepgram" and interim.words
        assert phrase[:len(interim.text.split())] == interim.text.split()
    index_of_final = next(i for i, r in enumerate(rec.responses) if r.transcript.is_final)
    assert all(not r.HasField("transcript") for r in rec.responses[index_of_final + 1:]), (
        "no interim may follow the final of the same audio")
    record = streams(fake)[-1]
    assert record.controls == ["Finalize", "CloseStream"]
    assert record.sent_of("Results")[-1]["from_finalize"] is True
    assert record.sent_of("Metadata") and record.close_code == 1000


async def test_no_interims_unless_asked(fake: FakeDeepgram) -> None:
    async with serve_stt(fake) as stub, Recognition(stub, pcm16_config(interim=False)) as rec:
        await rec.send(speech(1.2))
        final = await rec.finalize("u1")
        await rec.close()
    assert final.text == PHRASES[0]
    assert not rec.interims()
    assert streams(fake)[-1].param("interim_results") == "true"  # speculative needs them


async def test_keyterms_language_and_mulaw_reach_deepgram_unchanged(fake: FakeDeepgram) -> None:
    mulaw = mulaw_encode(speech(1.0, rate=8000) + silence(0.1, rate=8000))
    config = stt_pb2.StreamConfig(
        format=common_pb2.AudioFormat(encoding=common_pb2.AUDIO_ENCODING_MULAW,
                                      sample_rate_hz=8000, channels=1),
        language="en-GB", keyterms=["Voxmesh", "order status"], interim_results=True)
    async with serve_stt(fake) as stub, Recognition(stub, config) as rec:
        await rec.send(mulaw, chunk=160)
        final = await rec.finalize("u1")
        await rec.close()
    record = streams(fake)[-1]
    assert record.param("encoding") == "mulaw" and record.param("sample_rate") == "8000"
    assert record.params["keyterm"] == ["Voxmesh", "order status"]
    assert record.param("language") == "en-GB" and record.param("model") == "nova-3"
    assert record.audio_bytes == len(mulaw), "mu-law goes out byte for byte, not resampled"
    assert "authorization" not in {k.lower() for k in record.headers}
    assert final.text == PHRASES[0] and final.end_ms == 1100


async def test_recognition_options_come_from_settings(fake: FakeDeepgram) -> None:
    async with serve_stt(fake, deepgram_model="nova-2", deepgram_endpointing_ms=0,
                         deepgram_utterance_end_ms=0, deepgram_vad_events=False,
                         deepgram_language="de") as stub:
        async with Recognition(stub, pcm16_config(keyterms=("Voxmesh",))) as rec:
            await rec.send(speech(0.5))
            await rec.finalize("u1")
            await rec.close()
    record = streams(fake)[-1]
    assert record.param("model") == "nova-2" and record.param("language") == "de"
    assert record.param("endpointing") == "false" and record.param("vad_events") == "false"
    assert "utterance_end_ms" not in record.params
    assert "keyterm" not in record.params  # keyterm prompting is nova-3 only


async def test_speech_events_arrive_at_stream_positions(fake: FakeDeepgram) -> None:
    speech_s, endpointing_ms = 0.8, 300
    async with serve_stt(fake, deepgram_endpointing_ms=endpointing_ms,
                         deepgram_utterance_end_ms=1000) as stub:
        async with Recognition(stub, pcm16_config()) as rec:
            await rec.send(silence(0.4) + speech(speech_s) + silence(1.3))
            await rec.wait_for(lambda r: r.speech_event.kind == EVENT.UTTERANCE_END)
            await rec.close()
    events = {e.kind: e.at_ms for e in rec.events()}
    assert events[EVENT.SPEECH_STARTED] == 400
    # Deepgram closes the utterance after the endpointing silence...
    assert events[EVENT.ENDPOINT] == 400 + round(speech_s * 1000) + endpointing_ms
    # ... and reports the utterance end at the last word's end.
    assert events[EVENT.UTTERANCE_END] == 400 + round(speech_s * 1000)
    kinds = [e.kind for e in rec.events()]
    assert kinds.index(EVENT.SPEECH_STARTED) < kinds.index(EVENT.ENDPOINT) < kinds.index(
        EVENT.UTTERANCE_END)


async def test_speculative_final_sends_nothing_and_reset_drops_the_utterance(
    fake: FakeDeepgram,
) -> None:
    async with serve_stt(fake, deepgram_endpointing_ms=300,
                         deepgram_speculative_flush=False) as stub:
        async with Recognition(stub, pcm16_config()) as rec:
            await rec.send(speech(1.2))
            await rec.wait_for(lambda r: r.transcript.text == PHRASES[0])  # interim, all words
            early = await rec.finalize("s1", speculative=True)
            await rec.send(silence(0.4))  # Deepgram's endpointing finalizes the utterance
            await rec.wait_for(lambda r: r.speech_event.kind == EVENT.ENDPOINT)
            again = await rec.finalize("s2", speculative=True)
            await rec.reset()  # the client used "s2"; its words must never come back
            await rec.send(speech(0.6) + silence(0.1))
            second = await rec.finalize("u2")
            await rec.close()
    assert early.text == PHRASES[0] and again.text == PHRASES[0]
    assert early.provider == "deepgram" and early.words[-1].end_ms <= 1200
    assert streams(fake)[-1].controls.count("Finalize") == 1  # for "u2" only
    assert second.text == PHRASES[1]
    assert (second.start_ms, second.end_ms) == (1600, 2300)
    assert all(w.start_ms >= 1600 for w in second.words)


async def test_speculative_flush_keeps_the_utterance_open(fake: FakeDeepgram) -> None:
    async with serve_stt(fake, deepgram_endpointing_ms=0,
                         deepgram_speculative_flush=True) as stub:
        async with Recognition(stub, pcm16_config(interim=False)) as rec:
            await rec.send(speech(1.2) + silence(0.2))
            early = await rec.finalize("s1", speculative=True)
            await rec.send(speech(0.6) + silence(0.1))
            final = await rec.finalize("u1")
            await rec.close()
    assert early.text == PHRASES[0]  # flushed: the fake only answers a Finalize here
    assert final.text == f"{PHRASES[0]} {PHRASES[1]}"
    assert (final.start_ms, final.end_ms) == (0, 2100)
    assert streams(fake)[-1].controls == ["Finalize", "Finalize", "CloseStream"]


async def test_an_idle_stream_is_kept_open_with_keepalives(fake: FakeDeepgram) -> None:
    fake.idle_timeout_s = 1.0
    async with serve_stt(fake, deepgram_keepalive_s=0.3) as stub:
        async with Recognition(stub, pcm16_config()) as rec:
            await rec.send(speech(0.6) + silence(0.1))
            first = await rec.finalize("u1")
            await asyncio.sleep(2.5)  # the caller listens; no audio for 2.5 idle timeouts
            await rec.send(speech(0.6) + silence(0.1))
            second = await rec.finalize("u2")
            await rec.close()
    record = streams(fake)[-1]
    assert record.controls.count("KeepAlive") >= 5
    assert record.close_code == 1000 and not rec.switches()
    assert (first.text, second.text) == (PHRASES[0], PHRASES[1])


async def test_an_idle_stream_without_keepalives_is_closed_with_net_0001(
    fake: FakeDeepgram,
) -> None:
    fake.idle_timeout_s = 0.5
    async with serve_stt(fake, deepgram_keepalive_s=9) as stub:
        async with Recognition(stub, pcm16_config()) as rec:
            await rec.send(speech(0.3))
            code, details = await rec.status()  # nothing more is sent: Deepgram gives up
    assert code == grpc.StatusCode.UNAVAILABLE, details
    assert "close 1011: NET-0001" in details
    assert streams(fake)[-1].close_code == 1011


# ---------------------------------------------------------------------------- keys


async def test_missing_key_fails_at_startup_naming_both_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DEEPGRAM_API_KEY", raising=False)
    monkeypatch.delenv("VOXMESH_STT_API_KEY", raising=False)
    with pytest.raises(ConfigError) as info:
        create_provider_chain(STTSettings(provider="deepgram,whisper-local"))
    message = str(info.value)
    assert "deepgram" in message
    assert "VOXMESH_STT_API_KEY" in message and "DEEPGRAM_API_KEY" in message


async def test_the_vendor_variable_is_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VOXMESH_STT_API_KEY", raising=False)
    monkeypatch.setenv("DEEPGRAM_API_KEY", "from-the-vendor-variable")
    chain = create_provider_chain(STTSettings(provider="deepgram,whisper-local"))
    assert [p.name for p in chain.providers] == ["deepgram", "whisper-local"]
    assert "from-the-vendor-variable" not in repr(chain.providers[0])


async def test_rejected_key_fails_load_and_never_reaches_logs(
    fake: FakeDeepgram, caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "dg-secret-0123456789abcdef"
    caplog.set_level(logging.DEBUG)
    settings = STTSettings(provider="deepgram", api_key=SecretStr(secret),
                           base_url=fake.base_url)
    provider = create_provider("deepgram", settings)
    with pytest.raises(ProviderError) as info:
        await provider.load()
    await provider.aclose()
    error = info.value
    assert error.reason == "PROVIDER_AUTH_FAILED" and not error.retryable
    assert "deepgram" in error.message and "VOXMESH_STT_API_KEY" in error.message
    assert "DEEPGRAM_API_KEY" in error.message
    assert fake.rejected == 1 and not fake.connections
    assert secret not in caplog.text and secret not in repr(settings)
    assert secret not in repr(provider) and secret not in str(error)


async def test_a_good_key_stays_out_of_logs_during_a_stream(
    fake: FakeDeepgram, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with serve_stt(fake) as stub, Recognition(stub, pcm16_config()) as rec:
        await rec.send(speech(0.6))
        await rec.finalize("u1")
        await rec.close()
    assert caplog.records, "debug logging was on"
    assert fake.api_key not in caplog.text


async def test_the_service_stays_not_serving_when_the_key_is_rejected(
    fake: FakeDeepgram, tmp_path: Path,
) -> None:
    secret = "dg-rejected-key-5555"
    fake.handshake_delay_s = 1.5  # the service sits in load() meanwhile
    port = free_port()
    env = {**os.environ, "VOXMESH_STT_PROVIDER": "deepgram,whisper-local",
           "VOXMESH_STT_API_KEY": secret, "VOXMESH_STT_BASE_URL": fake.base_url,
           "VOXMESH_STT_PORT": str(port), "VOXMESH_LOG_LEVEL": "DEBUG"}
    log_path = tmp_path / "stt.log"
    with log_path.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "voxmesh_stt", env=env, stdout=out,
            stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL)
    statuses: set[int] = set()
    try:
        async with asyncio.timeout(60):
            while process.returncode is None:
                statuses.add(await _health(port))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(process.wait(), 0.05)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    output = log_path.read_text()
    assert process.returncode == 1, output
    assert health_pb2.HealthCheckResponse.NOT_SERVING in statuses
    assert health_pb2.HealthCheckResponse.SERVING not in statuses
    assert "deepgram rejected the API key" in output
    assert "VOXMESH_STT_API_KEY" in output and "DEEPGRAM_API_KEY" in output
    assert secret not in output


async def _health(port: int) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=0.5)
        except grpc.RpcError:
            return -1
    return int(reply.status)


# ---------------------------------------------------------------------------- fallback


async def test_a_dropped_connection_falls_over_to_whisper_within_the_turn(
    fake: FakeDeepgram, whisper: WhisperLocalSTT, caller_voice: CallerVoice,
    telemetry: Telemetry,
) -> None:
    said = "Please cancel my reservation for tomorrow evening."
    audio = caller_voice.speak(said) + silence(0.3)
    fake.drop_after_audio_s = 1.0  # mid-utterance
    async with serve_stt(fake, whisper) as stub, Recognition(stub, pcm16_config()) as rec:
        await rec.send(audio)
        final = await rec.finalize("u1", within_s=30)
        # The stream stays on the backup for the rest of its life.
        await rec.send(caller_voice.speak("Thank you.") + silence(0.3))
        later = await rec.finalize("u2", within_s=30)
        await rec.close()
    (stream,) = streams(fake)
    assert stream.dropped, "no reconnect within the stream"
    (switch,) = rec.switches()
    assert (switch.from_provider, switch.to_provider) == ("deepgram", "whisper-local")
    assert switch.reason == "PROVIDER_DISCONNECTED"
    switch_at = next(i for i, r in enumerate(rec.responses) if r.HasField("provider_switched"))
    final_at = next(i for i, r in enumerate(rec.responses) if r.transcript.request_id == "u1")
    assert switch_at < final_at
    assert final.provider == "whisper-local" and "reservation" in final.text.lower(), final.text
    assert final.start_ms == 0 and final.end_ms == int(len(audio) / 32)
    assert later.provider == "whisper-local" and "thank" in later.text.lower()
    events = [e for s in telemetry.spans.get_finished_spans() for e in s.events
              if e.name == "provider.fallback"]
    assert [dict(e.attributes or {}) for e in events] == [{
        "voxmesh.fallback.component": "stt", "voxmesh.fallback.from": "deepgram",
        "voxmesh.fallback.to": "whisper-local",
        "voxmesh.fallback.reason": "PROVIDER_DISCONNECTED"}]
    assert telemetry.fallbacks() == [{"component": "stt", "from": "deepgram",
                                      "to": "whisper-local", "reason": "PROVIDER_DISCONNECTED",
                                      "value": 1}]


async def test_after_a_reset_the_backup_gets_only_the_open_utterance(
    fake: FakeDeepgram, whisper: WhisperLocalSTT, caller_voice: CallerVoice,
    telemetry: Telemetry,
) -> None:
    first = caller_voice.speak("Please cancel my reservation.") + silence(0.3)
    second = caller_voice.speak("What time do you open on Saturday?") + silence(0.3)
    async with serve_stt(fake, whisper) as stub, Recognition(stub, pcm16_config()) as rec:
        await rec.send(first)
        heard = await rec.finalize("s1", speculative=True)  # the worker's flow: use it ...
        await rec.reset()  # ... then drop the utterance
        fake.drop_later(0.8)
        await rec.send(second)
        final = await rec.finalize("u2", within_s=30)
        await rec.close()
    assert heard.provider == "deepgram" and [s.reason for s in rec.switches()] == [
        "PROVIDER_DISCONNECTED"]
    assert final.provider == "whisper-local"
    assert "saturday" in final.text.lower() and "reservation" not in final.text.lower()
    assert (final.start_ms, final.end_ms) == (int(len(first) / 32),
                                              int((len(first) + len(second)) / 32))


async def test_a_late_final_falls_over_at_the_deadline_and_new_streams_try_deepgram_again(
    fake: FakeDeepgram, whisper: WhisperLocalSTT, caller_voice: CallerVoice,
    telemetry: Telemetry,
) -> None:
    deadline_ms, delay_s = 400, 5.0
    audio = caller_voice.speak("What time do you open on Saturday?") + silence(0.3)
    fake.result_delay_s = delay_s
    async with serve_stt(fake, whisper, first_byte_deadline_ms=deadline_ms,
                         deepgram_endpointing_ms=0) as stub:
        async with Recognition(stub, pcm16_config(interim=False)) as rec:
            await rec.send(audio)
            loop = asyncio.get_running_loop()
            asked = loop.time()
            final = await rec.finalize("u1", within_s=30)
            waited_s = loop.time() - asked
            await rec.close()
        fake.result_delay_s = 0.0
        async with Recognition(stub, pcm16_config(interim=False)) as fresh:
            await fresh.send(speech(0.6))
            again = await fresh.finalize("u1")
            await fresh.close()
    (switch,) = rec.switches()
    assert switch.reason == "FIRST_BYTE_DEADLINE"
    assert final.provider == "whisper-local" and "saturday" in final.text.lower(), final.text
    assert deadline_ms / 1000 <= waited_s < delay_s
    assert again.provider == "deepgram" and not fresh.switches()
    assert len(streams(fake)) == 2
    assert telemetry.fallbacks()[0]["reason"] == "FIRST_BYTE_DEADLINE"


async def test_without_a_backup_a_dropped_stream_ends_with_unavailable(
    fake: FakeDeepgram,
) -> None:
    fake.drop_after_audio_s = 0.5
    async with serve_stt(fake) as stub, Recognition(stub, pcm16_config()) as rec:
        await rec.send(speech(0.5))  # the last chunk reaches the limit; nothing is written after
        code, details = await rec.status()
    assert code == grpc.StatusCode.UNAVAILABLE, details
    assert "deepgram closed the stream" in details
