"""A local stand-in for the LiveKit server's agent-dispatch endpoint (tests only).

It speaks the worker protocol the LiveKit server speaks to livekit-agents workers, so the
official ``livekit.agents.AgentServer`` connects to it unmodified through its ``ws_url``:

* Transport: a WebSocket at ``<url>/agent`` carrying binary protobuf frames, authorized with
  ``Authorization: Bearer <JWT>`` signed by the project's key pair with the ``agent`` video
  grant (verified here with ``livekit.api.TokenVerifier``).
* Messages: ``livekit.WorkerMessage`` from the worker (``register``, ``availability``,
  ``update_worker``, ``update_job``) and ``livekit.ServerMessage`` from the server
  (``register``, ``availability``, ``assignment``, ``termination``), as defined in
  livekit/protocol ``protobufs/livekit_agent.proto``
  (https://github.com/livekit/protocol/blob/main/protobufs/livekit_agent.proto); the flow is
  the one in LiveKit's "Worker lifecycle" documentation
  (https://docs.livekit.io/agents/worker/): register, then per job an availability request,
  the worker's answer, and for an accepted job an assignment with the room URL and token.

It is not a LiveKit server: there are no rooms and no media. A job it assigns points at a URL
where no room can be joined, so tests that let jobs run supply their own entrypoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web
from livekit import api
from livekit.protocol import agent, models


class LiveKitAgentServer:
    """Accepts one registered worker at a time and lets a test offer it jobs.

    Args:
        api_key: The project's API key (issuer of the worker's token).
        api_secret: The project's API secret.
    """

    def __init__(self, api_key: str, api_secret: str) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self.url = ""
        self.registrations: list[agent.RegisterWorkerRequest] = []
        self.statuses: list[agent.UpdateWorkerStatus] = []
        self.job_updates: list[agent.UpdateJobStatus] = []
        self.rejected_auth = 0
        self._registered = asyncio.Event()
        self._changed = asyncio.Event()
        self._answers: dict[str, asyncio.Future[agent.AvailabilityResponse]] = {}
        self._socket: web.WebSocketResponse | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        """Listens on a free loopback port; returns the ``ws://`` URL."""
        app = web.Application()
        app.router.add_get("/agent", self._handle_agent)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"ws://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        """Closes the worker's connection and stops listening."""
        if self._socket is not None:
            await self._socket.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_registered(self, within: float = 10.0) -> agent.RegisterWorkerRequest:
        """The worker's registration, once it arrived."""
        await asyncio.wait_for(self._registered.wait(), within)
        return self.registrations[-1]

    async def offer_job(self, *, room: str = "", metadata: str = "", agent_name: str = "",
                        assign: bool = True, within: float = 10.0,
                        ) -> tuple[agent.Job, agent.AvailabilityResponse]:
        """Asks the worker to take a job; assigns it when the worker says it is available.

        Returns:
            The job and the worker's availability answer.
        """
        job = agent.Job(
            id=f"AJ_{uuid.uuid4().hex[:12]}", dispatch_id=f"AD_{uuid.uuid4().hex[:12]}",
            type=agent.JobType.JT_ROOM, agent_name=agent_name, metadata=metadata,
            room=models.Room(sid=f"RM_{uuid.uuid4().hex[:12]}",
                             name=room or f"room-{uuid.uuid4().hex[:6]}"))
        answer = asyncio.get_running_loop().create_future()
        self._answers[job.id] = answer
        await self._send(agent.ServerMessage(availability=agent.AvailabilityRequest(job=job)))
        response: agent.AvailabilityResponse = await asyncio.wait_for(answer, within)
        if assign and response.available:
            token = (api.AccessToken(self.api_key, self.api_secret)
                     .with_identity(response.participant_identity)
                     .with_kind("agent")
                     .with_grants(api.VideoGrants(room_join=True, room=job.room.name,
                                                  agent=True))
                     .to_jwt())
            await self._send(agent.ServerMessage(
                assignment=agent.JobAssignment(job=job, url=self.url, token=token)))
        return job, response

    async def terminate(self, job_id: str) -> None:
        """Tells the worker to end a job (as when the room is deleted)."""
        await self._send(agent.ServerMessage(termination=agent.JobTermination(job_id=job_id)))

    async def wait_status(self, condition: Callable[[agent.UpdateWorkerStatus], bool],
                          within: float = 10.0) -> agent.UpdateWorkerStatus:
        """Waits for a status update (``UpdateWorkerStatus``) sent from now on that satisfies
        ``condition``.
        """
        seen = len(self.statuses)

        async def wait() -> agent.UpdateWorkerStatus:
            nonlocal seen
            while True:
                for status in self.statuses[seen:]:
                    if condition(status):
                        return status
                seen = len(self.statuses)
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(wait(), within)

    async def _send(self, message: agent.ServerMessage) -> None:
        if self._socket is None:
            raise RuntimeError("no worker is connected")
        await self._socket.send_bytes(message.SerializeToString())

    async def _handle_agent(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request.headers.get("Authorization", "")):
            self.rejected_auth += 1
            return web.Response(status=401, text="invalid token")
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self._socket = socket
        async for frame in socket:
            if frame.type != WSMsgType.BINARY:
                continue
            message = agent.WorkerMessage()
            message.ParseFromString(frame.data)
            await self._on_message(socket, message)
        if self._socket is socket:
            self._socket = None
        return socket

    def _authorized(self, header: str) -> bool:
        if not header.startswith("Bearer "):
            return False
        try:
            claims = api.TokenVerifier(self.api_key, self.api_secret).verify(
                header.removeprefix("Bearer "))
        except Exception:  # any invalid token (bad signature, expired, malformed)
            return False
        return bool(claims.video and claims.video.agent)

    async def _on_message(self, socket: web.WebSocketResponse,
                          message: agent.WorkerMessage) -> None:
        which = message.WhichOneof("message")
        if which == "register":
            self.registrations.append(message.register)
            reply = agent.ServerMessage(register=agent.RegisterWorkerResponse(
                worker_id=f"AW_{uuid.uuid4().hex[:12]}"))
            await socket.send_bytes(reply.SerializeToString())
            self._registered.set()
        elif which == "availability":
            answer = self._answers.pop(message.availability.job_id, None)
            if answer is not None and not answer.done():
                answer.set_result(message.availability)
        elif which == "update_worker":
            self.statuses.append(message.update_worker)
        elif which == "update_job":
            self.job_updates.append(message.update_job)
        self._changed.set()


def status_name(status: Any) -> str:
    """``WS_AVAILABLE`` or ``WS_FULL`` for an ``UpdateWorkerStatus``."""
    return str(agent.WorkerStatus.Name(status.status))


async def close_quietly(server: LiveKitAgentServer) -> None:
    """Stops a server, ignoring a worker that already went away."""
    with contextlib.suppress(Exception):
        await server.stop()
