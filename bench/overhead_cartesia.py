"""Time-to-first-audio overhead of the Cartesia adapter over a bare WebSocket client.

Both sides talk to the same local Cartesia-compatible server (``tests/support/fake_cartesia.py``,
tone audio, no artificial delay) over a WebSocket opened once beforehand, as the service keeps
one open. A trial sends one turn's text the way the adapter does (the transcript with
``continue: true``, a flush, then ``continue: false``) and stops the clock when the first audio
chunk is decoded. The adapter trial goes through ``CartesiaTTS.open_stream`` (the official SDK's
connection, the sender task, the event router, segment mapping and base64 decoding); the direct
trial uses ``websockets`` with ``json`` by hand. Adapter and direct trials alternate in one run
(and alternate which goes first), so both see the same machine load. The overhead is the
difference of the percentiles.
"""

from __future__ import annotations

import base64
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))

TEXT = "Thanks for calling, your table for two is booked for eight tonight."
VOICE = "a0e99841-438c-4a64-b679-ae501e7d6091"
KEY = "bench-" + uuid.uuid4().hex
RATE = 16000
WARMUP = 20


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]

    return {"p50": round(statistics.median(ordered), 3), "p95": round(pct(95), 3)}


async def _adapter_trial(provider: Any) -> float:
    started = time.perf_counter()
    stream = provider.open_stream(sample_rate=RATE, voice=VOICE, model="sonic-2")
    stream.push_text(0, TEXT)
    stream.end_input()
    first = None
    try:
        while (piece := await stream.next_piece()) is not None:
            if first is None and piece.pcm16:
                first = time.perf_counter()
    finally:
        await stream.aclose()
    assert first is not None, "no audio from the adapter"
    return (first - started) * 1000


async def _direct_trial(connection: Any) -> float:
    started = time.perf_counter()
    context_id = uuid.uuid4().hex
    base = {"context_id": context_id, "model_id": "sonic-2",
            "voice": {"mode": "id", "id": VOICE}, "add_timestamps": True,
            "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": RATE}}
    for message in ({**base, "transcript": TEXT + " ", "continue": True},
                    {**base, "transcript": "", "continue": True, "flush": True},
                    {**base, "transcript": "", "continue": False}):
        await connection.send(json.dumps(message))
    first = None
    while True:
        event = json.loads(await connection.recv())
        if event.get("context_id") != context_id:
            continue
        if first is None and event["type"] == "chunk" and base64.b64decode(event["data"]):
            first = time.perf_counter()
        if event["type"] in ("done", "error"):
            break
    assert first is not None, "no audio from the direct client"
    return (first - started) * 1000


async def measure(trials: int = 200) -> dict[str, Any]:
    """Runs ``trials`` interleaved adapter/direct pairs (after a warm-up) and summarizes them.

    Returns:
        ``adapter_ms``, ``direct_ms`` and ``overhead_ms`` (each ``p50``/``p95``), ``trials``
        and ``measured_at`` (what was measured, and where).
    """
    from fake_cartesia import FakeCartesia, ToneBackend
    from pydantic import SecretStr
    from websockets.asyncio.client import connect

    from voxmesh_tts.providers.cartesia import CartesiaTTS

    adapter: list[float] = []
    direct: list[float] = []
    async with FakeCartesia(ToneBackend(), api_key=KEY) as fake:
        provider = CartesiaTTS(api_key=SecretStr(KEY), base_url=fake.url)
        await provider.load()
        try:
            async with connect(fake.ws_url, compression=None, additional_headers={
                    "Authorization": f"Bearer {KEY}", "Cartesia-Version": "2026-08-14"}
                    ) as connection:
                for number in range(WARMUP + trials):
                    if number % 2:
                        direct_ms = await _direct_trial(connection)
                        adapter_ms = await _adapter_trial(provider)
                    else:
                        adapter_ms = await _adapter_trial(provider)
                        direct_ms = await _direct_trial(connection)
                    if number >= WARMUP:
                        adapter.append(adapter_ms)
                        direct.append(direct_ms)
        finally:
            await provider.aclose()
    adapter_summary, direct_summary = _summary(adapter), _summary(direct)
    return {
        "adapter_ms": adapter_summary,
        "direct_ms": direct_summary,
        "overhead_ms": {q: round(adapter_summary[q] - direct_summary[q], 3)
                        for q in ("p50", "p95")},
        "trials": trials,
        "measured_at": "text sent -> first audio chunk decoded, one process, loopback "
                       "Cartesia-compatible fake (tone audio); CartesiaTTS.open_stream vs a "
                       "bare websockets client on an open connection, trials interleaved",
    }
