"""A real voice call through the WebRTC edge, the worker, STT/LLM/TTS over gRPC, and NATS."""

from __future__ import annotations

import pytest

from voxmesh.cli.call import run_call, summarize
from voxmesh.cli.caller_audio import CallerVoice
from voxmesh.cli.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

SENTENCES = [
    "Hello, I would like to book a table for two people tomorrow evening.",
    "What is the capital of France?",
    "Thank you very much, goodbye.",
]


async def test_three_turn_call(stack: Stack, caller_voice: CallerVoice) -> None:
    utterances = [(text, caller_voice.speak(text)) for text in SENTENCES]
    report = await run_call(stack.edge_url, utterances)
    print(summarize(report))
    assert not report.errors, report.errors
    assert len(report.turns) == 3
    for turn in report.turns:
        assert turn.wer is not None and turn.wer <= 0.20, (
            f"turn {turn.index}: STT heard {turn.heard_by_agent!r} for {turn.said!r}")
        # At least one spoken word: under load the rest of a long answer may come after the
        # 900 ms of quiet that ends the measurement, but a first "Sure." is ~250 ms.
        assert turn.agent_audio_ms >= 200, f"turn {turn.index}: no agent audio"
        assert turn.agent_text.strip(), f"turn {turn.index}: no agent text"
        assert turn.voice_to_voice_ms is not None and 0 < turn.voice_to_voice_ms < 10_000
        # The worker's own breakdown arrives as an event for every answered turn.
        for stage in ("endpointing_ms", "stt_final_ms", "llm_first_token_ms",
                      "tts_first_audio_ms", "voice_to_voice_ms", "edge_first_packet_ms"):
            assert turn.stages.get(stage, 0) > 0, f"turn {turn.index}: {stage} missing"
    # The answer follows what STT heard (tiny.en once heard "the capital of friends").
    if "france" in report.turns[1].heard_by_agent.lower():
        assert "paris" in report.turns[1].agent_text.lower()
