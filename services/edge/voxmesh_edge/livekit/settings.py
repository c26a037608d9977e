"""Configuration of the LiveKit edge (environment prefix ``VOXMESH_LIVEKIT_``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from voxmesh import audio
from voxmesh.config import CommonSettings
from voxmesh.errors import ConfigError

#: LiveKit's own variables, accepted when the ``VOXMESH_LIVEKIT_`` ones are not set.
URL_ENV = "LIVEKIT_URL"
API_KEY_ENV = "LIVEKIT_API_KEY"
API_SECRET_ENV = "LIVEKIT_API_SECRET"


@dataclass(frozen=True, repr=False)
class LiveKitCredentials:
    """Where the LiveKit server is and the key pair that signs this edge's tokens.

    Attributes:
        url: WebSocket URL of the server (``wss://...``).
        api_key: API key (the token issuer).
        api_secret: API secret (signs tokens).
    """

    url: str
    api_key: SecretStr
    api_secret: SecretStr

    def __repr__(self) -> str:
        return f"LiveKitCredentials(url={self.url!r}, api_key=**********, api_secret=**********)"


class LiveKitSettings(CommonSettings):
    """Settings of the LiveKit edge.

    ``log_level``, ``log_format`` and ``nats_url`` come from
    :class:`voxmesh.config.CommonSettings` (``VOXMESH_NATS_URL`` etc.).
    """

    model_config = SettingsConfigDict(env_prefix="VOXMESH_LIVEKIT_", extra="ignore")

    #: LiveKit server URL; empty: ``LIVEKIT_URL``.
    url: str = ""
    #: API key; unset: ``LIVEKIT_API_KEY``.
    api_key: SecretStr | None = None
    #: API secret; unset: ``LIVEKIT_API_SECRET``.
    api_secret: SecretStr | None = None
    #: LiveKit agent name this edge registers under (explicit dispatch: tokens, SIP dispatch
    #: rules and the AgentDispatch API name it). Empty: LiveKit dispatches to every new room.
    agent_name: str = Field(default="voxmesh", pattern=r"^[A-Za-z0-9_.-]*$", max_length=128)
    #: Voxmesh agent a call goes to unless the job's dispatch metadata names one.
    agent: str = Field(default="default", pattern=r"^[A-Za-z0-9_-]+$")
    #: Concurrent calls (LiveKit jobs) this edge carries.
    max_calls: int = Field(default=20, ge=1, le=10_000)
    #: After SIGTERM, how long active calls may go on before they are hung up.
    drain_timeout_s: float = Field(default=30.0, gt=0, le=86_400)
    #: How long to wait for a Voxmesh worker to accept a call.
    dispatch_timeout_s: float = Field(default=2.0, gt=0, le=60)
    #: How livekit-agents runs each job: in a process of its own or in a thread.
    job_executor: Literal["process", "thread"] = "process"
    #: Job processes kept warm so that a call never waits for one to start.
    idle_processes: int = Field(default=2, ge=0, le=64)
    #: Port of livekit-agents' health server (``/`` and ``/worker``); 0 picks a free one.
    health_port: int = Field(default=8081, ge=0, le=65535)
    #: A worker silent this long no longer counts as free capacity (as in the operator).
    heartbeat_stale_s: float = Field(default=10.0, gt=0)
    #: Rate of the agent audio track.
    agent_sample_rate: int = Field(default=48_000, ge=audio.INTERNAL_RATE, le=48_000)
    #: When the Voxmesh worker ends the call, delete the room, which hangs up a SIP caller.
    delete_room_on_end: bool = True
    #: Display name of the agent participant in the room.
    participant_name: str = Field(default="Voxmesh agent", max_length=128)

    def credentials(self) -> LiveKitCredentials:
        """The server URL and key pair, from these settings or LiveKit's own variables.

        Raises:
            ConfigError: One of them is missing; the message names both variables.
        """
        url = _first_set(self.url, URL_ENV)
        api_key = _first_set(_reveal(self.api_key), API_KEY_ENV)
        api_secret = _first_set(_reveal(self.api_secret), API_SECRET_ENV)
        missing = [f"{what} (VOXMESH_LIVEKIT_{env.removeprefix('LIVEKIT_')} or {env})"
                   for what, env, value in (("server URL", URL_ENV, url),
                                            ("API key", API_KEY_ENV, api_key),
                                            ("API secret", API_SECRET_ENV, api_secret))
                   if not value]
        if missing:
            raise ConfigError("livekit: missing " + ", ".join(missing) + ". The edge needs "
                              "the server URL and the key pair of the LiveKit project.")
        return LiveKitCredentials(url=url, api_key=SecretStr(api_key),
                                  api_secret=SecretStr(api_secret))


def _reveal(value: SecretStr | None) -> str:
    return "" if value is None else value.get_secret_value()


def _first_set(configured: str, vendor_env: str) -> str:
    """The configured value, else LiveKit's own variable; empty when neither is set."""
    return configured.strip() or os.environ.get(vendor_env, "").strip()
