"""Entry point: ``python -m voxmesh_subagents`` (one replica: gRPC server + task consumer)."""

from __future__ import annotations

from nats.aio.client import Client as NatsClient

from voxmesh.config import load_settings
from voxmesh.grpcserver import GrpcApp, run_app
from voxmesh.logs import setup_logging
from voxmesh.natsconn import connect_nats
from voxmesh.v1 import subagents_pb2, subagents_pb2_grpc
from voxmesh_subagents.handlers import create_handlers
from voxmesh_subagents.handlers.llm_client import LlmClient
from voxmesh_subagents.queue import ensure_streams
from voxmesh_subagents.records import TaskStore
from voxmesh_subagents.runner import TaskRunner
from voxmesh_subagents.service import SubagentsServicer
from voxmesh_subagents.settings import SubagentsSettings


def main() -> None:
    """Starts one subagents replica."""
    settings = load_settings(SubagentsSettings)
    setup_logging("subagents", settings.log_level, settings.log_format)
    llm = LlmClient(settings.llm_address, settings.llm_timeout_s)
    handlers = create_handlers(settings, llm)
    servicer = SubagentsServicer(handlers, settings)
    held: dict[str, NatsClient | TaskRunner] = {}

    async def start() -> None:
        nc = await connect_nats(settings.nats_url, f"voxmesh-subagents-{settings.replica_id}")
        held["nc"] = nc
        js = nc.jetstream()
        store = TaskStore(await ensure_streams(js, settings))
        servicer.attach(nc, js, store)
        for handler in handlers.values():
            await handler.start()
        runner = TaskRunner(nc, js, store, handlers, settings)
        await runner.start()
        held["runner"] = runner

    async def drain() -> None:
        runner = held.get("runner")
        if isinstance(runner, TaskRunner):
            await runner.drain(settings.drain_grace_s)

    async def stop() -> None:
        runner = held.get("runner")
        if isinstance(runner, TaskRunner):
            await runner.close()
        for handler in handlers.values():
            await handler.close()
        await llm.close()
        nc = held.get("nc")
        if isinstance(nc, NatsClient):
            await nc.drain()

    run_app(GrpcApp(
        name="subagents",
        service_names=[subagents_pb2.DESCRIPTOR.services_by_name["Subagents"].full_name],
        register=lambda server: subagents_pb2_grpc.add_SubagentsServicer_to_server(
            servicer, server),
        settings=settings,
        on_start=start,
        on_drain=drain,
        on_stop=stop,
    ))


if __name__ == "__main__":
    main()
