"""Audio utilities: the internal format, streaming resampling (soxr), framing and G.711 mu-law.

Inside the platform all audio is PCM16 mono at :data:`INTERNAL_RATE` in frames of
:data:`FRAME_MS`. Edges convert at the boundary; nothing else sees another format.
"""

from __future__ import annotations

import math

import numpy as np
import soxr

INTERNAL_RATE = 16_000
FRAME_MS = 20
FRAME_SAMPLES = INTERNAL_RATE * FRAME_MS // 1000
FRAME_BYTES = FRAME_SAMPLES * 2


def pcm16_to_float(pcm: bytes) -> np.ndarray:
    """Converts PCM16 bytes to float32 samples in [-1, 1)."""
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def float_to_pcm16(samples: np.ndarray) -> bytes:
    """Converts float samples to PCM16 bytes, clipping out-of-range values."""
    clipped = np.clip(samples, -1.0, 32767.0 / 32768.0)
    return (clipped * 32768.0).astype("<i2").tobytes()


def rms_dbfs(pcm: bytes) -> float:
    """Root-mean-square level of PCM16 audio in dBFS (-inf for digital silence)."""
    if not pcm:
        return float("-inf")
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    rms = math.sqrt(float(samples @ samples) / samples.size)
    return 20.0 * np.log10(rms / 32768.0) if rms > 0 else float("-inf")


class StreamResampler:
    """Streaming PCM16 mono resampler (soxr); keeps filter state across chunks.

    With ``low_latency`` (for 20 ms real-time paths) it uses soxr's ``QQ`` recipe, which
    returns exactly N ms of output for N ms of input on every chunk after a fixed delay of a
    few samples, and pays that delay once as leading silence. The ``HQ`` recipe holds 20-40 ms
    and releases output every other chunk, which would add a frame of delay at each step. Use
    ``low_latency`` for upsampling only: ``QQ`` has no anti-aliasing filter.
    """

    def __init__(self, in_rate: int, out_rate: int, *, low_latency: bool = False) -> None:
        """Creates a resampler from ``in_rate`` to ``out_rate`` Hz."""
        if low_latency and out_rate < in_rate:
            raise ValueError("low_latency resampling is for upsampling (QQ does not filter)")
        self.in_rate = in_rate
        self.out_rate = out_rate
        quality = "QQ" if low_latency else "HQ"
        self._stream = (
            None if in_rate == out_rate
            else soxr.ResampleStream(in_rate, out_rate, 1, "int16", quality)
        )
        self._prime = low_latency

    def push(self, pcm: bytes, last: bool = False) -> bytes:
        """Resamples a chunk; set ``last`` on the final chunk to flush the filter."""
        if self._stream is None:
            return pcm
        samples = np.frombuffer(pcm, dtype="<i2")
        out = self._stream.resample_chunk(samples, last=last).astype("<i2")
        if self._prime:
            self._prime = False
            expected = len(samples) * self.out_rate // self.in_rate
            out = np.concatenate([np.zeros(max(0, expected - len(out)), dtype="<i2"), out])
        return out.tobytes()


