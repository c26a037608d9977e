"""TTS service: streaming behaviour and bad input."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from voxmesh.cli.stack import Stack
from voxmesh.errors import error_from_rpc
from voxmesh.v1 import common_pb2, tts_pb2, tts_pb2_grpc

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]


def _config(rate: int = 16000) -> tts_pb2.SynthesizeRequest:
    return tts_pb2.SynthesizeRequest(config=tts_pb2.SynthesisConfig(
        format=common_pb2.AudioFormat(encoding=common_pb2.AUDIO_ENCODING_PCM16,
                                      sample_rate_hz=rate, channels=1)))


def _text(text: str) -> tts_pb2.SynthesizeRequest:
    return tts_pb2.SynthesizeRequest(text=tts_pb2.TextChunk(text=text))


async def _collect(stack: Stack, *requests: tts_pb2.SynthesizeRequest) -> list[
        tts_pb2.SynthesizeResponse]:
    async def gen() -> AsyncIterator[tts_pb2.SynthesizeRequest]:
        for request in requests:
            yield request

    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports.tts}") as channel:
        stub = tts_pb2_grpc.TextToSpeechStub(channel)
        return [r async for r in stub.Synthesize(gen(), timeout=30)]


async def test_sentences_stream_with_estimated_word_timings(stack: Stack) -> None:
    responses = await _collect(stack, _config(), _text("Your table is booked. "),
                               _text("See you at seven!"))
    audio = [r.audio for r in responses if r.WhichOneof("response") == "audio"]
    done = [r.segment_done for r in responses if r.WhichOneof("response") == "segment_done"]
    assert [d.segment_index for d in done] == [0, 1]
    assert all(d.audio_ms > 300 for d in done)
    assert audio[0].text == "Your table is booked."
    assert audio[0].timings_estimated, "Piper's word timings must be flagged as estimated"
    words = [w.word for a in audio if a.segment_index == 0 for w in a.words]
    assert words == ["Your", "table", "is", "booked."]
    timings = [w for a in audio if a.segment_index == 0 for w in a.words]
    assert all(a.start_ms <= a.end_ms <= b.start_ms + 1 for a, b in zip(timings, timings[1:], strict=False))
    pcm = b"".join(a.chunk.data for a in audio)
    assert abs(len(pcm) / 32 - sum(d.audio_ms for d in done)) < 50  # 32 bytes per ms at 16 kHz


async def test_cancel_drops_queued_text(stack: Stack) -> None:
    long_text = "This sentence should never be spoken because it is cancelled. " * 5
    responses = await _collect(
        stack, _config(), _text(long_text), tts_pb2.SynthesizeRequest(cancel=tts_pb2.Cancel()),
        _text("Only this one."))
    kinds = [r.WhichOneof("response") for r in responses]
    assert "cancelled" in kinds
    after = responses[kinds.index("cancelled") + 1:]
    spoken = [r.audio.text for r in after if r.WhichOneof("response") == "audio" and r.audio.text]
    assert spoken == ["Only this one."]


async def _expect_error(stack: Stack, *requests: tts_pb2.SynthesizeRequest) -> tuple[
        grpc.StatusCode, common_pb2.ErrorDetail]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _collect(stack, *requests)
    return info.value.code(), error_from_rpc(info.value)


async def test_text_over_limit_is_invalid_argument(stack: Stack) -> None:
    code, detail = await _expect_error(stack, _config(), _text("word " * 1000))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert detail.reason == "TEXT_TOO_LONG"
    assert detail.field == "text.text"
    assert "5000" in detail.message and "2000" in detail.message


async def test_unsupported_output_rate(stack: Stack) -> None:
    code, detail = await _expect_error(stack, _config(rate=12345))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert detail.reason == "SAMPLE_RATE_UNSUPPORTED"


async def test_text_before_config(stack: Stack) -> None:
    code, detail = await _expect_error(stack, _text("hello"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert detail.reason == "CONFIG_REQUIRED"
