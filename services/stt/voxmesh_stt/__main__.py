"""Entry point: ``python -m voxmesh_stt``."""

from __future__ import annotations

from voxmesh.grpcserver import serve_provider_service
from voxmesh.v1 import stt_pb2, stt_pb2_grpc
from voxmesh_stt.providers import create_provider
from voxmesh_stt.service import SpeechToTextServicer
from voxmesh_stt.settings import STTSettings


def main() -> None:
    """Starts the STT service."""
    serve_provider_service(
        "stt",
        STTSettings,
        create_provider,
        SpeechToTextServicer,
        stt_pb2_grpc.add_SpeechToTextServicer_to_server,
        stt_pb2.DESCRIPTOR.services_by_name["SpeechToText"].full_name,
    )


if __name__ == "__main__":
    main()
