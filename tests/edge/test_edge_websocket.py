"""The edge's WebSocket transport (``GET /ws``): real nats-server, real edge, echo worker.

Calls are made with :class:`WebSocketCaller` (both codecs) and, for malformed input, with a raw
aiohttp WebSocket so every byte on the wire is the test's choice.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import nats
import pytest
import pytest_asyncio
from edge_testkit import SPEECH_DBFS, EchoSession, EchoWorker, dominant_frequency, poll, tone
from nats.aio.client import Client as NatsClient
from test_edge_drain import EdgeProcess, edge_process  # noqa: F401 - the fixture, shared

from voxmesh import audio, subjects
from voxmesh.v1 import common_pb2, session_pb2
from voxmesh_edge import ws as ws_transport
from voxmesh_edge.client import CallRejectedError, WebRTCCaller
from voxmesh_edge.server import EdgeServer
from voxmesh_edge.settings import EdgeSettings
from voxmesh_edge.ws_client import WebSocketCaller

pytestmark = pytest.mark.timeout(30)

CODECS = ["pcm16", "mulaw"]
MULAW_START = {
    "event": "start",
    "streamSid": "MZtest",
    "start": {
        "streamSid": "MZtest",
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    },
}


@pytest_asyncio.fixture(loop_scope="session", params=CODECS)
async def caller(
    request: pytest.FixtureRequest, edge: EdgeServer, echo_worker: EchoWorker
) -> AsyncIterator[WebSocketCaller]:
    client = WebSocketCaller(edge.url, codec=request.param)
    await client.connect()
    yield client
    await client.hangup()
    await poll(lambda: client.session_id not in edge.calls, 5, "the edge to drop the call")


def session_of(worker: EchoWorker, caller: WebSocketCaller) -> EchoSession:
    assert caller.session_id is not None
    return worker.sessions[caller.session_id]


def loud_frames_after(caller: WebSocketCaller, after: float) -> int:
    levels = caller.agent_audio.level_dbfs
    return sum(
        1 for i, (at, _) in enumerate(caller.agent_audio.frames) if at > after and levels(i) > -45
    )


async def test_call_round_trip(
    edge: EdgeServer, echo_worker: EchoWorker, caller: WebSocketCaller
) -> None:
    assert caller.transport == f"websocket-{caller.codec}"
    assert caller.worker_id == "echo-worker"
    call = edge.calls[caller.session_id or ""]
    assert call.transport == caller.transport
    request = echo_worker.requests[-1]
    assert (request.agent, request.edge_id) == ("default", "edge-test")
    # The worker always gets the internal format, whatever the caller's codec.
    assert request.format.encoding == common_pb2.AUDIO_ENCODING_PCM16
    assert request.format.sample_rate_hz == 16_000
    # The edge's session message comes first, ahead of the worker's `started`.
    session_info = caller.events[0]["edge"]["session"]
    rate, frame = (16_000, 640) if caller.codec == "pcm16" else (8_000, 160)
    assert session_info == {
        "session_id": caller.session_id, "worker_id": "echo-worker", "agent": "default",
        "transport": caller.transport, "sample_rate_hz": rate, "frame_bytes": frame}
    started = await caller.wait_event(lambda e: "started" in e, timeout=3)
    assert started["started"] == {"worker_id": "echo-worker", "agent": "default"}
    session = session_of(echo_worker, caller)

    question = tone(440, 1.0)
    play_started = time.monotonic()
    sent_at = await caller.play(question)
    assert 0.95 < sent_at - play_started < 1.3  # real time, not a burst

    first, _end, answer = await caller.wait_agent_audio(sent_at, silence_ms=300, timeout=8)
    answer_s = len(answer) / 2 / audio.INTERNAL_RATE
    assert 0.9 < answer_s < 1.1, f"answer lasted {answer_s:.2f} s"
    assert abs(audio.rms_dbfs(answer) - audio.rms_dbfs(question)) < 1.0
    assert abs(dominant_frequency(answer) - 440) < 5
    # The echo worker answers after 300 ms of quiet; the socket adds next to nothing.
    assert 0.28 < first - sent_at < 0.6, f"answer began {first - sent_at:.3f} s after the question"
    # Delivered as the worker paced it: about one 20 ms frame per 20 ms, not in one burst.
    times = [at for at, _ in caller.agent_audio.frames if at >= first][: len(answer) // 640]
    assert 0.8 < times[-1] - times[0] < 1.2

    playout = (await session.wait_control("playout_started")).playout_started
    assert playout.turn_index == 1
    transcript = await caller.wait_event(lambda e: "user_transcript" in e, timeout=2)
    assert transcript["user_transcript"]["turn_index"] == 1

    # Caller audio reached the worker as contiguous 20 ms PCM16 16 kHz frames.
    assert [c.sequence for c in session.media_in] == list(range(len(session.media_in)))
    assert all(len(chunk.data) == audio.FRAME_BYTES for chunk in session.media_in)
    heard = b"".join(c.data for c in session.media_in if audio.rms_dbfs(c.data) > SPEECH_DBFS)
    assert 0.95 < len(heard) / 2 / audio.INTERNAL_RATE < 1.05
    assert abs(dominant_frequency(heard) - 440) < 5

    # Hangup: the worker is told, its summary still reaches the caller, the socket closes 1000.
    await caller.hangup()
    assert (await session.wait_control("hangup")).hangup.reason == "caller_hangup"
    ended = await caller.wait_event(lambda e: "ended" in e, timeout=0)
    assert ended["ended"]["reason"] == "hangup"
    assert caller.close_code == 1000
    await poll(lambda: caller.session_id not in edge.calls, 3, "the edge to drop the call")


async def test_barge_in_clear_reaches_the_caller(
    edge: EdgeServer, echo_worker: EchoWorker, caller: WebSocketCaller, nc: NatsClient
) -> None:
    session = session_of(echo_worker, caller)
    started = time.monotonic()
    speaking = asyncio.create_task(session.send_audio(tone(300, 3.0), turn=7, paced=True))
    try:
        await poll(lambda: loud_frames_after(caller, started) >= 15, 3, "the agent to speak")
        await session.clear(turn=7)
        await poll(lambda: bool(caller.cleared), 1, "the clear to reach the caller")
        cleared_at = caller.cleared[0]
        if caller.codec == "pcm16":
            clear = next(e["edge"]["clear"] for e in caller.events if "clear" in e.get("edge", {}))
            assert (clear["turn_index"], clear["pause"]) == (7, False)
        await asyncio.sleep(0.3)  # the worker goes on publishing turn 7 meanwhile
        assert not speaking.done()
        # Nothing of the cleared turn follows the clear: the edge stopped at once.
        assert [at for at, _ in caller.agent_audio.frames if at > cleared_at] == []
    finally:
        speaking.cancel()
        await asyncio.gather(speaking, return_exceptions=True)

    # The next turn plays normally.
    next_turn_at = time.monotonic()
    await session.send_audio(tone(600, 0.4), turn=8, paced=True)
    _, _, answer = await caller.wait_agent_audio(next_turn_at, silence_ms=200, timeout=3)
    assert 0.35 < len(answer) / 2 / audio.INTERNAL_RATE < 0.45
    assert abs(dominant_frequency(answer) - 600) < 10
    playout = await session.wait_control("playout_started", where=lambda c: c.turn_index == 8)
    assert playout.playout_started.turn_index == 8


async def test_pause_keeps_the_turn(
    edge: EdgeServer, echo_worker: EchoWorker, nc: NatsClient
) -> None:
    caller = WebSocketCaller(edge.url, codec="pcm16")
    await caller.connect()
    try:
        session = session_of(echo_worker, caller)
        pause = session_pb2.MediaControl(
            clear=session_pb2.ClearPlayout(turn_index=3, pause=True)
        )
        await nc.publish(subjects.media_control(session.session_id), pause.SerializeToString())
        await poll(lambda: bool(caller.cleared), 1, "the pause to reach the caller")
        resumed_at = time.monotonic()
        await session.send_audio(tone(500, 0.3), turn=3, paced=True)
        _, _, answer = await caller.wait_agent_audio(resumed_at, silence_ms=200, timeout=3)
        assert 0.25 < len(answer) / 2 / audio.INTERNAL_RATE < 0.35  # turn 3 was not dropped
    finally:
        await caller.hangup()


# --- bad input ------------------------------------------------------------------------------


async def _read_until_closed(ws: aiohttp.ClientWebSocketResponse) -> list[Any]:
    received: list[Any] = []
    async with asyncio.timeout(5):
        async for msg in ws:
            received.append(msg.data)
    return received


def _edge_messages(received: list[Any], codec: str) -> list[dict[str, Any]]:
    """The JSON the edge sent, unwrapped from mulaw's ``voxmesh`` events."""
    messages = [json.loads(m) for m in received if isinstance(m, str)]
    if codec == "mulaw":
        return [m["voxmesh"] for m in messages if m.get("event") == "voxmesh"]
    return messages


