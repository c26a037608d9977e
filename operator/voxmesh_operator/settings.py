"""Configuration of the operator (environment prefix ``VOXMESH_OPERATOR_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from voxmesh.config import CommonSettings


class OperatorSettings(CommonSettings):
    """Operator settings; ``nats_url`` is shared with the workers."""

    model_config = SettingsConfigDict(env_prefix="VOXMESH_OPERATOR_", extra="ignore")

    #: How often each pool is reconciled. Heartbeats arrive on every change, so this bounds
    #: how long a call landing on the last idle worker waits before a new one is started.
    reconcile_interval_s: float = Field(default=1.0, gt=0, le=60)
    #: Silence after which an idle worker no longer counts as warm.
    heartbeat_stale_s: float = Field(default=10.0, gt=0)
    #: Namespaces to watch; empty watches the whole cluster.
    namespaces: list[str] = Field(default_factory=list)
