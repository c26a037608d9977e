"""Call assignment latency (``make bench``): a dispatch to a warm worker over NATS.

Starts the embedded platform (nats-server, the model services, the worker) plus two more
worker processes, so the dispatch queue group has three members. Then it dispatches calls the
way the edge does, one at a time: a ``DispatchRequest`` on ``voxmesh.dispatch.<agent>`` and
the worker's ``DispatchReply``. Latency is request to accepted reply, on one host clock: NATS
routing to one member of the queue group, the worker subscribing to the call's subjects (done
before it accepts, so no audio is lost), and the reply. Each call is hung up as soon as it is
accepted and the next starts once the worker reports it ended, so every dispatch finds warm
workers with free capacity, as a pool with a buffer does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import nats
from nats.aio.msg import Msg

from voxmesh import subjects
from voxmesh.cli.stack import Ports, Stack
from voxmesh.v1 import session_pb2

TARGET_P99_MS = 50.0


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def pct(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))], 2)

    return {"p50": round(statistics.median(ordered), 2), "p95": pct(95), "p99": pct(99),
            "max": round(ordered[-1], 2), "mean": round(statistics.fmean(ordered), 2)}


async def _measure(calls: int, state_dir: Path) -> dict[str, object]:
    stack = Stack(state_dir=state_dir, ports=Ports.free(), drain_grace_s=3.0)
    try:
        await stack.start(lambda name, what, seconds: print(
            f"  {name:<10} {what} ({seconds:.0f}s)", file=sys.stderr) if what == "ready" else None)
        for name in ("b", "c"):
            await stack.add_worker(f"bench-{name}")
        nc = await nats.connect(stack.nats_url)
        ended: dict[str, asyncio.Event] = {}

        async def on_event(msg: Msg) -> None:
            event = session_pb2.SessionEvent()
            event.ParseFromString(msg.data)
            if event.WhichOneof("event") == "ended":
                session_id = msg.subject.split(".")[2]
                if session_id in ended:
                    ended[session_id].set()

        await nc.subscribe(subjects.EVENTS_ALL, cb=on_event)
        latencies: list[float] = []
        workers: Counter[str] = Counter()
        hangup = session_pb2.SessionControl(hangup=session_pb2.Hangup()).SerializeToString()
        for index in range(calls):
            session_id = uuid.uuid4().hex
            ended[session_id] = asyncio.Event()
            request = session_pb2.DispatchRequest(
                session_id=session_id, agent="default", edge_id="bench",
                requested_at_ms=int(time.time() * 1000)).SerializeToString()
            started = time.perf_counter()
            msg = await nc.request(subjects.dispatch("default"), request, timeout=5)
            took_ms = (time.perf_counter() - started) * 1000
            reply = session_pb2.DispatchReply()
            reply.ParseFromString(msg.data)
            if not reply.accepted:
                raise RuntimeError(f"dispatch {index} refused: {reply.error.message}")
            latencies.append(took_ms)
            workers[reply.worker_id] += 1
            await nc.publish(subjects.control(session_id), hangup)
            await asyncio.wait_for(ended[session_id].wait(), timeout=10)
            del ended[session_id]
            if (index + 1) % 200 == 0:
                print(f"  {index + 1}/{calls} dispatches", file=sys.stderr)
        await nc.close()
    finally:
        await stack.stop()
    summary = _summary(latencies)
    return {
        "what": "DispatchRequest to accepted DispatchReply over NATS, 3 warm worker processes "
                "in one queue group, one call at a time (hung up once accepted)",
        "calls": calls,
        "dispatch_ms": summary,
        "target_p99_ms": TARGET_P99_MS,
        "meets_target": summary["p99"] <= TARGET_P99_MS,
        "calls_per_worker": dict(sorted(workers.items())),
        "host": "this host, loopback",
        "date": time.strftime("%Y-%m-%d"),
    }


def main() -> None:
    """Measures and merges ``dispatch`` into the results file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("bench/results.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="voxmesh-bench-dispatch-") as tmp:
        section = asyncio.run(_measure(args.calls, Path(tmp)))
    existing = json.loads(args.out.read_text()) if args.out.exists() else {}
    existing["dispatch"] = section
    args.out.write_text(json.dumps(existing, indent=2) + "\n")
    summary = section["dispatch_ms"]
    assert isinstance(summary, dict)
    print(f"call assignment: p50 {summary['p50']} ms, p99 {summary['p99']} ms over "
          f"{args.calls} dispatches (target p99 <= {TARGET_P99_MS:g} ms) -> {args.out}")


if __name__ == "__main__":
    main()