def _ws_url(edge: EdgeServer, codec: str, agent: str = "default") -> str:
    return f"{edge.url.replace('http://', 'ws://')}/ws?codec={codec}&agent={agent}"


def _mulaw_media(pcm16_16k: bytes) -> str:
    payload = audio.mulaw_encode(audio.resample(pcm16_16k, 16_000, 8_000))
    return json.dumps({"event": "media", "streamSid": "MZtest",
                       "media": {"payload": base64.b64encode(payload).decode()}})


BAD_AFTER_START = [
    # (codec, the bad message, reason, close code, HTTP-equivalent status)
    ("pcm16", "this is not json", "INVALID_JSON", 1007, 400),
    ("pcm16", "[1, 2]", "INVALID_JSON", 1007, 400),
    ("pcm16", '{"kind": "hangup"}', "INVALID_MESSAGE", 1007, 400),
    ("pcm16", '{"type": "dance"}', "UNKNOWN_MESSAGE", 1008, 400),
    ("pcm16", bytes(500), "INVALID_FRAME_SIZE", 1007, 400),
    ("pcm16", bytes(70_000), "FRAME_TOO_LARGE", 1009, 413),
    ("pcm16", "x" * 70_000, "FRAME_TOO_LARGE", 1009, 413),
    ("mulaw", bytes(640), "UNEXPECTED_BINARY_FRAME", 1003, 400),
    ("mulaw", "{not json", "INVALID_JSON", 1007, 400),
    ("mulaw", '{"event": "media", "media": {"payload": "@@not base64@@"}}',
     "INVALID_PAYLOAD", 1007, 400),
    ("mulaw", '{"event": "media", "media": {}}', "INVALID_MESSAGE", 1007, 400),
    ("mulaw", _mulaw_media(tone(440, 2.0)), "FRAME_TOO_LARGE", 1009, 413),
    ("mulaw", json.dumps(MULAW_START), "DUPLICATE_START", 1008, 400),
    ("mulaw", '{"event": "dance"}', "UNKNOWN_MESSAGE", 1008, 400),
]


