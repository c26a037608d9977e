"""Metrics of the agent worker (see docs/metrics.md for their Prometheus names)."""

from __future__ import annotations

from voxmesh.metrics import meter

_meter = meter("worker")

VOICE_TO_VOICE = _meter.create_histogram(
    "voxmesh.turn.voice_to_voice", unit="ms",
    description="End of caller speech to the first answer frame published, per turn")
STAGE = _meter.create_histogram(
    "voxmesh.turn.stage", unit="ms",
    description="First-byte time of each stage of a turn (attribute stage)")
CALLS = _meter.create_counter("voxmesh.calls", description="Calls accepted by the worker")
TURNS = _meter.create_counter(
    "voxmesh.turns", description="Answered turns (attribute interrupted)")
INTERRUPTIONS = _meter.create_counter(
    "voxmesh.interruptions", description="Answers cut short by the caller (barge-in)")
ERRORS = _meter.create_counter(
    "voxmesh.errors", description="Errors reported to callers (attributes component, code)")
ACTIVE_SESSIONS = _meter.create_up_down_counter(
    "voxmesh.sessions.active", description="Calls in progress on this worker")
FALSE_INTERRUPTIONS = _meter.create_counter(
    "voxmesh.false_interruptions",
    description="Caller sounds that paused the agent but were not interruptions (noise, uh-huh)")
UNFINISHED_TURNS = _meter.create_counter(
    "voxmesh.turns.unfinished",
    description="Turns judged unfinished (attribute verdict, source): the agent waited for more")
TOOL_CALLS = _meter.create_counter(
    "voxmesh.tool_calls", description="Tool calls by outcome (attributes tool, status)")
GUARDRAIL_VERDICTS = _meter.create_counter(
    "voxmesh.worker.guardrail_verdicts",
    description="Guardrail checks seen by the worker (attributes direction, action)")
