"""API keys: where they are read from, and errors that name the variable, never the value."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from voxmesh.credentials import rejected_key_error, resolve_api_key
from voxmesh.errors import ConfigError

_NAMES = {"provider": "deepgram", "setting_env": "VOXMESH_STT_API_KEY",
          "vendor_env": "DEEPGRAM_API_KEY"}


def test_the_service_variable_wins_over_the_vendor_variable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPGRAM_API_KEY", "vendor-key")
    key = resolve_api_key(configured=SecretStr(" service-key\n"), **_NAMES)
    assert key.get_secret_value() == "service-key"
    assert "service-key" not in repr(key) and "service-key" not in str(key)
    assert resolve_api_key(configured=None, **_NAMES).get_secret_value() == "vendor-key"


def test_a_missing_key_names_both_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEEPGRAM_API_KEY", raising=False)
    with pytest.raises(ConfigError) as raised:
        resolve_api_key(configured=SecretStr("  "), **_NAMES)
    message = str(raised.value)
    assert message.startswith("deepgram: no API key")
    assert "VOXMESH_STT_API_KEY" in message and "DEEPGRAM_API_KEY" in message


def test_a_rejected_key_is_final_and_names_where_to_fix_it() -> None:
    error = rejected_key_error("cartesia", "VOXMESH_TTS_API_KEY", "CARTESIA_API_KEY")
    assert not error.retryable
    assert error.reason == "PROVIDER_AUTH_FAILED" and error.component == "cartesia"
    assert "VOXMESH_TTS_API_KEY" in error.message