@pytest.mark.parametrize(
    ("codec", "bad", "reason", "close_code", "status"),
    BAD_AFTER_START,
    ids=[f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(BAD_AFTER_START)],
)
async def test_bad_input_mid_call_ends_it_precisely_and_loses_nothing(
    edge: EdgeServer,
    echo_worker: EchoWorker,
    caplog: pytest.LogCaptureFixture,
    codec: str,
    bad: str | bytes,
    reason: str,
    close_code: int,
    status: int,
) -> None:
    caplog.set_level(logging.INFO, logger="voxmesh.edge")
    speech = tone(440, 0.2)
    async with aiohttp.ClientSession() as http, http.ws_connect(_ws_url(edge, codec)) as ws:
        if codec == "mulaw":
            await ws.send_str(json.dumps(MULAW_START))
        first = json.loads(await ws.receive_str(timeout=3))
        edge_message = (first["voxmesh"] if codec == "mulaw" else first)["edge"]
        assert "session" in edge_message, first
        session_id = edge_message["session"]["session_id"]
        # 200 ms of caller audio, then the bad message right behind it.
        if codec == "mulaw":
            await ws.send_str(_mulaw_media(speech))
        else:
            for frame in audio.Framer().push(speech):
                await ws.send_bytes(frame)
        if isinstance(bad, bytes):
            await ws.send_bytes(bad)
        else:
            await ws.send_str(bad)
        received = await _read_until_closed(ws)
        assert ws.close_code == close_code

    messages = _edge_messages(received, codec)
    errors = [m["edge"]["error"] for m in messages if "error" in m.get("edge", {})]
    assert len(errors) == 1
    assert errors[0]["reason"] == reason
    assert errors[0]["status"] == status
    assert errors[0]["message"] and "Traceback" not in errors[0]["message"]
    # The worker's session ended cleanly: hung up with the reason, its summary forwarded.
    session = echo_worker.sessions[session_id]
    hangup = (await session.wait_control("hangup")).hangup
    assert hangup.reason == f"caller_error:{reason}"
    assert any("ended" in m for m in messages)
    # Nothing accepted was lost: all the caller audio sent before the bad message arrived.
    heard = b"".join(c.data for c in session.media_in if audio.rms_dbfs(c.data) > SPEECH_DBFS)
    assert abs(len(heard) / 2 / audio.INTERNAL_RATE - 0.2) < 0.021
    await poll(lambda: session_id not in edge.calls, 3, "the edge to drop the call")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


