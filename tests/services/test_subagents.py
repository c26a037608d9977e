"""Subagents service: a real nats-server with JetStream, replicas as real processes, gRPC on
loopback. The LLM behind reasoning/summarize is a scripted gRPC double; the embeddings are the
real MiniLM weights run in numpy.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import nats
import nats.errors
import pytest
import pytest_asyncio
from nats.aio.client import Client as NatsClient
from nats.js.client import JetStreamContext

from voxmesh import subjects
from voxmesh.errors import error_from_rpc
from voxmesh.models import fetch_minilm
from voxmesh.v1 import common_pb2, llm_pb2, llm_pb2_grpc, subagents_pb2, subagents_pb2_grpc
from voxmesh_subagents.embeddings import MiniLMEmbedder
from voxmesh_subagents.local import NatsServer, Replica
from voxmesh_subagents.queue import HEADER_DLQ_REASON, HEADER_ORIGINAL_SUBJECT

KB_DIR = Path(__file__).resolve().parents[2] / "services" / "worker" / "agents" / "kb"
State = subagents_pb2.TaskStatus
#: Short timings so failover takes about a second, not the production ten.
FAST = {
    "VOXMESH_SUBAGENTS_ACK_WAIT_S": "1",
    "VOXMESH_SUBAGENTS_MAX_ATTEMPTS": "3",
    "VOXMESH_SUBAGENTS_RETRY_BACKOFF_S": "0.1",
    "VOXMESH_SUBAGENTS_FETCH_TIMEOUT_S": "0.5",
    "VOXMESH_SUBAGENTS_DRAIN_GRACE_S": "0.5",
    "VOXMESH_SUBAGENTS_KB_DIR": str(KB_DIR),
}


class ScriptedLLM(llm_pb2_grpc.LanguageModelServicer):
    """Answers every Generate with a fixed text and records the calls."""

    def __init__(self) -> None:
        self.generates: list[llm_pb2.GenerateRequest] = []
        self.ended: list[str] = []

    async def Generate(self, request, context):  # noqa: N802 - gRPC method name
        self.generates.append(request)
        for word in ("Refunds take ", "5 to 7 business days."):
            yield llm_pb2.GenerateEvent(delta=llm_pb2.TextDelta(text=word))
        yield llm_pb2.GenerateEvent(done=llm_pb2.GenerationDone())

    async def EndSession(self, request, context):  # noqa: N802 - gRPC method name
        self.ended.append(request.session_id)
        return llm_pb2.EndSessionResponse()


class Cluster:
    def __init__(self, server: NatsServer, replicas: list[Replica], nc: NatsClient) -> None:
        self.server = server
        self.replicas = replicas
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        # Tests of the one-replica cluster use this; failover tests pick a live replica.
        self.channel = grpc.aio.insecure_channel(replicas[0].address)
        self.stub = subagents_pb2_grpc.SubagentsStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()
        await self.nc.drain()
        await asyncio.gather(*(r.stop() for r in self.replicas))
        await self.server.stop()

    async def owner(self, task_id: str) -> str:
        kv = await self.js.key_value(subjects.TASKS_BUCKET)
        return json.loads((await kv.get(task_id)).value or b"{}").get("owner", "")


async def start_cluster(tmp: Path, count: int, env: dict[str, str]) -> Cluster:
    server = NatsServer(tmp / "nats")
    await server.start()
    replicas = [Replica(server.url, f"r{i}", tmp / f"r{i}.log", env=env) for i in range(count)]
    await asyncio.gather(*(r.start() for r in replicas))
    await asyncio.gather(*(r.wait_ready() for r in replicas))
    return Cluster(server, replicas, await nats.connect(server.url))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def llm() -> AsyncIterator[tuple[ScriptedLLM, str]]:
    model = ScriptedLLM()
    server = grpc.aio.server()
    llm_pb2_grpc.add_LanguageModelServicer_to_server(model, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield model, f"127.0.0.1:{port}"
    await server.stop(None)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def cluster(
    tmp_path_factory: pytest.TempPathFactory, llm: tuple[ScriptedLLM, str]
) -> AsyncIterator[Cluster]:
    """One replica on its own nats-server, shared by the tests that kill nothing."""
    running = await start_cluster(tmp_path_factory.mktemp("subagents"), 1,
                                  {**FAST, "VOXMESH_SUBAGENTS_LLM_ADDRESS": llm[1]})
    yield running
    await running.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def trio(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    """Three replicas sharing a queue. Each failover test takes one down and needs two."""
    running = await start_cluster(tmp_path_factory.mktemp("failover"), 3, {
        **FAST, "VOXMESH_SUBAGENTS_PRELOAD_EMBEDDINGS": "false"})
    yield running
    await running.close()


def live(cluster: Cluster) -> list[Replica]:
    return [r for r in cluster.replicas if r.process and r.process.returncode is None]


def turn(session: str) -> common_pb2.TurnRef:
    return common_pb2.TurnRef(session_id=session, turn_index=3, turn_id="t3")


async def start(stub: subagents_pb2_grpc.SubagentsStub, task_type: str, args: object, *,
                task_id: str = "", session: str = "s1",
                interruptible: bool = False) -> subagents_pb2.TaskStatus:
    return await stub.StartTask(subagents_pb2.StartTaskRequest(
        turn=turn(session), task_type=task_type, arguments_json=json.dumps(args),
        task_id=task_id, interruptible=interruptible))


async def until(stub: subagents_pb2_grpc.SubagentsStub, task_id: str, *states: int,
                within_s: float = 15.0) -> subagents_pb2.TaskStatus:
    """Watches a task until it reaches one of ``states`` (default: any terminal state)."""
    wanted = states or (State.STATE_SUCCEEDED, State.STATE_FAILED, State.STATE_CANCELLED)
    async with asyncio.timeout(within_s):
        async for status in stub.WatchTask(subagents_pb2.GetTaskRequest(task_id=task_id)):
            if status.state in wanted:
                return status
    raise AssertionError(f"{task_id} ended without reaching {wanted}")


async def results(js: JetStreamContext, session: str, settle_s: float) -> list[State]:
    """Every result on a session's subject, read through JetStream after ``settle_s``."""
    sub = await js.subscribe(subjects.task_result(session), stream=subjects.TASK_RESULTS_STREAM,
                             ordered_consumer=True)
    await asyncio.sleep(settle_s)
    found = []
    while True:
        try:
            msg = await sub.next_msg(timeout=0.2)
        except nats.errors.TimeoutError:
            break
        found.append(State.FromString(msg.data))
    await sub.unsubscribe()
    return found


