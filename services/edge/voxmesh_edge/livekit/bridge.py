"""A call carried by a LiveKit room: the caller's audio track in, the agent's track out.

:class:`LiveKitCall` is a transport of the call core (:class:`voxmesh_edge.call.Call`), like the
WebRTC and WebSocket transports: dispatch to a Voxmesh worker, the session's NATS subjects,
barge-in clears, hangup and teardown are the core's; this module moves media and events
between the room and the core.

* Caller audio: the caller's subscribed audio track is read with :class:`rtc.AudioStream`,
  converted (:mod:`.frames`) to PCM16 16 kHz 20 ms frames and published on ``media.in``.
* Agent audio: ``media.out`` audio is converted to 20 ms frames at the track's rate and
  captured into an :class:`rtc.AudioSource` behind a published :class:`rtc.LocalAudioTrack`.
  A barge-in clear empties the edge's queue and calls :meth:`rtc.AudioSource.clear_queue`.
* Events: each ``SessionEvent`` (as JSON, the same text as the WebRTC data channel) is sent as
  a reliable data packet on topic :data:`EVENTS_TOPIC`, so a LiveKit client can show
  transcripts.
* The caller leaving the room hangs up; the worker ending the call leaves the room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from livekit import rtc
from livekit.rtc.room import EventTypes as RoomEvent

from voxmesh import audio
from voxmesh.v1 import session_pb2
from voxmesh_edge.call import Call
from voxmesh_edge.livekit.frames import AGENT_TRACK_RATE, AgentFrameConverter, CallerFrameConverter

if TYPE_CHECKING:
    from voxmesh_edge.server import EdgeServer

log = logging.getLogger("voxmesh.edge.livekit")

#: Data packet topic of session events sent to the room.
EVENTS_TOPIC = "voxmesh.events"
#: Name of the agent's audio track.
AGENT_TRACK_NAME = "voxmesh-agent"
#: Rate at which the caller's track is read (what WebRTC's Opus decodes to, so LiveKit's own
#: resampler is not involved).
CALLER_READ_RATE = 48_000
#: Audio the native source may hold ahead of real time. The worker paces its audio in real
#: time, so this only absorbs jitter; a small queue keeps what a barge-in must drop small.
SOURCE_QUEUE_MS = 200
#: Agent audio queued at the edge beyond this is dropped (the caller's side stopped playing).
_MAX_QUEUED_FRAMES = 60_000 // audio.FRAME_MS
_MAX_PENDING_EVENTS = 500
#: How long a closing call lets the last events and agent audio leave.
_FLUSH_TIMEOUT_S = 1.0

@dataclass(slots=True)
class _AgentFrame:
    frame: rtc.AudioFrame
    turn: int | None


class LiveKitCall(Call):
    """A call whose caller is a participant of a LiveKit room.

    Args:
        edge: The edge the call belongs to (its NATS connection and settings).
        session_id: The session id (uuid4 hex).
        agent: The Voxmesh agent the call is dispatched to.
        room: The connected room.
        caller_identity: Identity of the participant who is the caller.
        sample_rate: Rate of the agent track.
    """

    transport = "livekit"

    def __init__(
        self,
        edge: EdgeServer,
        session_id: str,
        agent: str,
        *,
        room: rtc.Room,
        caller_identity: str,
        sample_rate: int = AGENT_TRACK_RATE,
    ) -> None:
        super().__init__(edge, session_id, agent)
        self.room = room
        self.caller_identity = caller_identity
        self.source = rtc.AudioSource(sample_rate, 1, queue_size_ms=SOURCE_QUEUE_MS)
        self.track = rtc.LocalAudioTrack.create_audio_track(AGENT_TRACK_NAME, self.source)
        self._agent_frames = AgentFrameConverter(sample_rate)
        self._outbox: deque[_AgentFrame] = deque()
        self._outbox_changed = asyncio.Event()
        self._events: deque[str] = deque()
        self._events_changed = asyncio.Event()
        #: Set each time a queued event or frame was handed to the room.
        self._sent = asyncio.Event()
        self._cleared_turn: int | None = None
        self._last_played_turn: int | None = None
        self._caller_track_sid = ""
        self._published_sid = ""
        self._handlers: list[tuple[RoomEvent, Callable[..., None]]] = []
        self._event_failed = False

    # --- setup -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Publishes the agent track, dispatches the call, then listens to the caller.

        Raises:
            CallSetupError: No worker took the call, or NATS is unreachable.
        """
        self._watch_room()
        # Senders first: a worker may play its greeting as soon as it accepts.
        self._spawn(self._send_agent_audio(), "livekit-agent-audio")
        self._spawn(self._send_events(), "livekit-events")
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        publication = await self.room.local_participant.publish_track(self.track, options)
        self._published_sid = publication.sid
        await self.start_session()
        self._listen_to_caller()

    def _watch_room(self) -> None:
        def on_track_subscribed(track: rtc.Track, publication: rtc.RemoteTrackPublication,
                                participant: rtc.RemoteParticipant) -> None:
            if participant.identity == self.caller_identity and self.worker_id:
                self._take_caller_track(track, publication.sid)

        def on_track_unsubscribed(track: rtc.Track, publication: rtc.RemoteTrackPublication,
                                  participant: rtc.RemoteParticipant) -> None:
            if publication.sid == self._caller_track_sid:
                self._caller_track_sid = ""  # its reader stops; a new track may follow

        def on_participant_disconnected(participant: rtc.RemoteParticipant) -> None:
            if participant.identity == self.caller_identity:
                self.hangup_by_caller("caller_left")

        def on_disconnected(*_: Any) -> None:
            self.request_close("room_disconnected")

        handlers: tuple[tuple[RoomEvent, Callable[..., None]], ...] = (
            ("track_subscribed", on_track_subscribed),
            ("track_unsubscribed", on_track_unsubscribed),
            ("participant_disconnected", on_participant_disconnected),
            ("disconnected", on_disconnected))
        for event, handler in handlers:
            self.room.on(event, handler)
            self._handlers.append((event, handler))

    def _listen_to_caller(self) -> None:
        caller = self.room.remote_participants.get(self.caller_identity)
        if caller is None:  # left while the call was being dispatched
            self.hangup_by_caller("caller_left")
            return
        for publication in caller.track_publications.values():
            if publication.track is not None and publication.kind == rtc.TrackKind.KIND_AUDIO:
                self._take_caller_track(publication.track, publication.sid)
                return

    def _take_caller_track(self, track: rtc.Track, sid: str) -> None:
        if track.kind != rtc.TrackKind.KIND_AUDIO or self._caller_track_sid:
            return
        self._caller_track_sid = sid
        log.debug("call %s: listening to track %s of %s", self.session_id, sid,
                  self.caller_identity)
        self._spawn(self._pump_caller_audio(track, sid), "livekit-caller-audio")

    # --- media and events ------------------------------------------------------------------

    async def _pump_caller_audio(self, track: rtc.Track, sid: str) -> None:
        stream = rtc.AudioStream.from_track(track=track, sample_rate=CALLER_READ_RATE,
                                            num_channels=1)
        converter = CallerFrameConverter()
        try:
            async for event in stream:
                if self._caller_track_sid != sid:
                    break  # unsubscribed: a new track may be read by now
                for pcm in converter.push(event.frame):
                    await self.publish_caller_audio(pcm)
        finally:
            if self._caller_track_sid == sid:
                self._caller_track_sid = ""
            await stream.aclose()

    def _play_agent_audio(self, pcm16_16k: bytes, turn_index: int | None) -> None:
        if turn_index is not None and turn_index == self._cleared_turn:
            return  # still in flight when the caller barged in
        if len(self._outbox) >= _MAX_QUEUED_FRAMES:
            log.warning("call %s: agent audio queue full; dropping a chunk", self.session_id)
            return
        for frame in self._agent_frames.push(pcm16_16k):
            self._outbox.append(_AgentFrame(frame, turn_index))
        self._outbox_changed.set()

    async def _send_agent_audio(self) -> None:
        while True:
            while not self._outbox:
                self._outbox_changed.clear()
                await self._outbox_changed.wait()
            item = self._outbox.popleft()
            # Returns at once while the native queue has room; waits (real time) when full.
            await self.source.capture_frame(item.frame)
            self._sent.set()
            self.barge_in.on_agent_audio(bytes(item.frame.data))
            if item.turn is not None and item.turn != self._last_played_turn:
                self._last_played_turn = item.turn
                await self.report_playout_started(item.turn)

    @property
    def queued_audio_ms(self) -> float:
        """Agent audio not yet played: queued at the edge plus in the native source."""
        return len(self._outbox) * audio.FRAME_MS + self.source.queued_duration * 1000

    def _clear_playout(self, clear: session_pb2.ClearPlayout) -> float:
        dropped = self.queued_audio_ms
        self._outbox.clear()
        self.source.clear_queue()
        self._agent_frames.reset()
        if not clear.pause and clear.turn_index:
            # A pause keeps the turn (its audio may resume); a clear drops its late frames.
            self._cleared_turn = clear.turn_index
        return dropped

    def _send_event(self, text: str) -> None:
        if len(self._events) < _MAX_PENDING_EVENTS:
            self._events.append(text)
            self._events_changed.set()

    async def _send_events(self) -> None:
        while True:
            while not self._events:
                self._events_changed.clear()
                await self._events_changed.wait()
            text = self._events[0]
            try:
                await self.room.local_participant.publish_data(
                    text, reliable=True, topic=EVENTS_TOPIC)
            except Exception as exc:  # the SDK raises its own error types for data packets
                if not self._event_failed:  # once per call, not per event
                    log.warning("call %s: cannot send events to the room: %s",
                                self.session_id, exc)
                self._event_failed = True
            self._events.popleft()
            self._sent.set()

    # --- teardown --------------------------------------------------------------------------

    async def _stop_sending(self, linger: bool) -> None:
        if not linger:
            return
        # The worker's last words and the call summary are on their way: let them leave.
        deadline = time.monotonic() + _FLUSH_TIMEOUT_S
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wait_sent(), _FLUSH_TIMEOUT_S)
            await asyncio.wait_for(self.source.wait_for_playout(),
                                   max(deadline - time.monotonic(), 0.0))

    async def _wait_sent(self) -> None:
        """Returns once every queued event and agent frame was handed to the room."""
        while self._events or self._outbox:
            self._sent.clear()
            await self._sent.wait()

    async def _close_transport(self) -> None:
        for event, handler in self._handlers:
            with contextlib.suppress(KeyError, ValueError):
                self.room.off(event, handler)
        self._handlers.clear()
        # The room may already be gone (the caller left, the job is shutting down).
        with contextlib.suppress(Exception):
            if self._published_sid and self.room.isconnected():
                await self.room.local_participant.unpublish_track(self._published_sid)
        with contextlib.suppress(Exception):
            await self.room.disconnect()
        await self.source.aclose()
