"""Entry point: ``python -m voxmesh_stt``."""

from __future__ import annotations

from voxmesh.config import load_settings
from voxmesh.errors import ConfigError
from voxmesh.fallback import initialize_fallback_metrics
from voxmesh.grpcserver import GrpcApp, run_app
from voxmesh.logs import setup_logging
from voxmesh.v1 import stt_pb2, stt_pb2_grpc
from voxmesh_stt.providers import create_provider_chain, load_providers
from voxmesh_stt.service import SpeechToTextServicer
from voxmesh_stt.settings import STTSettings


def main() -> None:
    """Starts the STT service: every listed provider loads before it reports SERVING."""
    settings = load_settings(STTSettings)
    setup_logging("stt", settings.log_level, settings.log_format)
    try:
        chain = create_provider_chain(settings)
    except ConfigError as exc:
        raise SystemExit(f"stt: {exc}") from None
    servicer = SpeechToTextServicer(chain, settings)

    async def start() -> None:
        initialize_fallback_metrics()
        await load_providers(chain)

    async def stop() -> None:
        for provider in chain.providers:
            await provider.aclose()

    run_app(GrpcApp(
        name="stt",
        service_names=[stt_pb2.DESCRIPTOR.services_by_name["SpeechToText"].full_name],
        register=lambda server: stt_pb2_grpc.add_SpeechToTextServicer_to_server(servicer, server),
        settings=settings,
        on_start=start,
        on_stop=stop,
    ))


if __name__ == "__main__":
    main()
