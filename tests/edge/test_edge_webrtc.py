"""End-to-end tests of the WebRTC edge: real nats-server, real edge, real aiortc caller.

The agent worker is replaced by :class:`EchoWorker`, a test double that speaks the NATS contract
of docs/nats-subjects.md: it accepts dispatch requests and, after each utterance of the caller,
publishes a final ``user_transcript`` and plays the utterance back on ``media.out``
(tests/edge/edge_testkit.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from edge_testkit import (
    SPEECH_DBFS,
    EchoSession,
    EchoWorker,
    dominant_frequency,
    epoch_ms,
    poll,
    tone,
)
from nats.aio.client import Client as NatsClient

from voxmesh import audio
from voxmesh.v1 import common_pb2, session_pb2
from voxmesh_edge.client import CallRejectedError, WebRTCCaller
from voxmesh_edge.server import EdgeServer

pytestmark = pytest.mark.timeout(30)


@pytest_asyncio.fixture(loop_scope="session")
async def caller(edge: EdgeServer, echo_worker: EchoWorker) -> AsyncIterator[WebRTCCaller]:
    client = WebRTCCaller(edge.url)
    await client.connect()
    yield client
    await client.hangup()
    await poll(lambda: client.session_id not in edge.calls, 5, "the edge to drop the call")


def session_of(worker: EchoWorker, caller: WebRTCCaller) -> EchoSession:
    assert caller.session_id is not None
    return worker.sessions[caller.session_id]


async def test_audio_round_trip(
    edge: EdgeServer, echo_worker: EchoWorker, caller: WebRTCCaller
) -> None:
    session = session_of(echo_worker, caller)
    request = echo_worker.requests[-1]
    assert request.agent == "default"
    assert request.edge_id == "edge-test"
    assert request.format.encoding == common_pb2.AUDIO_ENCODING_PCM16
    assert (request.format.sample_rate_hz, request.format.channels) == (16_000, 1)
    assert abs(request.requested_at_ms - epoch_ms()) < 10_000
    assert caller.worker_id == "echo-worker"

    question = tone(440, 1.0)
    play_started_ms = epoch_ms()
    sent_at = await caller.play(question)
    assert 0.9 < time.monotonic() - sent_at + (epoch_ms() - play_started_ms) / 1000 < 2.0

    first, _end, answer = await caller.wait_agent_audio(sent_at, silence_ms=400, timeout=8)
    answer_s = len(answer) / 2 / audio.INTERNAL_RATE
    assert 0.85 < answer_s < 1.15, f"answer lasted {answer_s:.2f} s"
    assert abs(audio.rms_dbfs(answer) - audio.rms_dbfs(question)) < 3.0
    assert abs(dominant_frequency(answer) - 440) < 10
    # The echo worker waits 300 ms of quiet before answering; transport adds a little.
    assert 0.2 < first - sent_at < 1.5

    playout = (await session.wait_control("playout_started")).playout_started
    assert playout.turn_index == 1
    assert play_started_ms < playout.at_ms <= epoch_ms()

    # Caller audio reached the worker as contiguous 20 ms PCM16 16 kHz frames.
    sequences = [chunk.sequence for chunk in session.media_in]
    assert sequences == list(range(len(sequences)))
    assert all(len(chunk.data) == audio.FRAME_BYTES for chunk in session.media_in)
    assert [c.timestamp_ms for c in session.media_in[:3]] == [0, 20, 40]
    heard = b"".join(c.data for c in session.media_in if audio.rms_dbfs(c.data) > SPEECH_DBFS)
    assert 0.9 < len(heard) / 2 / audio.INTERNAL_RATE < 1.1
    assert abs(dominant_frequency(heard) - 440) < 10

    transcript = await caller.wait_event(lambda e: "user_transcript" in e, timeout=2)
    assert transcript["user_transcript"]["turn_index"] == 1
    assert transcript["user_transcript"]["is_final"] is True


async def test_clear_drops_buffered_audio(
    edge: EdgeServer, echo_worker: EchoWorker, caller: WebRTCCaller
) -> None:
    session = session_of(echo_worker, caller)
    started = time.monotonic()
    # Three seconds of agent audio published at once: the edge buffers nearly all of it.
    await session.send_audio(tone(300, 3.0), turn=7, paced=False)
    call = edge.calls[session.session_id]
    await poll(lambda: call.track.buffered_ms > 2000, 2, "the edge to buffer the agent audio")

    playout = (await session.wait_control("playout_started")).playout_started
    assert playout.turn_index == 7

    def loud_frames() -> int:
        frames = caller.agent_audio.frames
        return sum(
            1
            for i, (at, _) in enumerate(frames)
            if at > started and caller.agent_audio.level_dbfs(i) > -45
        )

    await poll(lambda: loud_frames() >= 20, 5, "400 ms of agent audio at the caller")
    clear_at_ms = epoch_ms()
    # What the edge sent, not the time since playout began: a loaded machine can pace the
    # sender slower than real time.
    sent_before_clear_ms = call.track.sent_ms
    await session.clear(turn=7)
    await poll(lambda: call.track.buffered_ms == 0, 0.1, "the edge to drop its buffer")
    sent_ms = call.track.sent_ms

    _, _, heard = await caller.wait_agent_audio(started, silence_ms=400, timeout=5)
    heard_ms = len(heard) / 2 / audio.INTERNAL_RATE * 1000
    assert sent_before_clear_ms <= clear_at_ms - playout.at_ms + 40  # never ahead of time
    assert heard_ms < 1500, "audio kept playing after the clear"
    # Everything sent before the clear arrives; at most ~100 ms more follows it.
    assert sent_ms - sent_before_clear_ms <= 120
    assert sent_before_clear_ms - 100 < heard_ms < sent_ms + 100

    # Frames of the cleared turn still in flight are dropped; the next turn plays normally.
    next_turn_at = time.monotonic()
    await session.send_audio(tone(300, 0.2), turn=7, paced=False)
    await session.send_audio(tone(600, 0.5), turn=8, paced=False)
    playout = (
        await session.wait_control("playout_started", where=lambda c: c.turn_index == 8)
    ).playout_started
    _, _, answer = await caller.wait_agent_audio(next_turn_at, silence_ms=300, timeout=5)
    assert 400 < len(answer) / 2 / audio.INTERNAL_RATE * 1000 < 600
    assert abs(dominant_frequency(answer) - 600) < 10


async def test_events_reach_the_data_channel(
    edge: EdgeServer, echo_worker: EchoWorker, caller: WebRTCCaller, nc: NatsClient
) -> None:
    session = session_of(echo_worker, caller)
    # Published by the worker while it accepted the call, before the data channel was open.
    started = await caller.wait_event(lambda e: "started" in e, timeout=3)
    assert started["started"] == {"worker_id": "echo-worker", "agent": "default"}
    assert started["session_id"] == caller.session_id

    await session.send_event(
        session_pb2.SessionEvent(
            agent_text=session_pb2.AgentText(
                turn_index=2, text="Hello there", is_final=True, interrupted=True
            )
        )
    )
    await session.send_event(
        session_pb2.SessionEvent(
            turn_metrics=session_pb2.TurnMetrics(
                turn_index=2,
                turn_id="t-2",
                endpointing_ms=300,
                stt_final_ms=120,
                llm_first_token_ms=90,
                first_sentence_ms=210,
                tts_first_audio_ms=80,
                voice_to_voice_ms=640,
            )
        )
    )
    await session.send_event(
        session_pb2.SessionEvent(
            error=session_pb2.SessionError(
                detail=common_pb2.ErrorDetail(
                    reason="LLM_UNAVAILABLE", component="llm", message="model not loaded"
                )
            )
        )
    )
    text = await caller.wait_event(lambda e: "agent_text" in e, timeout=3)
    assert text["agent_text"] == {
        "turn_index": 2,
        "text": "Hello there",
        "is_final": True,
        "interrupted": True,
    }
    metrics = (await caller.wait_event(lambda e: "turn_metrics" in e, timeout=3))["turn_metrics"]
    assert metrics["voice_to_voice_ms"] == 640
    assert metrics["llm_first_token_ms"] == 90
    error = (await caller.wait_event(lambda e: "error" in e, timeout=3))["error"]
    assert error["detail"]["reason"] == "LLM_UNAVAILABLE"
    assert error["detail"]["message"] == "model not loaded"
    kinds = [next(k for k in e if k not in ("session_id", "at_ms")) for e in caller.events]
    assert kinds == ["started", "agent_text", "turn_metrics", "error"]

    # SessionEvent.ended is forwarded, then the edge ends the call without a hangup.
    await session.send_event(
        session_pb2.SessionEvent(ended=session_pb2.SessionEnded(reason="goodbye", turns=2))
    )
    ended = await caller.wait_event(lambda e: "ended" in e, timeout=3)
    assert ended["ended"] == {"reason": "goodbye", "turns": 2}
    await poll(lambda: caller.session_id not in edge.calls, 3, "the edge to end the call")
    await poll(lambda: caller.ended, 3, "the caller's connection to close")
    await edge.nc.flush()
    await nc.flush()
    assert not any(c.HasField("hangup") for c in session.controls)


async def test_no_worker_rejects_the_call(edge: EdgeServer) -> None:
    caller = WebRTCCaller(edge.url)
    started = time.monotonic()
    with pytest.raises(CallRejectedError) as rejected:
        await caller.connect()
    # The edge asked again until its dispatch timeout ran out before refusing.
    assert time.monotonic() - started >= edge.settings.dispatch_timeout_s * 0.7
    assert rejected.value.reason == "NO_WORKER_AVAILABLE"
    assert rejected.value.status == 503
    assert "default" in rejected.value.message
    assert caller.ended
    await poll(lambda: not edge.calls, 2, "the edge to forget the rejected call")


async def test_declining_worker_rejects_the_call(edge: EdgeServer, nc: NatsClient) -> None:
    worker = EchoWorker(nc, worker_id="full-worker", accept=False)
    await worker.start()
    try:
        with pytest.raises(CallRejectedError) as rejected:
            await WebRTCCaller(edge.url).connect()
    finally:
        await worker.stop()
    assert rejected.value.reason == "NO_WORKER_AVAILABLE"
    assert "full-worker" in rejected.value.message
    assert "worker is full" in rejected.value.message
    assert len(worker.requests) == 1


async def test_a_worker_that_joins_late_still_takes_the_call(
    edge: EdgeServer, nc: NatsClient
) -> None:
    """No worker has a slot when the call arrives; one frees up within the dispatch timeout."""
    worker = EchoWorker(nc, worker_id="late-worker")
    caller = WebRTCCaller(edge.url)
    connecting = asyncio.create_task(caller.connect())
    try:
        await asyncio.sleep(edge.settings.dispatch_timeout_s / 3)
        assert not connecting.done()
        await worker.start()
        await asyncio.wait_for(connecting, 10)
        assert caller.worker_id == "late-worker"
        assert [r.session_id for r in worker.requests] == [caller.session_id]
        await caller.hangup()
    finally:
        connecting.cancel()
        await worker.stop()


async def test_full_workers_are_asked_again_until_the_dispatch_timeout(
    edge: EdgeServer, nc: NatsClient
) -> None:
    """A retryable decline (a worker filled up as the call arrived) is not the last word."""
    full = EchoWorker(nc, worker_id="full-worker", accept=False, decline_retryable=True)
    await full.start()
    try:
        started = time.monotonic()
        with pytest.raises(CallRejectedError) as rejected:
            await WebRTCCaller(edge.url).connect()
        waited = time.monotonic() - started
    finally:
        await full.stop()
    assert rejected.value.reason == "NO_WORKER_AVAILABLE"
    assert "has free capacity" in rejected.value.message
    assert waited >= edge.settings.dispatch_timeout_s * 0.7
    # Backoff from 25 ms doubling to 250 ms fits a handful of attempts into one second.
    assert 3 <= len(full.requests) <= 10
    assert len({r.session_id for r in full.requests}) == 1


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"this is not json", "INVALID_JSON"),
        (b"[1, 2]", "INVALID_JSON"),
        (b"{}", "INVALID_OFFER"),
        (b'{"sdp": "", "type": "offer"}', "INVALID_OFFER"),
        (b'{"sdp": "v=0", "type": "answer"}', "INVALID_OFFER"),
        (b'{"sdp": "v=0\\r\\n", "type": "offer", "agent": "a.b"}', "INVALID_AGENT"),
        (b'{"sdp": "garbage", "type": "offer"}', "INVALID_SDP"),
    ],
)
async def test_bad_offer_body_is_400(edge: EdgeServer, body: bytes, reason: str) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{edge.url}/offer", data=body, headers={"Content-Type": "application/json"}
        ) as response,
    ):
        assert response.status == 400
        payload = await response.json()
    assert payload["error"]["reason"] == reason
    assert payload["error"]["message"]
    assert "Traceback" not in json.dumps(payload)
    assert not edge.calls


async def test_page_and_health(edge: EdgeServer) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{edge.url}/") as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            page = await response.text()
        async with http.get(f"{edge.url}/healthz") as response:
            assert response.status == 200
            assert await response.json() == {"status": "ok"}
        async with http.get(f"{edge.url}/livez") as response:
            assert response.status == 200
    for element_id in (
        'id="call"',
        'id="hangup"',
        'id="status"',
        'id="transcript"',
        'id="latency"',
    ):
        assert element_id in page
    assert 'createDataChannel("events")' in page
    assert "http://" not in page and "https://" not in page  # self-contained


async def test_hangup_publishes_session_control(
    edge: EdgeServer, echo_worker: EchoWorker, caller: WebRTCCaller
) -> None:
    session = session_of(echo_worker, caller)
    assert caller.session_id in edge.calls
    await caller.hangup()
    hangup = (await session.wait_control("hangup")).hangup
    assert hangup.reason == "caller_hangup"
    # The worker's summary still reaches the caller before the edge closes the call.
    ended = await caller.wait_event(lambda e: "ended" in e, timeout=0)
    assert ended["ended"]["reason"] == "hangup"
    await poll(lambda: caller.session_id not in edge.calls, 3, "the edge to drop the call")
    assert caller.ended


async def test_hangup_without_worker_reply_still_closes(edge: EdgeServer, nc: NatsClient) -> None:
    worker = EchoWorker(nc, worker_id="silent-worker", end_on_hangup=False)
    await worker.start()
    try:
        caller = WebRTCCaller(edge.url)
        await caller.connect()
        started = time.monotonic()
        await caller.hangup()
        assert caller.session_id is not None
        session = worker.sessions[caller.session_id]
        assert (await session.wait_control("hangup")).hangup.reason == "caller_hangup"
        await poll(lambda: caller.session_id not in edge.calls, 4, "the edge to drop the call")
        assert time.monotonic() - started < 4
    finally:
        await worker.stop()


async def test_lost_connection_publishes_hangup(
    edge: EdgeServer, echo_worker: EchoWorker, caller: WebRTCCaller
) -> None:
    session = session_of(echo_worker, caller)
    await caller.close()  # no "hangup" message: the edge must notice the connection go away
    hangup = (await session.wait_control("hangup", within=10)).hangup
    assert hangup.reason.startswith("connection_")
    await poll(lambda: caller.session_id not in edge.calls, 3, "the edge to drop the call")