class StreamDownsampler:
    """Streaming PCM16 mono downsampler by an integer factor (e.g. 16 kHz -> 8 kHz) for 20 ms paths.

    soxr's streaming downsamplers hold 60-100 ms before the first output, and ``QQ`` (the
    low-latency recipe of :class:`StreamResampler`) has no anti-aliasing filter. This one is a
    linear-phase FIR low-pass (windowed sinc, cut off at 90 % of the output Nyquist rate)
    followed by decimation: every chunk of N input samples returns exactly N / factor output
    samples at once, delayed by ``(taps - 1) / 2`` input samples (about 2 ms at 16 kHz).

    Args:
        in_rate: Input rate in Hz; a multiple of ``out_rate``.
        out_rate: Output rate in Hz.
        taps: Filter length (odd); more taps give a sharper cut-off.
    """

    def __init__(self, in_rate: int, out_rate: int, *, taps: int = 63) -> None:
        if out_rate <= 0 or in_rate % out_rate or in_rate == out_rate:
            raise ValueError(f"{in_rate} Hz is not a multiple of {out_rate} Hz")
        if taps < 3 or taps % 2 == 0:
            raise ValueError("taps must be odd and at least 3")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.factor = in_rate // out_rate
        cutoff = 0.45 / self.factor  # cycles per input sample
        n = np.arange(taps) - (taps - 1) / 2
        kernel = 2 * cutoff * np.sinc(2 * cutoff * n) * np.hamming(taps)
        self._kernel = kernel / kernel.sum()  # unity gain at DC
        self._history = np.zeros(taps - 1)
        # Offset in the next chunk of the next input sample that yields an output sample, so
        # chunks whose length is not a multiple of the factor keep the output grid.
        self._phase = 0

    def push(self, pcm: bytes) -> bytes:
        """Downsamples a chunk (any number of samples); returns what is due now."""
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
        if not samples.size:
            return b""
        padded = np.concatenate([self._history, samples])
        filtered = np.convolve(padded, self._kernel, mode="valid")  # one per input sample
        out = filtered[self._phase :: self.factor]
        self._phase = (self._phase - samples.size) % self.factor
        self._history = padded[samples.size :]
        return np.clip(np.rint(out), -32768, 32767).astype("<i2").tobytes()

    def reset(self) -> None:
        """Forgets the filter state (a new, unrelated stream follows)."""
        self._history[:] = 0
        self._phase = 0


def resample(pcm: bytes, in_rate: int, out_rate: int) -> bytes:
    """Resamples a whole PCM16 mono buffer."""
    if in_rate == out_rate:
        return pcm
    samples = np.frombuffer(pcm, dtype="<i2")
    return soxr.resample(samples, in_rate, out_rate).astype("<i2").tobytes()


class Framer:
    """Cuts a byte stream into fixed-size frames, keeping the remainder for the next push."""

    def __init__(self, frame_bytes: int = FRAME_BYTES) -> None:
        """Creates a framer producing frames of ``frame_bytes``."""
        self.frame_bytes = frame_bytes
        self._buffer = bytearray()

    def push(self, data: bytes) -> list[bytes]:
        """Adds data and returns every complete frame."""
        self._buffer.extend(data)
        count = len(self._buffer) // self.frame_bytes
        frames = [
            bytes(self._buffer[i * self.frame_bytes : (i + 1) * self.frame_bytes])
            for i in range(count)
        ]
        del self._buffer[: count * self.frame_bytes]
        return frames

    def flush(self) -> bytes | None:
        """Returns the remainder padded with silence to a full frame, or None if empty."""
        if not self._buffer:
            return None
        frame = bytes(self._buffer) + b"\x00" * (self.frame_bytes - len(self._buffer))
        self._buffer.clear()
        return frame

    def clear(self) -> None:
        """Drops buffered data."""
        self._buffer.clear()


# G.711 mu-law, as in ITU-T G.711 (bias 0x84, clip 32635).
_MULAW_BIAS = 0x84
_MULAW_CLIP = 32635


def _build_mulaw_decode_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.int16)
    for byte in range(256):
        value = ~byte & 0xFF
        sign = value & 0x80
        exponent = (value >> 4) & 0x07
        mantissa = value & 0x0F
        magnitude = ((mantissa << 3) + _MULAW_BIAS) << exponent
        magnitude -= _MULAW_BIAS
        table[byte] = -magnitude if sign else magnitude
    return table


_MULAW_DECODE = _build_mulaw_decode_table()


def mulaw_decode(data: bytes) -> bytes:
    """Decodes G.711 mu-law bytes to PCM16."""
    return _MULAW_DECODE[np.frombuffer(data, dtype=np.uint8)].astype("<i2").tobytes()


def mulaw_encode(pcm: bytes) -> bytes:
    """Encodes PCM16 to G.711 mu-law bytes."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.int32)
    sign = np.where(samples < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(samples), _MULAW_CLIP) + _MULAW_BIAS
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7
    exponent = np.clip(exponent, 0, 7)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    encoded = ~(sign | (exponent << 4) | mantissa) & 0xFF
    return encoded.astype(np.uint8).tobytes()
