"""Entry point: ``python -m voxmesh_tts``."""

from __future__ import annotations

from voxmesh.config import load_settings
from voxmesh.errors import ConfigError
from voxmesh.grpcserver import GrpcApp, run_app
from voxmesh.logs import setup_logging
from voxmesh.v1 import tts_pb2, tts_pb2_grpc
from voxmesh_tts.providers import create_provider
from voxmesh_tts.service import TextToSpeechServicer
from voxmesh_tts.settings import TTSSettings


def main() -> None:
    """Starts the TTS service."""
    settings = load_settings(TTSSettings)
    setup_logging("tts", settings.log_level, settings.log_format)
    try:
        provider = create_provider(settings)
    except ConfigError as exc:
        raise SystemExit(f"tts: {exc}") from None
    servicer = TextToSpeechServicer(provider, settings)
    app = GrpcApp(
        name="tts",
        service_names=[tts_pb2.DESCRIPTOR.services_by_name["TextToSpeech"].full_name],
        register=lambda server: tts_pb2_grpc.add_TextToSpeechServicer_to_server(servicer, server),
        settings=settings,
        on_start=provider.load,
        on_stop=provider.aclose,
    )
    run_app(app)


if __name__ == "__main__":
    main()
