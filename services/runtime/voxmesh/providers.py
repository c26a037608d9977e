"""What every provider base class (STT, TTS, LLM) shares.

Blocking-work executors, retries and error translation.

Capability bases (``voxmesh_stt.providers.base.STTProvider`` and friends) derive from
:class:`ProviderBase`; concrete providers only implement the model call. A provider signals
failures by raising; the base class turns unknown exceptions into :class:`ProviderError`,
retries the retryable ones with backoff, and lets the service edge map them to gRPC statuses.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar, ParamSpec, TypeVar

from voxmesh.errors import ProviderError, VoxmeshError

P = ParamSpec("P")
T = TypeVar("T")

log = logging.getLogger("voxmesh.providers")


class ProviderBase:
    """Shared machinery of model providers.

    Attributes:
        name: Provider id used in config and telemetry, e.g. ``"whisper-local"``.
        component: Capability, ``"stt"``, ``"tts"`` or ``"llm"``.
        max_attempts: Attempts for retryable errors (1 = no retry).
    """

    name: ClassVar[str] = "unnamed"
    component: ClassVar[str] = "provider"
    max_attempts: int = 2
    base_backoff_s: float = 0.05

    def __init__(self) -> None:
        """Creates the provider; heavy loading happens in :meth:`load`."""
        # One inference thread per provider: local models already use every core internally,
        # and running two decodes at once only makes both slower.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name)

    async def load(self) -> None:
        """Loads models or checks credentials. Called once before the service reports SERVING."""

    async def aclose(self) -> None:
        """Releases resources."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def run_blocking(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Runs blocking model code on the provider's inference thread, off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    def translate_error(self, exc: BaseException) -> VoxmeshError:
        """Maps an exception raised by the provider's SDK to a :class:`VoxmeshError`.

        Providers override this to classify their SDK's errors as retryable or fatal.
        """
        if isinstance(exc, VoxmeshError):
            return exc
        return ProviderError(
            f"{self.name} failed: {type(exc).__name__}: {exc}",
            reason="PROVIDER_FAILED",
            component=self.name,
            retryable=False,
        )

    async def with_retries(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Awaits ``attempt()``; retries retryable failures with jittered exponential backoff."""
        for number in range(1, self.max_attempts + 1):
            try:
                return await attempt()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure is classified below
                error = self.translate_error(exc)
                if not error.retryable or number == self.max_attempts:
                    raise error from exc
                delay = self.base_backoff_s * (2 ** (number - 1)) * (1 + random.random())
                log.warning("%s attempt %d failed (%s); retrying in %.0f ms",
                            self.name, number, error.reason, delay * 1000)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover
