"""Shared fixtures: a real platform stack (nats-server, services, worker, edge) on loopback."""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from voxmesh.cli.caller_audio import CallerVoice
from voxmesh.cli.stack import Ports, Stack, free_port, nats_server_binary

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# The Stacks running now, so that a failing test's report can show what their processes logged
# meanwhile: an end-to-end failure on a CI machine is otherwise a bare timeout.
_STACKS: list[Stack] = []
_LOG_OFFSETS = pytest.StashKey[dict[Path, int]]()
_LOG_TAIL_LINES = 40


def _recording_start(start: Any) -> Any:
    @functools.wraps(start)
    async def recording_start(self: Stack, *args: Any, **kwargs: Any) -> None:
        _STACKS.append(self)
        await start(self, *args, **kwargs)
    return recording_start


def _recording_stop(stop: Any) -> Any:
    @functools.wraps(stop)
    async def recording_stop(self: Stack, *args: Any, **kwargs: Any) -> None:
        try:
            await stop(self, *args, **kwargs)
        finally:
            if self in _STACKS:  # a stopped stack writes no more: no need to look again
                _STACKS.remove(self)
    return recording_stop


Stack.start = _recording_start(Stack.start)  # type: ignore[method-assign]
Stack.stop = _recording_stop(Stack.stop)  # type: ignore[method-assign]


def _stack_logs() -> list[Path]:
    return [log for stack in _STACKS if (stack.state_dir / "logs").is_dir()
            for log in sorted((stack.state_dir / "logs").glob("*.log"))]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Notes where each known stack log ends, before the test's own fixtures start."""
    item.stash[_LOG_OFFSETS] = {log: log.stat().st_size for log in _stack_logs()}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[
        None, Any, None]:
    """Adds the stack logs written during a failed test to its report."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    offsets = item.stash.get(_LOG_OFFSETS, {})
    for log in _stack_logs():
        try:
            with log.open("rb") as file:
                file.seek(offsets.get(log, 0))
                lines = file.read().decode(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
        except OSError:  # a stopped stack's temporary folder may be gone already
            continue
        if lines:
            report.sections.append((f"stack log {log.parent.parent.name}/{log.name}",
                                    "\n".join(lines)))


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """The whole embedded platform, started once for the session. Tests must leave it healthy."""
    platform = Stack(
        state_dir=tmp_path_factory.mktemp("stack"),
        ports=Ports.free(),
        drain_grace_s=3.0,
        env={"VOXMESH_WORKER_DRAIN_TIMEOUT_S": "20"},
    )
    try:
        await platform.start()
    except RuntimeError:
        await platform.stop()
        raise
    yield platform
    await platform.stop()


@pytest.fixture(scope="session")
def caller_voice() -> CallerVoice:
    """Piper voice for the synthetic caller, with audio cached across runs."""
    return CallerVoice(Path(os.environ.get("VOXMESH_TEST_CACHE", ".voxmesh/cache/caller")))


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real nats-server (JetStream on) on a free port, for the whole session."""
    port = free_port()
    workdir = tmp_path_factory.mktemp("nats")
    log_path = workdir / "nats.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                nats_server_binary(),
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                str(port),
                "-sd",
                str(workdir / "store"),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"nats-server did not start:\n{log_path.read_text()}")
                time.sleep(0.05)
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
