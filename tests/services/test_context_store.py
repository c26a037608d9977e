"""The context store's remembered versions: one read saved per change, never a lost write."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import nats
import pytest_asyncio
from nats.js.api import KeyValueConfig
from nats.js.kv import KeyValue

from voxmesh_llm.context_store import ContextStore
from voxmesh_llm.history import StoredMessage


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