def new_id() -> str:
    return uuid.uuid4().hex[:12]


def test_numpy_minilm_matches_sentence_transformers_reference() -> None:
    # sentence-transformers' quickstart prints this similarity matrix for all-MiniLM-L6-v2.
    model = MiniLMEmbedder(fetch_minilm())
    vectors = model.encode(["The weather is lovely today.", "It's so sunny outside!",
                            "He drove to the stadium."])
    similarity = vectors @ vectors.T
    assert similarity[0, 1] == pytest.approx(0.6660, abs=5e-4)
    assert similarity[0, 2] == pytest.approx(0.1046, abs=5e-4)
    assert similarity[1, 2] == pytest.approx(0.1411, abs=5e-4)


@pytest.mark.parametrize(("question", "source", "fact"), [
    ("How many days do I have to send back something I bought?", "returns.md", "30 days"),
    ("How long is the guarantee on my laptop?", "warranty.md", "2-year limited warranty"),
    ("If I order at noon, when does my package leave?", "shipping.md", "before 2 pm"),
    ("Can I pay cash when the parcel arrives?", "payments.md", "cash on delivery"),
])
async def test_knowledge_lookup_finds_the_fact_for_a_paraphrased_question(
    cluster: Cluster, question: str, source: str, fact: str
) -> None:
    await asyncio.to_thread(fetch_minilm)  # what `voxmesh models` does
    started = await start(cluster.stub, "knowledge_lookup",
                          {"query": question, "kb": "northwind", "top_k": 2})
    status = await until(cluster.stub, started.task_id)
    assert status.state == State.STATE_SUCCEEDED, status.error
    passages = json.loads(status.result_json)["passages"]
    assert len(passages) == 2
    assert passages[0]["source"] == source
    assert fact in passages[0]["text"]
    assert passages[0]["score"] > passages[1]["score"]


