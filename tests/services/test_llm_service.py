"""LLM service: context in JetStream KV, unknown sessions and bad requests."""

from __future__ import annotations

import uuid

import grpc
import pytest

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
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports.llm}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _stub(channel).CommitHeard(llm_pb2.CommitHeardRequest(
                turn=common_pb2.TurnRef(session_id="no-such-session", turn_index=1),
                heard_text="x"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    detail = error_from_rpc(info.value)
    assert detail.reason == "SESSION_NOT_FOUND" and "no-such-session" in detail.message


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
