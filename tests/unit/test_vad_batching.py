"""Batched VAD: every call gets the probabilities it would get alone, in order, with no wait."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from voxmesh.cli.caller_audio import CallerVoice
from voxmesh_worker.vad import VadBatcher, VadStream, load_vad_session, run_windows


@pytest.fixture(scope="module")
def vad_session() -> object:
    return load_vad_session()


def _calls(voice: CallerVoice, count: int) -> list[bytes]:
    """Different audio per call: speech at different offsets, in noise."""
    rng = np.random.default_rng(7)
    speech = np.frombuffer(voice.speak("Hello, I would like a table."), np.int16)
    calls = []
    for index in range(count):
        mix = rng.normal(0, 60, 16000 * 2)
        start = 1600 * index
        mix[start:start + speech.size] += speech[: mix.size - start]
        calls.append(np.clip(mix, -32768, 32767).astype(np.int16).tobytes())
    return calls


def _alone(session: object, pcm: bytes, chunk_bytes: int) -> list[float]:
    stream, out = VadStream(), []
    for at in range(0, len(pcm), chunk_bytes):
        out += run_windows(session, [(stream, stream.take_windows(pcm[at:at + chunk_bytes]))])
    return out


async def test_batched_probabilities_match_each_call_run_alone(
        vad_session: object, caller_voice: CallerVoice) -> None:
    calls = _calls(caller_voice, 6)
    # Calls send 20 ms frames; one sends 60 ms chunks, so batches mix one and two windows.
    chunk_sizes = [640] * 5 + [1920]
    expected = [_alone(vad_session, pcm, size) for pcm, size in zip(calls, chunk_sizes,
                                                                      strict=True)]
    batcher = VadBatcher(vad_session, ThreadPoolExecutor(max_workers=1))

    async def one_call(pcm: bytes, chunk_bytes: int) -> list[float]:
        stream, out = VadStream(), []
        for at in range(0, len(pcm), chunk_bytes):
            out += [w.probability for w in await batcher.process(stream, pcm[at:at + chunk_bytes])]
            await asyncio.sleep(0)
        return out

    got = await asyncio.gather(*(one_call(pcm, size) for pcm, size in zip(calls, chunk_sizes,
                                                                           strict=True)))
    await batcher.aclose()
    for alone, batched in zip(expected, got, strict=True):
        assert len(batched) == len(alone) == 2 * 16000 // 512
        np.testing.assert_allclose(batched, alone, atol=1e-5)
    # The speech is found: the probabilities are not all near zero.
    assert all(max(probabilities) > 0.5 for probabilities in got)


async def test_audio_short_of_a_window_returns_at_once(vad_session: object) -> None:
    batcher = VadBatcher(vad_session, ThreadPoolExecutor(max_workers=1))
    stream = VadStream()
    assert await batcher.process(stream, b"\0\0" * 300) == []
    assert len(await batcher.process(stream, b"\0\0" * 300)) == 1  # 600 samples: one window
    await batcher.aclose()


async def test_digital_silence_after_speech_is_silence_despite_the_model_hangover(
        vad_session: object, caller_voice: CallerVoice) -> None:
    speech = caller_voice.speak("Hello, what time do you open tomorrow?")
    pcm = speech + b"\0\0" * (512 * 4)
    raw_stream = VadStream()
    raw = run_windows(vad_session, [(raw_stream, raw_stream.take_windows(pcm))])
    batcher = VadBatcher(vad_session, ThreadPoolExecutor(max_workers=1))
    vetoed = [w.probability for w in await batcher.process(VadStream(), pcm)]
    await batcher.aclose()
    first_silent = -(-len(speech) // 2 // 512)  # the first window with no speech sample in it
    # Silero has not let go yet (how far above 0 depends on the synthesized audio's tail);
    # the veto has.
    assert raw[first_silent] > vetoed[first_silent] == 0.0
    # Only windows below -60 dBFS are overruled (Piper's comma pause has some, too).
    samples = np.frombuffer(pcm, np.int16).astype(np.float64) / 32768
    for index, (before, after) in enumerate(zip(raw, vetoed, strict=True)):
        window = samples[index * 512:(index + 1) * 512]
        quiet = np.sqrt(np.mean(window**2)) < 10 ** (-60 / 20)
        assert after == (0.0 if quiet else before), index


async def test_quiet_windows_run_later_in_bulk_with_the_same_results(
        vad_session: object, caller_voice: CallerVoice) -> None:
    speech = np.frombuffer(caller_voice.speak("Hello, what time do you open?"), np.int16)
    calls = []
    for index in range(4):
        # Speech, digital silence long enough to be run in bulk, speech again, silence.
        gap = np.zeros(16000 * (index + 2) // 4, np.int16)
        calls.append(np.concatenate([speech, gap, speech[: 8000 * (index + 1)],
                                     np.zeros(1600, np.int16)]).tobytes())
    expected = []
    for pcm in calls:
        alone = VadStream()
        raw = run_windows(vad_session, [(alone, alone.take_windows(pcm))])
        samples = np.frombuffer(pcm, np.int16).astype(np.float32) / 32768
        quiet = [np.sqrt(np.mean(samples[i * 512:(i + 1) * 512] ** 2)) < 1e-3
                 for i in range(len(raw))]
        expected.append(([0.0 if q else p for p, q in zip(raw, quiet, strict=True)], alone.state))
    batcher = VadBatcher(vad_session, ThreadPoolExecutor(max_workers=1))

    async def one_call(pcm: bytes) -> tuple[list[float], VadStream]:
        stream, out = VadStream(), []
        for at in range(0, len(pcm), 640):
            out += [w.probability for w in await batcher.process(stream, pcm[at:at + 640])]
            await asyncio.sleep(0)
        return out, stream

    got = await asyncio.gather(*(one_call(pcm) for pcm in calls))
    assert any(stream.deferred for _, stream in got)  # the trailing silence is still deferred
    batcher.run_deferred()
    await asyncio.sleep(0.2)
    await batcher.aclose()
    for (want, state), (probabilities, stream) in zip(expected, got, strict=True):
        np.testing.assert_allclose(probabilities, want, atol=1e-5)
        assert max(probabilities) > 0.5
        # The call's model state followed its audio exactly: deferred windows ran, in order.
        assert not stream.deferred
        np.testing.assert_allclose(stream.state, state, atol=1e-4)
