"""Which caller sounds interrupt the agent, and pausing playout without losing audio."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from voxmesh import subjects
from voxmesh.audio import FRAME_BYTES, FRAME_MS
from voxmesh.v1 import common_pb2, session_pb2
from voxmesh_worker.interruptions import is_backchannel
from voxmesh_worker.playout import Playout


@pytest.mark.parametrize("text", ["", "Uh-huh.", "Mm-hmm.", "Yeah, yeah.", "Okay.", "Right.",
                                  "Oh, I see.", "uh huh"])
def test_backchannel(text: str) -> None:
    assert is_backchannel(text)


@pytest.mark.parametrize("text", ["Wait, stop.", "Yeah, but what about Friday?", "No.",
                                  "Actually make it four people."])
def test_not_backchannel(text: str) -> None:
    assert not is_backchannel(text)


class _Recorder:
    """Stands in for the NATS connection: keeps what the playout publishes."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.controls: list[session_pb2.MediaControl] = []

    async def publish(self, subject: str, payload: bytes, headers: Any = None) -> None:
        if subject == subjects.media_control("s1"):
            control = session_pb2.MediaControl()
            control.ParseFromString(payload)
            self.controls.append(control)
        else:
            chunk = common_pb2.AudioChunk()
            chunk.ParseFromString(payload)
            self.frames.append(chunk.data)


async def test_pause_takes_back_unheard_frames_and_resume_replays_them() -> None:
    nc = _Recorder()
    lead_ms = 60
    playout = Playout(nc, "s1", lead_ms=lead_ms, on_first_frame=lambda _: None)  # type: ignore[arg-type]
    frames = [bytes([i]) * FRAME_BYTES for i in range(1, 41)]  # 800 ms, each frame distinct
    playout.enqueue(1, b"".join(frames))
    runner = asyncio.create_task(playout.run())
    try:
        await asyncio.sleep(0.3)
        heard = await playout.pause(1)
        published = len(nc.frames)
        # What was sent ahead of real time is not counted as heard.
        assert heard == playout.published_ms(1) == (published - lead_ms // FRAME_MS) * FRAME_MS
        assert playout.heard_ms(1) == heard
        assert nc.controls[-1].clear.pause and nc.controls[-1].clear.turn_index == 1
        await asyncio.sleep(0.2)
        assert len(nc.frames) == published, "a paused playout must not publish"
        playout.resume()
        await asyncio.wait_for(playout.wait_drained(), 2)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    # Every frame reached the edge in order; the ones taken back were sent again.
    replayed = lead_ms // FRAME_MS
    assert nc.frames[published:published + replayed] == nc.frames[published - replayed:published]
    unique = nc.frames[:published] + nc.frames[published + replayed:]
    assert unique == frames


async def test_clear_after_pause_keeps_the_heard_point() -> None:
    nc = _Recorder()
    playout = Playout(nc, "s1", lead_ms=60, on_first_frame=lambda _: None)  # type: ignore[arg-type]
    playout.enqueue(2, bytes(FRAME_BYTES * 30))
    runner = asyncio.create_task(playout.run())
    try:
        await asyncio.sleep(0.2)
        heard = await playout.pause(2)
        await playout.clear(2)
        assert not playout.paused
        assert playout.published_ms(2) == heard
        assert not nc.controls[-1].clear.pause
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_pause_after_the_last_frame_was_sent_keeps_the_turn_open() -> None:
    nc = _Recorder()
    playout = Playout(nc, "s1", lead_ms=60, on_first_frame=lambda _: None)  # type: ignore[arg-type]
    playout.enqueue(3, bytes(FRAME_BYTES * 5))
    runner = asyncio.create_task(playout.run())
    try:
        await asyncio.wait_for(playout.wait_drained(), 1)  # all sent, the last 60 ms not heard
        await playout.pause(3)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(playout.wait_drained(), 0.2)
        playout.resume()
        await asyncio.wait_for(playout.wait_drained(), 1)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    assert len(nc.frames) == 5 + 3  # the three frames sent ahead were sent again


async def test_an_answer_under_way_goes_out_two_frames_to_a_message_at_real_time_pace() -> None:
    nc = _Recorder()
    playout = Playout(nc, "s1", lead_ms=60, on_first_frame=lambda _: None,  # type: ignore[arg-type]
                      message_ms=40)
    frames = [bytes([i]) * FRAME_BYTES for i in range(1, 26)]  # 500 ms, each frame distinct
    loop = asyncio.get_running_loop()
    started = loop.time()
    playout.enqueue(4, b"".join(frames))
    runner = asyncio.create_task(playout.run())
    try:
        await asyncio.wait_for(playout.wait_drained(), 2)
        elapsed = loop.time() - started
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    assert len(nc.frames[0]) == FRAME_BYTES, "an answer's first frame must not wait for more"
    assert [len(m) for m in nc.frames[1:]] == [2 * FRAME_BYTES] * 12
    assert b"".join(nc.frames) == b"".join(frames)
    # Paced, not burst: the last frame (due at 480 ms) leaves 60 ms ahead of it.
    assert elapsed >= 0.4
