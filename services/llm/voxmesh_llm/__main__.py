"""Entry point: ``python -m voxmesh_llm``."""

from __future__ import annotations

from nats.aio.client import Client as NatsClient
from nats.js.api import KeyValueConfig

from voxmesh import subjects
from voxmesh.config import load_settings
from voxmesh.errors import ConfigError, VoxmeshError
from voxmesh.grpcserver import GrpcApp, run_app
from voxmesh.logs import setup_logging
from voxmesh.natsconn import connect_nats
from voxmesh.v1 import llm_pb2, llm_pb2_grpc
from voxmesh_llm.context_store import ContextStore
from voxmesh_llm.providers import create_chain
from voxmesh_llm.service import LanguageModelServicer
from voxmesh_llm.settings import LLMSettings


def main() -> None:
    """Starts the LLM service."""
    settings = load_settings(LLMSettings)
    setup_logging("llm", settings.log_level, settings.log_format)
    try:
        chain = create_chain(settings)
    except ConfigError as exc:
        raise SystemExit(f"llm: {exc}") from None
    holder: dict[str, NatsClient] = {}
    store = ContextStore(settings.max_history_messages)

    async def start() -> None:
        nc = await connect_nats(settings.nats_url, "voxmesh-llm")
        holder["nc"] = nc
        js = nc.jetstream()
        kv = await js.create_key_value(
            KeyValueConfig(
                bucket=subjects.CONTEXT_BUCKET,
                history=1,
                ttl=settings.context_ttl_hours * 3600,
            )
        )
        store.attach(kv)
        try:
            await chain.load()
        except VoxmeshError as exc:
            # One clear line and exit 1 (a rejected API key), not a traceback.
            raise RuntimeError(exc.message) from None

    async def stop() -> None:
        await servicer.close()
        await chain.aclose()
        if "nc" in holder:
            await holder["nc"].drain()

    servicer = LanguageModelServicer(chain, store, settings)
    app = GrpcApp(
        name="llm",
        service_names=[llm_pb2.DESCRIPTOR.services_by_name["LanguageModel"].full_name],
        register=lambda server: llm_pb2_grpc.add_LanguageModelServicer_to_server(servicer, server),
        settings=settings,
        on_start=start,
        on_stop=stop,
    )
    run_app(app)


if __name__ == "__main__":
    main()
