"""serve_duplex owns its tasks: a client that hangs up mid-stream leaves none behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from voxmesh.duplex import serve_duplex


class _IdleStream:
    """A stream that has nothing to say yet and runs until closed."""

    def __init__(self) -> None:
        self.output: asyncio.Queue[Any] = asyncio.Queue()
        self._closed = asyncio.Event()

    def handle(self, request: Any) -> None:
        raise AssertionError("no request is sent")

    def close(self) -> None:
        self._closed.set()

    async def run(self) -> None:
        await self._closed.wait()


async def _silent_client() -> AsyncIterator[Any]:
    await asyncio.Event().wait()  # sends nothing, never ends
    yield None


async def test_hangup_mid_stream_cancels_every_task_it_started() -> None:
    before = asyncio.all_tasks()

    async def consume() -> None:
        async for _ in serve_duplex(_silent_client(), _IdleStream(), context=None,  # type: ignore[arg-type]
                                    config_field="config", component="test"):
            pass

    rpc = asyncio.create_task(consume())
    for _ in range(10):  # let it start its reader, worker and the pending get
        await asyncio.sleep(0)
    started = asyncio.all_tasks() - before - {rpc}
    assert len(started) == 3, started
    rpc.cancel()  # what gRPC does to a handler whose client went away
    await asyncio.gather(rpc, return_exceptions=True)
    assert [t for t in started if not t.done()] == []
