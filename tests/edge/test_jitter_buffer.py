"""The edge and the caller replace aiortc's fixed 80 ms audio receive buffer."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiortc import RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtp import RtpPacket

from voxmesh_edge.client import _PlaybackTrack
from voxmesh_edge.media import LowDelayAudioBuffer, set_audio_jitter_frames

OPUS_FRAME_TICKS = 960  # 20 ms at 48 kHz


def opus_packet(sequence: int, payload: bytes = b"\xf8\xff\xfe") -> RtpPacket:
    packet = RtpPacket(
        payload_type=111,
        sequence_number=sequence % 65536,
        timestamp=(3_000_000_000 + sequence * OPUS_FRAME_TICKS) % (1 << 32),
        payload=payload,
    )
    packet._data = payload  # type: ignore[attr-defined]  # what aiortc's depayloader sets
    return packet


@pytest.mark.parametrize("frames", [0, 2])
async def test_receive_buffer_is_replaced_before_media_flows(frames: int) -> None:
    sender, receiver = RTCPeerConnection(), RTCPeerConnection()
    sender.addTrack(_PlaybackTrack())
    applied: list[JitterBuffer | None] = []

    @receiver.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        applied.append(set_audio_jitter_frames(receiver, track, frames))

    try:
        await sender.setLocalDescription(await sender.createOffer())
        await receiver.setRemoteDescription(sender.localDescription)
        assert len(applied) == 1 and applied[0] is not None
        buffer = receiver.getReceivers()[0]._RTCRtpReceiver__jitter_buffer  # type: ignore[attr-defined]
        assert buffer is applied[0]
        if frames == 0:
            assert isinstance(buffer, LowDelayAudioBuffer)
        else:
            assert type(buffer) is JitterBuffer and buffer._prefetch == frames
    finally:
        await sender.close()
        await receiver.close()


def test_low_delay_buffer_releases_each_packet_on_arrival() -> None:
    buffer = LowDelayAudioBuffer()
    for sequence in range(65_530, 65_540):  # across the 16-bit sequence wrap
        pli, frame = buffer.add(opus_packet(sequence, bytes([sequence % 256])))
        assert not pli
        assert frame is not None and frame.data == bytes([sequence % 256])


def test_low_delay_buffer_drops_a_late_packet_and_skips_a_gap() -> None:
    buffer = LowDelayAudioBuffer()
    assert buffer.add(opus_packet(10))[1] is not None
    assert buffer.add(opus_packet(12))[1] is not None  # 11 is missing: no waiting for it
    assert buffer.add(opus_packet(11))[1] is None  # arrives after 12 was released
    assert buffer.add(opus_packet(10))[1] is None  # a duplicate
    assert buffer.add(opus_packet(13))[1] is not None


def test_low_delay_buffer_follows_a_sender_that_restarts_its_sequence() -> None:
    buffer = LowDelayAudioBuffer()
    for sequence in (40_000, 40_001):
        assert buffer.add(opus_packet(sequence))[1] is not None
    for sequence in (7, 8, 9):  # far behind: a new sequence, not 40 000 late packets
        assert buffer.add(opus_packet(sequence))[1] is not None
    assert buffer.add(opus_packet(8))[1] is None  # late within the new sequence


async def test_low_delay_buffer_times_decoded_frames_by_packet_arrival() -> None:
    """Over a real peer connection, each decoded frame maps back to its packet's arrival."""
    sender, receiver = RTCPeerConnection(), RTCPeerConnection()
    sender.addTrack(_PlaybackTrack())
    timed: list[tuple[float, float]] = []
    done = asyncio.Event()

    async def receive(track: MediaStreamTrack, buffer: LowDelayAudioBuffer) -> None:
        while len(timed) < 10:
            frame = await track.recv()
            arrived = buffer.arrival_of(frame.pts)
            assert arrived is not None, f"no arrival noted for pts {frame.pts}"
            timed.append((arrived, time.monotonic()))
        done.set()

    tasks: list[asyncio.Task[None]] = []

    @receiver.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        buffer = set_audio_jitter_frames(receiver, track, 0)
        assert isinstance(buffer, LowDelayAudioBuffer)
        tasks.append(asyncio.create_task(receive(track, buffer)))

    try:
        await sender.setLocalDescription(await sender.createOffer())
        await receiver.setRemoteDescription(sender.localDescription)
        await receiver.setLocalDescription(await receiver.createAnswer())
        await sender.setRemoteDescription(receiver.localDescription)
        await asyncio.wait_for(done.wait(), 10)
    finally:
        await sender.close()
        await receiver.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    arrivals = [arrived for arrived, _ in timed]
    assert arrivals == sorted(arrivals) and len(set(arrivals)) == len(arrivals)
    # Packets come 20 ms apart; decoding never precedes arrival.
    assert all(0 <= decoded - arrived < 0.5 for arrived, decoded in timed)
    assert 0.1 < arrivals[-1] - arrivals[0] < 0.4
