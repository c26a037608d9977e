"""gRPC clients of the STT, LLM and TTS services, shared by every session of a worker."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from voxmesh.v1 import (
    guardrails_pb2_grpc,
    llm_pb2_grpc,
    stt_pb2_grpc,
    subagents_pb2_grpc,
    tts_pb2_grpc,
)

_CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    # Reconnect quickly after a service restarts; the default backoff reaches two minutes.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
    ("grpc.min_reconnect_backoff_ms", 200),
]


class ServiceClients:
    """Channels and stubs to the model services (and the guardrails, when configured)."""

    def __init__(self, *, stt: str, llm: str, tts: str, guardrails: str = "",
                 subagents: str = "") -> None:
        """Opens lazy channels to the services; an empty optional address means none."""
        self.addresses = {"stt": stt, "llm": llm, "tts": tts}
        if guardrails:
            self.addresses["guardrails"] = guardrails
        if subagents:
            self.addresses["subagents"] = subagents
        self._channels = {
            name: grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS)
            for name, address in self.addresses.items()
        }
        self.stt = stt_pb2_grpc.SpeechToTextStub(self._channels["stt"])
        self.llm = llm_pb2_grpc.LanguageModelStub(self._channels["llm"])
        self.tts = tts_pb2_grpc.TextToSpeechStub(self._channels["tts"])
        self.guardrails = (guardrails_pb2_grpc.GuardrailsStub(self._channels["guardrails"])
                           if guardrails else None)
        self.subagents = (subagents_pb2_grpc.SubagentsStub(self._channels["subagents"])
                          if subagents else None)

    async def wait_serving(self, timeout_s: float) -> None:
        """Waits until every service reports SERVING on grpc.health.v1.

        Raises:
            TimeoutError: naming the services that are not serving.
        """
        deadline = asyncio.get_running_loop().time() + timeout_s
        pending = set(self._channels)
        while pending:
            for name in sorted(pending):
                stub = health_pb2_grpc.HealthStub(self._channels[name])
                try:
                    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        pending.discard(name)
                except grpc.RpcError:
                    pass
            if pending:
                if asyncio.get_running_loop().time() > deadline:
                    names = ", ".join(f"{n} at {self.addresses[n]}" for n in sorted(pending))
                    raise TimeoutError(f"not serving after {timeout_s:.0f}s: {names}")
                await asyncio.sleep(0.2)

    async def close(self) -> None:
        """Closes the channels."""
        await asyncio.gather(*(channel.close() for channel in self._channels.values()))
