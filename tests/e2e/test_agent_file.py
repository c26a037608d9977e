"""An agent file configures the worker: dispatch name, persona and voice settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from voxmesh.cli.call import run_call
from voxmesh.cli.caller_audio import CallerVoice
from voxmesh.cli.stack import Ports, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

AGENT = Path(__file__).resolve().parents[2] / "services" / "worker" / "agents" / (
    "restaurant-host.yaml")


async def test_restaurant_host_answers_in_persona(tmp_path: Path, caller_voice: CallerVoice) -> None:
    stack = Stack(state_dir=tmp_path, ports=Ports.free(), env={
        "VOXMESH_WORKER_AGENT_FILE": str(AGENT), "VOXMESH_EDGE_AGENT": "restaurant-host"})
    await stack.start()
    try:
        question = "Hello, what days are you open?"
        report = await run_call(stack.edge_url, [(question, caller_voice.speak(question))],
                                agent="restaurant-host")
    finally:
        await stack.stop()
    turn = report.turns[0]
    assert turn.voice_to_voice_ms and turn.agent_text
    # The persona's facts (open Tuesday to Sunday, five to eleven) come from the agent file.
    facts = ("tuesday", "sunday", "five", "eleven", "5", "11", "evening", "trattoria", "roma")
    assert any(fact in turn.agent_text.lower() for fact in facts), turn.agent_text
