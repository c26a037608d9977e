"""gRPC servicer of ``voxmesh.v1.TextToSpeech``.

Each Synthesize stream is a :class:`~voxmesh_tts.synthesis.SynthesisStream` over the service's
ordered providers (``VOXMESH_TTS_PROVIDER``); see that module for segmentation, streaming
providers and fallback.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc
from opentelemetry.trace import SpanKind

from voxmesh.duplex import read_config, serve_duplex
from voxmesh.errors import VoxmeshError, abort
from voxmesh.telemetry import extract, tracer
from voxmesh.v1 import tts_pb2, tts_pb2_grpc
from voxmesh_tts.providers import TTSProviders
from voxmesh_tts.settings import TTSSettings
from voxmesh_tts.synthesis import OUTPUT_RATES, SynthesisStream

__all__ = ["OUTPUT_RATES", "SynthesisStream", "TextToSpeechServicer"]

log = logging.getLogger("voxmesh.tts")
_tracer = tracer("tts")


class TextToSpeechServicer(tts_pb2_grpc.TextToSpeechServicer):
    """Serves Synthesize streams with the configured providers, most preferred first."""

    def __init__(self, providers: TTSProviders, settings: TTSSettings) -> None:
        """Creates the servicer."""
        self._providers = providers
        self._settings = settings

    async def Synthesize(  # noqa: N802 - gRPC method name
        self,
        request_iterator: AsyncIterator[tts_pb2.SynthesizeRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[tts_pb2.SynthesizeResponse]:
        """See ``tts.proto``."""
        requests = request_iterator.__aiter__()
        first = await read_config(
            requests, context, config_field="config", stream_name="Synthesize", component="tts"
        )
        if first is None:
            return
        try:
            stream = SynthesisStream(self._providers.chain, self._settings, first.config)
        except VoxmeshError as exc:
            await abort(context, exc)
        primary = self._providers.primary
        yield tts_pb2.SynthesizeResponse(
            ready=tts_pb2.SynthesizerReady(
                provider=primary.name, voice=first.config.voice or primary.default_voice))
        with _tracer.start_as_current_span(
            "tts.synthesize", context=extract(context.invocation_metadata()),
            kind=SpanKind.SERVER,
            attributes={"voxmesh.tts.provider": primary.name,
                        "voxmesh.session.id": first.config.turn.session_id,
                        "voxmesh.turn.index": first.config.turn.turn_index},
        ):
            async for response in serve_duplex(
                requests, stream, context, config_field="config", component="tts",
                log_rejection=lambda e: log.info("stream rejected: %s (%s)", e.reason, e.message),
            ):
                yield response
