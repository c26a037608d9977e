"""The context store's remembered versions: one read saved per change, never a lost write.

Also the LLM service's use of them: a generation starts while the caller's words are written,
and starts over if another replica changed the context meanwhile.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Sequence

import grpc
import nats
import pytest_asyncio
from nats.js.api import KeyValueConfig
from nats.js.kv import KeyValue

from voxmesh.latency_model import DelayDistribution
from voxmesh.v1 import common_pb2, llm_pb2, llm_pb2_grpc
from voxmesh_llm.chain import LLMChain
from voxmesh_llm.context_store import ContextStore
from voxmesh_llm.history import StoredMessage
from voxmesh_llm.providers.base import ChatMessage, Completion, ToolSpec
from voxmesh_llm.providers.latency_model import LatencyModelLLM
from voxmesh_llm.service import LanguageModelServicer
from voxmesh_llm.settings import LLMSettings


@pytest_asyncio.fixture
async def bucket(nats_url: str) -> AsyncIterator[KeyValue]:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    name = f"context-test-{uuid.uuid4().hex[:8]}"
    yield await js.create_key_value(KeyValueConfig(bucket=name))
    await js.delete_key_value(name)
    await nc.close()


def _counting_gets(bucket: KeyValue) -> list[int]:
    gets = [0]
    original = bucket.get

    async def get(*args: object, **kwargs: object) -> object:
        gets[0] += 1
        return await original(*args, **kwargs)  # type: ignore[arg-type]

    bucket.get = get  # type: ignore[method-assign]
    return gets


def _replicas(bucket: KeyValue, count: int = 2) -> list[ContextStore]:
    """Context stores of ``count`` LLM replicas sharing one bucket."""
    stores = [ContextStore(max_messages=50) for _ in range(count)]
    for store in stores:
        store.attach(bucket)
    return stores


async def test_changes_start_from_the_version_this_replica_wrote(bucket: KeyValue) -> None:
    (store,) = _replicas(bucket, 1)
    gets = _counting_gets(bucket)
    for turn in range(1, 4):
        await store.append("s1", StoredMessage("user", f"turn {turn}", turn))
    assert gets[0] == 1  # only the first change read the bucket
    assert [m.content for m in await store.require("s1")] == ["turn 1", "turn 2", "turn 3"]


async def test_a_write_by_another_replica_is_never_overwritten(bucket: KeyValue) -> None:
    mine, other = _replicas(bucket)
    await mine.append("s2", StoredMessage("user", "hello", 1))
    await other.append("s2", StoredMessage("assistant", "hi there", 1))
    # `mine` remembers a version without the other replica's message: its compare-and-set
    # fails, and the change is re-run on what the bucket holds.
    await mine.append("s2", StoredMessage("user", "next", 2))
    assert [m.content for m in await other.require("s2")] == ["hello", "hi there", "next"]


async def test_a_session_deleted_elsewhere_starts_afresh(bucket: KeyValue) -> None:
    mine, other = _replicas(bucket)
    await mine.append("s3", StoredMessage("user", "old", 1))
    await other.delete("s3")
    await mine.append("s3", StoredMessage("user", "new", 1))
    assert [m.content for m in await other.require("s3")] == ["new"]


async def test_remembered_sessions_are_bounded(bucket: KeyValue) -> None:
    store = ContextStore(max_messages=50, remembered_sessions=3)
    store.attach(bucket)
    for index in range(5):
        await store.append(f"b{index}", StoredMessage("user", "x", 1))
    gets = _counting_gets(bucket)
    await store.append("b0", StoredMessage("user", "y", 2))  # forgotten: read again
    await store.append("b4", StoredMessage("user", "y", 2))  # remembered
    assert gets[0] == 1


def _contents(messages: list[StoredMessage]) -> list[str]:
    return [m.content for m in messages]


async def test_modify_ahead_hands_back_the_change_before_it_is_written(bucket: KeyValue) -> None:
    mine, other = _replicas(bucket)
    await mine.append("a1", StoredMessage("user", "hello", 1))
    messages, written = await mine.modify_ahead(
        "a1", lambda current: [*current, StoredMessage("user", "more", 2)])
    assert _contents(messages) == ["hello", "more"]
    assert not written.done()  # the write is still under way
    assert _contents(await written) == ["hello", "more"]
    assert _contents(await other.require("a1")) == ["hello", "more"]


async def test_modify_ahead_shows_when_another_replica_wrote_first(bucket: KeyValue) -> None:
    mine, other = _replicas(bucket)
    await mine.append("a2", StoredMessage("user", "hello", 1))
    await other.append("a2", StoredMessage("assistant", "hi there", 1))
    messages, written = await mine.modify_ahead(
        "a2", lambda current: [*current, StoredMessage("user", "next", 2)])
    assert _contents(messages) == ["hello", "next"]  # from the version `mine` knew
    stored = await written
    assert _contents(stored) == ["hello", "hi there", "next"]  # nothing lost
    assert stored != messages  # so work built on `messages` knows to start over


async def test_modify_ahead_on_an_unknown_session_writes_first(bucket: KeyValue) -> None:
    (store,) = _replicas(bucket, 1)
    messages, written = await store.modify_ahead(
        "a3", lambda current: [*current, StoredMessage("user", "first", 1)])
    assert written.done() and _contents(written.result()) == _contents(messages) == ["first"]


class _RecordingLLM(LatencyModelLLM):
    """A latency-model LLM that records the message texts of every prompt it is given."""

    def __init__(self) -> None:
        super().__init__(first_token=DelayDistribution.parse("constant:ms=50"),
                         tokens_per_s=500, text="Sure thing.")
        self.prompts: list[list[str]] = []

    async def _stream(
        self, messages: list[ChatMessage], tools: Sequence[ToolSpec], max_tokens: int,
        temperature: float, completion: Completion,
    ) -> AsyncGenerator[str, None]:
        self.prompts.append([m.content for m in messages])
        async for token in super()._stream(messages, tools, max_tokens, temperature,
                                           completion):
            yield token


async def _generate(llm: llm_pb2_grpc.LanguageModelStub, session: str, turn: int,
                    text: str) -> str:
    events = [e async for e in llm.Generate(llm_pb2.GenerateRequest(
        turn=common_pb2.TurnRef(session_id=session, turn_index=turn), user_text=text,
        max_tokens=20), timeout=10)]
    assert events[-1].WhichOneof("event") == "done"
    return "".join(e.delta.text for e in events if e.WhichOneof("event") == "delta")


async def test_a_generation_restarts_on_a_context_another_replica_changed(
    bucket: KeyValue,
) -> None:
    mine, other = _replicas(bucket)
    model = _RecordingLLM()
    servicer = LanguageModelServicer(LLMChain([model]), mine, LLMSettings())
    server = grpc.aio.server()
    llm_pb2_grpc.add_LanguageModelServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            llm = llm_pb2_grpc.LanguageModelStub(channel)
            assert await _generate(llm, "g1", 1, "hello") == "Sure thing."
            assert len(model.prompts) == 1  # the usual case: one prompt per turn
            await other.append("g1", StoredMessage("assistant", "said elsewhere", 1))
            assert await _generate(llm, "g1", 2, "and again") == "Sure thing."
    finally:
        await servicer.close()
        await server.stop(None)
    # The first try of turn 2 started on the version this replica knew; once its write found
    # the other replica's message, the answer was generated again from what is stored.
    first_try, second_try = model.prompts[1:]
    assert "and again" in first_try and "said elsewhere" not in first_try
    assert "and again" in second_try and "said elsewhere" in second_try
    assert _contents(await other.require("g1")) == [
        "hello", "Sure thing.", "said elsewhere", "and again", "Sure thing."]
