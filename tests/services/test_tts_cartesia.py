"""The Cartesia TTS provider through the real TTS gRPC service, and falling over to Piper.

The service runs as its own process with ``VOXMESH_TTS_PROVIDER=cartesia,piper-local`` against
``tests/support/fake_cartesia.py`` (Cartesia's documented WebSocket protocol, tone audio), with
its traces sent to an OTLP receiver in this process and its metrics scraped over HTTP. What is
checked: audio starts on the first clause while the rest of the text is still unsent; word
timings are the server's; Cancel cancels the right context; voice, model, language and rate
reach the server; keys are checked at startup and never logged; a dropped connection or a
missed first-byte deadline hands the rest of the turn to Piper.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from fake_cartesia import FakeCartesia, ToneBackend
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from otlp_receiver import SpanReceiver
from pydantic import SecretStr

from voxmesh.cli.stack import Child, Ports, Stack, free_port
from voxmesh.errors import ProviderError
from voxmesh.v1 import common_pb2, tts_pb2, tts_pb2_grpc
from voxmesh_tts.providers.cartesia import CartesiaTTS

pytestmark = [pytest.mark.asyncio(loop_scope="session")]

KEY = "ck-test-" + uuid.uuid4().hex
WRONG_KEY = "ck-wrong-" + uuid.uuid4().hex
VOICE = "f786b574-daa5-4673-aa0c-cbe3e8534c02"
DEADLINE_MS = 2500
RATE = 16000


@dataclass
class Service:
    """The TTS service process and what it talks to."""

    stack: Stack
    fake: FakeCartesia
    receiver: SpanReceiver
    metrics_port: int

    @property
    def port(self) -> int:
        return self.stack.ports.tts

    def log(self) -> str:
        return self.stack.children["tts"].log_path.read_text(errors="replace")


def _base_env() -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith(("CARTESIA_", "VOXMESH_"))},
            "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


@asynccontextmanager
async def tts_process(state: Path, env: dict[str, str]) -> AsyncIterator[Stack]:
    """The TTS service as its own process with ``env``, until it serves."""
    stack = Stack(state_dir=state, ports=Ports.free(), drain_grace_s=1.0)
    stack.children = {"tts": Child("tts", [sys.executable, "-m", "voxmesh_tts"], {
        **_base_env(), "VOXMESH_TTS_PORT": str(stack.ports.tts),
        "VOXMESH_TTS_DRAIN_GRACE_S": "1", **env}, state / "tts.log", 5)}
    try:
        await stack.spawn("tts")
        await stack.wait_healthy("tts", timeout_s=120)
        yield stack
    finally:
        await stack.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def service(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Service]:
    """The fake Cartesia, an OTLP receiver and the TTS service (cartesia, then piper-local)."""
    receiver = SpanReceiver()
    otlp = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, otlp)
    otlp_port = free_port()
    otlp.add_insecure_port(f"127.0.0.1:{otlp_port}")
    await otlp.start()
    metrics_port = free_port()
    try:
        async with FakeCartesia(ToneBackend(), api_key=KEY) as fake, tts_process(
            tmp_path_factory.mktemp("tts-cartesia"), {
                "VOXMESH_LOG_LEVEL": "DEBUG", "VOXMESH_TTS_PROVIDER": "cartesia,piper-local",
                "VOXMESH_TTS_BASE_URL": fake.url, "VOXMESH_TTS_API_KEY": KEY,
                "VOXMESH_TTS_FIRST_BYTE_DEADLINE_MS": str(DEADLINE_MS),
                "VOXMESH_METRICS_PORT": str(metrics_port), "VOXMESH_METRICS_HOST": "127.0.0.1",
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_port}",
                "OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_BSP_SCHEDULE_DELAY": "100",
            }) as stack:
            yield Service(stack, fake, receiver, metrics_port)
    finally:
        await otlp.stop(None)


def _config(*, voice: str = VOICE, model: str = "sonic-2", language: str = "en-US",
            rate: float = 0.0) -> tts_pb2.SynthesizeRequest:
    return tts_pb2.SynthesizeRequest(config=tts_pb2.SynthesisConfig(
        format=common_pb2.AudioFormat(encoding=common_pb2.AUDIO_ENCODING_PCM16,
                                      sample_rate_hz=RATE, channels=1),
        voice=voice, model=model, language=language, speaking_rate=rate))


def _text(text: str) -> tts_pb2.SynthesizeRequest:
    return tts_pb2.SynthesizeRequest(text=tts_pb2.TextChunk(text=text))


def _audio(responses: list[tts_pb2.SynthesizeResponse]) -> list[tts_pb2.SynthesizedAudio]:
    return [r.audio for r in responses if r.WhichOneof("response") == "audio"]


def _done(responses: list[tts_pb2.SynthesizeResponse]) -> list[tts_pb2.SegmentDone]:
    return [r.segment_done for r in responses if r.WhichOneof("response") == "segment_done"]


async def _speak(port: int, *requests: tts_pb2.SynthesizeRequest) -> list[
        tts_pb2.SynthesizeResponse]:
    async def gen() -> AsyncIterator[tts_pb2.SynthesizeRequest]:
        for request in requests:
            yield request

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = tts_pb2_grpc.TextToSpeechStub(channel)
        return [r async for r in stub.Synthesize(gen(), timeout=60)]


async def _read_until(call: Any, kind: str) -> list[tts_pb2.SynthesizeResponse]:
    responses = []
    while True:
        response = await call.read()
        assert response is not grpc.aio.EOF, f"stream ended before a {kind} response"
        responses.append(response)
        if response.WhichOneof("response") == kind:
            return responses


async def _drain(call: Any) -> list[tts_pb2.SynthesizeResponse]:
    responses = []
    while (response := await call.read()) is not grpc.aio.EOF:
        responses.append(response)
    return responses


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:  # noqa: S310
        return str(response.read().decode())


def _fallbacks(metrics: str, reason: str) -> float:
    for labels, value in re.findall(r"voxmesh_provider_fallbacks_total\{([^}]*)\} (\S+)",
                                    metrics):
        found = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        wanted = {"component": "tts", "from": "cartesia", "to": "piper-local", "reason": reason}
        if wanted.items() <= found.items():
            return float(value)
    return 0.0


async def _fallback_event(receiver: SpanReceiver, reason: str) -> dict[str, str]:
    expected = {"voxmesh.fallback.component": "tts", "voxmesh.fallback.from": "cartesia",
                "voxmesh.fallback.to": "piper-local", "voxmesh.fallback.reason": reason}
    deadline = time.monotonic() + 10
    while True:
        for span in receiver.spans:
            if span["name"] == "tts.segment" and ("provider.fallback", expected) in span["events"]:
                return span["attributes"]
        assert time.monotonic() < deadline, f"no tts.segment span with a {reason} fallback"
        await asyncio.sleep(0.1)


async def test_audio_starts_on_the_first_clause_in_one_context(service: Service) -> None:
    fake = service.fake
    clause, rest = "Thanks for calling the Trattoria, ", "your table for two is booked at eight."
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        call = tts_pb2_grpc.TextToSpeechStub(channel).Synthesize(timeout=30)
        await call.write(_config())
        ready = await call.read()
        await call.write(_text(clause))
        before_rest = await _read_until(call, "audio")
        context = fake.contexts[-1]
        sent_so_far = [r["transcript"] for r in fake.requests(context)]
        await call.write(_text(rest))
        await call.done_writing()
        after = await _drain(call)
    assert ready.ready.provider == "cartesia" and ready.ready.voice == VOICE
    # The clause alone was at Cartesia, and its audio came back, before the rest was written.
    assert sent_so_far == [clause, ""]
    assert _audio(before_rest)[0].text == clause.strip()
    requests = fake.requests(context)
    assert [(r["transcript"], r["continue"], r.get("flush", False)) for r in requests] == [
        (clause, True, False), ("", True, True),
        (rest + " ", True, False), ("", True, True), ("", False, False)]
    audio = _audio(before_rest + after)
    assert {a.provider for a in audio} == {"cartesia"}
    assert [d.segment_index for d in _done(after)] == [0, 1]
    # Cartesia was asked for the client's rate, so its samples arrive untouched.
    backend = ToneBackend()
    for index, text in enumerate([clause.strip(), rest]):
        expected, _ = await backend.render(text, RATE)
        pcm = b"".join(a.chunk.data for a in audio if a.segment_index == index)
        assert pcm.startswith(expected) and len(pcm) - len(expected) <= 2


async def test_word_timings_are_cartesias_not_estimated(service: Service) -> None:
    fake = service.fake
    first = len(fake.contexts)
    responses = await _speak(service.port, _config(), _text("Your order has shipped. "),
                             _text("It arrives on Friday, between nine and noon."))
    context = fake.contexts[first]
    audio = _audio(responses)
    assert audio and not any(a.timings_estimated for a in audio)
    # Segment-relative timings back on the context's clock must be what the server sent.
    starts: dict[int, float] = {}
    position_ms = 0.0
    for chunk in audio:
        starts.setdefault(chunk.segment_index, position_ms)
        position_ms += len(chunk.chunk.data) / 32
    words = [(w, starts[a.segment_index] + w.start_ms, starts[a.segment_index] + w.end_ms)
             for a in audio for w in a.words]
    sent = fake.timestamps[context]
    assert [w.word for w, _, _ in words] == ["Your", "order", "has", "shipped.", "It", "arrives",
                                            "on", "Friday,", "between", "nine", "and", "noon."]
    assert [word for word, _, _ in sent] == [re.sub(r"\W+$", "", w.word) for w, _, _ in words]
    for (_, start, end), (_, sent_start, sent_end) in zip(words, sent, strict=True):
        assert abs(start - sent_start * 1000) <= 2 and abs(end - sent_end * 1000) <= 2


async def test_cancel_stops_the_context_and_the_stream_goes_on(service: Service) -> None:
    fake = service.fake
    fake.realtime_factor = 4.0
    first, cancels = len(fake.contexts), len(fake.cancelled())
    long_text = ("This sentence should never be heard in full because the caller "
                 "interrupts the agent. ") * 2
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            call = tts_pb2_grpc.TextToSpeechStub(channel).Synthesize(timeout=30)
            await call.write(_config())
            await call.write(_text(long_text))
            before = await _read_until(call, "audio")
            await call.write(tts_pb2.SynthesizeRequest(cancel=tts_pb2.Cancel()))
            cancelled = await _read_until(call, "cancelled")
            await call.write(_text("Only this one."))
            await call.done_writing()
            after = await _drain(call)
    finally:
        fake.realtime_factor = None
    interrupted, resumed = fake.contexts[first], fake.contexts[first + 1]
    assert fake.cancelled()[cancels:] == [interrupted]
    expected, _ = await ToneBackend().render(long_text.split(". ")[0] + ".", RATE)
    chunks_per_sentence = -(-len(expected) // (RATE * 2 * fake.chunk_ms // 1000))
    assert fake.chunks_sent(interrupted) < chunks_per_sentence, "the context kept going"
    spoken = [a.text for a in _audio(after) if a.text]
    assert spoken == ["Only this one."]
    assert all(a.segment_index == 0 for a in _audio(before + cancelled))
    assert [r["transcript"] for r in fake.requests(resumed)][0] == "Only this one. "


async def test_voice_model_language_and_rate_reach_the_server(service: Service) -> None:
    fake = service.fake
    first = len(fake.contexts)
    await _speak(service.port, _config(model="sonic-3", language="fr-FR", rate=1.3),
                 _text("Bonjour et bienvenue."))
    await _speak(service.port, _config(voice="", model="", language="", rate=0.7),
                 _text("Hello there."))
    sonic3, default = (fake.requests(fake.contexts[first])[0],
                       fake.requests(fake.contexts[first + 1])[0])
    assert sonic3["voice"] == {"mode": "id", "id": VOICE}
    assert sonic3["model_id"] == "sonic-3" and sonic3["language"] == "fr"
    assert sonic3["generation_config"] == {"speed": pytest.approx(1.3)}
    assert sonic3["output_format"] == {"container": "raw", "encoding": "pcm_s16le",
                                       "sample_rate": RATE}
    assert sonic3["add_timestamps"] is True
    assert default["model_id"] == "sonic-2" and "language" not in default
    assert default["voice"]["id"] == CartesiaTTS.default_voice and default["speed"] == "slow"
    versions = {h.headers.get("cartesia-version") for h in fake.handshakes if h.accepted}
    assert versions and all(versions)


async def test_disconnect_mid_segment_hands_the_rest_to_piper(service: Service) -> None:
    fake = service.fake
    fake.drop_after(8, context_index=len(fake.contexts))
    text = ("The kitchen closes at ten tonight, so please arrive by nine. "
            "We keep your table for fifteen minutes.")
    responses = await _speak(service.port, _config(), _text(text))
    assert fake.drops == 1
    audio = _audio(responses)
    first = [a.provider for a in audio if a.segment_index == 0]
    seen = [(a.segment_index, a.provider, [w.word for w in a.words]) for a in audio if a.words]
    assert first[0] == "cartesia" and first[-1] == "piper-local", seen[:2]
    assert first == sorted(first), "cartesia audio, then piper audio"
    assert {a.provider for a in audio if a.segment_index > 0} == {"piper-local"}
    assert [d.segment_index for d in _done(responses)] == [0, 1]
    # Every word is spoken once: Cartesia's (aligned) before the drop, Piper's after.
    assert [w.word for a in audio for w in a.words] == text.split()
    cartesia_words = [w.word for a in audio if a.provider == "cartesia" for w in a.words]
    assert cartesia_words and not any(a.timings_estimated for a in audio
                                      if a.provider == "cartesia" and a.words)
    assert _fallbacks(_scrape(service.metrics_port), "PROVIDER_DISCONNECTED") >= 1
    attributes = await _fallback_event(service.receiver, "PROVIDER_DISCONNECTED")
    assert attributes["voxmesh.tts.provider"] == "piper-local"
    # The next turn is Cartesia's again, over a new connection.
    again = await _speak(service.port, _config(), _text("Welcome back."))
    assert {a.provider for a in _audio(again)} == {"cartesia"}
    assert len([h for h in fake.handshakes if h.accepted]) >= 2


async def test_missed_first_byte_deadline_falls_over(service: Service) -> None:
    fake = service.fake
    fake.first_chunk_delay_s = DEADLINE_MS / 1000 + 2
    first, cancels = len(fake.contexts), len(fake.cancelled())
    try:
        started = time.monotonic()
        responses = await _speak(service.port, _config(), _text("Sorry, one moment please."))
        elapsed = time.monotonic() - started
    finally:
        fake.first_chunk_delay_s = 0.0
    audio = _audio(responses)
    assert audio and {a.provider for a in audio} == {"piper-local"}
    assert DEADLINE_MS / 1000 <= elapsed < DEADLINE_MS / 1000 + 2
    assert fake.cancelled()[cancels:] == [fake.contexts[first]]
    assert _fallbacks(_scrape(service.metrics_port), "FIRST_BYTE_DEADLINE") >= 1
    await _fallback_event(service.receiver, "FIRST_BYTE_DEADLINE")


async def test_the_key_is_never_logged(service: Service) -> None:
    # The service logs at DEBUG, where the WebSocket library prints the handshake headers.
    log = service.log()
    assert "Authorization" in log, "the handshake was not logged, so nothing was tested"
    assert KEY not in log


async def _run_service(env: dict[str, str], timeout_s: float = 60) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voxmesh_tts", env={**_base_env(), "VOXMESH_TTS_PORT": "0",
                                                   **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout=timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


async def test_a_missing_key_stops_startup_naming_both_variables() -> None:
    code, output = await _run_service({"VOXMESH_TTS_PROVIDER": "cartesia,piper-local"})
    assert code != 0
    assert "cartesia: no API key" in output
    assert "VOXMESH_TTS_API_KEY" in output and "CARTESIA_API_KEY" in output


async def test_a_rejected_key_fails_load_and_is_never_shown(service: Service) -> None:
    fake = service.fake
    attempts = len(fake.handshakes)
    code, output = await _run_service({
        "VOXMESH_TTS_PROVIDER": "cartesia", "VOXMESH_TTS_BASE_URL": fake.url,
        "CARTESIA_API_KEY": WRONG_KEY, "VOXMESH_LOG_LEVEL": "DEBUG"})
    assert code != 0
    assert ("tts cannot start: cartesia failed to load: cartesia rejected the API key "
            "(HTTP 401/403); check VOXMESH_TTS_API_KEY or CARTESIA_API_KEY") in output
    assert "Traceback" not in output
    assert WRONG_KEY not in output
    refused = fake.handshakes[attempts:]
    assert refused and not any(h.accepted for h in refused)
    assert refused[0].headers["authorization"] == f"Bearer {WRONG_KEY}"


async def test_an_unreachable_cartesia_at_startup_is_skipped_for_piper(tmp_path: Path) -> None:
    closed = free_port()  # nothing listens here
    async with tts_process(tmp_path, {
            "VOXMESH_TTS_PROVIDER": "cartesia,piper-local", "VOXMESH_TTS_API_KEY": KEY,
            "VOXMESH_TTS_BASE_URL": f"http://127.0.0.1:{closed}"}) as stack:
        responses = await _speak(stack.ports.tts, _config(), _text("Still here."))
        log = stack.children["tts"].log_path.read_text()
    assert "cartesia is unavailable at startup (PROVIDER_UNAVAILABLE" in log
    assert "tts: cartesia failed (PROVIDER_UNAVAILABLE); falling over to piper-local" in log
    audio = _audio(responses)
    assert audio and {a.provider for a in audio} == {"piper-local"}
    assert [w.word for a in audio for w in a.words] == ["Still", "here."]


async def test_provider_logs_and_errors_never_hold_the_key(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    rejected = CartesiaTTS(api_key=SecretStr(WRONG_KEY), base_url=service.fake.url)
    with pytest.raises(ProviderError) as info:
        await rejected.load()
    await rejected.aclose()
    assert info.value.reason == "PROVIDER_AUTH_FAILED" and not info.value.retryable
    accepted = CartesiaTTS(api_key=SecretStr(KEY), base_url=service.fake.url)
    try:
        await accepted.load()
        pieces = await accepted._synthesize("Testing one two.", VOICE, 1.0)
        assert pieces[0].pcm16 and [w for w, _, _ in pieces[0].words] == ["Testing", "one",
                                                                          "two."]
    finally:
        await accepted.aclose()
    assert "Authorization: Bearer **********" in caplog.text
    for text in (caplog.text, str(info.value), repr(rejected), repr(accepted)):
        assert KEY not in text and WRONG_KEY not in text
