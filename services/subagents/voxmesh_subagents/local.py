"""A local subagents cluster for tests and benchmarks: nats-server plus replica processes.

Replicas are real ``python -m voxmesh_subagents`` processes, so failover can be tested the way it
happens in production: by killing one.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from voxmesh.cli.stack import free_port, nats_server_binary


@dataclass
class NatsServer:
    """A nats-server with JetStream, storing in ``state_dir``."""

    state_dir: Path
    port: int = field(default_factory=free_port)
    process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        """Client URL."""
        return f"nats://127.0.0.1:{self.port}"

    async def start(self, timeout_s: float = 10.0) -> None:
        """Starts the server and waits until it accepts connections."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = (self.state_dir / "nats.log").open("wb")
        self.process = await asyncio.create_subprocess_exec(
            nats_server_binary(), "-js", "-a", "127.0.0.1", "-p", str(self.port),
            "-sd", str(self.state_dir / "js"), stdout=log, stderr=asyncio.subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            except OSError:
                if self.process.returncode is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"nats-server did not start; see {self.state_dir}") from None
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        """Stops the server."""
        await _stop(self.process)


@dataclass
class Replica:
    """One subagents replica process."""

    nats_url: str
    replica_id: str
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: asyncio.subprocess.Process | None = None

    @property
    def address(self) -> str:
        """Address of the replica's gRPC server."""
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Starts the process (returns at once; see :meth:`wait_ready`)."""
        env = {**os.environ, "VOXMESH_NATS_URL": self.nats_url,
               "VOXMESH_SUBAGENTS_PORT": str(self.port),
               "VOXMESH_SUBAGENTS_REPLICA_ID": self.replica_id, **self.env}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "voxmesh_subagents", env=env, stdout=log,
            stderr=asyncio.subprocess.STDOUT)
        log.close()

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Waits until the replica reports SERVING (its consumer is bound)."""
        deadline = time.monotonic() + timeout_s
        async with grpc.aio.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.process is not None and self.process.returncode is not None:
                    break
                try:
                    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"replica {self.replica_id} did not become ready:\n"
                           f"{self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: the replica stops mid-task without a word."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()

    def terminate(self) -> None:
        """SIGTERM: the replica drains."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)

    async def wait(self, timeout_s: float = 30.0) -> int:
        """Waits for the process to exit and returns its exit code."""
        assert self.process is not None
        return await asyncio.wait_for(self.process.wait(), timeout_s)

    async def stop(self) -> None:
        """Stops the replica (SIGTERM, then SIGKILL after 10 s)."""
        await _stop(self.process)


async def _stop(process: asyncio.subprocess.Process | None) -> None:
    if process is None or process.returncode is not None:
        return
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), 10)
    except TimeoutError:
        process.kill()
        await process.wait()
