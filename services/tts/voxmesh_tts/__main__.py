"""Entry point: ``python -m voxmesh_tts``."""

from __future__ import annotations

from voxmesh.grpcserver import serve_provider_service
from voxmesh.v1 import tts_pb2, tts_pb2_grpc
from voxmesh_tts.providers import create_provider
from voxmesh_tts.service import TextToSpeechServicer
from voxmesh_tts.settings import TTSSettings


def main() -> None:
    """Starts the TTS service."""
    serve_provider_service(
        "tts",
        TTSSettings,
        create_provider,
        TextToSpeechServicer,
        tts_pb2_grpc.add_TextToSpeechServicer_to_server,
        tts_pb2.DESCRIPTOR.services_by_name["TextToSpeech"].full_name,
    )


if __name__ == "__main__":
    main()
