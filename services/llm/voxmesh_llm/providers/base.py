"""Base class of LLM providers.

Providers stream text for a list of chat messages. The base class measures time to first token,
translates errors and retries a request only while nothing has been streamed yet (a retry after
the caller already heard part of an answer would repeat it).
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass

from voxmesh.providers import ProviderBase


@dataclass
class ChatMessage:
    """One message of a chat context."""

    role: str
    content: str


@dataclass
class Completion:
    """What a finished stream produced."""

    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    first_token_ms: int = 0


class LLMProvider(ProviderBase):
    """A chat LLM provider."""

    component = "llm"
    model: str = ""

    async def stream(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        completion: Completion,
    ) -> AsyncGenerator[str, None]:
        """Streams text deltas; fills ``completion`` with usage and timing as it goes."""
        started = time.perf_counter()
        got_first = False
        attempt = 0
        while True:
            attempt += 1
            try:
                # Closing this stream closes the provider's at once, which stops its generation
                # (a caller that stops reading early must not leave the model running).
                async with aclosing(
                    self._stream(messages, max_tokens, temperature, completion)
                ) as deltas:
                    async for delta in deltas:
                        if not got_first:
                            got_first = True
                            completion.first_token_ms = int(
                                (time.perf_counter() - started) * 1000)
                        completion.text += delta
                        yield delta
                return
            except GeneratorExit:
                raise
            except Exception as exc:  # noqa: BLE001 - classified by translate_error
                error = self.translate_error(exc)
                if got_first or not error.retryable or attempt >= self.max_attempts:
                    raise error from exc

    async def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` for this model; the base class estimates four characters each."""
        return (len(text) + 3) // 4

    @abstractmethod
    def _stream(
        self,
        messages: list[ChatMessage],
        max_tokens: int,
        temperature: float,
        completion: Completion,
    ) -> AsyncGenerator[str, None]:
        """Provider-specific streaming; sets token counts and finish reason on ``completion``."""
