"""What the Deepgram STT adapter adds to the time to the first result, over a bare client.

Both sides talk to the same local Deepgram-protocol server (``tests/support/fake_deepgram.py``,
scripted transcriber, so recognition costs nothing) and do the same thing per trial: open a
``/v1/listen`` stream, send 0.5 s of audio in 20 ms frames, send ``Finalize`` and wait for the
final result. The adapter is :class:`voxmesh_stt.providers.deepgram.DeepgramSTT` (the official
SDK, the sender and receiver tasks, result parsing and utterance assembly); the direct client
is a bare ``websockets`` connection that writes the same frames and reads the ``Results``
JSON. Trials alternate between the two, so machine noise hits both alike.

``bench/provider_overhead.py`` (``make bench``) runs :func:`measure` with the other adapters.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "support"))

AUDIO_S = 0.5
FRAME_BYTES = 640  # 20 ms at 16 kHz, PCM16


def _speech() -> bytes:
    import numpy as np

    t = np.arange(int(16000 * AUDIO_S)) / 16000
    return (8000 * np.sin(2 * np.pi * 220 * t)).astype("<i2").tobytes()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


async def _adapter_trial(provider: Any, options: Any, audio: bytes) -> tuple[float, float]:
    started = time.perf_counter()
    stream = await provider.open_stream(options)
    try:
        for offset in range(0, len(audio), FRAME_BYTES):
            stream.send_audio(audio[offset:offset + FRAME_BYTES])
        asked = time.perf_counter()
        result = await stream.finalize(speculative=False)
        done = time.perf_counter()
        assert result.text, "the adapter got no text"
        stream.end_input()
        async for _ in stream.events():
            pass
    finally:
        await stream.aclose()
    return (done - started) * 1000, (done - asked) * 1000


async def _direct_trial(url: str, key: str, audio: bytes) -> tuple[float, float]:
    from websockets.asyncio.client import connect

    started = time.perf_counter()
    async with connect(url, additional_headers={"Authorization": f"Token {key}"},
                       compression=None) as socket:
        for offset in range(0, len(audio), FRAME_BYTES):
            await socket.send(audio[offset:offset + FRAME_BYTES])
        asked = time.perf_counter()
        await socket.send(json.dumps({"type": "Finalize"}))
        while True:
            message = json.loads(await socket.recv())
            if message.get("type") == "Results" and message.get("from_finalize"):
                done = time.perf_counter()
                assert message["channel"]["alternatives"][0]["transcript"]
                break
        await socket.send(json.dumps({"type": "CloseStream"}))
        async for _ in socket:
            pass
    return (done - started) * 1000, (done - asked) * 1000


async def measure(trials: int = 200) -> dict[str, Any]:
    """Measures the adapter against a bare client, interleaved, ``trials`` times each.

    Returns:
        ``{"adapter_ms": {"p50", "p95"}, "direct_ms": {...}, "overhead_ms": {"p50", "p95"},
        "trials": n, "measured_at": "..."}``; overhead is the adapter's percentile less the
        direct client's. ``finalize_overhead_ms`` is the same for the Finalize-to-final part
        alone (the connection is open by then; what a turn pays).
    """
    from fake_deepgram import FakeDeepgram, ScriptedTranscriber
    from pydantic import SecretStr

    from voxmesh_stt.providers.base import StreamOptions
    from voxmesh_stt.providers.deepgram import DeepgramSTT

    audio = _speech()
    adapter: list[tuple[float, float]] = []
    direct: list[tuple[float, float]] = []
    async with FakeDeepgram(ScriptedTranscriber(["one two three"]),
                            interim_interval_s=None) as fake:
        provider = DeepgramSTT(api_key=SecretStr(fake.api_key), base_url=fake.base_url)
        options = StreamOptions(encoding="linear16", sample_rate=16000)
        url = (f"ws://127.0.0.1:{fake.port}/v1/listen?"
               + urlencode(provider.connect_params(options), doseq=True).replace(
                   "True", "true").replace("False", "false"))
        try:
            for _ in range(3):  # warm-up: imports, first connections
                await _adapter_trial(provider, options, audio)
                await _direct_trial(url, fake.api_key, audio)
            for trial in range(trials):
                # Alternate which goes first, so neither always follows the other.
                if trial % 2:
                    direct.append(await _direct_trial(url, fake.api_key, audio))
                    adapter.append(await _adapter_trial(provider, options, audio))
                else:
                    adapter.append(await _adapter_trial(provider, options, audio))
                    direct.append(await _direct_trial(url, fake.api_key, audio))
        finally:
            await provider.aclose()

    def summary(values: list[float]) -> dict[str, float]:
        return {"p50": round(statistics.median(values), 3),
                "p95": round(_percentile(values, 95), 3)}

    def overhead(ours: dict[str, float], bare: dict[str, float]) -> dict[str, float]:
        return {key: round(ours[key] - bare[key], 3) for key in ours}

    adapter_ms, direct_ms = summary([a for a, _ in adapter]), summary([d for d, _ in direct])
    return {
        "adapter_ms": adapter_ms,
        "direct_ms": direct_ms,
        "overhead_ms": overhead(adapter_ms, direct_ms),
        "finalize_overhead_ms": overhead(summary([f for _, f in adapter]),
                                         summary([f for _, f in direct])),
        "trials": trials,
        "measured_at": (f"open /v1/listen, {AUDIO_S:g} s of audio in 20 ms frames, Finalize, "
                        "until the final result; local Deepgram-protocol server over loopback, "
                        f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}"),
    }
