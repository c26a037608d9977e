"""The load tester against the real local stack: a smoke load, a barge-in, a content failure.

The smoke load is 4 concurrent calls x 2 turns over WebRTC. The report's numbers must be
consistent: every call accounted for, percentiles monotone, and each turn's latency equal to
what the caller's own timestamps give.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from voxmesh.cli.stack import Stack
from voxmesh_loadtest.arrivals import Arrivals
from voxmesh_loadtest.runner import LoadRun, RunConfig, to_json
from voxmesh_loadtest.scenario import Scenario, Turn, load_scenario
from voxmesh_loadtest.stats import PERCENTILES, summarize

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

SCENARIOS = Path(__file__).parents[2] / "loadtest" / "scenarios"


async def _run(stack: Stack, scenario: Scenario, calls: int, concurrency: int,
               check_content: bool = False) -> dict:
    config = RunConfig(edge_url=stack.edge_url, scenario=scenario,
                       arrivals=Arrivals.parse("burst:size=8,every=60"), calls=calls,
                       concurrency=concurrency, check_content=check_content)
    return to_json(await LoadRun(config, progress=None).run(), {})


async def test_smoke_load_reports_consistent_numbers(stack: Stack) -> None:
    run = await _run(stack, load_scenario(SCENARIOS / "smoke.yaml"), calls=4, concurrency=4)
    summary = summarize(run)
    # Every call is accounted for, and ran at once.
    assert [c["call_id"] for c in run["calls"]] == [0, 1, 2, 3]
    assert summary["calls"] == summary["calls_ok"] + summary["calls_failed"] == 4
    assert summary["calls_ok"] == 4, [(c["error"], c["error_message"]) for c in run["calls"]]
    assert summary["peak_concurrency"] == 4
    assert summary["turns"] == summary["turns_answered"] == 8
    # Percentiles are monotone, inside [min, max].
    v2v = summary["voice_to_voice_ms"]
    values = [v2v["min"], *(v2v[f"p{q}"] for q in PERCENTILES), v2v["max"]]
    assert values == sorted(values) and v2v["count"] == 8
    # Each turn's latency is what the caller's timestamps say, and plausible.
    for call in run["calls"]:
        assert call["session_id"] and call["worker_id"]
        assert call["started_s"] <= call["connected_s"] <= call["ended_s"]
        for turn in call["turns"]:
            assert 0 < turn["voice_to_voice_ms"] < 15_000
            assert turn["first_transcript_ms"] is not None
            assert turn["first_transcript_ms"] < turn["voice_to_voice_ms"]
            assert turn["agent_text"]
    json.dumps(run)  # the report data is JSON-ready


async def test_barge_in_reports_stop_time(stack: Stack) -> None:
    run = await _run(stack, load_scenario(SCENARIOS / "barge-in.yaml"), calls=1, concurrency=1)
    turns = run["calls"][0]["turns"]
    assert turns[1]["barge_in_stop_ms"] is not None, turns
    assert 0 < turns[1]["barge_in_stop_ms"] < 1500
    assert summarize(run)["barge_in_stop_ms"]["count"] == 1


async def test_missing_expected_phrase_is_a_content_failure(stack: Stack) -> None:
    scenario = Scenario(name="content", turns=[
        Turn(say="What colour is the sky on a clear day?", expect=["purple elephants"]),
    ])
    run = await _run(stack, scenario, calls=1, concurrency=1, check_content=True)
    (turn,) = run["calls"][0]["turns"]
    assert turn["content_ok"] is False and turn["error"] == "content"
    assert "purple elephants" in turn["error_message"]
    # The check listened to the answer: the transcript of the agent's audio has its words.
    said = set(turn["agent_text"].lower().replace(",", " ").replace(".", " ").split())
    heard = set(turn["heard"].lower().replace(",", " ").replace(".", " ").split())
    assert said and len(said & heard) >= len(said) / 2, (turn["agent_text"], turn["heard"])
    summary = summarize(run)
    assert summary["content_failures"] == 1 and summary["errors"] == {"content": 1}
