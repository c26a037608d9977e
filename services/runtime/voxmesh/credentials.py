"""API keys of cloud providers: where they come from, and errors that name them but never show them.

A key is read from the service's own variable (``VOXMESH_STT_API_KEY``, set by the Helm chart from a
Kubernetes Secret) or, for local runs, from the vendor's conventional variable
(``DEEPGRAM_API_KEY``). The value is held as a :class:`pydantic.SecretStr`, so it prints as
``**********`` in reprs, settings dumps and tracebacks.
"""

from __future__ import annotations

import os

from pydantic import SecretStr

from voxmesh.errors import ConfigError, ProviderError


def resolve_api_key(
    *, provider: str, configured: SecretStr | None, setting_env: str, vendor_env: str
) -> SecretStr:
    """Returns the provider's API key, or raises a :class:`ConfigError` naming where to put it.

    Args:
        provider: Provider id, e.g. ``"deepgram"``.
        configured: The key from the service settings (``setting_env``), if set.
        setting_env: The service's variable, e.g. ``"VOXMESH_STT_API_KEY"``.
        vendor_env: The vendor's conventional variable, e.g. ``"DEEPGRAM_API_KEY"``.
    """
    if configured is not None and configured.get_secret_value().strip():
        return SecretStr(configured.get_secret_value().strip())
    vendor_value = os.environ.get(vendor_env, "").strip()
    if vendor_value:
        return SecretStr(vendor_value)
    raise ConfigError(
        f"{provider}: no API key. Set {setting_env} (the Helm chart sets it from "
        f"apiKey.existingSecret) or {vendor_env}."
    )


def rejected_key_error(provider: str, setting_env: str, vendor_env: str) -> ProviderError:
    """The error for a key the provider refused (HTTP 401/403).

    Not retryable, and no fallback either: every later call would fail the same way, and a
    silent fallback would hide a configuration fault.
    """
    return ProviderError(
        f"{provider} rejected the API key (HTTP 401/403); check {setting_env} or {vendor_env}",
        reason="PROVIDER_AUTH_FAILED",
        component=provider,
        retryable=False,
    )
