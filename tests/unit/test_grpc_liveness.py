"""Liveness and readiness of a gRPC service: alive while it loads, ready once it has."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from voxmesh.config import GrpcServiceSettings
from voxmesh.grpcserver import LIVENESS_SERVICE, GrpcApp

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_liveness_serves_while_the_model_loads_and_readiness_waits() -> None:
    loaded = asyncio.Event()

    async def load_model() -> None:
        await loaded.wait()

    app = GrpcApp(name="probe-test", service_names=["voxmesh.v1.Test"],
                  register=lambda server: None, on_start=load_model,
                  settings=GrpcServiceSettings(host="127.0.0.1", port=0, drain_grace_s=1))
    ready = asyncio.Event()
    task = asyncio.create_task(app.run(ready))
    try:
        async with asyncio.timeout(10):
            while app.bound_port == 0:  # noqa: ASYNC110 - the port is known only once bound
                await asyncio.sleep(0.01)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.bound_port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)

            async def status(service: str) -> int:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=service),
                                         timeout=2)
                return reply.status

            async with asyncio.timeout(5):
                while await status(LIVENESS_SERVICE) != SERVING:  # noqa: ASYNC110 - polls the server
                    await asyncio.sleep(0.01)
            assert await status("") == NOT_SERVING
            loaded.set()
            await asyncio.wait_for(ready.wait(), timeout=5)
            assert (await status(""), await status(LIVENESS_SERVICE)) == (SERVING, SERVING)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
