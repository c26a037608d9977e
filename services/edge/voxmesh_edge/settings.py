"""Configuration of the WebRTC edge."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from voxmesh.config import CommonSettings


class EdgeSettings(CommonSettings):
    """Settings of the WebRTC edge. Environment variables use the ``VOXMESH_EDGE_`` prefix.

    ``log_level``, ``log_format`` and ``nats_url`` come from
    :class:`voxmesh.config.CommonSettings` (``VOXMESH_NATS_URL`` etc.).
    """

    model_config = SettingsConfigDict(env_prefix="VOXMESH_EDGE_", extra="ignore")

    #: Address the HTTP server binds to.
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    #: Agent a call is dispatched to when the offer names none.
    agent: str = Field(default="default", pattern=r"^[A-Za-z0-9_-]+$")
    #: How long a call may wait for a worker to accept it. While no worker has a free slot
    #: (none subscribed, or a retryable ``WORKER_FULL`` decline) the edge asks again, backing
    #: off from 25 to 250 ms, until this has passed.
    dispatch_timeout_s: float = Field(default=2.0, gt=0, le=60)
    #: Seconds live calls get to end after SIGTERM before they are hung up.
    drain_grace_s: float = Field(default=10.0, ge=0, le=3600)
    #: Concurrent calls this edge accepts before answering 503.
    max_calls: int = Field(default=100, ge=1)
    #: Caller audio frames held before decoding (20 ms each). 0 decodes each packet as it
    #: arrives (a late packet is dropped); 1 or more keeps aiortc's buffer with that prefetch,
    #: which also waits out reordering.
    jitter_frames: int = Field(default=0, ge=0, le=16)
