"""One LiveKit job: join the room, wait for the caller, bridge them to a Voxmesh worker.

livekit-agents runs :func:`entrypoint` once per job (a room this edge was dispatched to) in a
job process or thread with its own event loop, so each job has its own NATS connection and
its own :class:`~voxmesh_edge.server.EdgeServer` as the call's host (never started: it only
holds the call, its tasks and its settings).

The entrypoint returns once the call is set up, as livekit-agents expects; the job lasts until
``ctx.shutdown()`` (the call ended) or a shutdown from the agent server (drain timeout, the
server terminating the job), whose callback ends the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import uuid

import nats.errors
from livekit import rtc
from livekit.agents import AutoSubscribe, JobContext
from livekit.protocol import agent as agent_proto
from nats.aio.client import Client as NatsClient

from voxmesh.natsconn import connect_nats
from voxmesh_edge.call import AGENT_RE, CallSetupError
from voxmesh_edge.livekit.bridge import EVENTS_TOPIC, LiveKitCall
from voxmesh_edge.livekit.settings import LiveKitSettings
from voxmesh_edge.server import EdgeServer
from voxmesh_edge.settings import EdgeSettings

log = logging.getLogger("voxmesh.edge.livekit")

#: Key of the job's dispatch metadata (JSON object) naming the Voxmesh agent.
METADATA_AGENT_KEY = "agent"
#: A job whose room gets no caller within this many seconds ends.
CALLER_WAIT_S = 60.0


def agent_for_job(job: agent_proto.Job, default: str) -> str:
    """The Voxmesh agent a job's call goes to.

    Dispatch metadata (set by ``voxmesh token --voxmesh-agent``, a SIP dispatch rule or the
    AgentDispatch API) may name it as ``{"agent": "<name>"}``; otherwise ``default``.

    Raises:
        ValueError: The metadata names an agent that is not a valid agent name.
    """
    if not job.metadata.strip():
        return default
    try:
        metadata = json.loads(job.metadata)
    except json.JSONDecodeError:
        return default  # metadata meant for someone else
    if not isinstance(metadata, dict) or METADATA_AGENT_KEY not in metadata:
        return default
    agent = metadata[METADATA_AGENT_KEY]
    if not isinstance(agent, str) or not AGENT_RE.match(agent):
        raise ValueError(
            f"dispatch metadata names agent {agent!r}; an agent name may only contain "
            "letters, digits, - and _")
    return agent


class RoomJob:
    """The call of one LiveKit job, from joining the room to leaving it.

    Args:
        ctx: The job's context.
        settings: LiveKit edge settings.
    """

    def __init__(self, ctx: JobContext, settings: LiveKitSettings) -> None:
        self.ctx = ctx
        self.settings = settings
        self.call: LiveKitCall | None = None
        self._nc: NatsClient | None = None
        self._host: EdgeServer | None = None
        self._watcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Joins the room, waits for the caller and dispatches the call.

        A call that cannot be set up (no worker, NATS unreachable, bad dispatch metadata,
        no caller) ends the job: the caller gets an ``error`` event on :data:`EVENTS_TOPIC`.
        """
        ctx = self.ctx
        try:
            await ctx.connect(auto_subscribe=AutoSubscribe.AUDIO_ONLY)
        except rtc.ConnectError as exc:
            log.warning("job %s: cannot join room %s: %s", ctx.job.id, ctx.job.room.name, exc)
            ctx.shutdown("room_connect_failed")
            return
        try:
            agent = agent_for_job(ctx.job, self.settings.agent)
            caller = await asyncio.wait_for(ctx.wait_for_participant(), CALLER_WAIT_S)
        except ValueError as exc:
            await self._fail(CallSetupError(400, "INVALID_AGENT", str(exc)))
            return
        except TimeoutError:
            log.info("job %s: no caller joined room %s within %.0f s", ctx.job.id,
                     ctx.job.room.name, CALLER_WAIT_S)
            ctx.shutdown("no_caller")
            return
        try:
            host = await self._connect()
        except CallSetupError as exc:
            await self._fail(exc)
            return
        call = LiveKitCall(host, uuid.uuid4().hex, agent, room=ctx.room,
                           caller_identity=caller.identity,
                           sample_rate=self.settings.agent_sample_rate)
        self.call = call
        try:
            host.admit(call)
            await call.start()
        except CallSetupError as exc:
            await self._send_error(exc)  # while the agent is still in the room
            await call.close(f"rejected: {exc.reason}", notify_worker=exc.notify_worker)
            self.ctx.shutdown(exc.reason)
            return
        log.info("job %s: room %s, caller %s, session %s on worker %s", ctx.job.id,
                 ctx.job.room.name, caller.identity, call.session_id, call.worker_id)
        self._watcher = asyncio.create_task(self._end_job_with_call(call), name="job-watcher")

    async def _connect(self) -> EdgeServer:
        try:
            self._nc = await connect_nats(self.settings.nats_url,
                                          f"voxmesh-livekit-{self.ctx.job.id}")
        except (OSError, nats.errors.Error) as exc:
            raise CallSetupError(503, "NATS_UNAVAILABLE",
                                 f"the edge cannot reach NATS: {type(exc).__name__}") from None
        edge_settings = EdgeSettings(
            nats_url=self.settings.nats_url, agent=self.settings.agent, max_calls=1,
            dispatch_timeout_s=self.settings.dispatch_timeout_s,
            drain_grace_s=self.settings.drain_timeout_s)
        self._host = EdgeServer(edge_settings, self._nc,
                                edge_id=f"livekit-{socket.gethostname()}-{self.ctx.job.id}")
        return self._host

    async def _fail(self, exc: CallSetupError) -> None:
        await self._send_error(exc)
        self.ctx.shutdown(exc.reason)

    async def _send_error(self, exc: CallSetupError) -> None:
        log.info("job %s: call not set up (%s): %s", self.ctx.job.id, exc.reason, exc.message)
        error = {"edge": {"error": {"reason": exc.reason, "message": exc.message,
                                    "status": exc.status}}}
        with contextlib.suppress(Exception):  # the room may be gone already
            await self.ctx.room.local_participant.publish_data(
                json.dumps(error), reliable=True, topic=EVENTS_TOPIC)

    async def _end_job_with_call(self, call: LiveKitCall) -> None:
        await call.closed.wait()
        self.ctx.shutdown(call.close_reason)

    async def aclose(self, reason: str = "") -> None:
        """Ends the call (if still going) and releases the job's resources.

        Registered as the job's shutdown callback. When the Voxmesh worker ended the call,
        the room is deleted (``delete_room_on_end``), which also hangs up a SIP caller.

        Args:
            reason: Why livekit-agents shuts the job down.
        """
        call = self.call
        if self._watcher is not None and self._watcher is not asyncio.current_task():
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        if call is not None:
            await call.close(f"livekit_job_shutdown: {reason or 'no reason'}")
            if call.close_reason == "worker_ended" and self.settings.delete_room_on_end:
                await self.ctx.delete_room()
        if self._host is not None:
            await self._host.stop()
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(nats.errors.Error):
                await self._nc.drain()


async def entrypoint(ctx: JobContext) -> None:
    """The livekit-agents entrypoint of the Voxmesh LiveKit edge (one call per job)."""
    # Runs in the job's process: settings come from the same environment as the server's.
    job = RoomJob(ctx, LiveKitSettings())
    ctx.add_shutdown_callback(job.aclose)
    await job.start()


def job_metadata(agent: str) -> str:
    """Dispatch metadata that sends a job's call to the Voxmesh ``agent``."""
    return json.dumps({METADATA_AGENT_KEY: agent})
