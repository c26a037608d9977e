"""Waiting on a call's events: shared by the WebRTC and WebSocket test callers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class CallWaits:
    """Event waits of a caller; the transport appends to ``events`` and calls ``_notify``."""

    events: list[dict[str, Any]]
    _waiters: list[asyncio.Future[None]]
    _ended: asyncio.Event

    def _notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for future in waiters:
            if not future.done():
                future.set_result(None)

    async def _wait_until(self, check: Callable[[], T | None], limit_s: float, what: str) -> T:
        try:
            async with asyncio.timeout(limit_s):
                while True:
                    result = check()
                    if result is not None:
                        return result
                    if self._ended.is_set():
                        raise ConnectionError(f"the call ended while waiting for {what}")
                    future = asyncio.get_running_loop().create_future()
                    self._waiters.append(future)
                    await future
        except TimeoutError:
            raise TimeoutError(f"timed out after {limit_s:g} s waiting for {what}") from None

    async def wait_event(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float = 10.0,  # noqa: ASYNC109 - part of the documented API
    ) -> dict[str, Any]:
        """Returns the first received event (including earlier ones) matching ``predicate``.

        Raises:
            TimeoutError: No such event within ``timeout``.
            ConnectionError: The call ended first.
        """

        def check() -> dict[str, Any] | None:
            return next((event for event in self.events if predicate(event)), None)

        return await self._wait_until(check, timeout, "a matching event")

    async def wait_greeting(self, timeout: float = 30.0) -> str:  # noqa: ASYNC109 - as wait_event
        """Waits until the agent's greeting (if it has one) has been played; returns its text."""
        started = await self.wait_event(lambda e: "started" in e, timeout=timeout)
        greeting = str(started["started"].get("greeting", ""))
        if greeting:
            await self.wait_event(
                lambda e: e.get("agent_text", {}).get("is_final", False)
                and not e["agent_text"].get("turn_index"), timeout=timeout)
        return greeting
