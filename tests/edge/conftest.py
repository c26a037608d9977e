"""Fixtures for the edge tests: a real nats-server and an in-process edge."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
import pytest_asyncio
from edge_testkit import EchoWorker, free_port
from nats.aio.client import Client as NatsClient

from voxmesh.cli.stack import nats_server_binary
from voxmesh_edge.server import EdgeServer
from voxmesh_edge.settings import EdgeSettings


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
