"""Conversion between LiveKit audio frames and the platform's internal audio, both ways.

Inside Voxmesh, audio is PCM16 mono at :data:`voxmesh.audio.INTERNAL_RATE` (16 kHz) in 20 ms
frames of :data:`voxmesh.audio.FRAME_BYTES`. LiveKit hands the edge :class:`livekit.rtc.AudioFrame`
objects at whatever rate and channel count the subscribed stream delivers (48 kHz, often in
10 ms frames; possibly stereo) and takes frames of the agent track's rate back.

Each direction keeps one resampler per stream: filter state carries across frames, so frame
boundaries add no clicks. The filters are the ones the other edges use
(:mod:`voxmesh.audio`): an FIR decimator for integer factors (48/32 kHz to 16 kHz, ~1 ms delay,
nothing held back), soxr's low-latency recipe for upsampling, soxr HQ otherwise.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from livekit import rtc

from voxmesh import audio

#: Rate of the agent track the edge publishes by default (Opus runs at 48 kHz).
AGENT_TRACK_RATE = 48_000


class _Resampler(Protocol):
    def push(self, pcm: bytes) -> bytes: ...


class _Passthrough:
    def push(self, pcm: bytes) -> bytes:
        return pcm


def _resampler(in_rate: int, out_rate: int) -> _Resampler:
    """The streaming resampler that converts ``in_rate`` to ``out_rate`` with the least delay."""
    if in_rate == out_rate:
        return _Passthrough()
    if in_rate > out_rate and in_rate % out_rate == 0:
        return audio.StreamDownsampler(in_rate, out_rate)
    if in_rate < out_rate:
        return audio.StreamResampler(in_rate, out_rate, low_latency=True)
    return audio.StreamResampler(in_rate, out_rate)


def frame_to_mono(frame: rtc.AudioFrame) -> bytes:
    """The samples of a frame as PCM16 mono (channels averaged), at the frame's own rate.

    Raises:
        ValueError: The frame has no channels or a non-positive sample rate.
    """
    channels = frame.num_channels
    if channels < 1 or frame.sample_rate <= 0:
        raise ValueError(
            f"unusable audio frame: {channels} channel(s) at {frame.sample_rate} Hz"
        )
    count = frame.samples_per_channel * channels
    samples = np.frombuffer(frame.data, dtype="<i2", count=count)
    if channels == 1:
        return samples.tobytes()
    # Interleaved: L R L R ... Averaging keeps a signal present on one channel only audible.
    mixed = samples.reshape(-1, channels).astype(np.int32).sum(axis=1) / channels
    return np.rint(mixed).astype("<i2").tobytes()


class CallerFrameConverter:
    """Caller audio: LiveKit frames (any rate, any channels) in, 640-byte PCM16 16 kHz out.

    One converter per subscribed stream. When the stream's rate changes (a new track), the
    resampler starts over for the new rate.
    """

    def __init__(self) -> None:
        self._rate = 0
        self._resampler: _Resampler = _Passthrough()
        self._framer = audio.Framer(audio.FRAME_BYTES)

    def push(self, frame: rtc.AudioFrame) -> list[bytes]:
        """Converts one frame; returns every complete 20 ms internal frame now available.

        Raises:
            ValueError: The frame has no channels or a non-positive sample rate.
        """
        mono = frame_to_mono(frame)
        if frame.sample_rate != self._rate:
            self._rate = frame.sample_rate
            self._resampler = _resampler(frame.sample_rate, audio.INTERNAL_RATE)
        return self._framer.push(self._resampler.push(mono))

    def flush(self) -> list[bytes]:
        """The partial frame left at the end of the stream, padded with silence."""
        rest = self._framer.flush()
        return [] if rest is None else [rest]


class AgentFrameConverter:
    """Agent audio: PCM16 mono 16 kHz in, 20 ms :class:`rtc.AudioFrame` s for the track out.

    Args:
        sample_rate: Rate of the agent track (16 kHz or more).
        num_channels: 1, or 2 to carry the mono signal on both channels.

    Raises:
        ValueError: A rate below 16 kHz or a channel count other than 1 or 2.
    """

    def __init__(self, sample_rate: int = AGENT_TRACK_RATE, num_channels: int = 1) -> None:
        if sample_rate < audio.INTERNAL_RATE:
            # The internal rate is the floor: downsampling here would only lose speech band.
            raise ValueError(f"the agent track needs at least {audio.INTERNAL_RATE} Hz")
        if num_channels not in (1, 2):
            raise ValueError("the agent track is mono or stereo")
        self.sample_rate = sample_rate
        self.num_channels = num_channels
        #: Samples per channel in one 20 ms frame.
        self.frame_samples = sample_rate * audio.FRAME_MS // 1000
        self._resampler = _resampler(audio.INTERNAL_RATE, sample_rate)
        self._framer = audio.Framer(self.frame_samples * 2)

    def push(self, pcm16_16k: bytes) -> list[rtc.AudioFrame]:
        """Converts a chunk; returns every complete 20 ms frame now available."""
        return [self._frame(mono) for mono in self._framer.push(self._resampler.push(pcm16_16k))]

    def reset(self) -> None:
        """Forgets filter state and any partial frame (after a barge-in clear).

        No tail of the cleared turn leaks into the next one.
        """
        self._resampler = _resampler(audio.INTERNAL_RATE, self.sample_rate)
        self._framer.clear()

    def _frame(self, mono: bytes) -> rtc.AudioFrame:
        data = mono
        if self.num_channels == 2:
            data = np.repeat(np.frombuffer(mono, dtype="<i2"), 2).tobytes()
        return rtc.AudioFrame(data, self.sample_rate, self.num_channels, self.frame_samples)
