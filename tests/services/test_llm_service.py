"""LLM service: context in JetStream KV, tool calls, turn-completion marks, bad requests."""

from __future__ import annotations

import json
import uuid

import grpc
import pytest
from order_system import LOOKUP_ORDER, ORDER_PROMPT

from voxmesh.cli.stack import Stack
from voxmesh.errors import error_from_rpc
from voxmesh.v1 import common_pb2, llm_pb2, llm_pb2_grpc

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]


def _stub(channel: grpc.aio.Channel) -> llm_pb2_grpc.LanguageModelStub:
    return llm_pb2_grpc.LanguageModelStub(channel)


async def test_turns_share_context_through_kv_and_heard_text_replaces_answer(
    stack: Stack,
) -> None:
    session = uuid.uuid4().hex
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports.llm}") as channel:
        llm = _stub(channel)
        events = [e async for e in llm.Generate(llm_pb2.GenerateRequest(
            turn=common_pb2.TurnRef(session_id=session, turn_index=1),
            user_text="My name is Alice. Please remember it.", max_tokens=40), timeout=60)]
        assert events[-1].WhichOneof("event") == "done"
        assert events[-1].done.first_token_ms > 0
        text = "".join(e.delta.text for e in events if e.WhichOneof("event") == "delta")
        assert text.strip()
        await llm.CommitHeard(llm_pb2.CommitHeardRequest(
            turn=common_pb2.TurnRef(session_id=session, turn_index=1),
            heard_text="Nice to meet you", interrupted=True))
        context = await llm.GetContext(llm_pb2.GetContextRequest(session_id=session))
        assert [(m.role, m.content) for m in context.messages] == [
            ("user", "My name is Alice. Please remember it."),
            ("assistant", "Nice to meet you"),
        ]
        assert context.messages[1].interrupted
        answer = [e async for e in llm.Generate(llm_pb2.GenerateRequest(
            turn=common_pb2.TurnRef(session_id=session, turn_index=2),
            user_text="What is my name?", max_tokens=30, temperature=0), timeout=60)]
        reply = "".join(e.delta.text for e in answer if e.WhichOneof("event") == "delta")
        assert "alice" in reply.lower(), "the second turn did not see the stored context"
        await llm.EndSession(llm_pb2.EndSessionRequest(session_id=session))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await llm.GetContext(llm_pb2.GetContextRequest(session_id=session))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_unknown_session_is_not_found(stack: Stack) -> None:
    turn = common_pb2.TurnRef(session_id="no-such-session", turn_index=1)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports.llm}") as channel:
        llm = _stub(channel)
        for call in (
            llm.DiscardTurn(llm_pb2.DiscardTurnRequest(turn=turn)),
            llm.CommitToolResults(llm_pb2.CommitToolResultsRequest(turn=turn, results=[
                llm_pb2.ToolResultMessage(call_id="abc", content_json="{}")])),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            detail = error_from_rpc(info.value)
            assert detail.reason == "SESSION_NOT_FOUND" and "no-such-session" in detail.message


async def test_greeting_creates_the_context_and_a_turn_can_be_discarded(stack: Stack) -> None:
    session = uuid.uuid4().hex
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports.llm}") as channel:
        llm = _stub(channel)
        await llm.CommitHeard(llm_pb2.CommitHeardRequest(
            turn=common_pb2.TurnRef(session_id=session, turn_index=0),
            heard_text="Hello, this is Vox."))
        context = await llm.GetContext(llm_pb2.GetContextRequest(session_id=session))
        assert [(m.role, m.content, m.turn_index) for m in context.messages] == [
            ("assistant", "Hello, this is Vox.", 0)]
        discarded = await llm.DiscardTurn(llm_pb2.DiscardTurnRequest(
            turn=common_pb2.TurnRef(session_id=session, turn_index=0)))
        assert discarded.removed == 1
        context = await llm.GetContext(llm_pb2.GetContextRequest(session_id=session))
        assert not context.messages
        await llm.EndSession(llm_pb2.EndSessionRequest(session_id=session))


MARKS = "✓✔○◯◐◑"


async def test_turn_completion_mark_comes_first_and_never_as_text(stack: Stack) -> None:
    session = uuid.uuid4().hex
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports.llm}") as channel:
        llm = _stub(channel)
        events = [e async for e in llm.Generate(llm_pb2.GenerateRequest(
            turn=common_pb2.TurnRef(session_id=session, turn_index=1),
            user_text="What is the capital of France?", max_tokens=24, temperature=0,
            turn_completion=True), timeout=60)]
        kinds = [e.WhichOneof("event") for e in events]
        assert kinds[0] == "turn_completion" and kinds.count("turn_completion") == 1
        assert kinds[-1] == "done"
        # The local 0.5B model answers almost everything with ✓.
        assert events[0].turn_completion.verdict == llm_pb2.TurnCompletion.VERDICT_COMPLETE
        text = "".join(e.delta.text for e in events if e.WhichOneof("event") == "delta")
        assert "paris" in text.lower()
        assert not set(text) & set(MARKS) and text == text.lstrip()
        context = await llm.GetContext(llm_pb2.GetContextRequest(session_id=session))
        assert [(m.role, m.content) for m in context.messages] == [
            ("user", "What is the capital of France?"), ("assistant", text.strip())]
        await llm.EndSession(llm_pb2.EndSessionRequest(session_id=session))