async def test_starting_the_same_task_id_twice_yields_one_task_and_one_result(
    cluster: Cluster,
) -> None:
    task_id, session = new_id(), new_id()
    first, second = await asyncio.gather(*(
        start(cluster.stub, "delay", {"ms": 200}, task_id=task_id, session=session)
        for _ in range(2)))
    assert first.task_id == second.task_id == task_id
    again = await start(cluster.stub, "delay", {"ms": 200}, task_id=task_id, session=session)
    status = await until(cluster.stub, task_id)
    assert status.state == State.STATE_SUCCEEDED
    assert status.attempts == 1
    assert again.task_id == task_id
    after = await start(cluster.stub, "delay", {"ms": 200}, task_id=task_id, session=session)
    assert after.state == State.STATE_SUCCEEDED  # a finished task is reported, not re-run
    assert [r.state for r in await results(cluster.js, session, 0.5)] == [State.STATE_SUCCEEDED]


async def test_malformed_task_goes_to_the_dead_letter_stream_and_the_next_task_runs(
    cluster: Cluster,
) -> None:
    dead = await cluster.js.subscribe(subjects.TASKS_DLQ_ALL, stream=subjects.TASKS_DLQ_STREAM,
                                      ordered_consumer=True)
    await cluster.js.publish(subjects.task("delay"), b"{not json",
                             stream=subjects.TASKS_STREAM)
    await cluster.js.publish(subjects.task("teleport"), json.dumps({
        "task_id": new_id(), "type": "teleport", "arguments": {},
        "turn": {"session_id": "s1"}}).encode(), stream=subjects.TASKS_STREAM)
    good = await start(cluster.stub, "delay", {"ms": 10})
    assert (await until(cluster.stub, good.task_id)).state == State.STATE_SUCCEEDED

    letters = [await dead.next_msg(timeout=5) for _ in range(2)]
    await dead.unsubscribe()
    reasons = {m.headers[HEADER_ORIGINAL_SUBJECT]: m.headers[HEADER_DLQ_REASON] for m in letters
               if m.headers}
    assert reasons == {"voxmesh.tasks.delay": "MALFORMED_JSON",
                       "voxmesh.tasks.teleport": "TASK_TYPE_UNKNOWN"}
    assert {m.data for m in letters} >= {b"{not json"}  # the original payload, untouched
    # Terminated, not left for redelivery: the work queue empties (the good task's ack may
    # land just after its result).
    for _ in range(20):
        if (await cluster.js.stream_info(subjects.TASKS_STREAM)).state.messages == 0:
            break
        await asyncio.sleep(0.05)
    assert (await cluster.js.stream_info(subjects.TASKS_STREAM)).state.messages == 0


async def test_retryable_failures_are_retried_then_dead_lettered(cluster: Cluster) -> None:
    flaky = await start(cluster.stub, "delay", {"ms": 10, "fail_attempts": 1})
    hopeless = await start(cluster.stub, "delay", {"ms": 10, "fail_attempts": 10})
    recovered = await until(cluster.stub, flaky.task_id)
    assert (recovered.state, recovered.attempts) == (State.STATE_SUCCEEDED, 2)
    failed = await until(cluster.stub, hopeless.task_id)
    assert (failed.state, failed.attempts) == (State.STATE_FAILED, 3)  # MAX_ATTEMPTS=3
    assert failed.error.reason == "ATTEMPTS_EXHAUSTED"
    assert failed.error.message == "3 attempts failed; last: delay: failing attempt 3 on purpose"
    letter = await cluster.js.get_last_msg(subjects.TASKS_DLQ_STREAM, subjects.task_dlq("delay"))
    assert letter.headers and letter.headers[HEADER_DLQ_REASON] == "ATTEMPTS_EXHAUSTED"
    assert json.loads(letter.data or b"{}")["task_id"] == hopeless.task_id


async def test_cancelling_a_running_interruptible_task(cluster: Cluster) -> None:
    session = new_id()
    started = await start(cluster.stub, "delay", {"ms": 20_000}, session=session,
                          interruptible=True)
    await until(cluster.stub, started.task_id, State.STATE_RUNNING)
    cancelled = await cluster.stub.CancelTask(subagents_pb2.CancelTaskRequest(
        task_id=started.task_id, reason="caller barged in"))
    assert cancelled.state == State.STATE_CANCELLED
    assert cancelled.error.message == "caller barged in"
    # The replica stopped the run and acknowledged the message: nothing is pending.
    consumer = await cluster.js.consumer_info(subjects.TASKS_STREAM, subjects.TASKS_CONSUMER)
    for _ in range(20):
        if consumer.num_ack_pending == 0:
            break
        await asyncio.sleep(0.1)
        consumer = await cluster.js.consumer_info(subjects.TASKS_STREAM, subjects.TASKS_CONSUMER)
    assert consumer.num_ack_pending == 0
    status = await cluster.stub.GetTask(subagents_pb2.GetTaskRequest(task_id=started.task_id))
    assert status.state == State.STATE_CANCELLED
    assert [r.state for r in await results(cluster.js, session, 0.3)] == [State.STATE_CANCELLED]


