"""Barge-in: caller speech while the agent talks stops its audio, cancels the answer, and the
context keeps only what the caller heard."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from voxmesh.cli.caller_audio import CallerVoice
from voxmesh.cli.stack import Stack
from voxmesh.v1 import llm_pb2, llm_pb2_grpc
from voxmesh_edge.client import WebRTCCaller

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

async def test_caller_interrupts_a_long_answer(stack: Stack, caller_voice: CallerVoice) -> None:
    caller = WebRTCCaller(stack.edge_url)
    await caller.connect()
    try:
        question = "Please tell me a long story about a brave dragon and a small village."
        await caller.play(caller_voice.speak(question))
        await caller.wait_event(
            lambda e: e.get("agent_state", {}).get("state") == "STATE_SPEAKING", timeout=40)
        await asyncio.sleep(1.5)  # let the caller hear a little of the answer
        interruption = caller_voice.speak("Wait, stop please.")
        speak_started = time.monotonic()
        await caller.play(interruption)
        event = await caller.wait_event(
            lambda e: e.get("agent_text", {}).get("interrupted", False), timeout=15)
        heard = event["agent_text"].get("text", "")
        await asyncio.sleep(1.5)  # receive the silence that follows the barge-in

        # The agent's audio stopped soon after the caller started talking. (An answer to the
        # interruption may follow; the barge-in shows as the first stretch of silence.)
        stop_at = caller.agent_audio.first_silence_after(speak_started, quiet_ms=1000)
        levels = "".join(
            "#" if caller.agent_audio.level_dbfs(i) > -45 else "."
            for i, (t, _) in enumerate(caller.agent_audio.frames) if t > speak_started)
        assert stop_at is not None, f"agent audio never stopped: {levels}"
        assert stop_at - speak_started < 1.5, f"audio stopped {stop_at - speak_started:.2f}s late"

        # The context holds the heard words, marked interrupted, not the whole generated answer.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports.llm}") as channel:
            context = await llm_pb2_grpc.LanguageModelStub(channel).GetContext(
                llm_pb2.GetContextRequest(session_id=caller.session_id or ""))
        first_answer = [m for m in context.messages if m.role == "assistant" and m.turn_index == 1]
        assert first_answer and first_answer[0].interrupted
        assert first_answer[0].content == heard
        generated = [e["agent_text"]["text"] for e in caller.events
                     if "agent_text" in e and e["agent_text"].get("turn_index") == 1]
        assert len(heard) < max(len(text) for text in generated)
    finally:
        await caller.hangup()

