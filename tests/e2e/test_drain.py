"""SIGTERM mid-call: services drain and exit within their grace period, the call gets a clear
error event instead of hanging, and the next call works once the service is back."""

from __future__ import annotations

import asyncio
import time

import pytest

from voxmesh.cli.caller_audio import CallerVoice
from voxmesh.cli.stack import Stack
from voxmesh_edge.client import CallRejectedError, WebRTCCaller

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

GRACE_MARGIN_S = 3.0


def _error_events(caller: WebRTCCaller) -> list[dict]:
    return [e["error"] for e in caller.events if "error" in e]


async def _answered_turn(stack: Stack, voice: CallerVoice, text: str) -> None:
    """A fresh call gets a spoken answer (the platform is healthy)."""
    caller = WebRTCCaller(stack.edge_url)
    await caller.connect()
    try:
        sent = await caller.play(voice.speak(text))
        _, _, pcm = await caller.wait_agent_audio(start_after=sent, timeout=40)
        assert len(pcm) > 3200
        assert not _error_events(caller)
    finally:
        await caller.hangup()


async def _restart(stack: Stack, name: str) -> None:
    await stack.spawn(name)
    await stack.wait_healthy(name)


async def _terminate_timed(stack: Stack, name: str) -> tuple[int | None, float]:
    started = time.monotonic()
    code = await stack.terminate(name)
    return code, time.monotonic() - started


async def test_stt_sigterm_mid_call_ends_call_with_error_then_recovers(
    stack: Stack, caller_voice: CallerVoice
) -> None:
    caller = WebRTCCaller(stack.edge_url)
    await caller.connect()
    try:
        await caller.wait_event(lambda e: "started" in e, timeout=10)
        code, took = await _terminate_timed(stack, "stt")
        assert code == 0, "stt did not exit cleanly on SIGTERM"
        assert took < stack.drain_grace_s + GRACE_MARGIN_S
        error = await caller.wait_event(lambda e: "error" in e, timeout=15)
        assert error["error"]["fatal"] is True
        assert error["error"]["detail"]["component"] == "stt"
        assert "speech recognition" in error["error"]["detail"]["message"]
        await caller.wait_event(lambda e: "ended" in e, timeout=10)
    finally:
        await caller.close()
    await _restart(stack, "stt")
    await _answered_turn(stack, caller_voice, "Hello, are you there?")


@pytest.mark.parametrize("service", ["llm", "tts"])
async def test_answer_service_sigterm_gives_turn_error_then_recovers(
    stack: Stack, caller_voice: CallerVoice, service: str
) -> None:
    caller = WebRTCCaller(stack.edge_url)
    await caller.connect()
    try:
        sent = await caller.play(caller_voice.speak("What is the capital of Spain?"))
        # SIGTERM while the answer is being generated/spoken: the in-flight stream may finish
        # within the grace period; the process must exit either way.
        await caller.wait_event(lambda e: "agent_text" in e, timeout=40)
        code, took = await _terminate_timed(stack, service)
        assert code == 0, f"{service} did not exit cleanly on SIGTERM"
        assert took < stack.drain_grace_s + GRACE_MARGIN_S
        # The next turn cannot be answered: a clear, non-fatal error event, and the call lives.
        await caller.play(caller_voice.speak("And what about Italy?"))
        error = await caller.wait_event(lambda e: "error" in e, timeout=30)
        assert error["error"]["detail"]["component"] == service
        assert error["error"]["detail"]["reason"] == "UNAVAILABLE"
        assert not error["error"].get("fatal", False)
        assert not any("ended" in e for e in caller.events)
        del sent
    finally:
        await caller.hangup()
    await _restart(stack, service)
    await _answered_turn(stack, caller_voice, "What is the capital of Italy?")


async def test_worker_sigterm_drains_active_call_and_refuses_new_ones(
    stack: Stack, caller_voice: CallerVoice
) -> None:
    caller = WebRTCCaller(stack.edge_url)
    await caller.connect()
    process = stack.children["worker"].process
    assert process is not None
    try:
        await caller.wait_event(lambda e: "started" in e, timeout=10)
        process.send_signal(15)
        await asyncio.sleep(0.5)
        with pytest.raises(CallRejectedError) as info:
            await WebRTCCaller(stack.edge_url).connect()
        assert info.value.reason == "NO_WORKER_AVAILABLE"
        # The active call is still served while the worker drains.
        sent = await caller.play(caller_voice.speak("Is the call still working?"))
        _, _, pcm = await caller.wait_agent_audio(start_after=sent, timeout=40)
        assert len(pcm) > 3200
        assert process.returncode is None, "worker exited with a call still active"
    finally:
        await caller.hangup()
    assert await asyncio.wait_for(process.wait(), timeout=10) == 0
    await _restart(stack, "worker")
    await _answered_turn(stack, caller_voice, "Hello again.")
