"""``voxmesh token``: LiveKit join tokens, decoded with livekit-api's own ``TokenVerifier``."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import time

import jwt
import pytest
from livekit import api

from voxmesh.cli import token as token_cli

KEY = "APIvoxmeshTokenTest"
SECRET = "token-test-secret-0123456789abcdefghijklmnop"
_VARIABLES = ("LIVEKIT_API_KEY", "LIVEKIT_API_SECRET", "LIVEKIT_URL", "VOXMESH_LIVEKIT_API_KEY",
              "VOXMESH_LIVEKIT_API_SECRET", "VOXMESH_LIVEKIT_URL")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _VARIABLES:
        monkeypatch.delenv(name, raising=False)


def mint(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = token_cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out.strip(), err.strip()


def test_token_grants_one_room_to_one_identity(capsys: pytest.CaptureFixture[str]) -> None:
    before = int(time.time())
    status, out, err = mint(capsys, "--room", "support-42", "--identity", "alice",
                            "--name", "Alice Smith", "--ttl", "15m",
                            "--api-key", KEY, "--api-secret", SECRET)
    assert status == 0, err
    claims = api.TokenVerifier(KEY, SECRET).verify(out)
    assert claims.identity == "alice"
    assert claims.name == "Alice Smith"
    assert claims.video is not None
    assert claims.video.room_join is True
    assert claims.video.room == "support-42"
    assert claims.video.can_publish and claims.video.can_subscribe
    assert claims.room_config is None  # no agent asked for
    raw = jwt.decode(out, SECRET, algorithms=["HS256"], issuer=KEY)
    assert before + 15 * 60 - 2 <= raw["exp"] <= int(time.time()) + 15 * 60 + 2
    assert SECRET not in out and SECRET not in err


def test_token_dispatches_the_voxmesh_agent(capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEKIT_API_KEY", KEY)
    monkeypatch.setenv("LIVEKIT_API_SECRET", SECRET)
    monkeypatch.setenv("LIVEKIT_URL", "wss://voxmesh.example")
    status, out, err = mint(capsys, "--room", "call-1", "--identity", "caller",
                            "--agent", "voxmesh", "--voxmesh-agent", "restaurant-host", "--json")
    assert status == 0, err
    minted = json.loads(out)
    assert minted["url"] == "wss://voxmesh.example"
    assert (minted["room"], minted["identity"]) == ("call-1", "caller")
    claims = api.TokenVerifier(KEY, SECRET).verify(minted["token"])
    assert claims.room_config is not None
    [dispatch] = claims.room_config.agents
    assert dispatch.agent_name == "voxmesh"
    assert json.loads(dispatch.metadata) == {"agent": "restaurant-host"}
    expires = datetime.datetime.fromisoformat(minted["expires_at"])
    left = expires - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(hours=5, minutes=59) < left <= datetime.timedelta(hours=6)


def test_voxmesh_variables_come_before_livekit_ones(capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEKIT_API_KEY", "some-other-project")
    monkeypatch.setenv("LIVEKIT_API_SECRET", "some-other-secret")
    monkeypatch.setenv("VOXMESH_LIVEKIT_API_KEY", KEY)
    monkeypatch.setenv("VOXMESH_LIVEKIT_API_SECRET", SECRET)
    status, out, _ = mint(capsys, "--room", "r", "--identity", "i", "--agent", "voxmesh")
    assert status == 0
    claims = api.TokenVerifier(KEY, SECRET).verify(out)
    [dispatch] = claims.room_config.agents  # type: ignore[union-attr]
    assert dispatch.agent_name == "voxmesh" and dispatch.metadata == ""


def test_token_signed_with_another_secret_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = mint(capsys, "--room", "r", "--identity", "i", "--api-key", KEY,
                     "--api-secret", SECRET)
    with pytest.raises(jwt.InvalidSignatureError):
        api.TokenVerifier(KEY, "not-the-secret-0123456789abcdefghij").verify(out)


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900),
                                               ("6h", 21_600), ("1d", 86_400), ("1.5h", 5400)])
def test_ttl_forms(text: str, seconds: int) -> None:
    assert token_cli.parse_ttl(text).total_seconds() == seconds


@pytest.mark.parametrize(("argv", "message"), [
    (["--room", "r", "--identity", "i"], "pass --api-key or set VOXMESH_LIVEKIT_API_KEY or "
                                         "LIVEKIT_API_KEY"),
    (["--room", "r", "--identity", "i", "--api-key", KEY],
     "pass --api-secret or set VOXMESH_LIVEKIT_API_SECRET or LIVEKIT_API_SECRET"),
    (["--room", " ", "--identity", "i", "--api-key", KEY, "--api-secret", SECRET],
     "--room must not be empty"),
    (["--room", "r", "--identity", "", "--api-key", KEY, "--api-secret", SECRET],
     "--identity must not be empty"),
    (["--room", "r", "--identity", "i", "--ttl", "soon", "--api-key", KEY,
      "--api-secret", SECRET], "is not a duration"),
    (["--room", "r", "--identity", "i", "--ttl", "0s", "--api-key", KEY,
      "--api-secret", SECRET], "at least 1 second"),
    (["--room", "r", "--identity", "i", "--ttl", "31d", "--api-key", KEY,
      "--api-secret", SECRET], "maximum of 30 days"),
    (["--room", "r", "--identity", "i", "--voxmesh-agent", "sales", "--api-key", KEY,
      "--api-secret", SECRET], "--voxmesh-agent needs --agent"),
    (["--room", "r", "--identity", "i", "--agent", "voxmesh", "--voxmesh-agent", "a b",
      "--api-key", KEY, "--api-secret", SECRET], "letters, digits, - and _"),
])
def test_bad_arguments_exit_2_with_a_clear_message(
        capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    status, out, err = mint(capsys, *argv)
    assert status == 2
    assert out == ""
    assert err.startswith("error: ") and message in err
    assert "Traceback" not in err and SECRET not in err


def test_missing_required_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        token_cli.main(["--identity", "i"])
    assert exit_info.value.code == 2
    assert "--room" in capsys.readouterr().err


def test_command_line_entry() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "voxmesh.cli.token", "--room", "r", "--identity", "bob",
         "--agent", "voxmesh"],
        env={"PATH": "/usr/bin:/bin", "LIVEKIT_API_KEY": KEY, "LIVEKIT_API_SECRET": SECRET},
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert api.TokenVerifier(KEY, SECRET).verify(result.stdout.strip()).identity == "bob"
    bad = subprocess.run([sys.executable, "-m", "voxmesh.cli.token", "--room", "r",
                          "--identity", "bob", "--ttl", "forever"],
                         env={"PATH": "/usr/bin:/bin", "LIVEKIT_API_KEY": KEY,
                              "LIVEKIT_API_SECRET": SECRET},
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: --ttl 'forever' is not a duration")
