"""Media floor (``make bench``): the CPU that carrying callers' audio costs with no platform at all.

The capacity benchmark (bench/capacity.py) runs the whole platform and its load generator on
the same two cores. This one measures the part of that no optimisation of the platform can
remove, as long as the edge, the workers and the load generator are Python processes: N
WebSocket callers each send a 640-byte frame (20 ms of PCM16 16 kHz) every 20 ms; a bare
aiohttp relay publishes each frame on NATS (``media.in.<call>``); nats-server routes it; one
bare subscriber receives it. No VAD, no turn logic, no models, no agent audio back, no JSON:
a lower bound of the per-frame work of the capacity runs' load generator, edge, NATS and
workers. The figure is the CPU of each process, in cores, at each N.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FRAME = bytes(640)
FRAME_S = 0.02
SETTLE_S = 4.0
MEASURE_S = 8.0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _relay(nats_url: str, port: int) -> None:
    import nats
    from aiohttp import web

    nc = await nats.connect(nats_url)

    async def call(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        subject = f"media.in.{request.query['call']}"
        async for message in socket:
            await nc.publish(subject, message.data)
        return socket

    app = web.Application()
    app.router.add_get("/ws", call)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


async def _subscriber(nats_url: str) -> None:
    import nats

    nc = await nats.connect(nats_url)
    received = 0

    async def on_frame(_msg: Any) -> None:
        nonlocal received
        received += 1

    await nc.subscribe("media.in.*", cb=on_frame)
    await asyncio.Event().wait()


async def _callers(port: int, calls: int) -> None:
    import aiohttp

    async def caller(socket: aiohttp.ClientWebSocketResponse, phase_s: float) -> None:
        await asyncio.sleep(phase_s)
        due = time.monotonic()
        while True:
            await socket.send_bytes(FRAME)
            due += FRAME_S
            await asyncio.sleep(max(0.0, due - time.monotonic()))

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        sockets = [await http.ws_connect(f"http://127.0.0.1:{port}/ws?call={index}")
                   for index in range(calls)]
        tasks = [asyncio.create_task(caller(socket, index * FRAME_S / calls))
                 for index, socket in enumerate(sockets)]
        await asyncio.Event().wait()
        del tasks


def _role(argv: list[str]) -> None:
    from voxmesh import eventloop

    role = argv[0]
    if role == "relay":
        eventloop.run(_relay(argv[1], int(argv[2])))
    elif role == "subscriber":
        eventloop.run(_subscriber(argv[1]))
    elif role == "callers":
        eventloop.run(_callers(int(argv[1]), int(argv[2])))


def measure(calls: int) -> dict[str, Any]:
    """Runs the four processes at ``calls`` callers; returns each one's CPU in cores."""
    from voxmesh.cli.stack import free_port, nats_server_binary

    nats_port, relay_port = free_port(), free_port()
    nats_url = f"nats://127.0.0.1:{nats_port}"
    me = [sys.executable, __file__, "--role"]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        processes["nats-server"] = subprocess.Popen(
            [nats_server_binary(), "-a", "127.0.0.1", "-p", str(nats_port)], **quiet)
        time.sleep(0.5)
        processes["relay (edge)"] = subprocess.Popen(
            [*me, "relay", nats_url, str(relay_port)], **quiet)
        processes["subscriber (worker)"] = subprocess.Popen([*me, "subscriber", nats_url],
                                                            **quiet)
        time.sleep(1.5)
        processes["callers (load generator)"] = subprocess.Popen(
            [*me, "callers", str(relay_port), str(calls)], **quiet)
        time.sleep(SETTLE_S)
        before = {name: _cpu_seconds(p.pid) for name, p in processes.items()}
        started = time.monotonic()
        time.sleep(MEASURE_S)
        after = {name: _cpu_seconds(p.pid) for name, p in processes.items()}
        wall = time.monotonic() - started
        for name, process in processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited early (code {process.returncode})")
    finally:
        for process in processes.values():
            process.kill()
            process.wait()
    cores = {name: round((after[name] - before[name]) / wall, 3) for name in processes}
    return {"calls": calls, "frames_per_s": calls / FRAME_S, "cores": cores,
            "total_cores": round(sum(cores.values()), 3)}


def main() -> None:
    """Measures each level and merges ``media_floor`` into the results file."""
    if len(sys.argv) > 1 and sys.argv[1] == "--role":
        _role(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--levels", default="50,100,200")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json")
    args = parser.parse_args()
    points = []
    for calls in (int(level) for level in args.levels.split(",")):
        point = measure(calls)
        points.append(point)
        parts = ", ".join(f"{name} {value:.2f}" for name, value in point["cores"].items())
        print(f"media floor, {calls} calls: {point['total_cores']:.2f} cores ({parts})",
              flush=True)
    existing = json.loads(args.out.read_text()) if args.out.exists() else {}
    existing["media_floor"] = {
        "what": "CPU (cores) of carrying N callers' 20 ms PCM16 frames over WebSocket -> "
                "aiohttp relay -> NATS -> one subscriber, with no platform logic, one "
                "direction only: a lower bound of the capacity runs' per-frame work",
        "host": "this host (2 cores)",
        "date": time.strftime("%Y-%m-%d"),
        "points": points,
    }
    args.out.write_text(json.dumps(existing, indent=2) + "\n")


if __name__ == "__main__":
    main()
