"""Subagent task pickup latency (``make bench``): StartTask → handler start, two replicas.

Starts a nats-server with JetStream and two ``python -m voxmesh_subagents`` replicas sharing
the task queue, then starts ``delay`` tasks (0 ms, a diagnostics task that reports the unix time
its handler began) at a steady rate through one replica's gRPC API. Pickup latency is the
handler's start time minus the time just before the StartTask call (same host clock): it
includes the RPC, the task record's create, the JetStream publish, delivery to whichever
replica's pull is waiting, and that replica's compare-and-set claim. Results arrive on the
session's result subject; who ran each task is read from the task records.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import grpc
import nats
from nats.aio.msg import Msg

from voxmesh import subjects
from voxmesh.v1 import common_pb2, subagents_pb2, subagents_pb2_grpc
from voxmesh_subagents.local import NatsServer, Replica


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def pct(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))], 2)

    return {"p50": round(statistics.median(ordered), 2), "p95": pct(95), "p99": pct(99),
            "max": round(ordered[-1], 2), "mean": round(statistics.fmean(ordered), 2)}


async def _measure(tasks: int, rate: float, state_dir: Path) -> dict[str, object]:
    server = NatsServer(state_dir / "nats")
    await server.start()
    replicas = [Replica(server.url, f"bench-{i}", state_dir / f"replica-{i}.log",
                        env={"VOXMESH_SUBAGENTS_PRELOAD_EMBEDDINGS": "false"})
                for i in range(2)]
    nc = None
    try:
        await asyncio.gather(*(r.start() for r in replicas))
        await asyncio.gather(*(r.wait_ready() for r in replicas))
        nc = await nats.connect(server.url)
        session = "bench"
        sent: dict[str, float] = {}
        rpc_ms: dict[str, float] = {}
        pickup_ms: dict[str, float] = {}
        result_ms: dict[str, float] = {}
        all_done = asyncio.Event()

        async def on_result(msg: Msg) -> None:
            status = subagents_pb2.TaskStatus.FromString(msg.data)
            if status.task_id in sent and status.result_json:
                started_at = json.loads(status.result_json)["started_at"]
                pickup_ms[status.task_id] = (started_at - sent[status.task_id]) * 1000
                result_ms[status.task_id] = (time.time() - sent[status.task_id]) * 1000
                if len(pickup_ms) == tasks:
                    all_done.set()

        await nc.subscribe(subjects.task_result(session), cb=on_result)
        async with grpc.aio.insecure_channel(replicas[0].address) as channel:
            stub = subagents_pb2_grpc.SubagentsStub(channel)
            turn = common_pb2.TurnRef(session_id=session, turn_index=1)

            async def one(task_id: str, record: bool) -> None:
                started = time.time()
                if record:
                    sent[task_id] = started
                await stub.StartTask(subagents_pb2.StartTaskRequest(
                    turn=turn, task_type="delay", arguments_json='{"ms": 0}', task_id=task_id))
                if record:
                    rpc_ms[task_id] = (time.time() - started) * 1000

            # Warm-up: connections, the consumer's first pulls, Python's first code paths.
            await asyncio.gather(*(one(f"warm-{i}", False) for i in range(20)))
            await asyncio.sleep(0.5)
            loop = asyncio.get_running_loop()
            next_at = loop.time()
            pending = []
            for _ in range(tasks):
                pending.append(asyncio.create_task(one(uuid.uuid4().hex, True)))
                next_at += 1 / rate
                await asyncio.sleep(max(0.0, next_at - loop.time()))
            await asyncio.gather(*pending)
            await asyncio.wait_for(all_done.wait(), 30)
        bucket = await nc.jetstream().key_value(subjects.TASKS_BUCKET)
        owners = Counter()
        for task_id in sent:
            entry = await bucket.get(task_id)
            owners[json.loads(entry.value or b"{}").get("owner", "?")] += 1
    finally:
        if nc is not None:
            await nc.close()
        await asyncio.gather(*(r.stop() for r in replicas))
        await server.stop()
    return {
        "pickup_ms": _summary(list(pickup_ms.values())),
        "start_task_rpc_ms": _summary(list(rpc_ms.values())),
        "result_ms": _summary(list(result_ms.values())),
        "tasks": tasks,
        "tasks_per_second": rate,
        "replicas": 2,
        "by_replica": dict(sorted(owners.items())),
        "measured_at": "StartTask call -> delay handler start, 2 replicas + nats-server on "
                       "this host, loopback",
        "date": time.strftime("%Y-%m-%d"),
    }


def main() -> None:
    """Measures and merges ``subagents`` into the results file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--rate", type=float, default=30.0, help="tasks started per second")
    parser.add_argument("--out", type=Path, default=Path("bench/results.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="voxmesh-bench-subagents-") as tmp:
        section = asyncio.run(_measure(args.tasks, args.rate, Path(tmp)))
    existing = json.loads(args.out.read_text()) if args.out.exists() else {}
    existing["subagents"] = section
    args.out.write_text(json.dumps(existing, indent=2) + "\n")
    pickup = section["pickup_ms"]
    assert isinstance(pickup, dict)
    print(f"subagent task pickup: p50 {pickup['p50']} ms, p95 {pickup['p95']} ms "
          f"({args.tasks} tasks at {args.rate:g}/s, 2 replicas) -> {args.out}")


if __name__ == "__main__":
    main()