async def test_a_running_task_not_started_as_interruptible_is_not_cancelled(
    cluster: Cluster,
) -> None:
    started = await start(cluster.stub, "delay", {"ms": 800})
    await until(cluster.stub, started.task_id, State.STATE_RUNNING)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await cluster.stub.CancelTask(subagents_pb2.CancelTaskRequest(task_id=started.task_id))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_from_rpc(refused.value).reason == "TASK_NOT_INTERRUPTIBLE"
    assert (await until(cluster.stub, started.task_id)).state == State.STATE_SUCCEEDED


async def test_summarize_runs_in_a_session_of_its_own(
    cluster: Cluster, llm: tuple[ScriptedLLM, str]
) -> None:
    model, _ = llm
    started = await start(cluster.stub, "summarize", {"text": "A long email about refunds."},
                          session="caller-session")
    status = await until(cluster.stub, started.task_id)
    assert json.loads(status.result_json) == {"summary": "Refunds take 5 to 7 business days."}
    request = model.generates[-1]
    assert request.turn.session_id == f"task-{started.task_id}"  # never the caller's context
    assert request.user_text == "A long email about refunds."
    assert "Summarize" in request.system_prompt
    assert model.ended[-1] == f"task-{started.task_id}"  # its context is deleted after


@pytest.mark.parametrize(("call", "code", "reason", "field"), [
    ("get", grpc.StatusCode.NOT_FOUND, "TASK_NOT_FOUND", "task_id"),
    ("cancel", grpc.StatusCode.NOT_FOUND, "TASK_NOT_FOUND", "task_id"),
    ("watch", grpc.StatusCode.NOT_FOUND, "TASK_NOT_FOUND", "task_id"),
    ("bad-id", grpc.StatusCode.INVALID_ARGUMENT, "TASK_ID_INVALID", "task_id"),
    ("top_k", grpc.StatusCode.INVALID_ARGUMENT, "ARGUMENTS_INVALID", "arguments_json.top_k"),
    ("missing", grpc.StatusCode.INVALID_ARGUMENT, "ARGUMENTS_INVALID", "arguments_json"),
    ("not-json", grpc.StatusCode.INVALID_ARGUMENT, "ARGUMENTS_INVALID", "arguments_json"),
    ("type", grpc.StatusCode.INVALID_ARGUMENT, "TASK_TYPE_UNKNOWN", "task_type"),
    ("session", grpc.StatusCode.INVALID_ARGUMENT, "SESSION_ID_INVALID", "turn.session_id"),
])
async def test_bad_requests_get_a_status_code_and_details(
    cluster: Cluster, call: str, code: grpc.StatusCode, reason: str, field: str
) -> None:
    stub = cluster.stub
    unknown = subagents_pb2.GetTaskRequest(task_id="never-started")
    lookup = {"query": "returns", "kb": "northwind"}
    calls = {
        "get": lambda: stub.GetTask(unknown),
        "cancel": lambda: stub.CancelTask(subagents_pb2.CancelTaskRequest(
            task_id="never-started")),
        "watch": lambda: anext(aiter(stub.WatchTask(unknown))),
        "bad-id": lambda: stub.GetTask(subagents_pb2.GetTaskRequest(task_id="a.b")),
        "top_k": lambda: start(stub, "knowledge_lookup", {**lookup, "top_k": "three"}),
        "missing": lambda: start(stub, "knowledge_lookup", {"kb": "northwind"}),
        "not-json": lambda: stub.StartTask(subagents_pb2.StartTaskRequest(
            turn=turn("s1"), task_type="delay", arguments_json="{ms: 5}")),
        "type": lambda: start(stub, "teleport", {}),
        "session": lambda: start(stub, "delay", {"ms": 1}, session="a/b"),
    }
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await calls[call]()
    detail = error_from_rpc(failed.value)
    assert failed.value.code() == code
    assert (detail.reason, detail.field, detail.component) == (reason, field, "subagents")
    assert detail.message


