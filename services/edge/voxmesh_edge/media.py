"""Audio plumbing shared by the edge and the WebRTC caller: paced tracks and frame conversion."""

from __future__ import annotations

import asyncio
import fractions
import math
import time
from abc import abstractmethod

import av
import numpy as np
from aiortc import RTCPeerConnection, rtp
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpreceiver import TimestampMapper
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add

from voxmesh import audio

#: Packetization of every track we send.
PTIME_S = audio.FRAME_MS / 1000
#: Rate of the agent audio the edge sends to callers (Opus runs at 48 kHz).
WEBRTC_RATE = 48_000
#: When the sender falls this far behind real time, it resynchronizes instead of bursting.
_MAX_LAG_S = 0.2


def audio_level_dbov(frame: av.AudioFrame) -> int:
    """The RFC 6465 audio level aiortc puts in each sent audio packet, computed with numpy.

    Same result as ``aiortc.rtp.compute_audio_level_dbov``, which sums the squares in a Python
    loop over the samples: 0.15 ms per 20 ms stereo frame, on the event loop, for every frame
    of every call (half of it silence). This takes ~5 µs. :func:`install_fast_audio_level`
    puts it in aiortc's place.
    """
    samples = np.frombuffer(bytes(frame.planes[0]), dtype=np.int16).astype(np.int64)
    rms = math.sqrt(int(samples @ samples) / (frame.samples * 32767 * 32767))
    if rms <= 0:
        return -127
    return round(min(max(20 * math.log10(rms), -127), 0))


#: aiortc's own implementation, kept for comparison.
AIORTC_AUDIO_LEVEL = rtp.compute_audio_level_dbov


def install_fast_audio_level() -> None:
    """Makes aiortc's senders use :func:`audio_level_dbov` (they look it up on ``aiortc.rtp``)."""
    rtp.compute_audio_level_dbov = audio_level_dbov


# Every track of the edge and of the WebRTC caller is sent by aiortc's RTCRtpSender.
install_fast_audio_level()


#: Receive buffering of the edge and the caller, in 20 ms frames: 0 is
#: :class:`LowDelayAudioBuffer`. aiortc's own buffer holds 4 frames (80 ms) before decoding.
DEFAULT_JITTER_FRAMES = 0


class LowDelayAudioBuffer(JitterBuffer):
    """An audio receive buffer that hands each packet to the decoder the moment it arrives.

    aiortc's buffer releases an audio frame only once ``prefetch`` later packets are in (it
    cannot otherwise tell that a frame is complete, which matters for video). An Opus packet is
    always one whole frame, so waiting adds 20 ms per frame of prefetch to every turn and buys
    nothing on the receive side of a voice agent: the edge forwards caller audio to VAD and STT
    rather than playing it, and the caller only measures. A packet that arrives after a later
    one was released is dropped (a 20 ms hole, once); aiortc's buffer would instead stall for 16
    frames after a lost packet. A packet far behind the stream (more than ``MAX_MISORDER``) is
    taken as the sender restarting its sequence numbers, as aiortc does.

    It also notes when each packet arrived (:meth:`arrival_of`), so a measuring caller can time
    agent audio at the packet, before decoding, as the WebSocket transport does.
    """

    #: How many packets' arrival times are remembered (2 s of audio).
    REMEMBERED_ARRIVALS = 100
    #: A packet at most this far behind the newest one is late; further behind, a restart.
    MAX_MISORDER = 100

    def __init__(self) -> None:
        """Creates an empty buffer."""
        super().__init__(capacity=16)  # aiortc's interface; nothing is ever held
        self._expected: int | None = None
        # aiortc rebases RTP timestamps to start at 0 before decoding; decoded frames carry
        # the rebased value as ``pts``, so arrivals are kept by it, rebased the same way.
        self._rebased = TimestampMapper()
        self._arrivals: dict[int, float] = {}

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        """Takes one received packet; returns it as a frame unless it came too late."""
        sequence = packet.sequence_number
        if self._expected is not None:
            behind = uint16_add(self._expected, -sequence)
            if 0 < behind <= self.MAX_MISORDER:
                return False, None  # late: a later packet was released already
        self._expected = uint16_add(sequence, 1)
        self._arrivals[self._rebased.map(packet.timestamp)] = time.monotonic()
        if len(self._arrivals) > self.REMEMBERED_ARRIVALS:
            del self._arrivals[next(iter(self._arrivals))]
        data = getattr(packet, "_data", packet.payload)  # set by aiortc's depayloader
        return False, JitterFrame(data=data, timestamp=packet.timestamp)

    def arrival_of(self, pts: int | None) -> float | None:
        """``time.monotonic()`` when the packet of a decoded frame (by its ``pts``) arrived."""
        return None if pts is None else self._arrivals.get(pts)


