"""Latency-model providers behind the real STT, LLM and TTS gRPC services.

Each service runs as its own process on loopback with ``VOXMESH_<SVC>_PROVIDER=latency-model``
(the LLM with a real nats-server for its context store); no model is loaded. Delays are
constant so the bounds can be tight below (nothing may come early) and generous above (the
machine is shared and slow).
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import pytest_asyncio

from voxmesh.audio import rms_dbfs
from voxmesh.cli.stack import Child, Ports, Stack, nats_server_binary
from voxmesh.latency_model import DelayDistribution
from voxmesh.v1 import (
    common_pb2,
    llm_pb2,
    llm_pb2_grpc,
    stt_pb2,
    stt_pb2_grpc,
    tts_pb2,
    tts_pb2_grpc,
)
from voxmesh_llm.providers.latency_model import word_tokens
from voxmesh_stt.providers.latency_model import LatencyModelSTT

pytestmark = [pytest.mark.asyncio(loop_scope="session")]

DELAY_MS = 200
EARLY_S = 0.19  # DELAY_MS less 10 ms of timer slack: nothing may arrive before this
LATE_S = 2.0
PHRASES = ("Alpha one two.", "Bravo three four five.", "Charlie six.", "Delta seven eight.")
STT_SEED = 7
LLM_TEXT = ("Certainly, a table for four at eight is booked under your name. We look forward "
            "to seeing you then, and please call us if your plans change.")
TOKENS_PER_S = 40.0
WORDS_PER_MINUTE = 150.0
REALTIME_FACTOR = 10.0
_SERVICES = ("stt", "llm", "tts")


def _service_env(nats_url: str) -> dict[str, str]:
    constant = f"constant:ms={DELAY_MS}"
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        "VOXMESH_NATS_URL": nats_url,
        "VOXMESH_STT_PROVIDER": "latency-model",
        "VOXMESH_STT_LATENCY_FIRST_BYTE": constant,
        "VOXMESH_STT_LATENCY_PHRASES": "|".join(PHRASES),
        "VOXMESH_STT_LATENCY_SEED": str(STT_SEED),
        "VOXMESH_LLM_PROVIDER": "latency-model",
        "VOXMESH_LLM_LATENCY_FIRST_TOKEN": constant,
        "VOXMESH_LLM_LATENCY_TOKENS_PER_S": str(TOKENS_PER_S),
        "VOXMESH_LLM_LATENCY_TEXT": LLM_TEXT,
        "VOXMESH_TTS_PROVIDER": "latency-model",
        "VOXMESH_TTS_LATENCY_FIRST_AUDIO": constant,
        "VOXMESH_TTS_LATENCY_WORDS_PER_MINUTE": str(WORDS_PER_MINUTE),
        "VOXMESH_TTS_LATENCY_REALTIME_FACTOR": str(REALTIME_FACTOR),
    }


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def services(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """nats-server plus the three model services with the latency-model provider."""
    state = tmp_path_factory.mktemp("latency-model")
    stack = Stack(state_dir=state, ports=Ports.free(), drain_grace_s=1.0)
    env = _service_env(stack.nats_url)
    ports = stack.ports
    logs = state / "logs"
    logs.mkdir()
    stack.children = {"nats": Child(
        "nats", [nats_server_binary(), "-a", "127.0.0.1", "-p", str(ports.nats), "-js", "-sd",
                 str(state / "jetstream")], env, logs / "nats.log", 5)}
    for name in _SERVICES:
        prefix = f"VOXMESH_{name.upper()}_"
        stack.children[name] = Child(
            name, [sys.executable, "-m", f"voxmesh_{name}"],
            {**env, f"{prefix}PORT": str(getattr(ports, name)), f"{prefix}DRAIN_GRACE_S": "1"},
            logs / f"{name}.log", 5)
    try:
        await stack.spawn("nats")
        await stack.wait_healthy("nats", timeout_s=20)
        for name in _SERVICES:
            await stack.spawn(name)
        await asyncio.gather(*(stack.wait_healthy(name, timeout_s=60) for name in _SERVICES))
        yield stack
    finally:
        await stack.stop()


def _utterance(seed: int, seconds: float = 0.8) -> bytes:
    """Deterministic noise at 16 kHz, PCM16 (the provider's rate: the service passes it on)."""
    samples = np.random.default_rng(seed).normal(0, 3000, int(16000 * seconds))
    return samples.astype("<i2").tobytes()


async def _recognize(stub: stt_pb2_grpc.SpeechToTextStub,
                     utterances: list[bytes]) -> tuple[stt_pb2.RecognizerReady,
                                                       list[tuple[str, float]]]:
    """Sends each utterance and a Finalize; returns (text, seconds from Finalize to final)."""
    loop = asyncio.get_running_loop()
    call = stub.Recognize(timeout=20)
    await call.write(stt_pb2.RecognizeRequest(config=stt_pb2.StreamConfig(
        format=common_pb2.AudioFormat(encoding=common_pb2.AUDIO_ENCODING_PCM16,
                                      sample_rate_hz=16000, channels=1))))
    first = await call.read()
    assert first.WhichOneof("response") == "ready"
    finals, sequence = [], 0
    for number, audio in enumerate(utterances):
        for offset in range(0, len(audio), 3200):
            await call.write(stt_pb2.RecognizeRequest(audio=common_pb2.AudioChunk(
                data=audio[offset:offset + 3200], sequence=sequence)))
            sequence += 1
        asked = loop.time()
        await call.write(stt_pb2.RecognizeRequest(
            finalize=stt_pb2.Finalize(request_id=f"u{number}")))
        response = await call.read()
        waited = loop.time() - asked
        assert response.transcript.is_final and response.transcript.request_id == f"u{number}"
        finals.append((response.transcript.text, waited))
    await call.done_writing()
    assert await call.read() == grpc.aio.EOF
    return first.ready, finals


async def test_stt_gives_deterministic_phrases_after_the_first_byte_delay(
    services: Stack,
) -> None:
    oracle = LatencyModelSTT(first_byte=DelayDistribution("constant", ms=0), phrases=PHRASES,
                             seed=STT_SEED)
    audios = [_utterance(seed) for seed in range(6)]
    expected = [oracle.phrase_for(audio) for audio in audios]
    assert len(set(expected)) > 1, "six utterances should not all map to one phrase"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{services.ports.stt}") as channel:
        stub = stt_pb2_grpc.SpeechToTextStub(channel)
        ready, finals = await _recognize(stub, audios)
        # The same audio on another stream gets the same phrase again.
        _, again = await _recognize(stub, [audios[3], audios[0]])
    assert ready.provider == "latency-model"
    assert ready.model == f"latency-model(first_byte=constant:ms={DELAY_MS})"
    assert [text for text, _ in finals] == expected
    assert [text for text, _ in again] == [expected[3], expected[0]]
    for _, waited in finals + again:
        assert EARLY_S <= waited < LATE_S, f"final after {waited * 1000:.0f} ms"


async def test_llm_streams_the_text_at_the_token_rate_through_the_context_store(
    services: Stack,
) -> None:
    loop = asyncio.get_running_loop()
    session = uuid.uuid4().hex
    tokens = word_tokens(LLM_TEXT)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{services.ports.llm}") as channel:
        llm = llm_pb2_grpc.LanguageModelStub(channel)
        started = loop.time()
        arrivals: list[tuple[str, float]] = []
        done = None
        async for event in llm.Generate(llm_pb2.GenerateRequest(
                turn=common_pb2.TurnRef(session_id=session, turn_index=1),
                user_text="A table for four at eight, please.", max_tokens=200,
                turn_completion=True), timeout=20):
            kind = event.WhichOneof("event")
            if kind == "delta":
                arrivals.append((event.delta.text, loop.time() - started))
            elif kind == "done":
                done = event.done
        assert "".join(text for text, _ in arrivals) == LLM_TEXT
        assert done is not None
        assert done.model == (f"latency-model(first_token=constant:ms={DELAY_MS},"
                              f"tokens_per_s={TOKENS_PER_S:g})")
        assert done.completion_tokens == len(tokens)
        assert done.finish_reason == llm_pb2.GenerationDone.FINISH_REASON_STOP
        assert DELAY_MS <= done.first_token_ms < LATE_S * 1000
        first_s, last_s = arrivals[0][1], arrivals[-1][1]
        assert EARLY_S <= first_s < LATE_S
        # Tokens are due at fixed times after the first, so the last can't come early ...
        streaming_s = (len(tokens) - 1) / TOKENS_PER_S
        assert last_s >= EARLY_S + streaming_s
        # ... and the rate between first and last is roughly the configured one.
        rate = (len(tokens) - 1) / (last_s - first_s)
        assert TOKENS_PER_S / 2 <= rate <= TOKENS_PER_S * 1.5, f"{rate:.1f} tokens/s"

        # Full service path: the answer is stored, replaced by what was heard, and seen by
        # the next turn; max_tokens cuts the reply short.
        await llm.CommitHeard(llm_pb2.CommitHeardRequest(
            turn=common_pb2.TurnRef(session_id=session, turn_index=1),
            heard_text="Certainly, a table for four", interrupted=True))
        short = [e async for e in llm.Generate(llm_pb2.GenerateRequest(
            turn=common_pb2.TurnRef(session_id=session, turn_index=2),
            user_text="Thanks.", max_tokens=3), timeout=20)]
        assert "".join(e.delta.text for e in short if e.HasField("delta")) == "".join(tokens[:3])
        assert short[-1].done.finish_reason == llm_pb2.GenerationDone.FINISH_REASON_LENGTH
        context = await llm.GetContext(llm_pb2.GetContextRequest(session_id=session))
        assert [(m.role, m.content, m.interrupted) for m in context.messages] == [
            ("user", "A table for four at eight, please.", False),
            ("assistant", "Certainly, a table for four", True),
            ("user", "Thanks.", False),
            ("assistant", "".join(tokens[:3]).strip(), False),
        ]
        await llm.EndSession(llm_pb2.EndSessionRequest(session_id=session))


async def test_tts_gives_audible_audio_at_the_speaking_rate_and_realtime_factor(
    services: Stack,
) -> None:
    loop = asyncio.get_running_loop()
    sentences = ["Your table for four is booked at eight tonight.",
                 "We will keep it for fifteen minutes after that."]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{services.ports.tts}") as channel:
        call = tts_pb2_grpc.TextToSpeechStub(channel).Synthesize(timeout=20)
        await call.write(tts_pb2.SynthesizeRequest(config=tts_pb2.SynthesisConfig(
            format=common_pb2.AudioFormat(encoding=common_pb2.AUDIO_ENCODING_PCM16,
                                          sample_rate_hz=16000, channels=1))))
        ready = (await call.read()).ready
        sent = loop.time()
        await call.write(tts_pb2.SynthesizeRequest(text=tts_pb2.TextChunk(
            text=" ".join(sentences))))
        await call.done_writing()
        responses: list[tuple[tts_pb2.SynthesizeResponse, float]] = []
        while (response := await call.read()) != grpc.aio.EOF:
            responses.append((response, loop.time() - sent))
    assert ready.provider == "latency-model" and ready.voice == "latency-model-tone"
    audio = [(r.audio, t) for r, t in responses if r.WhichOneof("response") == "audio"]
    done = [r.segment_done for r, _ in responses if r.WhichOneof("response") == "segment_done"]
    assert [d.segment_index for d in done] == [0, 1]
    first_audio = {}
    for index, sentence in enumerate(sentences):
        pieces = [(a, t) for a, t in audio if a.segment_index == index]
        first_audio[index] = pieces[0][1]
        assert pieces[0][0].text == sentence
        assert pieces[0][0].timings_estimated
        assert [w.word for a, _ in pieces for w in a.words] == sentence.split()
        pcm = b"".join(a.chunk.data for a, _ in pieces)
        assert rms_dbfs(pcm) > -30, "the tone must be audible, not silence"
        expected_ms = len(sentence.split()) * 60_000 / WORDS_PER_MINUTE
        assert done[index].audio_ms == pytest.approx(expected_ms, rel=0.2)
        assert len(pcm) / 32 == pytest.approx(expected_ms, rel=0.2)  # 32 bytes per ms
    assert EARLY_S <= first_audio[0] < LATE_S
    # The second sentence starts once the first's audio was produced at the real-time factor,
    # and then waits its own first-audio delay.
    produce_s = done[0].audio_ms / 1000 / REALTIME_FACTOR
    assert first_audio[1] - first_audio[0] >= produce_s + EARLY_S
    assert first_audio[1] - first_audio[0] < produce_s + LATE_S


async def _start_with(service: str, env: dict[str, str], log: Path) -> tuple[int, str]:
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", f"voxmesh_{service}", env=env, stdout=out,
            stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL)
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


async def test_a_bad_distribution_fails_startup_naming_the_setting(tmp_path: Path) -> None:
    bad = {"stt": ("VOXMESH_STT_LATENCY_FIRST_BYTE", "gauss:mean=120"),
           "llm": ("VOXMESH_LLM_LATENCY_FIRST_TOKEN", "normal:mean=250"),
           "tts": ("VOXMESH_TTS_LATENCY_FIRST_AUDIO", "uniform:low=90,high=60")}
    base = _service_env("nats://127.0.0.1:1")  # never reached: settings fail first
    results = await asyncio.gather(*(
        _start_with(service, {**base, variable: value, f"VOXMESH_{service.upper()}_PORT": "0"},
                    tmp_path / f"{service}.log")
        for service, (variable, value) in bad.items()))
    messages = {
        "stt": "unknown distribution 'gauss' (use constant, normal, lognormal or uniform)",
        "llm": "normal needs sd",
        "tts": "uniform needs low <= high, got low=90, high=60",
    }
    for (service, (variable, value)), (code, stderr) in zip(bad.items(), results, strict=True):
        assert code == 2, f"{service} exited {code}: {stderr}"
        assert f"  {variable}: Value error, {messages[service]}" in stderr, stderr
        assert repr(value) in stderr
