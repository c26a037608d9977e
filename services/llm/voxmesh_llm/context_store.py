"""Conversation context per session, in a NATS JetStream key-value bucket.

Keeping context out of the LLM process makes the service stateless per request: any replica can
serve any turn. Writes use optimistic concurrency (compare-and-set on the key's revision), so
two replicas never overwrite each other's messages.

Each replica remembers the last version it read or wrote of a session. A change starts from it
instead of reading the bucket first, which takes a round trip to JetStream off the start of
every answer; if another replica wrote in between, the compare-and-set fails and the change is
re-run on a fresh read, exactly as after a lost race.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from voxmesh.errors import InvalidInputError, NotFoundError, UnavailableError
from voxmesh_llm.history import StoredMessage, trim

log = logging.getLogger(__name__)

__all__ = ["Change", "ContextStore", "StoredMessage", "validate_session_id"]

_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")

#: Turns the stored messages into the new ones; None leaves the context as it is.
Change = Callable[[list[StoredMessage]], list[StoredMessage] | None]


def validate_session_id(session_id: str) -> None:
    """Rejects ids that are empty or not safe as KV keys."""
    if not _SESSION_ID.match(session_id):
        raise InvalidInputError(
            "session_id must be 1-128 characters of letters, digits, '-' or '_'",
            reason="SESSION_ID_INVALID", field="turn.session_id", component="llm")


def _not_found(session_id: str) -> NotFoundError:
    return NotFoundError(
        f"unknown session {session_id!r}: it has no stored context",
        reason="SESSION_NOT_FOUND", field="session_id", component="llm")


class ContextStore:
    """Reads and updates session contexts in a JetStream KV bucket."""

    def __init__(self, max_messages: int, remembered_sessions: int = 4096) -> None:
        """Creates a store; :meth:`attach` gives it its bucket once NATS is connected.

        Args:
            max_messages: Most messages kept per session.
            remembered_sessions: Sessions whose last known version is kept in memory.
        """
        self._bucket: KeyValue | None = None
        self._max_messages = max_messages
        self._remembered_sessions = remembered_sessions
        #: Last version read or written, per session: (messages, revision).
        self._known: OrderedDict[str, tuple[list[StoredMessage], int]] = OrderedDict()

    def _remember(self, session_id: str, messages: list[StoredMessage], revision: int) -> None:
        self._known[session_id] = (messages, revision)
        self._known.move_to_end(session_id)
        while len(self._known) > self._remembered_sessions:
            self._known.popitem(last=False)

    def attach(self, bucket: KeyValue) -> None:
        """Sets the opened KV bucket."""
        self._bucket = bucket

    @property
    def _kv(self) -> KeyValue:
        if self._bucket is None:
            raise UnavailableError("context store is not connected to NATS yet",
                                   reason="CONTEXT_STORE_UNAVAILABLE", component="llm")
        return self._bucket

    async def load(self, session_id: str) -> tuple[list[StoredMessage], int | None]:
        """Returns the messages and the key revision (None if the session has no context)."""
        validate_session_id(session_id)
        try:
            entry = await self._kv.get(session_id)
        except KeyNotFoundError:
            self._known.pop(session_id, None)
            return [], None
        if entry.value is None or entry.operation in ("DEL", "PURGE") or entry.revision is None:
            self._known.pop(session_id, None)
            return [], None
        messages = [StoredMessage.from_dict(m) for m in json.loads(entry.value)]
        self._remember(session_id, messages, entry.revision)
        return list(messages), entry.revision

    async def require(self, session_id: str) -> list[StoredMessage]:
        """Like :meth:`load`, but an unknown session is a NOT_FOUND error."""
        messages, revision = await self.load(session_id)
        if revision is None:
            raise _not_found(session_id)
        return messages

    async def append(self, session_id: str, *messages: StoredMessage) -> list[StoredMessage]:
        """Appends messages, retrying on concurrent writers; returns the stored messages."""
        return await self.modify(session_id, lambda current: [*current, *messages])

    async def modify(
        self, session_id: str, change: Change, *, must_exist: bool = False
    ) -> list[StoredMessage]:
        """Applies ``change`` with compare-and-set, re-running it when another writer won.

        Args:
            session_id: The session.
            change: Called with the current messages (possibly several times); may raise.
            must_exist: An unknown session is a NOT_FOUND error instead of a new context.

        Returns:
            The messages now stored.

        Raises:
            NotFoundError: ``must_exist`` and the session has no context.
        """
        validate_session_id(session_id)
        known = self._known.get(session_id)
        revision: int | None
        for _ in range(10):
            if known is not None:
                current, revision = list(known[0]), known[1]
            else:
                current, revision = await self.load(session_id)
            known = None  # a failed compare-and-set re-reads the bucket
            if revision is None and must_exist:
                raise _not_found(session_id)
            updated = change(current)
            if updated is None:
                return current
            # Last resort against unbounded growth (summaries normally keep well below it).
            updated = trim(updated, self._max_messages)
            payload = json.dumps([asdict(m) for m in updated]).encode()
            try:
                if revision is None:
                    new_revision = await self._kv.create(session_id, payload)
                else:
                    new_revision = await self._kv.update(session_id, payload, last=revision)
            except KeyWrongLastSequenceError:
                self._known.pop(session_id, None)
                continue
            self._remember(session_id, list(updated), new_revision)
            return updated
        raise RuntimeError(f"context of {session_id} changed concurrently 10 times in a row")

    async def modify_ahead(
        self, session_id: str, change: Change
    ) -> tuple[list[StoredMessage], asyncio.Future[list[StoredMessage]]]:
        """Like :meth:`modify`, but hands back the new messages before they are written.

        When this replica knows the session's last version, ``change`` is applied to it at
        once and the compare-and-set write runs in a task: a caller can start work on the new
        messages (an LLM request) while the write is under way. The future resolves to what was
        stored. If another replica wrote in between, the write re-runs ``change`` on the newer
        version, and the future's messages differ from the ones handed back: work built on
        those must start over. An unknown session is read and written first, as by
        :meth:`modify`, and the future is already done.

        Await the future through :func:`asyncio.shield` where the caller may be cancelled: a
        cancelled wait must not cancel the write.

        Raises:
            Whatever ``change`` raises, before anything is written.
        """
        validate_session_id(session_id)
        known = self._known.get(session_id)
        written: asyncio.Future[list[StoredMessage]]
        if known is None:
            written = asyncio.get_running_loop().create_future()
            written.set_result(await self.modify(session_id, change))
            return list(written.result()), written
        updated = change(list(known[0]))
        expected = known[0] if updated is None else trim(updated, self._max_messages)
        written = asyncio.create_task(self.modify(session_id, change), name="context-write")
        written.add_done_callback(_retrieve_failure)
        return list(expected), written

    async def delete(self, session_id: str) -> None:
        """Deletes a session's context; unknown sessions are NOT_FOUND."""
        await self.require(session_id)
        self._known.pop(session_id, None)
        await self._kv.delete(session_id)


def _retrieve_failure(task: asyncio.Future[list[StoredMessage]]) -> None:
    # A failed write is reported to whoever awaits it; a caller that went away (a cancelled
    # Generate) leaves it unawaited, so it is logged here instead of as "never retrieved".
    if not task.cancelled() and (error := task.exception()) is not None:
        log.warning("context write failed: %s", error)
