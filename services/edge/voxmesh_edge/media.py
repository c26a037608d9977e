"""Audio plumbing shared by the edge and the WebRTC caller: paced tracks and frame conversion."""

from __future__ import annotations

import asyncio
import fractions
import time
from abc import abstractmethod

import av
import numpy as np
from aiortc import RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from voxmesh import audio

#: Packetization of every track we send.
PTIME_S = audio.FRAME_MS / 1000
#: Rate of the agent audio the edge sends to callers (Opus runs at 48 kHz).
WEBRTC_RATE = 48_000
#: When the sender falls this far behind real time, it resynchronizes instead of bursting.
_MAX_LAG_S = 0.2


#: aiortc holds 4 audio frames (80 ms) before decoding. On loopback and LAN links jitter is a
#: few milliseconds, so 2 frames is plenty, and it takes 40 ms off every turn in each direction.
DEFAULT_JITTER_FRAMES = 2


def set_audio_jitter_frames(pc: RTCPeerConnection, track: MediaStreamTrack, frames: int) -> bool:
    """Sets how many audio frames aiortc buffers before decoding a received track.

    aiortc has no public setting for this; the receiver's buffer is replaced before media flows
    (call it from the ``track`` event). If aiortc's internals change, nothing happens and False
    is returned, so the default buffering applies.
    """
    for receiver in pc.getReceivers():
        if receiver.track is track and hasattr(receiver, "_RTCRtpReceiver__jitter_buffer"):
            receiver._RTCRtpReceiver__jitter_buffer = JitterBuffer(  # type: ignore[attr-defined]
                capacity=16, prefetch=frames
            )
            return True
    return False


class PacedAudioTrack(MediaStreamTrack):
    """An outbound PCM16 mono audio track that returns one 20 ms frame per period, in real time.

    Pacing works like aiortc's ``AudioStreamTrack``: the first frame is returned at once, each
    next one when it is due, and ``pts`` advances by one frame per call. Subclasses supply the
    mono samples through :meth:`next_pcm`.

    Frames are s16 at ``sample_rate``. By default they carry the mono signal on both channels of
    a stereo frame: aiortc's Opus encoder works in stereo and upmixes a mono frame at -3 dB (the
    libswresample default), so a mono frame would reach the far end 3 dB quieter than sent.

    Args:
        sample_rate: Rate of the frames this track returns, in Hz.
        layout: ``"stereo"`` (mono signal duplicated, full level) or ``"mono"``.
    """

    kind = "audio"

    def __init__(self, sample_rate: int, layout: str = "stereo") -> None:
        super().__init__()
        if layout not in ("mono", "stereo"):
            raise ValueError(f"layout must be 'mono' or 'stereo', not {layout!r}")
        self.sample_rate = sample_rate
        self.layout = layout
        self.frame_samples = int(sample_rate * PTIME_S)
        self.frame_bytes = self.frame_samples * 2
        self._time_base = fractions.Fraction(1, sample_rate)
        self._start: float | None = None
        self._timestamp = 0

    @abstractmethod
    async def next_pcm(self) -> bytes:
        """Returns exactly ``frame_bytes`` of PCM16 for the frame being sent now."""

    async def recv(self) -> av.AudioFrame:
        """Returns the next 20 ms frame once it is due."""
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        else:
            self._timestamp += self.frame_samples
            due = self._start + self._timestamp / self.sample_rate
            if now - due > _MAX_LAG_S:
                # The loop stalled; restart the clock rather than burst the backlog out.
                self._start = now - self._timestamp / self.sample_rate
            elif due > now:
                await asyncio.sleep(due - now)
        if self.readyState != "live":
            raise MediaStreamError
        pcm = await self.next_pcm()
        if self.layout == "stereo":
            mono = np.frombuffer(pcm, dtype="<i2")
            pcm = np.repeat(mono, 2).tobytes()  # packed s16: L R L R ...
        frame = av.AudioFrame(format="s16", layout=self.layout, samples=self.frame_samples)
        frame.planes[0].update(pcm)
        frame.pts = self._timestamp
        frame.sample_rate = self.sample_rate
        frame.time_base = self._time_base
        return frame


class FrameConverter:
    """Converts decoded WebRTC audio frames to PCM16 mono 16 kHz in 20 ms frames."""

    def __init__(self) -> None:
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=audio.INTERNAL_RATE)
        self._framer = audio.Framer(audio.FRAME_BYTES)
        self._primed = False

    def push(self, frame: av.AudioFrame) -> list[bytes]:
        """Converts one decoded frame; returns every complete 640-byte frame now available."""
        # Timestamps of received audio jump after packet loss; the resampler only needs samples.
        frame.pts = None
        frames: list[bytes] = []
        expected = frame.samples * audio.INTERNAL_RATE // frame.sample_rate
        for out in self._resampler.resample(frame):
            pcm = np.ascontiguousarray(out.to_ndarray()[0], dtype="<i2").tobytes()
            if not self._primed:
                # The resampler's filter holds back a few samples of the first frame. Paying
                # that once as leading silence keeps every later 20 ms frame complete on
                # arrival; otherwise each would wait for the next packet (+20 ms per turn).
                self._primed = True
                pcm = bytes(max(0, expected * 2 - len(pcm))) + pcm
            frames.extend(self._framer.push(pcm))
        return frames
