"""A worker obeys the guardrails audit: an END verdict is spoken, then the call ends."""

from __future__ import annotations

import pytest

from voxmesh import subjects
from voxmesh.cli.caller_audio import CallerVoice
from voxmesh.cli.stack import Stack
from voxmesh.natsconn import connect_nats
from voxmesh.v1 import session_pb2
from voxmesh_edge.client import WebRTCCaller

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

LINE = "I'm sorry, I have to end this call now. Goodbye."


async def test_audit_end_verdict_is_spoken_and_ends_the_call(
    stack: Stack, caller_voice: CallerVoice
) -> None:
    caller = WebRTCCaller(stack.edge_url)
    await caller.connect()
    nc = await connect_nats(stack.nats_url, "test-audit-control")
    try:
        await caller.play(caller_voice.speak("Hello there."))
        await caller.wait_event(lambda e: e.get("agent_text", {}).get("is_final", False)
                                and e["agent_text"].get("turn_index") == 1, timeout=60)
        verdict = session_pb2.AuditVerdict(
            action=session_pb2.AuditVerdict.ACTION_END, turn_index=1, reason="judge:end",
            say=LINE)
        await nc.publish(subjects.control(caller.session_id or ""),
                         session_pb2.SessionControl(audit=verdict).SerializeToString())
        said = await caller.wait_event(
            lambda e: e.get("agent_text", {}).get("is_final", False)
            and e["agent_text"].get("text") == LINE, timeout=30)
        ended = await caller.wait_event(lambda e: "ended" in e, timeout=30)
    finally:
        await nc.drain()
        await caller.hangup()
    assert said["agent_text"]["turn_index"] == 2
    assert ended["ended"]["reason"] == "audit: judge:end"
    errors = [e["error"]["detail"] for e in caller.events if "error" in e]
    assert any(d.get("reason") == "AUDIT_END" and d.get("component") == "guardrails"
               for d in errors), errors
