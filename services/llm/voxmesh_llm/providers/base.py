"""Base class of LLM providers.

Providers stream output for a list of chat messages: text deltas, and tool calls for providers
whose API returns them as structured data (:attr:`LLMProvider.native_tools`). Providers that
only produce text (the embedded local model) get the tool listing in their system prompt and
write calls as text, which the service parses.

The base class measures time to first output, translates errors and retries a request only
while nothing has been streamed yet (a retry after the caller already heard part of an answer
would repeat it).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from abc import abstractmethod
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from voxmesh.providers import ProviderBase

log = logging.getLogger("voxmesh.llm")


@dataclass(frozen=True)
class ToolSpec:
    """A tool the model may call, as the agent defined it.

    Attributes:
        name: Function name.
        description: What it does, for the model.
        parameters: JSON schema of the arguments object.
    """

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class ToolCallRequest:
    """A tool call: streamed by a native-tools provider, or stored in an assistant message.

    Attributes:
        call_id: The provider's id for the call (``call_...``); results refer to it.
        name: Function name.
        arguments_json: The arguments as the model wrote them (normally a JSON object).
    """

    call_id: str
    name: str
    arguments_json: str


#: One item of a provider's stream.
LLMOutput = str | ToolCallRequest


@dataclass
class ChatMessage:
    """One message of a chat context.

    Attributes:
        role: ``system``, ``user``, ``assistant`` or ``tool``.
        content: The text; for tool messages the result JSON.
        tool_calls: Assistant messages of native-tools providers: the calls it made.
        tool_call_id: Tool messages: the call they answer.
    """

    role: str
    content: str
    tool_calls: list[ToolCallRequest] = field(default_factory=list)
    tool_call_id: str = ""


@dataclass
class Completion:
    """What a finished stream produced, and which provider produced it."""

    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    first_token_ms: int = 0
    provider: str = ""
    model: str = ""

    def restart(self, provider: str, model: str) -> None:
        """Clears what an earlier provider left: the next one answers from scratch."""
        self.text, self.prompt_tokens, self.completion_tokens = "", 0, 0
        self.finish_reason, self.first_token_ms = "stop", 0
        self.provider, self.model = provider, model


class LLMProvider(ProviderBase):
    """A chat LLM provider.

    Attributes:
        native_tools: The provider takes tool definitions as API parameters and streams tool
            calls as :class:`ToolCallRequest`; its context carries assistant ``tool_calls`` and
            ``tool`` messages with their ``tool_call_id``. Otherwise tools are described in the
            system prompt and calls come back as text.
    """

    component: ClassVar[str] = "llm"
    model: str = ""
    native_tools: bool = False

    async def stream(
        self,
        messages: list[ChatMessage],
        *,
        tools: Sequence[ToolSpec] = (),
        max_tokens: int,
        temperature: float,
        completion: Completion,
    ) -> AsyncGenerator[LLMOutput, None]:
        """Streams text deltas and tool calls; fills ``completion`` with usage and timing.

        Args:
            messages: The chat, system prompt first.
            tools: Tools to offer as API parameters (native-tools providers only; others get
                them in the system prompt and ignore this).
            max_tokens: Most tokens to generate.
            temperature: Sampling temperature.
            completion: Filled in as the stream goes.

        Raises:
            VoxmeshError: The provider failed (after the retries it was allowed).
        """
        started = time.perf_counter()
        got_first = False
        attempt = 0
        while True:
            attempt += 1
            try:
                # Closing this stream closes the provider's at once, which stops its generation
                # (a caller that stops reading early must not leave the model running).
                async with aclosing(
                    self._stream(messages, tools, max_tokens, temperature, completion)
                ) as outputs:
                    async for output in outputs:
                        if not got_first:
                            got_first = True
                            completion.first_token_ms = int(
                                (time.perf_counter() - started) * 1000)
                        if isinstance(output, str):
                            completion.text += output
                        yield output
                return
            except GeneratorExit:
                raise
            except Exception as exc:  # noqa: BLE001 - classified by translate_error
                error = self.translate_error(exc)
                if got_first or not error.retryable or attempt >= self.max_attempts:
                    raise error from exc
                delay = self.base_backoff_s * (2 ** (attempt - 1)) * (1 + random.random())
                log.warning("%s attempt %d failed (%s); retrying in %.0f ms", self.name, attempt,
                            error.reason, delay * 1000)
                await asyncio.sleep(delay)

    async def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` for this model; the base class estimates four characters each."""
        return (len(text) + 3) // 4

    @abstractmethod
    def _stream(
        self,
        messages: list[ChatMessage],
        tools: Sequence[ToolSpec],
        max_tokens: int,
        temperature: float,
        completion: Completion,
    ) -> AsyncGenerator[LLMOutput, None]:
        """Provider-specific streaming; sets token counts and finish reason on ``completion``."""
