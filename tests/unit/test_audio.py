import numpy as np
import pytest

from voxmesh.audio import (
    FRAME_BYTES,
    Framer,
    StreamResampler,
    float_to_pcm16,
    mulaw_decode,
    mulaw_encode,
    resample,
    rms_dbfs,
)


def _tone(rate: int, seconds: float = 1.0, freq: float = 440.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return float_to_pcm16(0.5 * np.sin(2 * np.pi * freq * t))


def test_mulaw_round_trip_has_g711_quality() -> None:
    pcm = _tone(8000)
    encoded = mulaw_encode(pcm)
    assert len(encoded) == len(pcm) // 2
    decoded = np.frombuffer(mulaw_decode(encoded), "<i2").astype(float)
    original = np.frombuffer(pcm, "<i2").astype(float)
    snr = 10 * np.log10(np.mean(original**2) / np.mean((original - decoded) ** 2))
    assert snr > 30  # G.711 gives ~38 dB on a full-scale tone


def test_mulaw_known_values() -> None:
    # ITU-T G.711: 0 encodes to 0xFF; extremes saturate at 0x80/0x00.
    assert mulaw_encode(np.array([0], "<i2").tobytes()) == b"\xff"
    assert mulaw_encode(np.array([32767], "<i2").tobytes()) == b"\x80"
    assert mulaw_encode(np.array([-32768], "<i2").tobytes()) == b"\x00"


@pytest.mark.parametrize(("src", "dst"), [(48000, 16000), (16000, 48000), (22050, 16000)])
def test_streaming_resampler_matches_length_and_pitch(src: int, dst: int) -> None:
    pcm = _tone(src)
    resampler = StreamResampler(src, dst)
    step = src // 50 * 2
    chunks = [pcm[i:i + step] for i in range(0, len(pcm), step)]
    out = b"".join(resampler.push(c, last=(n == len(chunks) - 1)) for n, c in enumerate(chunks))
    samples = np.frombuffer(out, "<i2").astype(float)
    assert abs(len(samples) - dst) <= dst * 0.01
    spectrum = np.abs(np.fft.rfft(samples))
    peak_hz = np.argmax(spectrum) * dst / len(samples)
    assert abs(peak_hz - 440) < 5
    assert len(resample(pcm, src, dst)) // 2 == pytest.approx(dst, rel=0.01)


def test_framer_cuts_exact_frames_and_pads_the_rest() -> None:
    framer = Framer()
    frames = framer.push(b"\x01" * (FRAME_BYTES * 2 + 10))
    assert [len(f) for f in frames] == [FRAME_BYTES, FRAME_BYTES]
    rest = framer.flush()
    assert rest is not None and len(rest) == FRAME_BYTES and rest[:10] == b"\x01" * 10
    assert framer.flush() is None


def test_rms_dbfs() -> None:
    assert rms_dbfs(b"\0\0" * 100) == float("-inf")
    assert -10 < rms_dbfs(_tone(16000)) < -8  # 0.5 amplitude sine: -9 dBFS


def test_low_latency_resampler_returns_whole_frames_from_the_first_chunk() -> None:
    resampler = StreamResampler(16000, 48000, low_latency=True)
    tone = _tone(16000, seconds=0.2)
    sizes = [len(resampler.push(tone[i:i + 640])) for i in range(0, len(tone), 640)]
    assert sizes == [1920] * 10  # 20 ms in, 20 ms out: no frame waits for the next chunk


def test_low_latency_refuses_downsampling() -> None:
    with pytest.raises(ValueError, match="upsampling"):
        StreamResampler(48000, 16000, low_latency=True)
