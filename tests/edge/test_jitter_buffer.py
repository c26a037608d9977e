"""The edge and the caller shorten aiortc's fixed 80 ms receive buffer."""

from __future__ import annotations

import pytest
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack

from voxmesh_edge.client import _PlaybackTrack
from voxmesh_edge.media import set_audio_jitter_frames

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_receive_buffer_is_replaced_before_media_flows() -> None:
    sender, receiver = RTCPeerConnection(), RTCPeerConnection()
    sender.addTrack(_PlaybackTrack())
    applied: list[bool] = []

    @receiver.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        applied.append(set_audio_jitter_frames(receiver, track, 2))

    try:
        await sender.setLocalDescription(await sender.createOffer())
        await receiver.setRemoteDescription(sender.localDescription)
        assert applied == [True]
        buffer = receiver.getReceivers()[0]._RTCRtpReceiver__jitter_buffer  # type: ignore[attr-defined]
        assert buffer._prefetch == 2
    finally:
        await sender.close()
        await receiver.close()
