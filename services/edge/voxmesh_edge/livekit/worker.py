"""The LiveKit edge's agent server: registration, job requests, load reporting and drain.

The edge registers with the LiveKit server as a livekit-agents worker of type ``ROOM`` under
``agent_name`` (explicit dispatch: a token's room configuration, a SIP dispatch rule or the
AgentDispatch API names the agent, and LiveKit offers this edge a job for that room).

* Job requests (:class:`JobGate`): a job is accepted only while the edge is not draining, has
  a free call slot and the agent pool has free capacity (workers' heartbeats); otherwise it is
  rejected with a logged reason and LiveKit offers it to another edge.
* Load (:meth:`Admission.load`): the busier of this edge's calls over ``max_calls`` and the
  pool's calls over its capacity; at 1 (the load threshold) LiveKit stops offering jobs.
* Drain (:func:`drain`): on SIGTERM the edge stops taking jobs (LiveKit marks it full), lets
  active calls go on for up to ``drain_timeout_s`` and then ends the rest, the policy of the
  AgentPool's worker drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable

import nats.errors
from livekit.agents import AgentServer, JobContext, JobExecutorType, JobProcess, JobRequest
from livekit.agents.worker import ServerType

from voxmesh.metrics import meter
from voxmesh.natsconn import connect_nats
from voxmesh.telemetry import setup_tracing
from voxmesh_edge.livekit import job
from voxmesh_edge.livekit.capacity import LOAD_THRESHOLD, Admission, PoolWatch
from voxmesh_edge.livekit.settings import LiveKitCredentials, LiveKitSettings

log = logging.getLogger("voxmesh.edge.livekit")

#: Participant attribute naming the Voxmesh agent that answers in the room.
AGENT_ATTRIBUTE = "voxmesh.agent"

_JOBS = meter("edge").create_counter(
    "voxmesh.edge.livekit_jobs",
    description="LiveKit job requests answered by the edge, by outcome and reason")

Entrypoint = Callable[[JobContext], Awaitable[None]]


class JobGate:
    """The request handler: accepts a LiveKit job only when the call can be carried.

    Args:
        settings: LiveKit edge settings.
        admission: Capacity of this edge and of the agent pool.
    """

    def __init__(self, settings: LiveKitSettings, admission: Admission) -> None:
        self.settings = settings
        self.admission = admission

    async def __call__(self, request: JobRequest) -> None:
        """Accepts or rejects one job request."""
        room = request.room.name
        try:
            agent = job.agent_for_job(request.job, self.settings.agent)
        except ValueError as exc:
            # No edge can serve it: terminate, so LiveKit does not offer it to the others.
            log.warning("job %s (room %s) rejected (INVALID_AGENT): %s", request.id, room, exc)
            _JOBS.add(1, {"outcome": "rejected", "reason": "INVALID_AGENT"})
            await request.reject(terminate=True)
            return
        rejection = self.admission.check()
        if rejection is not None:
            log.info("job %s (room %s) rejected (%s): %s", request.id, room, rejection.reason,
                     rejection.message)
            _JOBS.add(1, {"outcome": "rejected", "reason": rejection.reason})
            # Not terminate: another edge may have capacity.
            await request.reject(terminate=False)
            return
        self.admission.hold(request.id)
        try:
            _JOBS.add(1, {"outcome": "accepted", "reason": ""})
            log.info("job %s (room %s) accepted for agent %s", request.id, room, agent)
            # Returns once LiveKit assigned the job and it was launched.
            await request.accept(name=self.settings.participant_name,
                                 identity=f"voxmesh-{request.id}",
                                 attributes={AGENT_ATTRIBUTE: agent})
        finally:
            self.admission.release(request.id)


def prepare_job_process(proc: JobProcess) -> None:
    """Runs once in each job process before it takes a job: installs tracing."""
    setup_tracing("edge")


def build_server(settings: LiveKitSettings, credentials: LiveKitCredentials,
                 admission: Admission, entrypoint: Entrypoint = job.entrypoint) -> AgentServer:
    """The livekit-agents server of the edge, not started.

    Args:
        settings: LiveKit edge settings.
        credentials: Server URL and key pair.
        admission: Decides on job requests and computes the load; its ``active_calls`` is
            bound to the server's running jobs.
        entrypoint: Runs each job (tests replace it).
    """
    executor = (JobExecutorType.PROCESS if settings.job_executor == "process"
                else JobExecutorType.THREAD)
    server = AgentServer(
        job_executor_type=executor,
        load_threshold=LOAD_THRESHOLD,
        drain_timeout=math.ceil(settings.drain_timeout_s),
        num_idle_processes=settings.idle_processes,
        ws_url=credentials.url,
        api_key=credentials.api_key.get_secret_value(),
        api_secret=credentials.api_secret.get_secret_value(),
        port=settings.health_port,
        setup_fnc=prepare_job_process,
        load_fnc=admission.load,
    )
    server.rtc_session(entrypoint, agent_name=settings.agent_name, type=ServerType.ROOM,
                       on_request=JobGate(settings, admission))
    admission.active_calls = lambda: len(server.active_jobs)
    return server


async def drain(server: AgentServer, admission: Admission, timeout_s: float) -> bool:
    """Stops taking jobs and waits for the active ones to end.

    LiveKit is told the edge is full at once (no new jobs are offered, and any that are get
    rejected); active calls continue.

    Args:
        server: The running agent server.
        admission: The edge's admission, set to draining.
        timeout_s: How long active calls may go on.

    Returns:
        True when every call ended in time; False when the timeout passed (closing the
        server then ends the remaining calls).
    """
    admission.draining = True
    log.info("draining: taking no new calls; waiting up to %g s for %d call(s)", timeout_s,
             len(server.active_jobs))
    try:
        # The server's own timeout is whole seconds; this one is exact.
        await asyncio.wait_for(server.drain(timeout=None), timeout_s)
    except TimeoutError:
        log.info("drain timeout over; ending %d call(s)", len(server.active_jobs))
        return False
    log.info("drained: no calls left")
    return True


async def serve(settings: LiveKitSettings, stop: asyncio.Event,
                entrypoint: Entrypoint = job.entrypoint) -> None:
    """Runs the LiveKit edge until ``stop`` is set, then drains and closes.

    Args:
        settings: LiveKit edge settings.
        stop: Set on SIGTERM/SIGINT.
        entrypoint: Runs each job (tests replace it).

    Raises:
        ConfigError: The LiveKit URL, key or secret is missing.
        SystemExit: NATS is unreachable.
        RuntimeError: The LiveKit server stayed unreachable (livekit-agents' retries ran out).
    """
    credentials = settings.credentials()
    try:
        nc = await connect_nats(settings.nats_url, "voxmesh-livekit-edge")
    except (OSError, nats.errors.Error) as exc:
        raise SystemExit(f"livekit edge: cannot connect to NATS at {settings.nats_url}: "
                         f"{exc or type(exc).__name__}") from None
    pool = PoolWatch(stale_after_s=settings.heartbeat_stale_s)
    heartbeats = await pool.watch(nc)
    admission = Admission(pool, settings.max_calls)
    server = build_server(settings, credentials, admission, entrypoint)
    running = asyncio.create_task(server.run(), name="livekit-agent-server")
    stopped = asyncio.create_task(stop.wait(), name="livekit-stop")
    try:
        await asyncio.wait({running, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if running.done():
            running.result()  # the connection to LiveKit failed for good
            return
        await drain(server, admission, settings.drain_timeout_s)
    finally:
        stopped.cancel()
        await server.aclose()
        await asyncio.gather(running, stopped, return_exceptions=True)
        with contextlib.suppress(nats.errors.Error):
            await heartbeats.unsubscribe()
            await nc.drain()
    log.info("livekit edge stopped")