def set_audio_jitter_frames(
    pc: RTCPeerConnection, track: MediaStreamTrack, frames: int
) -> JitterBuffer | None:
    """Sets how many audio frames are buffered before decoding a received track.

    ``frames=0`` installs :class:`LowDelayAudioBuffer`; more keeps aiortc's buffer with that
    prefetch. aiortc has no public setting for this; the receiver's buffer is replaced before
    media flows (call it from the ``track`` event).

    Returns:
        The installed buffer, or None if aiortc's internals changed (its default then applies).
    """
    for receiver in pc.getReceivers():
        if receiver.track is track and hasattr(receiver, "_RTCRtpReceiver__jitter_buffer"):
            buffer = (
                LowDelayAudioBuffer()
                if frames == 0
                else JitterBuffer(capacity=16, prefetch=frames)
            )
            receiver._RTCRtpReceiver__jitter_buffer = buffer  # type: ignore[attr-defined]
            return buffer
    return None


class PacedAudioTrack(MediaStreamTrack):
    """An outbound PCM16 mono audio track that returns one 20 ms frame per period, in real time.

    Pacing works like aiortc's ``AudioStreamTrack``: the first frame is returned at once, each
    next one when it is due, and ``pts`` advances by one frame per call. Subclasses supply the
    mono samples through :meth:`next_pcm`.

    A talkspurt starts at once: while the track is sending silence, a subclass that has just
    queued a whole frame of audio calls :meth:`audio_ready`, and the waiting frame goes out now
    instead of at its 20 ms tick (10 ms sooner on average per answer); later frames keep the new
    phase. Receivers take this in their stride, as they do the talkspurt starts of VoIP phones.

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
        self._silence = bytes(self.frame_bytes)
        self._idle = True  # the last frame sent was silence
        self._audio_queued = False  # audio_ready() since the last frame was sent
        self._audio_waiting: asyncio.Event | None = None

    def audio_ready(self) -> None:
        """Tells an idle track that a whole frame of audio is queued, so it is sent now."""
        self._audio_queued = True
        if self._audio_waiting is not None:
            self._audio_waiting.set()

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
            elif due > now and self._idle:
                await self._wait_for_tick_or_audio(due - now)
            elif due > now:
                await asyncio.sleep(due - now)
        if self.readyState != "live":
            raise MediaStreamError
        pcm = await self.next_pcm()
        self._idle = pcm == self._silence
        self._audio_queued = False
        if self.layout == "stereo":
            mono = np.frombuffer(pcm, dtype="<i2")
            pcm = np.repeat(mono, 2).tobytes()  # packed s16: L R L R ...
        frame = av.AudioFrame(format="s16", layout=self.layout, samples=self.frame_samples)
        frame.planes[0].update(pcm)
        frame.pts = self._timestamp
        frame.sample_rate = self.sample_rate
        frame.time_base = self._time_base
        return frame

    async def _wait_for_tick_or_audio(self, delay_s: float) -> None:
        # Audio may have come while the sender was busy with the last frame (encoding it in a
        # thread), before this wait began.
        if not self._audio_queued:
            self._audio_waiting = ready = asyncio.Event()
            try:
                async with asyncio.timeout(delay_s):
                    await ready.wait()
            except TimeoutError:
                return
            finally:
                self._audio_waiting = None
        # Audio came before the tick: move the clock so this frame is due now.
        self._start = time.monotonic() - self._timestamp / self.sample_rate


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