BAD_BEFORE_DISPATCH = [
    # (codec in the query, messages sent after opening, reason, close code, status)
    ("opus", [], "INVALID_CODEC", 1008, 400),
    ("mulaw", [_mulaw_media(tone(440, 0.02))], "MEDIA_BEFORE_START", 1008, 400),
    ("mulaw", [json.dumps({**MULAW_START, "start": {"mediaFormat": {
        "encoding": "audio/l16", "sampleRate": 16000, "channels": 1}}})],
     "UNSUPPORTED_MEDIA_FORMAT", 1003, 415),
    ("mulaw", ['{"event": "start"}'], "INVALID_MESSAGE", 1007, 400),
    ("mulaw", [bytes(160)], "UNEXPECTED_BINARY_FRAME", 1003, 400),
]


@pytest.mark.parametrize(
    ("codec", "sent", "reason", "close_code", "status"),
    BAD_BEFORE_DISPATCH,
    ids=[c[2] for c in BAD_BEFORE_DISPATCH],
)
async def test_bad_input_before_dispatch_never_reaches_a_worker(
    edge: EdgeServer,
    echo_worker: EchoWorker,
    codec: str,
    sent: list[str | bytes],
    reason: str,
    close_code: int,
    status: int,
) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(_ws_url(edge, codec)) as ws:
        for message in sent:
            if isinstance(message, bytes):
                await ws.send_bytes(message)
            else:
                await ws.send_str(message)
        received = await _read_until_closed(ws)
        assert ws.close_code == close_code
    codec_shape = "mulaw" if codec == "mulaw" else "pcm16"
    messages = _edge_messages(received, codec_shape)
    assert [m["edge"]["error"]["reason"] for m in messages] == [reason]
    assert messages[0]["edge"]["error"]["status"] == status
    assert echo_worker.requests == []
    await poll(lambda: not edge.calls, 2, "the edge to forget the refused call")


async def test_missing_start_times_out(
    edge: EdgeServer, echo_worker: EchoWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ws_transport, "START_TIMEOUT_S", 0.3)
    async with aiohttp.ClientSession() as http, http.ws_connect(_ws_url(edge, "mulaw")) as ws:
        await ws.send_str('{"event": "connected", "protocol": "Call", "version": "1.0.0"}')
        received = await _read_until_closed(ws)
        assert ws.close_code == 1008
    assert _edge_messages(received, "mulaw")[0]["edge"]["error"]["reason"] == "START_TIMEOUT"
    assert echo_worker.requests == []


async def test_invalid_agent_and_no_worker_are_refused(edge: EdgeServer) -> None:
    with pytest.raises(CallRejectedError) as rejected:
        await WebSocketCaller(edge.url, agent="a.b").connect()
    assert (rejected.value.reason, rejected.value.status) == ("INVALID_AGENT", 400)
    for codec in CODECS:  # no echo_worker fixture: nobody takes the call
        caller = WebSocketCaller(edge.url, codec=codec)
        with pytest.raises(CallRejectedError) as rejected:
            await caller.connect()
        assert (rejected.value.reason, rejected.value.status) == ("NO_WORKER_AVAILABLE", 503)
        assert "default" in rejected.value.message
        assert caller.close_code == 1013  # try again later
        assert caller.ended
    await poll(lambda: not edge.calls, 2, "the edge to forget the rejected calls")


