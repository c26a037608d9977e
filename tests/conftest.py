"""Shared fixtures: a real platform stack (nats-server, services, worker, edge) on loopback."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from voxmesh.cli.caller_audio import CallerVoice
from voxmesh.cli.stack import Ports, Stack

os.environ.setdefault("HF_HUB_OFFLINE", "1")


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
