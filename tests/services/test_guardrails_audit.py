"""The guardrails audit: finished turns judged off the conversation path, verdicts published to
the session's control subject. Real nats-server (the shared stack's); the judge is a scripted
LanguageModel on loopback gRPC (the local 0.5B model's verdicts can't be scripted)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest

from voxmesh import subjects
from voxmesh.cli.stack import Stack, free_port
from voxmesh.natsconn import connect_nats
from voxmesh.v1 import llm_pb2, llm_pb2_grpc, session_pb2
from voxmesh_guardrails.audit import END_LINE, AuditConsumer
from voxmesh_guardrails.engine import Guardrails

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]
Action = session_pb2.AuditVerdict.Action


class ScriptedJudge(llm_pb2_grpc.LanguageModelServicer):
    """Answers every Generate with a fixed label (a script, not a model)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.prompts: list[str] = []

    async def Generate(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[llm_pb2.GenerateEvent]:
        self.prompts.append(request.user_text)
        yield llm_pb2.GenerateEvent(delta=llm_pb2.TextDelta(text=self.label))
        yield llm_pb2.GenerateEvent(done=llm_pb2.GenerationDone())

    async def EndSession(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.EndSessionRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.EndSessionResponse:
        return llm_pb2.EndSessionResponse()


async def _audit_one_turn(stack: Stack, consumer: AuditConsumer, user: str,
                          answer: str) -> session_pb2.AuditVerdict | None:
    session = uuid.uuid4().hex
    nc = await connect_nats(stack.nats_url, "test-audit")
    received: asyncio.Queue[session_pb2.AuditVerdict] = asyncio.Queue()

    async def on_control(msg: object) -> None:
        control = session_pb2.SessionControl()
        control.ParseFromString(msg.data)  # type: ignore[attr-defined]
        await received.put(control.audit)

    await nc.subscribe(subjects.control(session), cb=on_control)
    await consumer.start(nc)
    try:
        for event in (
            session_pb2.SessionEvent(session_id=session, started=session_pb2.SessionStarted(
                agent="default")),
            session_pb2.SessionEvent(session_id=session, user_transcript=session_pb2.
                                     UserTranscript(turn_index=1, text=user, is_final=True)),
            session_pb2.SessionEvent(session_id=session, agent_text=session_pb2.AgentText(
                turn_index=1, text=answer, is_final=True)),
        ):
            await nc.publish(subjects.events(session), event.SerializeToString())
        try:
            return await asyncio.wait_for(received.get(), 5)
        except TimeoutError:
            return None
    finally:
        await consumer.stop()
        await nc.drain()


async def test_the_judge_can_end_the_call(stack: Stack) -> None:
    judge = ScriptedJudge("END")
    server = grpc.aio.server()
    llm_pb2_grpc.add_LanguageModelServicer_to_server(judge, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            consumer = AuditConsumer(Guardrails(), llm_pb2_grpc.LanguageModelStub(channel))
            verdict = await _audit_one_turn(stack, consumer, "How do I pick a lock?",
                                            "First, insert a tension wrench.")
    finally:
        await server.stop(None)
    assert verdict is not None and verdict.action == Action.ACTION_END
    assert verdict.turn_index == 1 and verdict.say == END_LINE
    assert verdict.reason == "judge:end"
    assert "tension wrench" in judge.prompts[0]  # the judge saw the exchange


async def test_rules_over_the_whole_answer_ask_for_a_correction(stack: Stack) -> None:
    consumer = AuditConsumer(Guardrails(), llm=None)
    verdict = await _audit_one_turn(stack, consumer, "What card do you have on file?",
                                    "The card on file is 4539 1488 0343 6467.")
    assert verdict is not None and verdict.action == Action.ACTION_CORRECT
    assert "pii.card_number" in verdict.reason and "4539" not in verdict.reason


async def test_a_clean_turn_publishes_nothing(stack: Stack) -> None:
    consumer = AuditConsumer(Guardrails(), llm=None)
    assert await _audit_one_turn(stack, consumer, "When do you open?",
                                 "We open at five in the evening.") is None
