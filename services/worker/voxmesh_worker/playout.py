"""Real-time playout of agent audio to the edge.

The worker, not the edge, owns the playout clock: it publishes 20 ms frames at real-time pace
(plus a small lead to absorb scheduling jitter), a few to a message (``message_ms``: every
message costs the worker, NATS and the edge a round of work, whatever its size). That makes "what has the caller heard" a local
question (how many frames of this turn were published), and barge-in a local action (stop
publishing, tell the edge to drop its small buffer).

Caller sound while the agent talks first *pauses* playout: the frames sent ahead of real time
(not heard yet) go back to the front of the queue, the edge drops its buffer, and publishing
stops. If the sound turns out to be a real interruption, :meth:`clear` drops the rest; if it
was noise or "uh-huh", :meth:`resume` carries on from the word the caller last heard.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from nats.aio.client import Client as NatsClient

from voxmesh import subjects
from voxmesh.audio import FRAME_BYTES, FRAME_MS, Framer
from voxmesh.v1 import common_pb2, session_pb2

TURN_HEADER = "Voxmesh-Turn"


class Playout:
    """Paces one call's agent audio onto ``media.out``."""

    def __init__(
        self,
        nc: NatsClient,
        session_id: str,
        *,
        lead_ms: int,
        on_first_frame: Callable[[int], None],
        message_ms: int = FRAME_MS,
    ) -> None:
        """Creates the playout of a session.

        Args:
            nc: NATS connection.
            session_id: The call.
            lead_ms: How far ahead of real time frames may be sent.
            on_first_frame: Called with the turn index when a turn's first frame is published.
            message_ms: Audio per message once a turn is under way (a multiple of 20 ms). A
                message leaves when its last frame is within ``lead_ms`` of real time, so the
                lead varies between ``lead_ms - message_ms + 20`` and ``lead_ms``; a turn's
                first frame never waits for the next.
        """
        self._nc = nc
        self._session_id = session_id
        self._subject = subjects.media_out(session_id)
        self._lead_s = lead_ms / 1000
        self._on_first_frame = on_first_frame
        self._frames: deque[tuple[int, bytes]] = deque()
        self._framer = Framer(FRAME_BYTES)
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._published_ms: dict[int, int] = {}
        self._sequence = 0
        self._timestamp_ms = 0
        self._trace_headers: dict[int, dict[str, str]] = {}
        self._lead_frames = -(-lead_ms // FRAME_MS)
        self._frames_per_message = max(1, message_ms // FRAME_MS)
        #: Recently published frames: the ones a pause takes back.
        self._recent: deque[tuple[int, bytes]] = deque(maxlen=self._lead_frames + 1)
        self._paused = False

    @property
    def paused(self) -> bool:
        """True between :meth:`pause` and :meth:`resume` (or :meth:`clear`)."""
        return self._paused

    def set_trace_headers(self, turn_index: int, headers: dict[str, str]) -> None:
        """Trace context sent with a turn's first frame, so the edge joins the turn's trace."""
        self._trace_headers[turn_index] = headers

    def enqueue(self, turn_index: int, pcm16: bytes) -> None:
        """Queues agent audio (PCM16 16 kHz mono) of a turn."""
        for frame in self._framer.push(pcm16):
            self._frames.append((turn_index, frame))
        if self._frames:
            self._drained.clear()
            self._wake.set()

    def end_turn(self, turn_index: int) -> None:
        """Queues the last partial frame of a turn (padded with silence)."""
        last = self._framer.flush()
        if last is not None:
            self._frames.append((turn_index, last))
            self._drained.clear()
            self._wake.set()

    def published_ms(self, turn_index: int) -> int:
        """Milliseconds of a turn's audio published so far."""
        return self._published_ms.get(turn_index, 0)

    def heard_ms(self, turn_index: int) -> int:
        """Milliseconds of a turn's audio the caller has heard (published minus the lead)."""
        lead = 0 if self._paused else self._lead_frames * FRAME_MS
        return max(0, self.published_ms(turn_index) - lead)

    async def pause(self, turn_index: int) -> int:
        """Stops playout, keeping what was not heard yet; returns the heard milliseconds."""
        if not self._paused:
            self._paused = True
            # Frames published ahead of real time were not heard yet: take them back.
            for _ in range(self._lead_frames):
                if not self._recent or self._recent[-1][0] != turn_index:
                    break
                self._frames.appendleft(self._recent.pop())
                self._published_ms[turn_index] -= FRAME_MS
                self._drained.clear()  # the turn is not over until these are heard
            self._recent.clear()
            await self._send_clear(turn_index, pause=True)
        return self.published_ms(turn_index)

    def resume(self) -> None:
        """Carries on after :meth:`pause` (the caller's sound was not an interruption)."""
        if self._paused:
            self._paused = False
            self._wake.set()

    async def clear(self, turn_index: int) -> None:
        """Drops queued audio and tells the edge to drop its buffer (barge-in)."""
        self._frames.clear()
        self._framer.clear()
        self._recent.clear()
        self._paused = False
        self._drained.set()
        await self._send_clear(turn_index, pause=False)

    async def _send_clear(self, turn_index: int, *, pause: bool) -> None:
        control = session_pb2.MediaControl(
            clear=session_pb2.ClearPlayout(turn_index=turn_index, pause=pause))
        await self._nc.publish(
            subjects.media_control(self._session_id), control.SerializeToString()
        )

    async def wait_drained(self) -> None:
        """Returns once every queued frame has been published."""
        await self._drained.wait()

    async def run(self) -> None:
        """Publishes frames at real-time pace until cancelled."""
        due: float | None = None
        while True:
            if self._paused:
                due = None
                self._wake.clear()
                await self._wake.wait()
                continue
            if not self._frames:
                self._drained.set()
                due = None
                self._wake.clear()
                await self._wake.wait()
                continue
            now = time.monotonic()
            if due is None:
                due = now
            turn_index = self._frames[0][0]
            count = 1
            if turn_index in self._published_ms:  # under way: fill the message
                while (count < self._frames_per_message and count < len(self._frames)
                       and self._frames[count][0] == turn_index):
                    count += 1
            last_due = due + (count - 1) * FRAME_MS / 1000
            wait = last_due - self._lead_s - now
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            await self._publish([self._frames.popleft()[1] for _ in range(count)], turn_index)
            due = last_due + FRAME_MS / 1000
            # After a stall (e.g. a slow TTS sentence) restart the clock instead of bursting.
            if due < time.monotonic() - 0.2:
                due = None

    async def _publish(self, frames: list[bytes], turn_index: int) -> None:
        for frame in frames:
            self._recent.append((turn_index, frame))
        chunk = common_pb2.AudioChunk(
            data=b"".join(frames), sequence=self._sequence, timestamp_ms=self._timestamp_ms)
        self._sequence += 1
        self._timestamp_ms += len(frames) * FRAME_MS
        first = turn_index not in self._published_ms
        self._published_ms[turn_index] = (self._published_ms.get(turn_index, 0)
                                          + len(frames) * FRAME_MS)
        headers = {TURN_HEADER: str(turn_index)}
        if first:
            headers.update(self._trace_headers.pop(turn_index, {}))
        await self._nc.publish(self._subject, chunk.SerializeToString(), headers=headers)
        if first:
            self._on_first_frame(turn_index)
