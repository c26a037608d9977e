"""The Locust user class, headless, against the real local stack: voice metrics in Locust's stats.

Locust runs as a subprocess: importing it here would gevent-patch this process's sockets and
threads under the asyncio session that runs the stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
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


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _healthz(url: str) -> int:
    with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:
        return int(response.status)


async def test_locust_headless_records_voice_metrics(stack: Stack, tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "locust", "-f", "loadtest/locustfile.py",
        "--headless", "-u", "2", "-r", "2", "-t", f"{RUN_TIME_S}s",
        "--stop-timeout", str(STOP_TIMEOUT_S),
        "--host", stack.edge_url, "--scenario", "loadtest/scenarios/smoke.yaml",
        "--csv", str(tmp_path / "stats"), "--only-summary",
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

    # 0: every call went fine; 1: Locust recorded failures, which the failures CSV explains.
    assert locust.returncode in (0, 1), text
    assert "did not exit" not in text, text  # the helper hung up its calls and exited by itself
    stats = {(row["Type"], row["Name"]): row for row in _rows(tmp_path / "stats_stats.csv")}
    v2v = stats.get(("voice", "voice_to_voice"))
    assert v2v is not None, text
    assert int(v2v["Request Count"]) >= 1
    assert 0 < float(v2v["Average Response Time"]) < 15_000
    call = stats.get(("call", "call"))
    assert call is not None and int(call["Request Count"]) >= 1, text
    assert ("voice", "first_transcript") in stats
    failures = _rows(tmp_path / "stats_failures.csv")
    if locust.returncode == 1:
        # Locust rewrites its CSV files every second, so a failure in the last one may only be
        # in the error report it printed.
        assert failures or "VoiceCallError" in text, text
        assert all(row["Error"] for row in failures)
    else:
        assert not failures and int(call["Failure Count"]) == 0

    # The stack is left as found: healthy, every call hung up.
    assert await asyncio.to_thread(_healthz, stack.edge_url) == 200
