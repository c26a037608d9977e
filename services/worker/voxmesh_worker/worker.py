"""The agent worker process: takes calls from NATS dispatch and runs one session per call.

A worker is *warm* once the model services answer health checks and its dispatch subscription
is active. It subscribes to the dispatch subject (a queue group: one worker answers each call)
only while it has free capacity, and unsubscribes when full or draining, so a call is never
offered to a worker that cannot take it.

On SIGTERM, or a drain request from the operator on ``voxmesh.worker.<id>.drain``, it drains:
it leaves the dispatch group at once, lets active calls finish for up to ``drain_timeout_s``,
ends the rest with an error event, and exits. Heartbeats carry its state, sessions, capacity
and version; one is sent on every change, so the operator sees a call land within
milliseconds, not at the next beat.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from opentelemetry.metrics import CallbackOptions, Observation

from voxmesh import __version__, subjects
from voxmesh.metrics import meter
from voxmesh.natsconn import connect_nats
from voxmesh.v1 import common_pb2, session_pb2
from voxmesh_worker import instruments
from voxmesh_worker.clients import ServiceClients
from voxmesh_worker.session import CallSession
from voxmesh_worker.settings import WorkerSettings
from voxmesh_worker.tools import ToolRunner
from voxmesh_worker.vad import VadBatcher, load_vad_session

log = logging.getLogger("voxmesh.worker")


class Worker:
    """Dispatch, capacity, heartbeats and drain for the sessions of one process."""

    def __init__(self, settings: WorkerSettings, tools: ToolRunner | None = None) -> None:
        """Creates the worker; :meth:`run` connects and serves.

        Args:
            settings: Worker settings (with the agent file's values applied).
            tools: The agent's tools, shared by every session; None for an agent without tools.
        """
        self.settings = settings
        self.state = "warming"
        self._nc: NatsClient | None = None
        self._clients: ServiceClients | None = None
        self._vad: VadBatcher | None = None
        # One thread runs the VAD batches of every session of the worker.
        self._vad_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vad")
        self._sessions: dict[str, tuple[CallSession, asyncio.Task[str]]] = {}
        self._dispatch_sub: Any = None
        self._drain_sub: Any = None
        self._stop = asyncio.Event()
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._tools = tools
        meter("worker").create_observable_gauge(
            "voxmesh.worker.state", callbacks=[self._observe_state],
            description="1 for the worker's current state (warming, idle, busy, draining)")

    def _observe_state(self, _options: CallbackOptions) -> list[Observation]:
        return [Observation(1 if state == self.state else 0, {"state": state})
                for state in ("warming", "idle", "busy", "draining")]

    @property
    def active_sessions(self) -> int:
        """Calls in progress."""
        return len(self._sessions)

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Warms up, takes calls until SIGTERM/SIGINT, then drains."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        settings = self.settings
        self._nc = await connect_nats(settings.nats_url, f"voxmesh-worker-{settings.worker_id}")
        self._vad = VadBatcher(
            await loop.run_in_executor(self._vad_executor, load_vad_session), self._vad_executor)
        self._clients = ServiceClients(
            stt=settings.stt_address, llm=settings.llm_address, tts=settings.tts_address,
            guardrails=settings.guardrails_address, subagents=settings.subagents_address,
        )
        self._heartbeat_task = asyncio.create_task(self._heartbeats(), name="heartbeats")
        # Listen for drain requests from the start: a worker retired while still warming
        # must never join the dispatch group.
        self._drain_sub = await self._nc.subscribe(
            subjects.drain(settings.worker_id), cb=self._on_drain_request)
        try:
            if not await self._warm_up():
                self.state = "draining"  # stopped before it took a call: nothing to finish
                return
            _initialize_counters(settings.agent)
            await self._update_dispatch()
            log.info("worker %s warm: taking calls for agent %r (capacity %d)",
                     settings.worker_id, settings.agent, settings.max_sessions)
            if ready is not None:
                ready.set()
            await self._stop.wait()
            await self._drain()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            self._heartbeat_task.cancel()
            await asyncio.gather(self._heartbeat_task, return_exceptions=True)
            await self._publish_heartbeat()
            await self._clients.close()
            await self._nc.drain()
            if self._vad is not None:
                await self._vad.aclose()
            self._vad_executor.shutdown(wait=False)
            log.info("worker %s stopped", settings.worker_id)

    async def _warm_up(self) -> bool:
        """Waits for the model services; False when stopped first."""
        assert self._clients is not None
        serving = asyncio.create_task(self._clients.wait_serving(timeout_s=120), name="warm-up")
        stopped = asyncio.create_task(self._stop.wait(), name="stop-while-warming")
        try:
            await asyncio.wait({serving, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            serving.cancel()
            await asyncio.gather(stopped, serving, return_exceptions=True)
        if not serving.cancelled():
            serving.result()  # a warm-up failure is the worker's failure
        if self._stop.is_set():
            return False
        self.state = "idle"
        return True

    def request_drain(self) -> None:
        """Starts a drain (as SIGTERM does)."""
        self._stop.set()

    async def _on_drain_request(self, msg: Msg) -> None:
        if not self._stop.is_set():
            log.info("drain requested by %s", msg.headers.get("from", "the operator")
                     if msg.headers else "the operator")
        self.request_drain()
        if msg.reply:
            await msg.respond(b"")

    async def _drain(self) -> None:
        self.state = "draining"
        await self._update_dispatch()
        if self._sessions:
            log.info("draining: waiting up to %.0fs for %d call(s)",
                     self.settings.drain_timeout_s, len(self._sessions))
            tasks = [task for _, task in self._sessions.values()]
            _, pending = await asyncio.wait(tasks, timeout=self.settings.drain_timeout_s)
            for session, task in list(self._sessions.values()):
                if task in pending:
                    session.end("worker drain timeout")
            await asyncio.gather(*pending, return_exceptions=True)

    async def _update_dispatch(self) -> None:
        """Joins the dispatch queue group only while there is free capacity."""
        assert self._nc is not None
        want = self.state != "draining" and self.active_sessions < self.settings.max_sessions
        if want and self._dispatch_sub is None:
            self._dispatch_sub = await self._nc.subscribe(
                subjects.dispatch(self.settings.agent),
                queue=subjects.DISPATCH_QUEUE,
                cb=self._on_dispatch,
            )
        elif not want and self._dispatch_sub is not None:
            sub, self._dispatch_sub = self._dispatch_sub, None
            await sub.unsubscribe()
        if self.state != "draining":
            self.state = "busy" if self.active_sessions else "idle"
        await self._publish_heartbeat()

    async def _on_dispatch(self, msg: Msg) -> None:
        request = session_pb2.DispatchRequest()
        request.ParseFromString(msg.data)
        reply = session_pb2.DispatchReply(worker_id=self.settings.worker_id)
        if self.state == "draining" or self.active_sessions >= self.settings.max_sessions:
            # A request can arrive between the decision to leave the group and the unsubscribe.
            reply.error.CopyFrom(common_pb2.ErrorDetail(
                reason="WORKER_FULL", retryable=True, component="worker",
                message="worker has no free capacity"))
            await msg.respond(reply.SerializeToString())
            return
        if not request.session_id or request.session_id in self._sessions:
            reply.error.CopyFrom(common_pb2.ErrorDetail(
                reason="SESSION_ID_INVALID", field="session_id", component="worker",
                message="dispatch needs a new, non-empty session id"))
            await msg.respond(reply.SerializeToString())
            return
        assert self._nc is not None and self._clients is not None and self._vad is not None
        session = CallSession(
            session_id=request.session_id,
            nc=self._nc,
            clients=self._clients,
            settings=self.settings,
            vad=self._vad,
            tools=self._tools,
        )
        await session.start()
        task = asyncio.create_task(session.run(), name=f"session-{request.session_id[:8]}")
        self._sessions[request.session_id] = (session, task)
        task.add_done_callback(functools.partial(self._on_session_done, request.session_id))
        reply.accepted = True
        await msg.respond(reply.SerializeToString())
        instruments.CALLS.add(1, {"agent": self.settings.agent})
        instruments.ACTIVE_SESSIONS.add(1)
        await self._update_dispatch()
        waited = (f"; dispatch took {int(time.time() * 1000) - request.requested_at_ms} ms"
                  if request.requested_at_ms else "")
        log.info("call %s accepted (%d/%d)%s", request.session_id, self.active_sessions,
                 self.settings.max_sessions, waited)

    def _on_session_done(self, session_id: str, task: asyncio.Task[str]) -> None:
        self._sessions.pop(session_id, None)
        instruments.ACTIVE_SESSIONS.add(-1)
        reason = "cancelled" if task.cancelled() else (
            f"failed: {task.exception()!r}" if task.exception() else task.result())
        log.info("call %s ended (%s)", session_id, reason)
        if self.state != "draining":
            asyncio.get_running_loop().create_task(self._update_dispatch())

    async def _heartbeats(self) -> None:
        while True:
            await self._publish_heartbeat()
            await asyncio.sleep(self.settings.heartbeat_interval_s)

    async def _publish_heartbeat(self) -> None:
        if self._nc is None or self._nc.is_closed:
            return
        beat = session_pb2.WorkerHeartbeat(
            worker_id=self.settings.worker_id,
            state=self.state,
            active_sessions=self.active_sessions,
            max_sessions=self.settings.max_sessions,
            version=__version__,
            at_ms=int(time.time() * 1000),
        )
        await self._nc.publish(subjects.heartbeat(self.settings.worker_id),
                               beat.SerializeToString())


def _initialize_counters(agent: str) -> None:
    """Exports every counter at 0 from the start.

    Dashboards and alerts then see a series before the first call, turn, interruption or error.
    """
    instruments.CALLS.add(0, {"agent": agent})
    for interrupted in (False, True):
        instruments.TURNS.add(0, {"interrupted": interrupted})
    instruments.INTERRUPTIONS.add(0)
    instruments.ERRORS.add(0)
