"""The 16 kHz -> 8 kHz downsampler and the µ-law 8 kHz <-> PCM16 16 kHz stream converters."""

from __future__ import annotations

import numpy as np
import pytest

from voxmesh.audio import (
    FRAME_BYTES,
    StreamDownsampler,
    float_to_pcm16,
    mulaw_encode,
    rms_dbfs,
)
from voxmesh_edge.ws import MULAW_FRAME_BYTES, MulawDecoder, MulawEncoder


def _tone(rate: int, freq: float, seconds: float = 1.0, amplitude: float = 0.5) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return float_to_pcm16(amplitude * np.sin(2 * np.pi * freq * t))


def _peak_hz(pcm: bytes, rate: int) -> float:
    samples = np.frombuffer(pcm, "<i2").astype(float)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


def _downsample_in_frames(pcm: bytes, step: int = FRAME_BYTES) -> list[bytes]:
    downsampler = StreamDownsampler(16_000, 8_000)
    return [downsampler.push(pcm[i : i + step]) for i in range(0, len(pcm), step)]


def test_downsampler_returns_half_of_every_20ms_frame_at_once() -> None:
    chunks = _downsample_in_frames(_tone(16_000, 440, seconds=0.2))
    assert [len(c) for c in chunks] == [FRAME_BYTES // 2] * 10  # no chunk waits for the next


@pytest.mark.parametrize("freq", [300.0, 1000.0, 3000.0])
def test_downsampler_passes_the_telephone_band(freq: float) -> None:
    pcm = _tone(16_000, freq)
    out = b"".join(_downsample_in_frames(pcm))
    steady = out[400:]  # after the 31-sample filter delay
    assert abs(rms_dbfs(steady) - rms_dbfs(pcm)) < 0.2
    assert abs(_peak_hz(steady, 8_000) - freq) < 5


@pytest.mark.parametrize("freq", [4500.0, 5000.0, 7000.0])
def test_downsampler_suppresses_what_would_alias(freq: float) -> None:
    pcm = _tone(16_000, freq)
    out = b"".join(_downsample_in_frames(pcm))
    # Without the filter these would fold down to 8000 - freq at full level.
    assert rms_dbfs(out[400:]) - rms_dbfs(pcm) < -50


def test_downsampler_output_does_not_depend_on_chunking() -> None:
    pcm = _tone(16_000, 1000, seconds=0.1)
    whole = StreamDownsampler(16_000, 8_000).push(pcm)
    odd = b"".join(_downsample_in_frames(pcm, step=2 * 7))  # 7-sample chunks: odd phase
    assert odd == whole
    assert len(whole) == len(pcm) // 2


def test_downsampler_reset_forgets_the_previous_stream() -> None:
    downsampler = StreamDownsampler(16_000, 8_000)
    downsampler.push(_tone(16_000, 1000, seconds=0.05, amplitude=0.9))
    downsampler.reset()
    assert downsampler.push(bytes(FRAME_BYTES)) == bytes(FRAME_BYTES // 2)


@pytest.mark.parametrize(
    ("in_rate", "out_rate", "taps"),
    [(16_000, 16_000, 63), (16_000, 6_000, 63), (16_000, 8_000, 62)],
)
def test_downsampler_rejects_bad_arguments(in_rate: int, out_rate: int, taps: int) -> None:
    with pytest.raises(ValueError):
        StreamDownsampler(in_rate, out_rate, taps=taps)


def test_mulaw_stream_round_trip_keeps_pitch_level_and_length() -> None:
    pcm = _tone(16_000, 440)
    encoder, decoder = MulawEncoder(), MulawDecoder()
    encoded = [encoder.push(pcm[i : i + FRAME_BYTES]) for i in range(0, len(pcm), FRAME_BYTES)]
    assert {len(e) for e in encoded} == {MULAW_FRAME_BYTES}  # 160 µ-law bytes per 20 ms
    frames = [frame for e in encoded for frame in decoder.push(e)]
    assert len(frames) == 50 and {len(f) for f in frames} == {FRAME_BYTES}  # one out per one in
    decoded = b"".join(frames)[1600:]
    assert abs(rms_dbfs(decoded) - rms_dbfs(pcm)) < 0.5
    assert abs(_peak_hz(decoded, 16_000) - 440) < 3


def test_mulaw_decoder_flush_returns_the_partial_frame() -> None:
    decoder = MulawDecoder()
    loud = mulaw_encode(_tone(8_000, 440, seconds=0.03))  # 30 ms: one frame and a half
    assert len(decoder.push(loud)) == 1
    rest = decoder.flush()
    assert len(rest) == 1 and len(rest[0]) == FRAME_BYTES
    assert rms_dbfs(rest[0][: FRAME_BYTES // 2]) > -12  # the caller's last 10 ms are in it
