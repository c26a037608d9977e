"""The process event loop: uvloop by default, asyncio on request, a clear error otherwise."""

from __future__ import annotations

import asyncio

import pytest

from voxmesh import eventloop


async def _loop_class() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_uvloop_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(eventloop.ENV, raising=False)
    assert eventloop.loop_kind() == "uvloop"
    assert eventloop.run(_loop_class()).startswith("uvloop")


def test_asyncio_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(eventloop.ENV, "asyncio")
    assert eventloop.run(_loop_class()).startswith("asyncio")


def test_an_unknown_loop_ends_the_process_with_one_line(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(eventloop.ENV, "twisted")
    with pytest.raises(SystemExit) as exit_info:
        eventloop.run(_loop_class())
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "invalid configuration: VOXMESH_EVENT_LOOP must be auto, uvloop or asyncio, "
        "not 'twisted'")
