"""Many synthetic calls: arrivals, a concurrency limit, live progress, and the results.

Calls start at the arrival pattern's times; when ``concurrency`` calls are already active, a new
one waits for a slot (its start is later than scheduled, and the report shows both). Progress is
printed once a second: calls active, completed, failed, and the rolling p95 voice-to-voice.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from voxmesh_loadtest.arrivals import Arrivals
from voxmesh_loadtest.caller import ContentChecker, PreparedTurn, SyntheticCall, add_noise
from voxmesh_loadtest.results import CallResult
from voxmesh_loadtest.scenario import Scenario
from voxmesh_loadtest.stats import percentile

#: Window of the rolling p95 shown in progress lines.
ROLLING_WINDOW_S = 30.0


@dataclass
class RunConfig:
    """One load run.

    Attributes:
        edge_url: Base URL of the edge.
        scenario: What each call says.
        arrivals: When calls start.
        calls: Stop after this many calls (None: only the duration limits).
        duration_s: Stop starting calls after this long (None: only the count limits).
        concurrency: Calls active at once, at most.
        transport: ``webrtc``, ``websocket-pcm16`` or ``websocket-mulaw``.
        seed: Seed of Poisson arrivals and noise.
        check_content: Transcribe answers to check expected phrases (needs the local model).
        voice_cache: Where synthesized caller audio is cached.
    """

    edge_url: str
    scenario: Scenario
    arrivals: Arrivals
    calls: int | None = None
    duration_s: float | None = None
    concurrency: int = 10
    transport: str = "webrtc"
    seed: int = 0
    check_content: bool = True
    voice_cache: Path = Path(".voxmesh/cache/caller")


@dataclass
class RunResult:
    """Everything a run measured.

    Attributes:
        config: What was run.
        calls: One result per call, by call id.
        concurrency: ``(seconds from start, calls active)`` samples, every 0.5 s and on change.
        started_wall: Unix time the run started.
        duration_s: Wall time of the run.
    """

    config: RunConfig
    calls: list[CallResult] = field(default_factory=list)
    concurrency: list[tuple[float, int]] = field(default_factory=list)
    started_wall: float = 0.0
    duration_s: float = 0.0


def prepare_turns(scenario: Scenario, cache: Path, seed: int) -> list[PreparedTurn]:
    """Synthesizes (cached) or loads each turn's audio once, with the scenario's noise."""
    from voxmesh.cli.caller_audio import CallerVoice, load_wav

    voice = CallerVoice(cache)
    prepared = []
    for index, turn in enumerate(scenario.turns):
        pcm = voice.speak(turn.say) if turn.say is not None else load_wav(turn.wav)  # type: ignore[arg-type]
        prepared.append(PreparedTurn(turn.label, add_noise(pcm, scenario.noise, seed + index)))
    return prepared


class LoadRun:
    """Runs a :class:`RunConfig`.

    Args:
        config: The run.
        progress: Where progress lines go (None: silent).
    """

    def __init__(self, config: RunConfig, progress: TextIO | None = sys.stderr) -> None:
        self.config = config
        self._progress = progress
        self._active: set[asyncio.Task[CallResult]] = set()
        self._done: list[CallResult] = []
        self._result = RunResult(config)
        self._started = 0.0

    async def run(self) -> RunResult:
        """Starts every call the arrivals schedule and waits for them all."""
        config = self.config
        turns = await asyncio.to_thread(prepare_turns, config.scenario, config.voice_cache,
                                        config.seed)
        content = ContentChecker() if config.check_content and any(
            t.expect for t in config.scenario.turns) else None
        slots = asyncio.Semaphore(config.concurrency)
        self._started = time.monotonic()
        self._result.started_wall = time.time()
        reporter = asyncio.create_task(self._report_progress(), name="progress")
        sampler = asyncio.create_task(self._sample_concurrency(), name="concurrency")
        try:
            offsets = config.arrivals.offsets(calls=config.calls, duration_s=config.duration_s,
                                              seed=config.seed)
            for call_id, offset in enumerate(offsets):
                await _sleep_until(self._started + offset)
                await slots.acquire()
                call = SyntheticCall(call_id, config.scenario, turns, config.edge_url,
                                     config.transport, self._started, content)
                call.result.scheduled_s = round(offset, 3)
                task = asyncio.create_task(self._one(call, slots.release), name=f"call-{call_id}")
                self._active.add(task)
                self._mark()
            if self._active:
                await asyncio.gather(*self._active)
        finally:
            background: list[asyncio.Task[Any]] = [reporter, sampler, *self._active]
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
        self._mark()
        self._result.duration_s = round(time.monotonic() - self._started, 3)
        self._result.calls = sorted(self._done, key=lambda c: c.call_id)
        self._print_line(final=True)
        return self._result

    async def _one(self, call: SyntheticCall, release: Callable[[], None]) -> CallResult:
        try:
            result = await call.run()
        finally:
            release()
            task = asyncio.current_task()
            self._active.discard(task)  # type: ignore[arg-type]
        self._done.append(result)
        self._mark()
        return result

    def _mark(self) -> None:
        self._result.concurrency.append(
            (round(time.monotonic() - self._started, 3), len(self._active)))

    async def _sample_concurrency(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            self._mark()

    async def _report_progress(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._print_line()

    def _print_line(self, final: bool = False) -> None:
        if self._progress is None:
            return
        now = time.monotonic() - self._started
        failed = sum(1 for c in self._done if not c.ok)
        recent = [t.voice_to_voice_ms for c in self._done for t in c.turns
                  if t.voice_to_voice_ms is not None
                  and t.started_s >= now - ROLLING_WINDOW_S]
        p95 = f"{percentile(recent, 95):.0f} ms" if recent else "-"
        line = (f"[{now:6.1f}s] active {len(self._active):4d} | completed {len(self._done):5d}"
                f" | failed {failed:4d} | p95 voice-to-voice (last {ROLLING_WINDOW_S:.0f} s) "
                f"{p95}")
        if self._progress.isatty() and not final:
            self._progress.write("\r" + line)
        else:
            self._progress.write(line + "\n")
        self._progress.flush()


async def _sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


def to_json(result: RunResult, labels: dict[str, Any]) -> dict[str, Any]:
    """The run as a JSON-ready dict (the report's data)."""
    config = result.config
    return {
        "scenario": config.scenario.model_dump(mode="json"),
        "transport": config.transport,
        "arrivals": str(config.arrivals),
        "calls_requested": config.calls,
        "duration_requested_s": config.duration_s,
        "concurrency_limit": config.concurrency,
        "edge_url": config.edge_url,
        "seed": config.seed,
        "started_wall": result.started_wall,
        "duration_s": result.duration_s,
        "labels": labels,
        "concurrency": result.concurrency,
        "calls": [call.to_dict() for call in result.calls],
    }
