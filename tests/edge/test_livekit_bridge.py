"""The LiveKit edge without a LiveKit server: frames, admission, load, drain, and real calls.

* Frame conversion with livekit's own ``rtc.AudioFrame``.
* The request handler with livekit-agents' own ``JobRequest``; registration, job requests,
  load reports and drain with the real ``livekit.agents.AgentServer`` connected to
  :class:`livekit_agent_server.LiveKitAgentServer` (a local stand-in speaking LiveKit's worker
  protocol) while fake workers heartbeat on a real nats-server.
* The bridge with a room object that stands in for ``rtc.Room``: the caller's track is a real
  ``rtc.LocalAudioTrack`` fed with ``rtc.AudioFrame`` s, and the agent track it publishes is
  read back with a real ``rtc.AudioStream``; jobs run in livekit-agents' ``fake_job_context``.
  Calls go to the echo worker double, and once through the whole platform (``stack``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from edge_testkit import EchoWorker, dominant_frequency, poll, tone
from livekit import rtc
from livekit.agents import JobContext, JobRequest
from livekit.agents.testing import fake_job_context
from livekit.protocol import agent as agent_proto
from livekit.protocol import models
from livekit_agent_server import LiveKitAgentServer, close_quietly, status_name
from nats.aio.client import Client as NatsClient
from pydantic import SecretStr

from voxmesh import audio, subjects
from voxmesh.cli.caller_audio import CallerVoice
from voxmesh.cli.stack import Stack
from voxmesh.errors import ConfigError
from voxmesh.v1 import session_pb2
from voxmesh_edge.barge_in import level_dbfs
from voxmesh_edge.livekit import bridge
from voxmesh_edge.livekit.capacity import Admission, PoolCapacity, PoolWatch
from voxmesh_edge.livekit.frames import AgentFrameConverter, CallerFrameConverter, frame_to_mono
from voxmesh_edge.livekit.job import RoomJob, agent_for_job, job_metadata
from voxmesh_edge.livekit.settings import LiveKitSettings
from voxmesh_edge.livekit.worker import AGENT_ATTRIBUTE, JobGate, serve

pytestmark = pytest.mark.timeout(120)

API_KEY = "APIvoxmeshTestKey"
API_SECRET = "voxmesh-test-secret-that-must-never-be-logged"
LOUD_DBFS = -35.0


# --- helpers --------------------------------------------------------------------------------


def sine(freq_hz: float, seconds: float, rate: int, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.rint(amplitude * 32767 * np.sin(2 * np.pi * freq_hz * t)).astype("<i2")


def peak_frequency(samples: np.ndarray, rate: int) -> float:
    x = samples.astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[int(np.argmax(spectrum))])


def max_step(samples: np.ndarray) -> float:
    """The largest jump between neighbouring samples (a click shows up here)."""
    return float(np.max(np.abs(np.diff(samples.astype(np.float64)))))


def frames_of(samples: np.ndarray, rate: int, channels: int, frame_ms: int) -> list[rtc.AudioFrame]:
    """Cuts interleaved samples into ``rtc.AudioFrame`` s of ``frame_ms``."""
    per_frame = rate * frame_ms // 1000
    frames = []
    for start in range(0, len(samples) // channels, per_frame):
        chunk = samples[start * channels:(start + per_frame) * channels]
        if len(chunk) < per_frame * channels:
            break
        frames.append(rtc.AudioFrame(chunk.tobytes(), rate, channels, per_frame))
    return frames


# --- frame conversion -------------------------------------------------------------------------


@pytest.mark.parametrize(("rate", "channels", "frame_ms"),
                         [(48_000, 2, 10), (48_000, 1, 20), (44_100, 2, 10), (24_000, 1, 10),
                          (16_000, 1, 10), (8_000, 1, 20)])
def test_caller_frames_become_internal_frames(rate: int, channels: int, frame_ms: int) -> None:
    mono = sine(440.0, 1.0, rate)
    interleaved = np.repeat(mono, channels)  # the same signal on every channel
    converter = CallerFrameConverter()
    out: list[bytes] = []
    for frame in frames_of(interleaved, rate, channels, frame_ms):
        out += converter.push(frame)
    out += converter.flush()

    assert all(len(frame) == audio.FRAME_BYTES for frame in out)
    # 1 s in: 50 frames of 20 ms out, give or take the filter's hold-back.
    assert abs(len(out) - 50) <= 3, len(out)
    pcm = np.frombuffer(b"".join(out), dtype="<i2")
    assert abs(dominant_frequency(pcm.tobytes()) - 440.0) < 5.0
    # Level kept (a sine of amplitude 0.3 is at -13.5 dBFS).
    steady = pcm[800:-800]
    assert abs(audio.rms_dbfs(steady.tobytes()) - (-13.5)) < 1.0
    # No click at frame boundaries: no step larger than the sine's steepest slope allows.
    slope = 2 * np.pi * 440.0 / audio.INTERNAL_RATE * 0.3 * 32767
    assert max_step(steady) <= slope * 1.05 + 2


def test_stereo_caller_is_mixed_down() -> None:
    left = sine(300.0, 0.2, 48_000)
    silent = np.zeros_like(left)
    interleaved = np.column_stack([left, silent]).ravel()
    frame = rtc.AudioFrame(interleaved.tobytes(), 48_000, 2, len(left))
    mono = np.frombuffer(frame_to_mono(frame), dtype="<i2")
    assert len(mono) == len(left)
    # Half of one channel: the caller who talks into one ear of a headset is still heard.
    assert np.max(np.abs(mono.astype(int) - np.rint(left / 2).astype(int))) <= 1


def test_caller_rate_change_restarts_the_resampler() -> None:
    converter = CallerFrameConverter()
    out = []
    for frame in frames_of(sine(500.0, 0.5, 48_000), 48_000, 1, 10):
        out += converter.push(frame)
    for frame in frames_of(sine(500.0, 0.5, 16_000), 16_000, 1, 10):
        out += converter.push(frame)
    pcm = np.frombuffer(b"".join(out), dtype="<i2")
    assert abs(len(pcm) - audio.INTERNAL_RATE) <= 3 * audio.FRAME_SAMPLES
    assert abs(dominant_frequency(pcm[-4000:].tobytes()) - 500.0) < 10.0


@pytest.mark.parametrize(("rate", "channels"), [(48_000, 1), (48_000, 2), (24_000, 1),
                                                (16_000, 1)])
def test_agent_audio_becomes_track_frames(rate: int, channels: int) -> None:
    converter = AgentFrameConverter(rate, channels)
    pcm = tone(700.0, 1.0)
    frames: list[rtc.AudioFrame] = []
    for chunk in audio.Framer().push(pcm):
        frames += converter.push(chunk)

    assert len(frames) == 50  # 20 ms out for every 20 ms in, nothing held back
    for frame in frames:
        assert (frame.sample_rate, frame.num_channels) == (rate, channels)
        assert frame.samples_per_channel == rate // 50
    samples = np.concatenate([np.frombuffer(f.data, dtype="<i2") for f in frames])
    samples = samples.reshape(-1, channels)
    if channels == 2:
        assert np.array_equal(samples[:, 0], samples[:, 1])
    left = samples[:, 0]
    assert abs(peak_frequency(left, rate) - 700.0) < 5.0
    steady = left[rate // 50:]
    slope = 2 * np.pi * 700.0 / rate * 0.3 * 32767
    assert max_step(steady) <= slope * 1.05 + 2


def test_agent_converter_reset_drops_the_partial_frame() -> None:
    converter = AgentFrameConverter(48_000)
    assert len(converter.push(tone(400.0, 0.03))) == 1  # 30 ms: one frame out, 10 ms kept
    converter.reset()
    frames = converter.push(tone(400.0, 0.02))
    assert len(frames) == 1  # the 10 ms of the cleared turn did not carry over


def test_bad_frames_and_rates_are_refused() -> None:
    with pytest.raises(ValueError, match="channel"):
        CallerFrameConverter().push(rtc.AudioFrame(b"", 48_000, 0, 0))
    with pytest.raises(ValueError, match="16000 Hz"):
        AgentFrameConverter(8_000)
    with pytest.raises(ValueError, match="mono or stereo"):
        AgentFrameConverter(48_000, 6)


# --- admission and load ---------------------------------------------------------------------


def beat(worker_id: str, state: str, sessions: int, capacity: int) -> session_pb2.WorkerHeartbeat:
    return session_pb2.WorkerHeartbeat(worker_id=worker_id, state=state,
                                       active_sessions=sessions, max_sessions=capacity)


def test_pool_capacity_counts_workers_that_take_calls() -> None:
    pool = PoolWatch(stale_after_s=10.0)
    pool.observe(beat("idle", "idle", 0, 4), now=100.0)
    pool.observe(beat("busy", "busy", 3, 4), now=100.0)
    pool.observe(beat("draining", "draining", 2, 4), now=100.0)
    pool.observe(beat("warming", "warming", 0, 4), now=100.0)
    pool.observe(beat("silent", "idle", 0, 4), now=80.0)  # stale: warming to the operator

    assert pool.capacity(now=101.0) == PoolCapacity(workers=2, sessions=3, capacity=8)
    assert pool.capacity(now=101.0).free == 5
    assert pool.capacity(now=101.0).load == pytest.approx(3 / 8)
    # A busy worker silent for long may be gone: its free slot is not offered.
    assert pool.capacity(now=109.0).workers == 2
    assert pool.capacity(now=111.0) == PoolCapacity()
    assert PoolCapacity().load == 1.0


def test_admission_and_load() -> None:
    pool = PoolWatch()
    calls = [0]
    admission = Admission(pool, max_calls=2, active_calls=lambda: calls[0])
    rejection = admission.check()
    assert rejection is not None and rejection.reason == "NO_WORKER_AVAILABLE"
    assert admission.load() == 1.0

    pool.observe(beat("w1", "busy", 1, 4))
    assert admission.check() is None
    assert admission.load() == pytest.approx(0.25)
    calls[0] = 1
    assert admission.load() == pytest.approx(0.5)  # the edge is the busier one now

    admission.hold("job-a")  # accepted, not running yet: takes the edge's last slot
    rejection = admission.check()
    assert rejection is not None and rejection.reason == "EDGE_AT_CAPACITY"
    admission.release("job-a")
    assert admission.check() is None

    calls[0] = 0
    pool.observe(beat("w1", "busy", 3, 4))
    admission.hold("job-b")  # the pool's last free slot is being taken
    rejection = admission.check()
    assert rejection is not None and rejection.reason == "NO_WORKER_AVAILABLE"
    assert "3/4" in rejection.message
    admission.release("job-b")

    admission.draining = True
    rejection = admission.check()
    assert rejection is not None and rejection.reason == "EDGE_DRAINING"
    assert admission.load() == 1.0


@dataclass
class RecordedRequest:
    """A livekit-agents ``JobRequest`` whose answer is recorded."""

    request: JobRequest
    accepted: list[Any] = field(default_factory=list)
    rejected: list[bool] = field(default_factory=list)


def job_request(metadata: str = "") -> RecordedRequest:
    job = agent_proto.Job(id="AJ_test", type=agent_proto.JobType.JT_ROOM, metadata=metadata,
                          room=models.Room(sid="RM_test", name="call-room"))
    recorded: RecordedRequest

    async def on_reject(terminate: bool) -> None:
        recorded.rejected.append(terminate)

    async def on_accept(arguments: Any) -> None:
        recorded.accepted.append(arguments)

    recorded = RecordedRequest(JobRequest(job=job, on_reject=on_reject, on_accept=on_accept))
    return recorded


async def test_request_handler_accepts_with_capacity_and_rejects_without(
        caplog: pytest.LogCaptureFixture) -> None:
    settings = LiveKitSettings(max_calls=1)
    pool = PoolWatch()
    running = [0]
    gate = JobGate(settings, Admission(pool, settings.max_calls, lambda: running[0]))

    no_pool = job_request()
    with caplog.at_level(logging.INFO, logger="voxmesh.edge.livekit"):
        await gate(no_pool.request)
    assert no_pool.rejected == [False]  # not terminated: another edge may take it
    assert not no_pool.accepted
    assert "NO_WORKER_AVAILABLE" in caplog.text

    pool.observe(beat("w1", "idle", 0, 2))
    accepted = job_request(job_metadata("restaurant-host"))
    await gate(accepted.request)
    assert not accepted.rejected
    [arguments] = accepted.accepted
    assert arguments.identity == "voxmesh-AJ_test"
    assert arguments.name == settings.participant_name
    assert arguments.attributes == {AGENT_ATTRIBUTE: "restaurant-host"}

    running[0] = 1  # the accepted call now runs: the edge is full
    full = job_request()
    await gate(full.request)
    assert full.rejected == [False]

    running[0] = 0
    bad = job_request(json.dumps({"agent": "no spaces allowed"}))
    await gate(bad.request)
    assert bad.rejected == [True]  # no edge can serve it


def test_agent_comes_from_dispatch_metadata() -> None:
    def job(metadata: str) -> agent_proto.Job:
        return agent_proto.Job(id="AJ_x", metadata=metadata)

    assert agent_for_job(job(""), "default") == "default"
    assert agent_for_job(job(job_metadata("sales")), "default") == "sales"
    assert agent_for_job(job('{"other": 1}'), "default") == "default"
    assert agent_for_job(job("not json"), "default") == "default"
    with pytest.raises(ValueError, match="letters, digits"):
        agent_for_job(job('{"agent": "../x"}'), "default")


# --- the agent server against LiveKit's worker protocol -------------------------------------


@pytest.fixture
def livekit_env() -> Iterator[None]:
    """livekit-agents exports the URL and key pair to the environment; put it back after."""
    names = ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")
    saved = {name: os.environ.get(name) for name in names}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest_asyncio.fixture(loop_scope="session")
async def livekit_server(livekit_env: None) -> AsyncIterator[LiveKitAgentServer]:
    server = LiveKitAgentServer(API_KEY, API_SECRET)
    await server.start()
    yield server
    await close_quietly(server)


class WorkerFleet:
    """Fake agent workers: heartbeats on NATS, as the real worker sends them."""

    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc
        self.beats: dict[str, session_pb2.WorkerHeartbeat] = {}
        self._task: asyncio.Task[None] | None = None

    def set(self, worker_id: str, state: str, sessions: int, capacity: int) -> None:
        self.beats[worker_id] = beat(worker_id, state, sessions, capacity)

    async def __aenter__(self) -> WorkerFleet:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            for worker_id, heartbeat in list(self.beats.items()):
                await self.nc.publish(subjects.heartbeat(worker_id),
                                      heartbeat.SerializeToString())
            await asyncio.sleep(0.1)


class HeldCalls:
    """Test entrypoint (thread executor): each job holds its call until released."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.ended: dict[str, str] = {}
        self._release = threading.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def release(self) -> None:
        self._release.set()

    async def entrypoint(self, ctx: JobContext) -> None:
        job_id = ctx.job.id

        async def on_shutdown(reason: str) -> None:
            self.ended[job_id] = reason

        async def hold() -> None:
            while not await asyncio.to_thread(self._release.wait, 0.1):
                pass
            ctx.shutdown("call_ended")

        ctx.add_shutdown_callback(on_shutdown)
        task = asyncio.create_task(hold())
        self._tasks.add(task)
        self.started.append(job_id)