async def test_plain_http_get_is_426(edge: EdgeServer) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{edge.url}/ws") as response:
        assert response.status == 426
        body = await response.json()
    assert body["error"]["reason"] == "WEBSOCKET_REQUIRED"


async def test_lost_socket_hangs_up_the_worker(
    edge: EdgeServer, echo_worker: EchoWorker, caller: WebSocketCaller
) -> None:
    session = session_of(echo_worker, caller)
    await caller.close()  # no hangup/stop message: the edge must notice the socket go away
    hangup = (await session.wait_control("hangup", within=3)).hangup
    assert hangup.reason == "connection_closed"
    await poll(lambda: caller.session_id not in edge.calls, 3, "the edge to drop the call")


async def test_worker_ending_the_call_closes_the_socket(
    edge: EdgeServer, echo_worker: EchoWorker, caller: WebSocketCaller
) -> None:
    session = session_of(echo_worker, caller)
    await session.send_event(
        session_pb2.SessionEvent(ended=session_pb2.SessionEnded(reason="goodbye", turns=0))
    )
    ended = await caller.wait_event(lambda e: "ended" in e, timeout=3)
    assert ended["ended"] == {"reason": "goodbye"}
    await poll(lambda: caller.ended, 3, "the edge to close the socket")
    assert caller.close_code == 1000
    assert not any(c.HasField("hangup") for c in session.controls)
    with pytest.raises(ConnectionError):
        await caller.play(tone(440, 0.1))  # fails at once; it would never be sent


# --- capacity and draining -----------------------------------------------------------------


async def test_max_calls_is_shared_between_transports(
    nats_url: str, echo_worker: EchoWorker
) -> None:
    settings = EdgeSettings(host="127.0.0.1", port=0, nats_url=nats_url, max_calls=1)
    edge_nc = await nats.connect(nats_url, name="edge-capacity")
    edge = EdgeServer(settings, edge_nc, edge_id="edge-capacity")
    await edge.start()
    try:
        webrtc = WebRTCCaller(edge.url)
        assert webrtc.transport == "webrtc"
        await webrtc.connect()
        with pytest.raises(CallRejectedError) as rejected:
            await WebSocketCaller(edge.url).connect()
        assert (rejected.value.reason, rejected.value.status) == ("EDGE_AT_CAPACITY", 503)
        await webrtc.hangup()
        await poll(lambda: not edge.calls, 3, "the WebRTC call to end")

        websocket = WebSocketCaller(edge.url, codec="mulaw")
        await websocket.connect()
        with pytest.raises(CallRejectedError) as rejected:
            await WebRTCCaller(edge.url).connect()
        assert rejected.value.reason == "EDGE_AT_CAPACITY"
        await websocket.hangup()
        await poll(lambda: not edge.calls, 3, "the WebSocket call to end")
    finally:
        await edge.stop()
        await edge_nc.drain()


async def test_sigterm_refuses_new_websocket_calls(
    edge_process: EdgeProcess, echo_worker: EchoWorker  # noqa: F811 - the imported fixture
) -> None:
    live = WebSocketCaller(edge_process.url, codec="pcm16")
    await live.connect()
    assert live.session_id is not None
    session = echo_worker.sessions[live.session_id]

    signalled = time.monotonic()
    edge_process.proc.send_signal(signal.SIGTERM)
    while True:
        early = WebSocketCaller(edge_process.url, codec="mulaw")
        try:
            await early.connect()
        except CallRejectedError as exc:
            rejected = exc
            break
        await early.hangup()  # connected before the signal was handled
        assert time.monotonic() - signalled < 3, "new calls still accepted after SIGTERM"
    assert (rejected.reason, rejected.status) == ("EDGE_DRAINING", 503)
    assert not live.ended, "a live call was cut before the drain grace ran out"

    hangup = (await session.wait_control("hangup", within=5)).hangup
    assert hangup.reason == "edge_draining"
    assert time.monotonic() - signalled > 1.2  # the 1.5 s grace was honored
    await poll(lambda: live.ended, 3, "the edge to close the live socket")
    assert live.close_code == 1001  # going away
    assert await edge_process.exit_code(within=5) == 0
    await live.close()
