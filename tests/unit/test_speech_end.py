"""The caller's speech end, placed within 2 ms and mapped to the clock."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from voxmesh_worker.speech_end import SpeechEndClock
from voxmesh_worker.vad import WINDOW_MS, VadBatcher, VadStream, VadWindow, load_vad_session


@pytest.fixture(scope="module")
def vad_session() -> object:
    return load_vad_session()

FRAME_BYTES = 640  # 20 ms of PCM16 at 16 kHz


def test_speech_end_is_the_quiet_tail_not_the_window_end() -> None:
    clock = SpeechEndClock(speech_floor=0.35)
    clock.on_audio(FRAME_BYTES * 2, arrived_at=100.0)  # 40 ms arrived: one window judged
    clock.on_window(VadWindow(0.9, quiet_tail_ms=10))
    assert clock.speech_end_ms == WINDOW_MS - 10
    # The sample 22 ms into the call arrived 18 ms before the latest one, at 100.0 s.
    assert clock.speech_end == pytest.approx(100.0 - 0.018)
    assert clock.judged_silence_ms == 10
    assert clock.due(448) == pytest.approx(100.0 - 0.018 + 0.448)


def test_silence_accumulates_and_speech_resets_it() -> None:
    clock = SpeechEndClock(speech_floor=0.35)
    clock.on_audio(FRAME_BYTES * 8, arrived_at=5.0)  # 160 ms: five windows
    clock.on_window(VadWindow(0.9, 0))
    clock.on_window(VadWindow(0.0, WINDOW_MS))
    clock.on_window(VadWindow(0.0, WINDOW_MS))
    assert clock.judged_silence_ms == 2 * WINDOW_MS
    # A window in the hysteresis band does not add silence: it may still be speech.
    clock.on_window(VadWindow(0.4, 4))
    assert clock.judged_silence_ms == 4
    clock.on_window(VadWindow(0.1, 0))  # not speech, however loud
    assert clock.judged_silence_ms == 4 + WINDOW_MS


def test_due_follows_the_arrival_of_later_audio() -> None:
    clock = SpeechEndClock(speech_floor=0.35)
    clock.on_audio(FRAME_BYTES * 2, arrived_at=10.0)
    clock.on_window(VadWindow(0.9, 0))  # speech ends at 32 ms, 8 ms before the 40 ms received
    first = clock.due(448)
    clock.on_audio(FRAME_BYTES, arrived_at=10.021)  # one frame later (1 ms transport jitter)
    assert clock.due(448) == pytest.approx(first + 0.001)


async def test_vad_places_the_end_of_a_sound_within_its_window(vad_session: object) -> None:
    rng = np.random.default_rng(7)
    loud = rng.normal(0, 3000, 512 + 300).astype(np.int16)  # the sound stops 300 samples
    pcm = np.concatenate([loud, np.zeros(512 * 2 - loud.size, np.int16)]).tobytes()
    batcher = VadBatcher(vad_session, ThreadPoolExecutor(max_workers=1))
    windows = await batcher.process(VadStream(), pcm)  # into the second window
    await batcher.aclose()
    assert windows[0].quiet_tail_ms == 0
    # 212 quiet samples = 13.25 ms: six whole 2 ms blocks of the 16 are quiet.
    assert windows[1].quiet_tail_ms == 12
