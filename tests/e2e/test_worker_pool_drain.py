"""Draining one worker of several: its calls finish, new calls go elsewhere, none is cut.

Real processes throughout: nats-server, the model services, three worker processes and the
edge; synthetic callers speak over WebRTC. One worker is told to drain, by SIGTERM (a pod
deleted) or by the operator's NATS drain request (a rollout), while it holds a call.
"""

from __future__ import annotations

import asyncio
import time

import nats
import pytest

from voxmesh import subjects
from voxmesh.cli.caller_audio import CallerVoice
from voxmesh.cli.stack import Stack
from voxmesh.v1 import session_pb2
from voxmesh_edge.client import WebRTCCaller

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

EXTRA_WORKERS = ("pool-a", "pool-b", "pool-c")
# Long enough that the slowest CI machine finishes the drained call well inside it.
POOL_ENV = {"VOXMESH_WORKER_MAX_SESSIONS": "2", "VOXMESH_WORKER_DRAIN_TIMEOUT_S": "180"}


def _problems(caller: WebRTCCaller) -> list[dict]:
    return [e for e in caller.events if "error" in e or "ended" in e]


async def _call(stack: Stack) -> WebRTCCaller:
    caller = WebRTCCaller(stack.edge_url)
    await caller.connect()
    await caller.wait_event(lambda e: "started" in e, timeout=10)
    return caller


async def _answered(caller: WebRTCCaller, voice: CallerVoice, text: str) -> None:
    sent = await caller.play(voice.speak(text))
    _, _, pcm = await caller.wait_agent_audio(start_after=sent, timeout=40)
    assert len(pcm) > 3200, "no spoken answer"


async def _reports(nats_url: str, worker_id: str, state: str) -> bool:
    """True once the worker heartbeats ``state`` (within a few heartbeats)."""
    nc = await nats.connect(nats_url)
    seen = asyncio.Event()

    async def on_beat(msg: object) -> None:
        beat = session_pb2.WorkerHeartbeat()
        beat.ParseFromString(msg.data)  # type: ignore[attr-defined]
        if beat.state == state:
            seen.set()

    try:
        await nc.subscribe(subjects.heartbeat(worker_id), cb=on_beat)
        async with asyncio.timeout(6):
            await seen.wait()
        return True
    except TimeoutError:
        return False
    finally:
        await nc.close()


async def _process_of(stack: Stack, worker_id: str) -> str:
    for name, child in stack.children.items():
        if child.env.get("VOXMESH_WORKER_WORKER_ID") == worker_id:
            return name
    return "worker"  # the stack's own worker keeps its default id


async def _start_pool(stack: Stack) -> None:
    """Three workers of the test's own, the stack's worker (a short drain timeout) stopped."""
    for worker in EXTRA_WORKERS:
        await stack.add_worker(worker, POOL_ENV)
    assert await stack.terminate("worker") == 0


async def _restore_stack(stack: Stack) -> None:
    """Back to the shared stack's single worker, so later tests find it as they expect."""
    await asyncio.gather(*(stack.terminate(f"worker-{w}") for w in EXTRA_WORKERS))
    main = stack.children["worker"]
    if main.process is None or main.process.returncode is not None:
        await stack.spawn("worker")
        await stack.wait_healthy("worker")


@pytest.mark.parametrize("how", ["sigterm", "drain-request"])
async def test_draining_worker_finishes_its_call_while_others_take_new_ones(
    stack: Stack, caller_voice: CallerVoice, how: str
) -> None:
    await _start_pool(stack)
    first = await _call(stack)
    others: list[WebRTCCaller] = []
    try:
        draining = first.worker_id
        assert draining
        process = await _process_of(stack, draining)
        child = stack.children[process]
        assert child.process is not None
        if how == "sigterm":
            child.process.send_signal(15)
        else:
            nc = await nats.connect(stack.nats_url)
            await nc.publish(subjects.drain(draining), b"")
            await nc.flush()
            await nc.close()
        assert await _reports(stack.nats_url, draining, "draining")

        # New calls go to the other workers while the draining one still holds its call.
        for _ in range(3):
            others.append(await _call(stack))
        assert all(c.worker_id != draining for c in others), [c.worker_id for c in others]
        assert child.process.returncode is None, "the worker left before its call ended"

        # The call on the draining worker carries on: the caller is still answered.
        assert (await _process_of(stack, draining)).startswith("worker-pool-")
        await _answered(first, caller_voice, "What time do you open tomorrow?")
        await _answered(others[0], caller_voice, "Do you have a table for two tonight?")
        assert not _problems(first) and not any(_problems(c) for c in others)

        await first.hangup()
        started = time.monotonic()
        code = await asyncio.wait_for(child.process.wait(), timeout=15)
        assert code == 0, stack.log_tail(process)
        took = time.monotonic() - started
        assert took < 10, f"worker took {took:.1f}s to exit after its last call"
    finally:
        for caller in [first, *others]:
            await caller.hangup()
        await _restore_stack(stack)


async def test_a_worker_told_to_drain_while_warming_never_takes_a_call(stack: Stack) -> None:
    states: list[str] = []

    async def on_beat(msg: object) -> None:
        beat = session_pb2.WorkerHeartbeat()
        beat.ParseFromString(msg.data)  # type: ignore[attr-defined]
        states.append(beat.state)

    nc = await nats.connect(stack.nats_url)
    await nc.subscribe(subjects.heartbeat("cold"), cb=on_beat)
    # No STT service at this address: the worker stays warming.
    name = await stack.add_worker("cold", {"VOXMESH_WORKER_STT_ADDRESS": "127.0.0.1:9"},
                                  wait_warm=False)
    try:
        assert await _reports(stack.nats_url, "cold", "warming")
        await nc.publish(subjects.drain("cold"), b"")
        process = stack.children[name].process
        assert process is not None
        assert await asyncio.wait_for(process.wait(), timeout=10) == 0
        await nc.flush()
        await asyncio.sleep(0.2)
        assert "idle" not in states and states[-1] == "draining", states
    finally:
        await stack.terminate(name)
        await nc.close()
