"""gRPC server bootstrap shared by every service: health, reflection and a graceful drain.

On SIGTERM (or SIGINT) a service stops intake and finishes in-flight streams:

1. the health status flips to NOT_SERVING, so load balancers and the worker stop sending
   new streams here;
2. ``server.stop(grace)`` rejects new RPCs and lets running ones finish for up to ``grace``
   seconds, after which they are cancelled (clients see CANCELLED/UNAVAILABLE, never a hang);
3. the process exits.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from voxmesh import eventloop
from voxmesh.config import GrpcServiceSettings, load_settings
from voxmesh.errors import ConfigError, initialize_error_metrics
from voxmesh.logs import setup_logging
from voxmesh.metrics import setup_metrics
from voxmesh.providers import ProviderBase
from voxmesh.telemetry import setup_tracing, shutdown_tracing

#: Health service name of the liveness probe (``grpc: {service: voxmesh.liveness}``); the
#: readiness probe asks for the overall status ("").
LIVENESS_SERVICE = "voxmesh.liveness"

log = logging.getLogger("voxmesh.grpc")

Registrar = Callable[[grpc.aio.Server], None]
SettingsT = TypeVar("SettingsT", bound=GrpcServiceSettings)
ProviderT = TypeVar("ProviderT", bound=ProviderBase)
ServicerT = TypeVar("ServicerT")


@dataclass
class GrpcApp:
    """A gRPC service process: what it serves and how it starts and stops.

    Attributes:
        name: Short component name, used in logs.
        service_names: Full proto service names, for health and reflection.
        register: Adds the servicers to the server.
        settings: Host, port, grace period and limits.
        on_start: Awaited before the server reports SERVING (load models, connect NATS).
        on_drain: Awaited on SIGTERM alongside the RPC drain, within the same grace period
            (stop background intake, such as a queue consumer, and let its work finish).
        on_stop: Awaited after the server stopped (close connections).
    """

    name: str
    service_names: Sequence[str]
    register: Registrar
    settings: GrpcServiceSettings
    on_start: Callable[[], Awaitable[None]] | None = None
    on_stop: Callable[[], Awaitable[None]] | None = None
    on_drain: Callable[[], Awaitable[None]] | None = None
    health: health.aio.HealthServicer = field(default_factory=health.aio.HealthServicer)
    bound_port: int = 0

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Serves until SIGTERM/SIGINT, then drains and returns."""
        setup_tracing(self.name)
        setup_metrics(self.name)
        initialize_error_metrics()
        max_bytes = self.settings.max_message_bytes
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", max_bytes),
                ("grpc.max_send_message_length", max_bytes),
                ("grpc.so_reuseport", 0),
            ]
        )
        self.register(server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            [*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
        )
        self.bound_port = server.add_insecure_port(f"{self.settings.host}:{self.settings.port}")
        if self.bound_port == 0:
            raise SystemExit(f"{self.name}: cannot bind {self.settings.host}:{self.settings.port}")
        for service in ["", *self.service_names]:
            await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        await server.start()
        # Liveness only says the process serves gRPC: it must not fail while models load or
        # while NATS is away, or the kubelet would restart a pod that is merely not ready.
        await self.health.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        log.info("%s listening on %s:%d (warming up)", self.name, self.settings.host, self.bound_port)

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            if self.on_start is not None:
                await self.on_start()
            for service in ["", *self.service_names]:
                await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
            log.info("%s ready", self.name)
            if ready is not None:
                ready.set()
            await stop.wait()
            log.info("%s draining (grace %.1fs)", self.name, self.settings.drain_grace_s)
            await self.health.enter_graceful_shutdown()
            if self.on_drain is not None:
                await asyncio.gather(server.stop(self.settings.drain_grace_s), self.on_drain())
            else:
                await server.stop(self.settings.drain_grace_s)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await server.stop(None)
            if self.on_stop is not None:
                await self.on_stop()
            shutdown_tracing()
            log.info("%s stopped", self.name)


def run_app(app: GrpcApp) -> None:
    """Runs a :class:`GrpcApp` on a fresh event loop (the entry point of a service process).

    A failure to start (NATS unreachable, model missing) ends the process with one clear line
    and exit code 1, not a traceback.
    """
    try:
        eventloop.run(app.run())
    except KeyboardInterrupt:  # pragma: no cover - SIGINT is handled inside run()
        pass
    except (ConnectionError, RuntimeError, OSError) as exc:
        log.error("%s cannot start: %s", app.name, exc)
        raise SystemExit(1) from None


def serve_provider_service(
    name: str,
    settings_cls: type[SettingsT],
    create_provider: Callable[[SettingsT], ProviderT],
    create_servicer: Callable[[ProviderT, SettingsT], ServicerT],
    add_servicer: Callable[[ServicerT, grpc.aio.Server], None],
    service_name: str,
) -> None:
    """Entry point of a model service (stt, tts): one provider behind one servicer.

    Loads and validates settings, picks the provider (a bad provider name exits with a clear
    line), loads the model before reporting SERVING, and drains on SIGTERM.
    """
    settings = load_settings(settings_cls)
    setup_logging(name, settings.log_level, settings.log_format)
    try:
        provider = create_provider(settings)
    except ConfigError as exc:
        raise SystemExit(f"{name}: {exc}") from None
    servicer = create_servicer(provider, settings)
    run_app(GrpcApp(
        name=name,
        service_names=[service_name],
        register=lambda server: add_servicer(servicer, server),
        settings=settings,
        on_start=provider.load,
        on_stop=provider.aclose,
    ))
