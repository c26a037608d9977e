"""NATS connection helper with the options every Voxmesh process wants."""

from __future__ import annotations

import asyncio
import logging

from nats.aio.client import Client as NatsClient

log = logging.getLogger("voxmesh.nats")


async def connect_nats(url: str, name: str, first_connect_timeout_s: float = 15.0) -> NatsClient:
    """Connects to NATS, retrying the first connect for a while, then reconnecting forever.

    Args:
        url: Server URL(s), comma separated.
        name: Client name shown in the server's monitoring.
        first_connect_timeout_s: How long to keep trying before giving up at startup.

    Raises:
        ConnectionError: NATS could not be reached within ``first_connect_timeout_s``.
    """
    client = NatsClient()
    failures: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        # Before the first connect succeeds every retry fails the same way; say it once.
        if client.is_connected or not failures:
            log.warning("nats error: %s", exc)
        failures.append(exc)

    async def on_disconnected() -> None:
        log.warning("nats disconnected")

    async def on_reconnected() -> None:
        log.info("nats reconnected")

    connecting = client.connect(
        servers=url.split(","),
        name=name,
        connect_timeout=2,
        reconnect_time_wait=0.5,  # type: ignore[arg-type]  # float works; stub says int
        max_reconnect_attempts=-1,
        allow_reconnect=True,
        error_cb=on_error,
        disconnected_cb=on_disconnected,
        reconnected_cb=on_reconnected,
    )
    try:
        await asyncio.wait_for(connecting, timeout=first_connect_timeout_s)
    except TimeoutError:
        await client.close()
        raise ConnectionError(
            f"cannot reach NATS at {url} (tried for {first_connect_timeout_s:.0f}s); "
            "set VOXMESH_NATS_URL or start nats-server"
        ) from None
    return client
