"""Fixtures for the edge tests: an in-process edge on the session's real nats-server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest_asyncio
from edge_testkit import EchoWorker
from nats.aio.client import Client as NatsClient

from voxmesh_edge.server import EdgeServer
from voxmesh_edge.settings import EdgeSettings


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def nc(nats_url: str) -> AsyncIterator[NatsClient]:
    """The tests' own NATS connection (used by the worker test double and observers)."""
    client = await nats.connect(nats_url, name="edge-tests")
    yield client
    await client.drain()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def edge(nats_url: str) -> AsyncIterator[EdgeServer]:
    """An in-process edge on a free port with its own NATS connection."""
    settings = EdgeSettings(
        host="127.0.0.1", port=0, nats_url=nats_url, dispatch_timeout_s=1.0, drain_grace_s=1.0
    )
    edge_nc = await nats.connect(nats_url, name="edge-under-test")
    server = EdgeServer(settings, edge_nc, edge_id="edge-test")
    await server.start()
    yield server
    await server.stop()
    await edge_nc.drain()


@pytest_asyncio.fixture(loop_scope="session")
async def echo_worker(nc: NatsClient) -> AsyncIterator[EchoWorker]:
    """The worker test double, taking calls for agent ``default`` for one test."""
    worker = EchoWorker(nc)
    await worker.start()
    yield worker
    await worker.stop()
