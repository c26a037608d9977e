"""The shape every bidirectional streaming RPC of Voxmesh shares (STT Recognize, TTS Synthesize).

A client sends a config message first, then a mix of data and control messages; the server
answers while input is still arriving. :func:`serve_duplex` runs the common part: it reads
requests on one task, lets the stream's worker (decoder, synthesizer) produce on another, yields
what the worker puts on its output queue, and turns bad input into a precise status without
losing output the worker already produced.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol, TypeVar

import grpc

from voxmesh.errors import OutOfOrderError, VoxmeshError, abort

#: Put on :attr:`DuplexStream.output` by the worker when it has nothing more to send.
END_OF_OUTPUT = object()

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")


class DuplexStream(Protocol):
    """What :func:`serve_duplex` needs from a stream's state object."""

    output: asyncio.Queue[Any]

    def handle(self, request: Any) -> None:
        """Applies one non-config request; raises :class:`VoxmeshError` on bad input."""

    def close(self) -> None:
        """Input ended; the worker finishes what was accepted, then puts END_OF_OUTPUT."""

    async def run(self) -> None:
        """Produces responses onto :attr:`output` until closed and done."""


async def read_config(
    requests: AsyncIterator[RequestT],
    context: grpc.aio.ServicerContext,
    *,
    config_field: str,
    stream_name: str,
    component: str,
) -> RequestT | None:
    """Reads the first message and checks it is the config; None if the client sent nothing."""
    try:
        first = await anext(requests)
    except StopAsyncIteration:
        return None
    if first.WhichOneof("request") != config_field:  # type: ignore[attr-defined]
        await abort(context, OutOfOrderError(
            f"the first message of a {stream_name} stream must be its config",
            reason="CONFIG_REQUIRED", field=config_field, component=component))
    return first


async def serve_duplex(
    requests: AsyncIterator[Any],
    stream: DuplexStream,
    context: grpc.aio.ServicerContext,
    *,
    config_field: str,
    component: str,
    log_rejection: Callable[[VoxmeshError], None] | None = None,
) -> AsyncIterator[Any]:
    """Yields a stream's responses while its requests are read concurrently.

    Bad input stops reading; the worker still finishes what was accepted before it (for STT,
    the final for audio already sent), then the RPC ends with the error's status.
    """
    failure: list[VoxmeshError] = []

    async def read() -> None:
        try:
            async for request in requests:
                if request.WhichOneof("request") == config_field:
                    raise OutOfOrderError(
                        "the config may only be sent once, as the first message",
                        reason="CONFIG_ALREADY_SET", field=config_field, component=component)
                stream.handle(request)
        except VoxmeshError as exc:
            failure.append(exc)
            if log_rejection is not None:
                log_rejection(exc)
        stream.close()

    worker = asyncio.create_task(stream.run(), name=f"{component}-worker")
    reader = asyncio.create_task(read(), name=f"{component}-reader")
    getter: asyncio.Future[Any] | None = None
    try:
        while True:
            getter = asyncio.ensure_future(stream.output.get())
            done, _ = await asyncio.wait({getter, worker}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                worker.result()  # re-raises the worker's failure
                break
            item = getter.result()
            if item is END_OF_OUTPUT:
                break
            yield item
        if failure:
            await abort(context, failure[0])
    except VoxmeshError as exc:
        await abort(context, exc)
    finally:
        # The pending get too: a client that hangs up cancels this generator inside the wait.
        tasks = [reader, worker, *([getter] if getter is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

