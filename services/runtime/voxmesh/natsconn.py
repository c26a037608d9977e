"""NATS connection helper with the options every Voxmesh process wants."""

from __future__ import annotations

import logging

import nats
from nats.aio.client import Client as NatsClient

log = logging.getLogger("voxmesh.nats")


async def connect_nats(url: str, name: str) -> NatsClient:
    """Connects to NATS, retrying the first connect briefly, then reconnecting forever.

    Args:
        url: Server URL(s), comma separated.
        name: Client name shown in the server's monitoring.
    """

    async def on_error(exc: Exception) -> None:
        log.warning("nats error: %s", exc)

    async def on_disconnected() -> None:
        log.warning("nats disconnected")

    async def on_reconnected() -> None:
        log.info("nats reconnected")

    return await nats.connect(
        servers=url.split(","),
        name=name,
        connect_timeout=2,
        reconnect_time_wait=0.5,
        max_reconnect_attempts=-1,
        allow_reconnect=True,
        error_cb=on_error,
        disconnected_cb=on_disconnected,
        reconnected_cb=on_reconnected,
    )
