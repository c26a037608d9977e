"""The edge as a process (``python -m voxmesh_edge``): startup and SIGTERM draining."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
import pytest_asyncio
from edge_testkit import EchoWorker, poll

from voxmesh.cli.stack import free_port
from voxmesh_edge.client import CallRejectedError, WebRTCCaller

pytestmark = pytest.mark.timeout(30)


@dataclass
class EdgeProcess:
    proc: asyncio.subprocess.Process
    url: str
    lines: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    @property
    def output(self) -> str:
        return "".join(self.lines)

    async def exit_code(self, within: float) -> int:
        """Waits for the process to exit and its output to be read; returns the exit status."""
        code = await asyncio.wait_for(self.proc.wait(), within)
        if self.reader is not None:
            await self.reader
        return code


async def _collect(stream: asyncio.StreamReader, lines: list[str]) -> None:
    while line := await stream.readline():
        lines.append(line.decode(errors="replace"))


@pytest_asyncio.fixture(loop_scope="session")
async def edge_process(nats_url: str, request: pytest.FixtureRequest) -> AsyncIterator[EdgeProcess]:
    grace = getattr(request, "param", 1.5)
    port = free_port()
    env = {
        **os.environ,
        "VOXMESH_NATS_URL": nats_url,
        "VOXMESH_EDGE_NATS_URL": nats_url,
        "VOXMESH_EDGE_PORT": str(port),
        "VOXMESH_EDGE_DRAIN_GRACE_S": str(grace),
        "VOXMESH_EDGE_LOG_LEVEL": "INFO",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "voxmesh_edge",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    edge = EdgeProcess(proc, f"http://127.0.0.1:{port}")
    edge.reader = reader = asyncio.create_task(_collect(proc.stderr, edge.lines))
    try:
        await poll(
            lambda: "edge listening on" in edge.output or proc.returncode is not None,
            15,
            "the edge process to listen",
        )
        assert proc.returncode is None, edge.output
        yield edge
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        await reader


async def _health(url: str) -> tuple[int, dict[str, str]]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz") as response:
        return response.status, await response.json()


async def test_sigterm_drains_then_hangs_up(
    edge_process: EdgeProcess, echo_worker: EchoWorker
) -> None:
    assert f"edge listening on {edge_process.url}" in edge_process.output
    assert await _health(edge_process.url) == (200, {"status": "ok"})
    caller = WebRTCCaller(edge_process.url)
    await caller.connect()
    assert caller.session_id is not None
    session = echo_worker.sessions[caller.session_id]

    signalled = time.monotonic()
    edge_process.proc.send_signal(signal.SIGTERM)
    health: tuple[int, dict[str, str]] = (0, {})

    async def draining() -> bool:
        nonlocal health
        health = await _health(edge_process.url)
        return health[0] == 503

    while not await draining():
        assert time.monotonic() - signalled < 3, "healthz still ok after SIGTERM"
    assert health == (503, {"status": "draining"})
    # Draining is not dying: liveness stays up, so the kubelet lets the drain finish.
    async with aiohttp.ClientSession() as http, http.get(f"{edge_process.url}/livez") as live:
        assert live.status == 200

    with pytest.raises(CallRejectedError) as rejected:
        await WebRTCCaller(edge_process.url).connect()
    assert rejected.value.reason == "EDGE_DRAINING"
    assert not caller.ended, "a live call was cut before the drain grace ran out"

    hangup = (await session.wait_control("hangup", within=5)).hangup
    assert hangup.reason == "edge_draining"
    assert time.monotonic() - signalled > 1.2  # the 1.5 s grace was honored
    assert await edge_process.exit_code(within=5) == 0
    await caller.close()


@pytest.mark.parametrize("edge_process", [20.0], indirect=True)
async def test_sigterm_exits_as_soon_as_calls_end(
    edge_process: EdgeProcess, echo_worker: EchoWorker
) -> None:
    caller = WebRTCCaller(edge_process.url)
    await caller.connect()
    signalled = time.monotonic()
    edge_process.proc.send_signal(signal.SIGTERM)
    await caller.hangup()
    assert await edge_process.exit_code(within=8) == 0
    assert time.monotonic() - signalled < 8  # well before the 20 s grace
    assert "edge stopped" in edge_process.output
