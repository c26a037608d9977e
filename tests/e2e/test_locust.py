"""The Locust user class, headless, against the real local stack: voice metrics in Locust's stats.

Locust runs as a subprocess: importing it here would gevent-patch this process's sockets and
threads under the asyncio session that runs the stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from voxmesh.cli.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

ROOT = Path(__file__).parents[2]
#: Run time, and how long in-flight calls get to finish after it (a smoke call takes ~15 s).
RUN_TIME_S = 20
STOP_TIMEOUT_S = 25
#: Startup and the helper's preparation on top of those.
DEADLINE_S = RUN_TIME_S + STOP_TIMEOUT_S + 40


def _entries(path: Path) -> dict[tuple[str, str], dict[str, object]]:
    """Locust's final stats by (type, name), from ``--json-file``.

    The JSON file is written after the runner has stopped, so it holds the calls that ended
    during ``--stop-timeout`` too; the CSV files are rewritten on a timer and may miss them.
    """
    entries = json.loads(path.read_text())
    return {(str(entry["method"]), str(entry["name"])): entry for entry in entries}


def _healthz(url: str) -> int:
    with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:
        return int(response.status)


async def test_locust_headless_records_voice_metrics(stack: Stack, tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "locust", "-f", "loadtest/locustfile.py",
        "--headless", "-u", "2", "-r", "2", "-t", f"{RUN_TIME_S}s",
        "--stop-timeout", str(STOP_TIMEOUT_S),
        "--host", stack.edge_url, "--scenario", "loadtest/scenarios/smoke.yaml",
        "--json-file", str(tmp_path / "stats"), "--only-summary",
    ]
    env = {**os.environ, "VOXMESH_LOADTEST_CACHE":
           os.environ.get("VOXMESH_TEST_CACHE", ".voxmesh/cache/caller")}
    started = time.monotonic()
    locust = await asyncio.create_subprocess_exec(
        *command, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        async with asyncio.timeout(DEADLINE_S):
            output, _ = await locust.communicate()
    except TimeoutError:
        # SIGTERM lets Locust end its helper, which hangs up every call the stack still has.
        locust.send_signal(signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                await locust.wait()
        if locust.returncode is None:
            locust.kill()
            await locust.wait()
        pytest.fail(f"locust ran over {DEADLINE_S} s")
    text = output.decode(errors="replace")
    elapsed = time.monotonic() - started
    print(f"locust: {' '.join(command)}\nexit {locust.returncode} after {elapsed:.1f} s\n{text}")

    # 0: every call went fine; 1: Locust recorded failures.
    assert locust.returncode in (0, 1), text
    assert "did not exit" not in text, text  # the helper hung up its calls and exited by itself
    stats = _entries(tmp_path / "stats.json")
    v2v = stats.get(("voice", "voice_to_voice"))
    assert v2v is not None, text
    count = int(str(v2v["num_requests"]))
    assert count >= 1
    assert 0 < float(str(v2v["total_response_time"])) / count < 15_000
    call = stats.get(("call", "call"))
    assert call is not None and int(str(call["num_requests"])) >= 1, text
    assert ("voice", "first_transcript") in stats
    failures = sum(int(str(entry["num_failures"])) for entry in stats.values())
    assert (failures > 0) == (locust.returncode == 1), (failures, text)

    # The stack is left as found: healthy, every call hung up.
    assert await asyncio.to_thread(_healthz, stack.edge_url) == 200
