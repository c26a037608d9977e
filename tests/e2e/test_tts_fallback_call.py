"""A real call whose TTS is Cartesia, and Cartesia drops in the middle of the answer.

The whole platform runs (WebRTC edge, worker, STT, LLM, guardrails, TTS over gRPC, NATS) with
``VOXMESH_TTS_PROVIDER=cartesia,piper-local`` against ``tests/support/fake_cartesia.py``, which
speaks with the real Piper voice so that speech recognition can check what the caller heard.
Mid-answer the fake ends the connection; the TTS service hands the words Cartesia had not yet
covered to Piper, and the caller must still hear the whole answer.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from fake_cartesia import FakeCartesia, PiperBackend

from voxmesh.cli.caller_audio import CallerVoice
from voxmesh.cli.stack import Ports, Stack
from voxmesh.text import normalize_words, word_error_rate
from voxmesh.v1 import common_pb2, stt_pb2, stt_pb2_grpc

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

KEY = "ck-e2e-" + uuid.uuid4().hex
QUESTION = "What is the capital of France?"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def cartesia_stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Stack, FakeCartesia]]:
    """The embedded platform with Cartesia (the fake, speaking with Piper) then Piper."""
    backend = PiperBackend()
    await backend.load()
    try:
        async with FakeCartesia(backend, api_key=KEY) as fake:
            platform = Stack(
                state_dir=tmp_path_factory.mktemp("stack-cartesia"), ports=Ports.free(),
                drain_grace_s=3.0,
                env={"VOXMESH_TTS_PROVIDER": "cartesia,piper-local",
                     "VOXMESH_TTS_BASE_URL": fake.url, "VOXMESH_TTS_API_KEY": KEY,
                     "VOXMESH_WORKER_DRAIN_TIMEOUT_S": "20"})
            try:
                await platform.start()
                yield platform, fake
            finally:
                await platform.stop()
    finally:
        await backend.aclose()


async def _transcribe(port: int, pcm: bytes) -> str:
    """What the platform's own STT service hears in ``pcm`` (16 kHz PCM16)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = stt_pb2_grpc.SpeechToTextStub(channel).Recognize(timeout=60)
        await call.write(stt_pb2.RecognizeRequest(config=stt_pb2.StreamConfig(
            format=common_pb2.AudioFormat(encoding=common_pb2.AUDIO_ENCODING_PCM16,
                                          sample_rate_hz=16000, channels=1))))
        assert (await call.read()).WhichOneof("response") == "ready"
        for sequence, offset in enumerate(range(0, len(pcm), 3200)):
            await call.write(stt_pb2.RecognizeRequest(audio=common_pb2.AudioChunk(
                data=pcm[offset : offset + 3200], sequence=sequence)))
        await call.write(stt_pb2.RecognizeRequest(finalize=stt_pb2.Finalize(request_id="heard")))
        while True:
            response = await call.read()
            assert response is not grpc.aio.EOF, "STT ended without a final transcript"
            if response.WhichOneof("response") == "transcript" and response.transcript.is_final:
                await call.done_writing()
                return str(response.transcript.text)


def _final_answer(event: dict[str, Any]) -> bool:
    body = event.get("agent_text") or {}
    return bool(body.get("is_final")) and body.get("turn_index") == 1


async def test_caller_hears_the_whole_answer_when_cartesia_drops(
    cartesia_stack: tuple[Stack, FakeCartesia], caller_voice: CallerVoice,
) -> None:
    from voxmesh_edge.client import WebRTCCaller

    stack, fake = cartesia_stack
    caller = WebRTCCaller(stack.edge_url)
    await caller.connect()
    try:
        await caller.wait_greeting(timeout=60)
        contexts_before = len(fake.contexts)
        # The next Cartesia audio is the answer's: the connection ends 240 ms into it.
        fake.drop_after(6)
        said_at = await caller.play(caller_voice.speak(QUESTION))
        await caller.wait_agent_audio(start_after=said_at, silence_ms=900, timeout=60)
        final = await caller.wait_event(_final_answer, timeout=60)
        heard_pcm = caller.agent_audio.pcm(start=said_at)
    finally:
        await caller.hangup()
    answer = str(final["agent_text"]["text"])
    assert fake.drops == 1, "the fake never dropped: the answer was not Cartesia's"
    # Cartesia's audio of the answer reached the service before the connection ended.
    assert any(fake.chunks_sent(c) == 6 for c in fake.contexts[contexts_before:])
    tts_log = stack.log_tail("tts", lines=400)
    assert "tts: cartesia failed (PROVIDER_DISCONNECTED); falling over to piper-local" in tts_log
    heard = await _transcribe(stack.ports.stt, heard_pcm)
    print(f"agent said: {answer!r}\ncaller heard: {heard!r}")
    assert len(normalize_words(answer)) >= 3, answer
    assert word_error_rate(answer, heard) <= 0.35, (answer, heard)
    # The end of the answer, spoken after the drop, reached the caller.
    assert normalize_words(answer)[-1] in normalize_words(heard), (answer, heard)