def edge_settings(server: LiveKitAgentServer, nats_url: str, **overrides: Any
                  ) -> LiveKitSettings:
    values: dict[str, Any] = dict(
        url=server.url, api_key=SecretStr(API_KEY), api_secret=SecretStr(API_SECRET),
        nats_url=nats_url, job_executor="thread", idle_processes=1, health_port=0,
        max_calls=4, drain_timeout_s=30.0)
    values.update(overrides)
    return LiveKitSettings(**values)


@contextlib.asynccontextmanager
async def running_edge(settings: LiveKitSettings, held: HeldCalls
                       ) -> AsyncIterator[tuple[asyncio.Event, asyncio.Task[None]]]:
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop, entrypoint=held.entrypoint))
    try:
        yield stop, task
    finally:
        held.release()
        stop.set()
        await asyncio.wait_for(task, 40)


async def test_registers_and_answers_job_requests_by_pool_capacity(
        livekit_server: LiveKitAgentServer, nc: NatsClient, nats_url: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    held = HeldCalls()
    async with WorkerFleet(nc) as fleet, running_edge(
            edge_settings(livekit_server, nats_url), held):
        registration = await livekit_server.wait_registered()
        assert registration.agent_name == "voxmesh"
        assert registration.type == agent_proto.JobType.JT_ROOM
        assert livekit_server.rejected_auth == 0  # the edge signed its token with the key pair

        # No worker heartbeats yet: the pool has no capacity.
        _, answer = await livekit_server.offer_job()
        assert not answer.available

        fleet.set("lk-worker-1", "busy", 1, 3)
        # (livekit-agents reports load 0 until its first load reading: wait for the real one.)
        await livekit_server.wait_status(lambda s: abs(s.load - 1 / 3) < 1e-6)
        job, answer = await livekit_server.offer_job(metadata=job_metadata("default"))
        assert answer.available and not answer.terminate
        assert answer.participant_identity == f"voxmesh-{job.id}"
        assert answer.participant_attributes[AGENT_ATTRIBUTE] == "default"
        await poll(lambda: job.id in held.started, 10, "the accepted job to start")

        # The pool fills up: the edge says no without LiveKit having to try.
        fleet.set("lk-worker-1", "busy", 3, 3)
        await livekit_server.wait_status(lambda s: s.load == 1.0)
        _, answer = await livekit_server.offer_job()
        assert not answer.available
    # Secrets stay out of every log line, livekit-agents' own included.
    assert API_SECRET not in caplog.text
    assert API_KEY not in caplog.text


async def test_load_reported_to_livekit_is_the_pools_utilisation(
        livekit_server: LiveKitAgentServer, nc: NatsClient, nats_url: str) -> None:
    held = HeldCalls()
    async with WorkerFleet(nc) as fleet, running_edge(
            edge_settings(livekit_server, nats_url, max_calls=10), held):
        await livekit_server.wait_registered()
        fleet.set("load-a", "busy", 1, 4)
        fleet.set("load-b", "idle", 0, 4)
        status = await livekit_server.wait_status(lambda s: abs(s.load - 1 / 8) < 1e-6)
        assert status_name(status) == "WS_AVAILABLE"

        fleet.set("load-b", "busy", 3, 4)
        status = await livekit_server.wait_status(lambda s: abs(s.load - 4 / 8) < 1e-6)
        assert status_name(status) == "WS_AVAILABLE"

        # Full, in the operator's terms: every warm worker carries its maximum.
        fleet.set("load-a", "busy", 4, 4)
        fleet.set("load-b", "busy", 4, 4)
        status = await livekit_server.wait_status(lambda s: s.load == 1.0)
        assert status_name(status) == "WS_FULL"


async def test_drain_stops_new_jobs_while_the_active_call_finishes(
        livekit_server: LiveKitAgentServer, nc: NatsClient, nats_url: str) -> None:
    held = HeldCalls()
    async with WorkerFleet(nc) as fleet, running_edge(
            edge_settings(livekit_server, nats_url), held) as (stop, serving):
        fleet.set("drain-w", "busy", 1, 4)
        await livekit_server.wait_registered()
        await livekit_server.wait_status(lambda s: s.load == 0.25)
        job, answer = await livekit_server.offer_job()
        assert answer.available
        await poll(lambda: job.id in held.started, 10, "the call to start")

        stop.set()  # SIGTERM
        status = await livekit_server.wait_status(lambda s: status_name(s) == "WS_FULL")
        assert status.job_count == 1
        _, answer = await livekit_server.offer_job()
        assert not answer.available  # LiveKit must send new calls elsewhere

        await asyncio.sleep(1.0)
        assert not serving.done(), "the edge stopped while its call was still going"
        assert job.id not in held.ended

        released = time.monotonic()
        held.release()  # the caller hangs up
        await asyncio.wait_for(serving, 15)
        assert time.monotonic() - released < 10  # well before the 30 s drain timeout
        assert held.ended[job.id] == "call_ended"


async def test_drain_timeout_ends_the_remaining_calls(
        livekit_server: LiveKitAgentServer, nc: NatsClient, nats_url: str) -> None:
    held = HeldCalls()
    async with WorkerFleet(nc) as fleet, running_edge(
            edge_settings(livekit_server, nats_url, drain_timeout_s=1.5), held) as (stop, serving):
        fleet.set("timeout-w", "busy", 1, 4)
        await livekit_server.wait_registered()
        await livekit_server.wait_status(lambda s: s.load == 0.25)
        job, answer = await livekit_server.offer_job()
        assert answer.available
        await poll(lambda: job.id in held.started, 10, "the call to start")

        stopped = time.monotonic()
        stop.set()
        await asyncio.wait_for(serving, 20)
        waited = time.monotonic() - stopped
        assert waited >= 1.5
        # The job was shut down by the edge (its shutdown callback ran), not released.
        assert job.id in held.ended and held.ended[job.id] != "call_ended"


def test_missing_key_pair_fails_at_startup_naming_the_variables() -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LIVEKIT_", "VOXMESH_LIVEKIT_"))}
    env["VOXMESH_LIVEKIT_URL"] = "wss://example.invalid"
    result = subprocess.run([sys.executable, "-m", "voxmesh_edge.livekit"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "VOXMESH_LIVEKIT_API_KEY or LIVEKIT_API_KEY" in result.stderr
    assert "VOXMESH_LIVEKIT_API_SECRET or LIVEKIT_API_SECRET" in result.stderr
    assert "VOXMESH_LIVEKIT_URL or" not in result.stderr  # the URL was given
    assert "Traceback" not in result.stderr


def test_credentials_accept_livekit_variables_and_hide_secrets(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VOXMESH_LIVEKIT_URL", "VOXMESH_LIVEKIT_API_KEY", "VOXMESH_LIVEKIT_API_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LIVEKIT_URL", "wss://lk.example")
    monkeypatch.setenv("LIVEKIT_API_KEY", API_KEY)
    monkeypatch.setenv("LIVEKIT_API_SECRET", API_SECRET)
    settings = LiveKitSettings()
    credentials = settings.credentials()
    assert credentials.url == "wss://lk.example"
    assert credentials.api_secret.get_secret_value() == API_SECRET
    for text in (repr(settings), str(settings), repr(credentials)):
        assert API_SECRET not in text and API_KEY not in text

    monkeypatch.setenv("VOXMESH_LIVEKIT_API_KEY", "own-key")  # Voxmesh's variable wins
    assert LiveKitSettings().credentials().api_key.get_secret_value() == "own-key"
    monkeypatch.delenv("LIVEKIT_API_SECRET")
    with pytest.raises(ConfigError, match="VOXMESH_LIVEKIT_API_SECRET or LIVEKIT_API_SECRET"):
        LiveKitSettings().credentials()


# --- the bridge, with a stand-in room ---------------------------------------------------------


class FakeLocalParticipant:
    """The agent's side of the room: records data packets, reads back published tracks."""

    identity = "voxmesh-agent"
    sid = "PA_agent"

    def __init__(self) -> None:
        self.connected = True
        self.data: list[tuple[str, str]] = []
        self.frames: list[tuple[float, np.ndarray]] = []  # (arrival, 48 kHz mono samples)
        self.published: dict[str, rtc.LocalAudioTrack] = {}
        self._readers: dict[str, asyncio.Task[None]] = {}

    async def publish_track(self, track: rtc.LocalAudioTrack, options: Any = None
                            ) -> SimpleNamespace:
        sid = f"TR_agent{len(self.published)}"
        self.published[sid] = track
        self._readers[sid] = asyncio.create_task(self._read(track))
        return SimpleNamespace(sid=sid, track=track)

    async def unpublish_track(self, sid: str) -> None:
        self.published.pop(sid, None)
        reader = self._readers.pop(sid, None)
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def publish_data(self, payload: str | bytes, *, reliable: bool = True,
                           topic: str = "", destination_identities: Any = ()) -> None:
        if not self.connected:
            raise ConnectionError("cannot publish data: not connected to the room")
        text = payload.decode() if isinstance(payload, bytes) else payload
        self.data.append((topic, text))

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(text) for topic, text in self.data if topic == bridge.EVENTS_TOPIC]

    def loud_since(self, since: float) -> list[np.ndarray]:
        return [samples for at, samples in self.frames
                if at >= since and level_dbfs(samples.tobytes()) > LOUD_DBFS]

    async def _read(self, track: rtc.LocalAudioTrack) -> None:
        stream = rtc.AudioStream.from_track(track=track, sample_rate=48_000, num_channels=1)
        try:
            async for event in stream:
                samples = np.frombuffer(event.frame.data, dtype="<i2").copy()
                self.frames.append((time.monotonic(), samples))
        finally:
            await stream.aclose()

    async def aclose(self) -> None:
        for sid in list(self._readers):
            await self.unpublish_track(sid)


class FakeRoom(rtc.EventEmitter[str]):
    """Stands in for a connected ``rtc.Room`` with one caller whose microphone is a real track.

    The caller's track is an ``rtc.LocalAudioTrack`` over an ``rtc.AudioSource``: what the test
    captures into it comes out of an ``rtc.AudioStream`` in real time, as a subscribed remote
    track's audio would.
    """

    def __init__(self, caller_identity: str = "caller-1") -> None:
        super().__init__()
        self.name = "call-room"
        self.connected = True
        self.disconnects = 0
        self.caller_source = rtc.AudioSource(48_000, 1, queue_size_ms=100)
        self.caller_track = rtc.LocalAudioTrack.create_audio_track("mic", self.caller_source)
        publication = SimpleNamespace(sid="TR_caller_mic", kind=rtc.TrackKind.KIND_AUDIO,
                                      track=self.caller_track)
        self.caller = SimpleNamespace(
            identity=caller_identity, sid="PA_caller", kind=rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD,
            state=rtc.ParticipantState.PARTICIPANT_STATE_ACTIVE, attributes={},
            track_publications={publication.sid: publication})
        self.remote_participants: dict[str, Any] = {caller_identity: self.caller}
        self.local_participant = FakeLocalParticipant()

    def isconnected(self) -> bool:
        return self.connected

    async def disconnect(self) -> None:
        self.connected = False
        self.local_participant.connected = False
        self.disconnects += 1

    async def speak(self, pcm16_16k: bytes) -> None:
        """The caller says ``pcm16_16k``, in real time, as 10 ms 48 kHz ``rtc.AudioFrame`` s."""
        samples = np.frombuffer(audio.resample(pcm16_16k, audio.INTERNAL_RATE, 48_000), "<i2")
        for frame in frames_of(samples, 48_000, 1, 10):
            await self.caller_source.capture_frame(frame)

    def leave(self) -> None:
        del self.remote_participants[self.caller.identity]
        self.emit("participant_disconnected", self.caller)

    async def aclose(self) -> None:
        await self.local_participant.aclose()
        await self.caller_source.aclose()


@dataclass
class BridgedCall:
    job: RoomJob
    room: FakeRoom
    shutdowns: list[str]

    @property
    def call(self) -> bridge.LiveKitCall:
        assert self.job.call is not None
        return self.job.call

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [e[kind] for e in self.room.local_participant.events() if kind in e]


@contextlib.asynccontextmanager
async def bridged_call(nats_url: str, *, metadata: str = "") -> AsyncIterator[BridgedCall]:
    """A LiveKit job (livekit-agents' fake job context) in a stand-in room, started."""
    room = FakeRoom()
    settings = LiveKitSettings(nats_url=nats_url, dispatch_timeout_s=2.0)
    shutdowns: list[str] = []
    with fake_job_context(room=room, job_metadata=metadata) as ctx:  # type: ignore[arg-type]
        ctx.shutdown = lambda reason="": shutdowns.append(reason)  # type: ignore[method-assign]
        job = RoomJob(ctx, settings)
        try:
            await job.start()
            yield BridgedCall(job, room, shutdowns)
        finally:
            await job.aclose("test over")
            await room.aclose()


async def test_bridge_carries_caller_and_agent_audio(nats_url: str,
                                                     echo_worker: EchoWorker) -> None:
    async with bridged_call(nats_url, metadata=job_metadata("default")) as bridged:
        call, room = bridged.call, bridged.room
        [request] = echo_worker.requests
        assert request.agent == "default" and request.edge_id.startswith("livekit-")
        assert request.format.sample_rate_hz == audio.INTERNAL_RATE
        assert list(room.local_participant.published.values()) == [call.track]
        session = echo_worker.sessions[call.session_id]

        said = time.monotonic()
        await room.speak(tone(440.0, 0.6))
        # The echo worker heard 20 ms PCM16 16 kHz frames of the caller's tone...
        await poll(lambda: bool(bridged.events("user_transcript")), 10, "the transcript event")
        heard = b"".join(chunk.data for chunk in session.media_in)
        assert all(len(chunk.data) == audio.FRAME_BYTES for chunk in session.media_in)
        assert abs(dominant_frequency(heard) - 440.0) < 10.0
        # ...and its answer came out of the published agent track at 48 kHz.
        await poll(lambda: len(room.local_participant.loud_since(said)) >= 40, 10,
                   "400 ms of agent audio on the agent track")
        answer = np.concatenate(room.local_participant.loud_since(said))
        assert abs(peak_frequency(answer, 48_000) - 440.0) < 10.0
        played = await session.wait_control("playout_started")
        assert played.playout_started.turn_index == 1
        # Events reach the room as data packets, the same JSON as the WebRTC data channel.
        assert bridged.events("started")[0]["agent"] == "default"


async def test_barge_in_clears_the_audio_source(nats_url: str, echo_worker: EchoWorker) -> None:
    async with bridged_call(nats_url) as bridged:
        call, room = bridged.call, bridged.room
        session = echo_worker.sessions[call.session_id]
        started = time.monotonic()
        # Two seconds arrive at once (queued at the edge and in the native source), and the
        # worker keeps sending more of the same turn in real time.
        await session.send_audio(tone(600.0, 2.0), 7, paced=False)
        speaking = asyncio.create_task(session.send_audio(tone(600.0, 4.0), 7, paced=True))
        try:
            await poll(lambda: len(room.local_participant.loud_since(started)) >= 30, 10,
                       "the agent to be speaking")
            assert call.queued_audio_ms > 1000
            await session.clear(7)
            cleared = time.monotonic()
            await poll(lambda: call.queued_audio_ms == 0.0, 1, "the clear")
            await asyncio.sleep(1.0)
            assert not speaking.done()  # the worker was still sending turn 7
            # Queued audio (edge and native source) was dropped and late frames of the
            # cleared turn never played: silence within 80 ms (frames already handed to the
            # track reader).
            late = room.local_participant.loud_since(cleared + 0.08)
            assert not late, f"{len(late) * 10} ms of agent audio after the clear"
        finally:
            speaking.cancel()
            await asyncio.gather(speaking, return_exceptions=True)


async def test_caller_republishing_the_microphone_is_followed(
        nats_url: str, echo_worker: EchoWorker) -> None:
    async with bridged_call(nats_url) as bridged:
        room = bridged.room
        session = echo_worker.sessions[bridged.call.session_id]
        [old] = room.caller.track_publications.values()
        room.emit("track_unsubscribed", old.track, old, room.caller)
        # The caller's app publishes a new microphone track; LiveKit subscribes the agent.
        source = rtc.AudioSource(48_000, 1, queue_size_ms=100)
        track = rtc.LocalAudioTrack.create_audio_track("mic-2", source)
        new = SimpleNamespace(sid="TR_caller_mic2", kind=rtc.TrackKind.KIND_AUDIO, track=track)
        room.caller.track_publications = {new.sid: new}
        room.emit("track_subscribed", track, new, room.caller)
        try:
            samples = np.frombuffer(audio.resample(tone(523.0, 0.6), audio.INTERNAL_RATE,
                                                   48_000), "<i2")
            for frame in frames_of(samples, 48_000, 1, 10):
                await source.capture_frame(frame)
            await poll(lambda: bool(bridged.events("user_transcript")), 10,
                       "the caller to be heard on the new track")
            heard = b"".join(chunk.data for chunk in session.media_in)
            assert abs(dominant_frequency(heard) - 523.0) < 10.0
            # One reader only: the old track's stopped (50 frames a second, not 100).
            before = len(session.media_in)
            await asyncio.sleep(1.0)
            assert 40 <= len(session.media_in) - before <= 60
        finally:
            await source.aclose()


async def test_caller_leaving_hangs_up(nats_url: str, echo_worker: EchoWorker) -> None:
    async with bridged_call(nats_url) as bridged:
        session = echo_worker.sessions[bridged.call.session_id]
        bridged.room.leave()
        hangup = await session.wait_control("hangup")
        assert hangup.hangup.reason == "caller_left"
        await asyncio.wait_for(bridged.call.closed.wait(), 5)
        assert bridged.room.disconnects == 1  # the agent left the room too
        assert bridged.shutdowns == ["caller_left"]
        assert bridged.events("ended")  # the worker's summary was still forwarded


async def test_worker_ending_the_call_leaves_the_room(nats_url: str,
                                                     echo_worker: EchoWorker) -> None:
    async with bridged_call(nats_url) as bridged:
        session = echo_worker.sessions[bridged.call.session_id]
        await session.send_event(session_pb2.SessionEvent(
            ended=session_pb2.SessionEnded(reason="agent said goodbye", turns=0)))
        await asyncio.wait_for(bridged.call.closed.wait(), 5)
        assert bridged.call.close_reason == "worker_ended"
        assert bridged.room.disconnects == 1
        assert bridged.shutdowns == ["worker_ended"]
        assert bridged.room.local_participant.published == {}  # the agent track is gone
        assert not any(c.WhichOneof("control") == "hangup" for c in session.controls)


async def test_no_worker_ends_the_job_with_an_error_event(nats_url: str) -> None:
    async with bridged_call(nats_url) as bridged:
        assert bridged.shutdowns == ["NO_WORKER_AVAILABLE"]
        [error] = [e["error"] for e in bridged.events("edge") if "error" in e]
        assert error["reason"] == "NO_WORKER_AVAILABLE" and error["status"] == 503
        assert bridged.room.disconnects == 1


async def test_bad_dispatch_metadata_ends_the_job(nats_url: str,
                                                 echo_worker: EchoWorker) -> None:
    async with bridged_call(nats_url, metadata='{"agent": "a b"}') as bridged:
        assert bridged.shutdowns == ["INVALID_AGENT"]
        [error] = [e["error"] for e in bridged.events("edge") if "error" in e]
        assert error["reason"] == "INVALID_AGENT" and "letters, digits" in error["message"]
        assert not echo_worker.requests  # never dispatched


# --- a real call through the platform --------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.timeout(400)
async def test_real_call_through_the_stack(stack: Stack, caller_voice: CallerVoice) -> None:
    question = "What is the capital of France?"
    speech = caller_voice.speak(question)
    async with bridged_call(stack.nats_url) as bridged:
        room = bridged.room
        assert bridged.call.worker_id, "no Voxmesh worker took the LiveKit call"
        await asyncio.sleep(0.5)
        await room.speak(speech)
        finished = time.monotonic()
        await poll(lambda: any(t.get("is_final") for t in bridged.events("agent_text")), 120,
                   "the agent's answer")
        heard = " ".join(t["text"] for t in bridged.events("user_transcript")
                         if t.get("is_final"))
        said = [t["text"] for t in bridged.events("agent_text") if t.get("is_final")]
        print(f"caller said {question!r}; STT heard {heard!r}; the agent answered {said!r}")
        assert "capital" in heard.lower(), heard
        # The answer was spoken into the room: over 300 ms of agent audio after the question.
        await poll(lambda: len(room.local_participant.loud_since(finished)) >= 30, 60,
                   "the answer's audio on the agent track")
        answer = np.concatenate(room.local_participant.loud_since(finished))
        assert audio.rms_dbfs(answer.tobytes()) > -40
        room.leave()
        await asyncio.wait_for(bridged.call.closed.wait(), 10)
        assert bridged.call.close_reason == "caller_left"
