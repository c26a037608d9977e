"""Pacing of the edge's outbound agent audio track (what aiortc's sender pulls every 20 ms)."""

from __future__ import annotations

import asyncio
import time

import av
import numpy as np
from aiortc import rtp

from voxmesh import audio
from voxmesh_edge.media import AIORTC_AUDIO_LEVEL, audio_level_dbov
from voxmesh_edge.server import AgentAudioTrack

FRAME_S = audio.FRAME_MS / 1000


def loud_frame(ms: int = audio.FRAME_MS) -> bytes:
    samples = audio.INTERNAL_RATE * ms // 1000
    tone = 8000 * np.sin(2 * np.pi * 440 * np.arange(samples) / audio.INTERNAL_RATE)
    return tone.astype("<i2").tobytes()


def is_silent(frame: object) -> bool:
    return not np.any(frame.to_ndarray())  # type: ignore[attr-defined]


async def test_silence_is_paced_every_20_ms() -> None:
    track = AgentAudioTrack()
    await track.recv()
    started = time.monotonic()
    for _ in range(5):
        assert is_silent(await track.recv())
    assert 5 * FRAME_S * 0.8 < time.monotonic() - started < 5 * FRAME_S + 0.1
    track.stop()


async def test_an_answer_starts_at_once_instead_of_at_the_next_tick() -> None:
    track = AgentAudioTrack()
    await track.recv()
    await track.recv()  # now idle, waiting for the next 20 ms tick
    pending = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0.004)
    queued_at = time.monotonic()
    track.push(loud_frame(60), turn_index=1)
    first = await pending
    early_by = time.monotonic() - queued_at
    assert not is_silent(first)
    assert early_by < 0.012, f"the first frame waited {early_by * 1000:.1f} ms"
    # The rest of the answer keeps a 20 ms pace from the new start.
    started = time.monotonic()
    second, third = await track.recv(), await track.recv()
    assert not is_silent(second) and not is_silent(third)
    assert 2 * FRAME_S * 0.8 < time.monotonic() - started < 2 * FRAME_S + 0.05
    assert third.pts - first.pts == 2 * track.frame_samples
    track.stop()


async def test_audio_queued_while_the_sender_was_busy_goes_out_at_once() -> None:
    track = AgentAudioTrack()
    await track.recv()
    await track.recv()  # a silent frame; aiortc now encodes it before asking for the next
    track.push(loud_frame(60), turn_index=1)
    asked_at = time.monotonic()
    first = await track.recv()
    assert not is_silent(first)
    assert time.monotonic() - asked_at < 0.008, "waited for the 20 ms tick"
    track.stop()


async def test_audio_mid_answer_does_not_rush_the_pace() -> None:
    track = AgentAudioTrack()
    track.push(loud_frame(200), turn_index=1)
    await track.recv()
    started = time.monotonic()
    for _ in range(3):
        pending = asyncio.ensure_future(track.recv())
        track.push(loud_frame(), turn_index=1)  # more audio while the answer plays
        assert not is_silent(await pending)
    assert time.monotonic() - started > 3 * FRAME_S * 0.8
    track.stop()


def test_fast_audio_level_matches_aiortc() -> None:
    assert rtp.compute_audio_level_dbov is audio_level_dbov  # what aiortc's senders call
    assert AIORTC_AUDIO_LEVEL is not audio_level_dbov
    rng = np.random.default_rng(7)
    for layout, channels in (("stereo", 2), ("mono", 1)):
        for scale in (0, 1, 30, 1000, 32767):
            frame = av.AudioFrame(format="s16", layout=layout, samples=960)
            frame.sample_rate = 48_000
            pcm = rng.integers(-scale, scale + 1, 960 * channels).astype("<i2")
            frame.planes[0].update(pcm.tobytes())
            assert audio_level_dbov(frame) == AIORTC_AUDIO_LEVEL(frame), (layout, scale)