async def test_tool_calls_are_stored_with_their_results_in_place(stack: Stack) -> None:
    session = uuid.uuid4().hex
    turn = common_pb2.TurnRef(session_id=session, turn_index=1)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports.llm}") as channel:
        llm = _stub(channel)
        events = [e async for e in llm.Generate(llm_pb2.GenerateRequest(
            turn=turn, user_text="What's the status of order 1234?", system_prompt=ORDER_PROMPT,
            tools=[LOOKUP_ORDER], max_tokens=60, temperature=0), timeout=60)]
        calls = [e.tool_call for e in events if e.WhichOneof("event") == "tool_call"]
        assert [(c.name, json.loads(c.arguments_json)) for c in calls] == [
            ("lookup_order", {"order_id": "1234"})]
        call_id = calls[0].call_id
        context = await llm.GetContext(llm_pb2.GetContextRequest(session_id=session))
        assert [(m.role, m.call_id) for m in context.messages] == [
            ("user", ""), ("assistant", ""), ("tool", call_id)]
        assert json.loads(context.messages[1].tool_calls_json) == [
            {"call_id": call_id, "name": "lookup_order", "arguments": {"order_id": "1234"}}]
        assert json.loads(context.messages[2].content) == {"status": "IN_PROGRESS"}

        with pytest.raises(grpc.aio.AioRpcError) as info:
            await llm.CommitToolResults(llm_pb2.CommitToolResultsRequest(turn=turn, results=[
                llm_pb2.ToolResultMessage(call_id="not-a-call", content_json="{}")]))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not-a-call" in error_from_rpc(info.value).message

        result = json.dumps({"status": "ok", "result": {"status": "shipped",
                                                        "delivery": "Friday"}})
        events = [e async for e in llm.Generate(llm_pb2.GenerateRequest(
            turn=turn, system_prompt=ORDER_PROMPT, tools=[LOOKUP_ORDER], max_tokens=40,
            temperature=0, tool_results=[llm_pb2.ToolResultMessage(
                call_id=call_id, name="lookup_order", content_json=result)]), timeout=60)]
        answer = "".join(e.delta.text for e in events if e.WhichOneof("event") == "delta")
        assert answer.strip()
        context = await llm.GetContext(llm_pb2.GetContextRequest(session_id=session))
        assert [(m.role, m.call_id, m.content) for m in context.messages[1:]] == [
            ("assistant", "", ""), ("tool", call_id, result), ("assistant", "", answer.strip())]

        # A result committed later (or CANCELLED) takes the same place.
        cancelled = json.dumps({"status": "CANCELLED"})
        await llm.CommitToolResults(llm_pb2.CommitToolResultsRequest(turn=turn, results=[
            llm_pb2.ToolResultMessage(call_id=call_id, content_json=cancelled)]))
        context = await llm.GetContext(llm_pb2.GetContextRequest(session_id=session))
        assert [m.content for m in context.messages if m.role == "tool"] == [cancelled]
        discarded = await llm.DiscardTurn(llm_pb2.DiscardTurnRequest(turn=turn))
        assert discarded.removed == 4
        await llm.EndSession(llm_pb2.EndSessionRequest(session_id=session))


@pytest.mark.parametrize(
    ("request_kwargs", "reason", "field"),
    [
        ({"user_text": "  "}, "EMPTY_TEXT", "user_text"),
        ({"user_text": "x" * 5000}, "TEXT_TOO_LONG", "user_text"),
        ({"user_text": "hi", "max_tokens": 100000}, "MAX_TOKENS_TOO_LARGE", "max_tokens"),
        ({"user_text": "hi", "session": "bad id/with spaces"}, "SESSION_ID_INVALID",
         "turn.session_id"),
    ],
)
async def test_bad_generate_requests(
    stack: Stack, request_kwargs: dict[str, object], reason: str, field: str
) -> None:
    kwargs = dict(request_kwargs)
    session = str(kwargs.pop("session", uuid.uuid4().hex))
    request = llm_pb2.GenerateRequest(turn=common_pb2.TurnRef(session_id=session), **kwargs)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports.llm}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in _stub(channel).Generate(request, timeout=30):
                pass
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    detail = error_from_rpc(info.value)
    assert (detail.reason, detail.field) == (reason, field)
