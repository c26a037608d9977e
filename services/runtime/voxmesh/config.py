"""Typed configuration, validated at startup with a message a person can act on."""

from __future__ import annotations

import sys
from typing import TypeVar

from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def _shared(name: str) -> AliasChoices:
    # Shared settings keep one variable name (VOXMESH_NATS_URL) whatever the service's prefix.
    return AliasChoices(name, f"VOXMESH_{name.upper()}")


class CommonSettings(BaseSettings):
    """Settings every Voxmesh process shares.

    ``VOXMESH_LOG_LEVEL``, ``VOXMESH_LOG_FORMAT`` and ``VOXMESH_NATS_URL`` keep these names in
    every service; service settings add their own under a per-service prefix.
    """

    model_config = SettingsConfigDict(env_prefix="VOXMESH_", extra="ignore", populate_by_name=True)

    log_level: str = Field(
        default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$", validation_alias=_shared("log_level")
    )
    log_format: str = Field(
        default="text", pattern="^(text|json)$", validation_alias=_shared("log_format")
    )
    nats_url: str = Field(default="nats://127.0.0.1:4222", validation_alias=_shared("nats_url"))


class GrpcServiceSettings(CommonSettings):
    """Settings of a gRPC service process."""

    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)
    #: Seconds in-flight streams get to finish after SIGTERM before they are cancelled.
    drain_grace_s: float = Field(default=10.0, gt=0, le=3600)
    #: Upper bound for one inbound message, in bytes.
    max_message_bytes: int = Field(default=4 * 1024 * 1024, gt=1024)


def load_settings(settings_cls: type[SettingsT], **overrides: object) -> SettingsT:
    """Loads settings from the environment and exits with a clear message if they are invalid.

    Args:
        settings_cls: The pydantic settings class to instantiate.
        **overrides: Values that take precedence over the environment (e.g. CLI flags).

    Returns:
        The validated settings.
    """
    try:
        return settings_cls(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        prefix = settings_cls.model_config.get("env_prefix", "")
        lines = [f"invalid configuration for {settings_cls.__name__}:"]
        for err in exc.errors():
            name = ".".join(str(part) for part in err["loc"])
            field = settings_cls.model_fields.get(name)
            if field is not None and isinstance(field.validation_alias, AliasChoices):
                env_name = str(field.validation_alias.choices[-1]).upper()
            else:
                env_name = f"{prefix}{name}".upper()
            lines.append(f"  {env_name}: {err['msg']} (got {err.get('input')!r})")
        print("\n".join(lines), file=sys.stderr)
        raise SystemExit(2) from None
