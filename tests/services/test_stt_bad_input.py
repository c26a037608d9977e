"""STT service against bad input: precise gRPC statuses, nothing lost, the service survives."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from voxmesh.cli.stack import Stack
from voxmesh.errors import error_from_rpc
from voxmesh.v1 import common_pb2, stt_pb2, stt_pb2_grpc

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

PCM16 = common_pb2.AUDIO_ENCODING_PCM16


def _config(rate: int = 16000, encoding: int = PCM16, interim: bool = False) -> stt_pb2.RecognizeRequest:
    return stt_pb2.RecognizeRequest(config=stt_pb2.StreamConfig(
        format=common_pb2.AudioFormat(encoding=encoding, sample_rate_hz=rate, channels=1),
        interim_results=interim))


def _audio(data: bytes, sequence: int) -> stt_pb2.RecognizeRequest:
    return stt_pb2.RecognizeRequest(audio=common_pb2.AudioChunk(data=data, sequence=sequence))


async def _run(stack: Stack, *requests: stt_pb2.RecognizeRequest) -> list[stt_pb2.RecognizeResponse]:
    async def gen() -> AsyncIterator[stt_pb2.RecognizeRequest]:
        for request in requests:
            yield request

    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports.stt}") as channel:
        stub = stt_pb2_grpc.SpeechToTextStub(channel)
        return [r async for r in stub.Recognize(gen(), timeout=30)]


async def _expect_error(stack: Stack, *requests: stt_pb2.RecognizeRequest) -> tuple[
        grpc.StatusCode, common_pb2.ErrorDetail, list[stt_pb2.RecognizeResponse]]:
    responses: list[stt_pb2.RecognizeResponse] = []

    async def gen() -> AsyncIterator[stt_pb2.RecognizeRequest]:
        for request in requests:
            yield request

    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports.stt}") as channel:
        call = stt_pb2_grpc.SpeechToTextStub(channel).Recognize(gen(), timeout=30)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for response in call:
                responses.append(response)
    return info.value.code(), error_from_rpc(info.value), responses


async def test_wrong_sample_rate_is_invalid_argument(stack: Stack) -> None:
    code, detail, _ = await _expect_error(stack, _config(rate=11025))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert detail.reason == "SAMPLE_RATE_UNSUPPORTED"
    assert detail.field == "config.format.sample_rate_hz"
    assert "11025" in detail.message


async def test_mulaw_must_be_8khz(stack: Stack) -> None:
    code, detail, _ = await _expect_error(
        stack, _config(rate=16000, encoding=common_pb2.AUDIO_ENCODING_MULAW))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert detail.reason == "SAMPLE_RATE_UNSUPPORTED"


async def test_audio_before_config_is_failed_precondition(stack: Stack) -> None:
    code, detail, _ = await _expect_error(stack, _audio(b"\0" * 640, 0))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert detail.reason == "CONFIG_REQUIRED"


async def test_frame_over_size_limit_rejected_but_buffered_audio_is_transcribed(
    stack: Stack, caller_voice: object
) -> None:
    speech = caller_voice.speak("Please cancel my reservation.")  # type: ignore[attr-defined]
    frames = [_audio(speech[i:i + 640], n) for n, i in enumerate(range(0, len(speech), 640))]
    oversized = _audio(b"\0" * (16000 * 2 * 2), len(frames))  # 2 s in one chunk; limit is 1 s
    code, detail, responses = await _expect_error(stack, _config(), *frames, oversized)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert detail.reason == "FRAME_TOO_LARGE"
    assert detail.field == "audio.data"
    finals = [r.transcript for r in responses if r.transcript.is_final]
    assert finals and "reservation" in finals[0].text.lower(), "accepted audio was lost"


async def test_out_of_order_sequence_rejected(stack: Stack) -> None:
    code, detail, _ = await _expect_error(
        stack, _config(), _audio(b"\0" * 640, 5), _audio(b"\0" * 640, 3))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert detail.reason == "OUT_OF_ORDER"
    assert detail.field == "audio.sequence"


async def test_odd_length_pcm_is_malformed(stack: Stack) -> None:
    code, detail, _ = await _expect_error(stack, _config(), _audio(b"\0" * 641, 0))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert detail.reason == "MALFORMED_AUDIO"


async def test_second_config_is_failed_precondition(stack: Stack) -> None:
    code, detail, _ = await _expect_error(stack, _config(), _config())
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert detail.reason == "CONFIG_ALREADY_SET"


async def test_stream_closed_halfway_still_gets_its_final(stack: Stack, caller_voice: object) -> None:
    speech = caller_voice.speak("What time do you open on Saturday?")  # type: ignore[attr-defined]
    half = speech[: len(speech) // 2 // 640 * 640]
    frames = [_audio(half[i:i + 640], n) for n, i in enumerate(range(0, len(half), 640))]
    responses = await _run(stack, _config(), *frames)  # half-close without Finalize
    finals = [r.transcript for r in responses if r.transcript.is_final]
    assert len(finals) == 1
    assert finals[0].request_id == "end-of-stream"
    assert "time" in finals[0].text.lower()


async def test_client_cancel_mid_stream_leaves_service_healthy(stack: Stack, caller_voice: object) -> None:
    speech = caller_voice.speak("Can you check the status of my order please?")  # type: ignore[attr-defined]

    async def endless() -> AsyncIterator[stt_pb2.RecognizeRequest]:
        yield _config(interim=True)
        for n, i in enumerate(range(0, len(speech), 640)):
            yield _audio(speech[i:i + 640], n)
        yield stt_pb2.RecognizeRequest(finalize=stt_pb2.Finalize(request_id="never-read"))

    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports.stt}") as channel:
        call = stt_pb2_grpc.SpeechToTextStub(channel).Recognize(endless())
        first = await call.read()
        assert first.WhichOneof("response") == "ready"
        call.cancel()
    # A fresh stream is served normally afterwards.
    frames = [_audio(speech[i:i + 640], n) for n, i in enumerate(range(0, len(speech), 640))]
    responses = await _run(stack, _config(), *frames,
                           stt_pb2.RecognizeRequest(finalize=stt_pb2.Finalize(request_id="f1")))
    finals = [r.transcript for r in responses if r.transcript.is_final]
    assert finals[0].request_id == "f1" and "order" in finals[0].text.lower()