async def test_a_replica_killed_mid_task_is_replaced_and_the_result_arrives_once(
    trio: Cluster,
) -> None:
    session = new_id()
    async with grpc.aio.insecure_channel(live(trio)[0].address) as channel:
        stub = subagents_pb2_grpc.SubagentsStub(channel)
        started = await start(stub, "delay", {"ms": 3000}, session=session)
        running = await until(stub, started.task_id, State.STATE_RUNNING)
    assert running.attempts == 1
    owner = await trio.owner(started.task_id)
    victim = next(r for r in trio.replicas if r.replica_id == owner)
    await asyncio.sleep(0.5)
    victim.kill()
    assert await victim.wait() == -9
    async with grpc.aio.insecure_channel(live(trio)[0].address) as channel:
        done = await until(subagents_pb2_grpc.SubagentsStub(channel), started.task_id)
    assert done.state == State.STATE_SUCCEEDED
    assert done.attempts == 2
    assert await trio.owner(started.task_id) in {r.replica_id for r in live(trio)}
    # Past another redelivery window (ack wait 1 s): still exactly one result.
    assert [r.state for r in await results(trio.js, session, 1.5)] == [State.STATE_SUCCEEDED]


async def test_sigterm_hands_a_running_task_to_another_replica(trio: Cluster) -> None:
    async with grpc.aio.insecure_channel(live(trio)[0].address) as channel:
        stub = subagents_pb2_grpc.SubagentsStub(channel)
        started = await start(stub, "delay", {"ms": 2000})
        await until(stub, started.task_id, State.STATE_RUNNING)
    owner = await trio.owner(started.task_id)
    draining = next(r for r in trio.replicas if r.replica_id == owner)
    draining.terminate()
    assert await draining.wait(timeout_s=10) == 0  # drain grace 0.5 s, then a clean exit
    async with grpc.aio.insecure_channel(live(trio)[0].address) as channel:
        done = await until(subagents_pb2_grpc.SubagentsStub(channel), started.task_id)
    assert (done.state, done.attempts) == (State.STATE_SUCCEEDED, 2)
    assert await trio.owner(started.task_id) in {r.replica_id for r in live(trio)}


async def test_a_task_delivered_too_often_is_dead_lettered_from_the_advisory(
    tmp_path: Path,
) -> None:
    # One busy replica allowing one attempt (two deliveries); this test pulls the task twice
    # from the shared consumer and never answers, like replicas dying before they could look
    # at it. JetStream then gives up and says so; the replica dead-letters and fails the task.
    busy = await start_cluster(tmp_path, 1, {
        **FAST, "VOXMESH_SUBAGENTS_MAX_ATTEMPTS": "1", "VOXMESH_SUBAGENTS_MAX_CONCURRENCY": "1",
        "VOXMESH_SUBAGENTS_ACK_WAIT_S": "0.5", "VOXMESH_SUBAGENTS_PRELOAD_EMBEDDINGS": "false"})
    try:
        blocker = await start(busy.stub, "delay", {"ms": 20_000}, interruptible=True)
        await until(busy.stub, blocker.task_id, State.STATE_RUNNING)
        doomed = await start(busy.stub, "delay", {"ms": 1}, session="doomed")
        thief = await busy.js.pull_subscribe_bind(durable=subjects.TASKS_CONSUMER,
                                                  stream=subjects.TASKS_STREAM)
        for _ in range(2):
            [msg] = await thief.fetch(1, timeout=3)
            assert json.loads(msg.data)["task_id"] == doomed.task_id
        # The server notices the limit when it would redeliver, i.e. on the next pull.
        with pytest.raises(nats.errors.TimeoutError):
            await thief.fetch(1, timeout=1.0)
        failed = await until(busy.stub, doomed.task_id, within_s=10)
        assert (failed.state, failed.error.reason) == (State.STATE_FAILED, "ATTEMPTS_EXHAUSTED")
        letter = await busy.js.get_last_msg(subjects.TASKS_DLQ_STREAM, subjects.task_dlq("delay"))
        assert letter.headers and letter.headers[HEADER_DLQ_REASON] == "MAX_DELIVERIES"
        assert [r.state for r in await results(busy.js, "doomed", 0)] == [State.STATE_FAILED]
        await busy.stub.CancelTask(subagents_pb2.CancelTaskRequest(task_id=blocker.task_id))
        await thief.unsubscribe()
    finally:
        await busy.close()
