"""Test double of the agent worker (:class:`EchoWorker`) and helpers shared by the edge tests.

:class:`EchoWorker` speaks the worker's side of the NATS contract in docs/nats-subjects.md: it
accepts dispatch requests (queue group ``voxmesh-workers``) and, after each caller utterance,
publishes a final ``user_transcript`` event and plays the utterance back on ``media.out`` in real
time with the ``Voxmesh-Turn`` header. It is not the real worker (no STT/LLM/TTS).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from voxmesh import audio, subjects
from voxmesh.v1 import common_pb2, session_pb2
from voxmesh_edge.server import TURN_HEADER

SPEECH_DBFS = -40.0
END_OF_UTTERANCE_FRAMES = 15  # 300 ms of quiet ends an utterance


def tone(freq_hz: float, seconds: float, amplitude: float = 0.3) -> bytes:
    t = np.arange(int(audio.INTERNAL_RATE * seconds)) / audio.INTERNAL_RATE
    return audio.float_to_pcm16((amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32))


def dominant_frequency(pcm: bytes) -> float:
    samples = audio.pcm16_to_float(pcm)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / audio.INTERNAL_RATE)[int(np.argmax(spectrum))])


def epoch_ms() -> int:
    return time.time_ns() // 1_000_000


async def poll(condition: Callable[[], bool], within: float, what: str) -> None:
    """Waits until ``condition()`` holds (checked every 10 ms); fails the test on timeout."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.01)


class EchoSession:
    """The test double's side of one call."""

    def __init__(
        self, nc: NatsClient, session_id: str, worker_id: str, *, end_on_hangup: bool = True
    ) -> None:
        self.nc = nc
        self.session_id = session_id
        self.worker_id = worker_id
        self.end_on_hangup = end_on_hangup
        self.media_in: list[common_pb2.AudioChunk] = []
        self.controls: list[session_pb2.SessionControl] = []
        self.turn = 0
        self.subs: list[Subscription] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self._utterance: list[bytes] = []
        self._quiet = 0
        self._changed = asyncio.Event()

    async def start(self) -> None:
        self.subs = [
            await self.nc.subscribe(subjects.media_in(self.session_id), cb=self._on_media_in),
            await self.nc.subscribe(subjects.control(self.session_id), cb=self._on_control),
        ]
        await self.send_event(
            session_pb2.SessionEvent(
                started=session_pb2.SessionStarted(worker_id=self.worker_id, agent="default")
            )
        )

    async def stop(self) -> None:
        for sub in self.subs:
            await sub.unsubscribe()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _on_control(self, msg: Msg) -> None:
        control = session_pb2.SessionControl()
        control.ParseFromString(msg.data)
        self.controls.append(control)
        self._changed.set()
        if control.HasField("hangup") and self.end_on_hangup:
            # Like the real worker: a hangup ends the session with a summary event.
            await self.send_event(
                session_pb2.SessionEvent(
                    ended=session_pb2.SessionEnded(reason="hangup", turns=self.turn)
                )
            )

    async def _on_media_in(self, msg: Msg) -> None:
        chunk = common_pb2.AudioChunk()
        chunk.ParseFromString(msg.data)
        self.media_in.append(chunk)
        loud = audio.rms_dbfs(chunk.data) > SPEECH_DBFS
        if loud:
            self._utterance.append(chunk.data)
            self._quiet = 0
        elif self._utterance:
            self._quiet += 1
            if self._quiet >= END_OF_UTTERANCE_FRAMES:
                await self._end_utterance()
            else:
                self._utterance.append(chunk.data)

    async def _end_utterance(self) -> None:
        # Drop the quiet tail kept while waiting for the end of the utterance.
        speech = b"".join(self._utterance[: len(self._utterance) - self._quiet + 1])
        self._utterance, self._quiet = [], 0
        self.turn += 1
        await self.send_event(
            session_pb2.SessionEvent(
                user_transcript=session_pb2.UserTranscript(
                    turn_index=self.turn, text=f"{len(speech) // 32} ms of speech", is_final=True
                )
            )
        )
        task = asyncio.create_task(self.send_audio(speech, self.turn, paced=True))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def send_audio(self, pcm: bytes, turn: int, *, paced: bool) -> None:
        """Publishes agent audio on media.out, at real-time pace or all at once."""
        start = time.monotonic()
        for index, frame in enumerate(audio.Framer().push(pcm)):
            if paced:
                await asyncio.sleep(
                    max(0.0, start + index * audio.FRAME_MS / 1000 - time.monotonic())
                )
            chunk = common_pb2.AudioChunk(
                data=frame, sequence=index, timestamp_ms=index * audio.FRAME_MS
            )
            await self.nc.publish(
                subjects.media_out(self.session_id),
                chunk.SerializeToString(),
                headers={TURN_HEADER: str(turn)},
            )
        await self.nc.flush()

    async def clear(self, turn: int) -> None:
        control = session_pb2.MediaControl(clear=session_pb2.ClearPlayout(turn_index=turn))
        await self.nc.publish(subjects.media_control(self.session_id), control.SerializeToString())
        await self.nc.flush()

    async def send_event(self, event: session_pb2.SessionEvent) -> None:
        event.session_id = self.session_id
        event.at_ms = epoch_ms()
        await self.nc.publish(subjects.events(self.session_id), event.SerializeToString())

    async def wait_control(
        self, kind: str, within: float = 5.0, where: Callable[[Any], bool] | None = None
    ) -> session_pb2.SessionControl:
        """First SessionControl of ``kind`` (whose body matches ``where``, if given)."""
        deadline = time.monotonic() + within
        while True:
            for control in self.controls:
                if control.WhichOneof("control") == kind and (
                    where is None or where(getattr(control, kind))
                ):
                    return control
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no SessionControl.{kind} within {within} s")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)


class EchoWorker:
    """Test double of the agent worker: takes calls and echoes each caller utterance back."""

    def __init__(
        self,
        nc: NatsClient,
        *,
        worker_id: str = "echo-worker",
        accept: bool = True,
        decline_retryable: bool = False,
        end_on_hangup: bool = True,
    ) -> None:
        self.nc = nc
        self.worker_id = worker_id
        self.accept = accept
        self.decline_retryable = decline_retryable
        self.end_on_hangup = end_on_hangup
        self.requests: list[session_pb2.DispatchRequest] = []
        self.sessions: dict[str, EchoSession] = {}
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(
            subjects.dispatch("default"), queue=subjects.DISPATCH_QUEUE, cb=self._on_dispatch
        )
        await self.nc.flush()

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
        for session in self.sessions.values():
            await session.stop()
        await self.nc.flush()

    async def _on_dispatch(self, msg: Msg) -> None:
        request = session_pb2.DispatchRequest()
        request.ParseFromString(msg.data)
        self.requests.append(request)
        if not self.accept:
            reply = session_pb2.DispatchReply(
                accepted=False,
                worker_id=self.worker_id,
                error=common_pb2.ErrorDetail(
                    reason="WORKER_FULL",
                    message="worker is full",
                    retryable=self.decline_retryable,
                ),
            )
            await msg.respond(reply.SerializeToString())
            return
        session = EchoSession(
            self.nc, request.session_id, self.worker_id, end_on_hangup=self.end_on_hangup
        )
        self.sessions[request.session_id] = session
        await session.start()
        reply = session_pb2.DispatchReply(accepted=True, worker_id=self.worker_id)
        await msg.respond(reply.SerializeToString())
