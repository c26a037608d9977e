"""Time-to-first-token overhead of the OpenAI provider over a bare streaming HTTP request.

A deterministic OpenAI-compatible server on loopback (its own thread and event loop) answers
every chat request at once: the role chunk, five content chunks, a usage chunk and
``[DONE]``, written together, so no model time is in the numbers. Each trial times, from the
request to the first content delta:

* ``adapter``: :class:`voxmesh_llm.providers.openai_compatible.OpenAICompatibleLLM` through
  its base class's ``stream()`` (the official SDK, chunk parsing, retry and timing wrapper);
* ``direct``: an aiohttp ``POST`` of the same JSON body, reading the SSE lines itself.

Both read their stream to the end (so both reuse a kept-alive connection) and alternate in one
run, so drift on a shared machine hits both alike. ``bench/provider_overhead.py`` (``make
bench``) runs :func:`measure` with the other adapters.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
from typing import Any

from aiohttp import ClientSession, web
from pydantic import SecretStr

from voxmesh.cli.stack import free_port
from voxmesh_llm.providers.base import ChatMessage, Completion
from voxmesh_llm.providers.openai_compatible import OpenAICompatibleLLM

KEY = "sk-bench"
MODEL = "bench-model"
MESSAGES = [ChatMessage("system", "You are Vox, a friendly voice assistant."),
            ChatMessage("user", "What time do you open tomorrow?")]
PIECES = ["We", " open", " at", " nine", "."]
WARMUP = 10


def _sse_body() -> bytes:
    def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
        data = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0,
                "model": MODEL, "choices": choices, **extra}
        return f"data: {json.dumps(data)}\n\n"

    events = [chunk([{"index": 0, "delta": {"role": "assistant", "content": ""},
                      "finish_reason": None}])]
    events += [chunk([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
               for piece in PIECES]
    events.append(chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    events.append(chunk([], usage={"prompt_tokens": 20, "completion_tokens": len(PIECES),
                                   "total_tokens": 20 + len(PIECES)}))
    events.append("data: [DONE]\n\n")
    return "".join(events).encode()


class _InstantServer:
    """The deterministic server, on its own thread so its work never runs on the clients' loop."""

    def __init__(self) -> None:
        self.port = free_port()
        self._body = _sse_body()
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="instant-openai", daemon=True)
        self._runner: web.AppRunner | None = None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(self._body)
        await response.write_eof()
        return response

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        self._loop.run_until_complete(site.start())
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)

    def stop(self) -> None:
        async def cleanup() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


async def _adapter_trial(provider: OpenAICompatibleLLM) -> float:
    started = time.perf_counter()
    first = 0.0
    async for _ in provider.stream(MESSAGES, max_tokens=32, temperature=0.0,
                                   completion=Completion()):
        if not first:
            first = time.perf_counter() - started
    return first * 1000


async def _direct_trial(session: ClientSession, url: str, body: dict[str, Any]) -> float:
    started = time.perf_counter()
    first = 0.0
    async with session.post(url, json=body, headers={"Authorization": f"Bearer {KEY}"}) as reply:
        async for line in reply.content:
            if first or not line.startswith(b"data: {"):
                continue
            choices = json.loads(line[6:])["choices"]
            if choices and choices[0]["delta"].get("content"):
                first = time.perf_counter() - started
    return first * 1000


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def _summary(values: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(values), 3), "p95": round(_percentile(values, 95), 3)}


async def measure(trials: int = 200) -> dict[str, Any]:
    """Interleaved trials of the adapter and of a bare request; times in milliseconds.

    Returns:
        ``{"adapter_ms": {"p50", "p95"}, "direct_ms": {...}, "overhead_ms": {...},
        "trials": n, "measured_at": "..."}``.
    """
    server = _InstantServer()
    server.start()
    base_url = f"http://127.0.0.1:{server.port}/v1"
    provider = OpenAICompatibleLLM(api_key=SecretStr(KEY), base_url=base_url, model=MODEL,
                                   request_timeout_s=10)
    # The body the adapter sends, so both clients ask for the same thing.
    body = {"model": MODEL, "messages": [{"role": m.role, "content": m.content} for m in MESSAGES],
            "stream": True, "stream_options": {"include_usage": True}, "temperature": 0.0,
            "max_tokens": 32}
    adapter: list[float] = []
    direct: list[float] = []
    try:
        async with ClientSession() as session:
            url = f"{base_url}/chat/completions"
            for trial in range(WARMUP + trials):
                # Alternate which goes first, so neither always follows the other's garbage.
                if trial % 2:
                    direct_ms = await _direct_trial(session, url, body)
                    adapter_ms = await _adapter_trial(provider)
                else:
                    adapter_ms = await _adapter_trial(provider)
                    direct_ms = await _direct_trial(session, url, body)
                if trial >= WARMUP:
                    adapter.append(adapter_ms)
                    direct.append(direct_ms)
    finally:
        await provider.aclose()
        server.stop()
    adapter_summary, direct_summary = _summary(adapter), _summary(direct)
    return {
        "adapter_ms": adapter_summary,
        "direct_ms": direct_summary,
        "overhead_ms": {key: round(adapter_summary[key] - direct_summary[key], 3)
                        for key in ("p50", "p95")},
        "trials": trials,
        "measured_at": "time to first content delta, instant OpenAI-compatible SSE server on "
                       "loopback, adapter (official SDK + provider base class) vs aiohttp",
    }
