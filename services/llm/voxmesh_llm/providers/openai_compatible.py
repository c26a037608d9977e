"""OpenAI and OpenAI-compatible servers (vLLM, llama.cpp server) through the official SDK.

Chat completions are streamed with :class:`openai.AsyncOpenAI`. Two tool formats:

* ``native`` (default): tool definitions go out as ``tools=[{"type": "function", ...}]`` on
  every request (the same list each time, so it stays part of the cached prefix), streamed
  ``tool_calls`` deltas are assembled into :class:`ToolCallRequest` items, and the context
  carries the assistant's ``tool_calls`` and ``role: "tool"`` results with ``tool_call_id``.
* ``text``: for small models behind servers without a tool-call parser (llama.cpp server with
  Qwen 0.5B), the prompt is built as for the embedded local model and calls are parsed from the
  text by the service.

Either way a call written as text in ``content`` is still found by the service's parser.

The SDK's own retries are off (``max_retries=0``): the base class retries retryable errors
(connection, timeout, 429, 5xx) before the first token only, and the service falls over to the
next provider of its list. The API key lives in a :class:`~pydantic.SecretStr` and never
reaches a log line, span or error message.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import SecretStr

from voxmesh.credentials import rejected_key_error
from voxmesh.errors import ConfigError, ProviderError, VoxmeshError
from voxmesh_llm.providers.base import (
    ChatMessage,
    Completion,
    LLMOutput,
    LLMProvider,
    ToolCallRequest,
    ToolSpec,
)

if TYPE_CHECKING:
    from openai import AsyncOpenAI

log = logging.getLogger("voxmesh.llm")
# The SDK's HTTP client logs every request at INFO: one line per turn is noise in a service.
for _name in ("httpx", "httpx2"):
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(logging.WARNING)

OPENAI_BASE_URL = "https://api.openai.com/v1"
SETTING_ENV = "VOXMESH_LLM_API_KEY"
VENDOR_ENV = "OPENAI_API_KEY"
#: Sent when the server needs no key (``api_key_required=false``); vLLM's docs use the same.
NO_KEY = "EMPTY"
#: Error types of mid-stream ``{"error": ...}`` events that a retry may fix.
_RETRYABLE_ERROR_TYPES = frozenset({"server_error", "rate_limit_exceeded", "overloaded_error",
                                    "timeout", "service_unavailable"})

ToolFormat = Literal["native", "text"]
MaxTokensParam = Literal["max_tokens", "max_completion_tokens"]


@dataclass
class _PartialCall:
    """A tool call whose pieces are still streaming in."""

    call_id: str = ""
    name: str = ""
    arguments: str = ""


class OpenAICompatibleLLM(LLMProvider):
    """Streams chat completions from an OpenAI-compatible API."""

    name = "openai"

    def __init__(
        self,
        *,
        api_key: SecretStr | None,
        base_url: str,
        model: str,
        request_timeout_s: float,
        tool_format: ToolFormat = "native",
        max_tokens_param: MaxTokensParam = "max_tokens",
    ) -> None:
        """Creates the provider; :meth:`load` checks the key.

        Args:
            api_key: The key, or None for a server that needs none.
            base_url: API root ending in ``/v1``; empty for OpenAI itself.
            model: Model id sent with every request.
            request_timeout_s: Limit on connecting, on the wait for the response and on each
                gap between streamed chunks.
            tool_format: ``native`` or ``text`` (see the module docstring).
            max_tokens_param: Name of the output limit: OpenAI's newer models only take
                ``max_completion_tokens``; some compatible servers only ``max_tokens``.

        Raises:
            ConfigError: The ``openai`` package is not installed, or a setting is invalid.
        """
        super().__init__()
        try:
            from openai import AsyncOpenAI, DefaultAioHttpClient
        except ImportError:  # pragma: no cover - the cloud extra is installed in every image
            raise ConfigError(
                "the openai LLM provider needs the openai package: "
                "pip install 'voxmesh[cloud]'") from None
        if not model.strip():
            raise ConfigError("VOXMESH_LLM_MODEL: the openai provider needs a model id")
        self.model = model
        self.native_tools = tool_format == "native"
        self._max_tokens_param = max_tokens_param
        self._api_key = api_key
        self._base_url = (base_url or OPENAI_BASE_URL).rstrip("/")
        self._client: AsyncOpenAI = AsyncOpenAI(
            api_key=api_key.get_secret_value() if api_key is not None else NO_KEY,
            base_url=self._base_url,
            timeout=request_timeout_s,
            max_retries=0,
            # The SDK's aiohttp transport: the request reaches the server sooner than through
            # its default httpx transport (bench/overhead_openai.py).
            http_client=DefaultAioHttpClient(),
        )

    def __repr__(self) -> str:
        return f"OpenAICompatibleLLM(base_url={self._base_url!r}, model={self.model!r})"

    async def load(self) -> None:
        """Lists the server's models: a rejected key fails here, before the service is ready.

        Any other failure (server down, no ``/models`` route) is logged and left to the
        requests, which retry and fall over: an upstream outage must not stop the service.

        Raises:
            ProviderError: The server rejected the key (401/403), reason
                ``PROVIDER_AUTH_FAILED``.
        """
        try:
            page = await self._client.models.list()
        except Exception as exc:  # noqa: BLE001 - classified below
            error = self.translate_error(exc)
            if error.reason == "PROVIDER_AUTH_FAILED":
                raise error from None
            log.warning("openai: could not list models at %s (%s); requests will retry",
                        self._base_url, error.message)
            return
        ids = [model.id for model in page.data]
        if ids and self.model not in ids:
            log.warning("openai: %s does not list model %r (it lists %s)", self._base_url,
                        self.model, ", ".join(ids[:5]))
        log.info("openai: %s reachable, model %s", self._base_url, self.model)

    async def aclose(self) -> None:
        """Closes the HTTP connections."""
        await self._client.close()
        await super().aclose()

    def translate_error(self, exc: BaseException) -> VoxmeshError:
        """Classifies the SDK's exceptions: network, timeout, 429 and 5xx are retryable."""
        import openai

        if isinstance(exc, VoxmeshError):
            return exc
        if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
            return rejected_key_error(self.name, SETTING_ENV, VENDOR_ENV)
        if isinstance(exc, openai.APITimeoutError) and not _refused(exc):
            return self._error("timed out", "PROVIDER_TIMEOUT", retryable=True)
        if isinstance(exc, openai.APIConnectionError):
            return self._error(f"unreachable at {self._base_url}", "PROVIDER_UNAVAILABLE",
                               retryable=True)
        if isinstance(exc, openai.RateLimitError):
            return self._error(f"rate limited (HTTP 429): {self._message(exc)}",
                               "PROVIDER_RATE_LIMITED", retryable=True)
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            if status >= 500:
                return self._error(f"server error (HTTP {status}): {self._message(exc)}",
                                   "PROVIDER_UNAVAILABLE", retryable=True)
            return self._error(f"rejected the request (HTTP {status}): {self._message(exc)}",
                               "PROVIDER_REJECTED_REQUEST", retryable=False)
        if isinstance(exc, openai.APIError):
            # An {"error": ...} event in the middle of the stream: no status, only its type.
            body = exc.body if isinstance(exc.body, dict) else {}
            kind = str(body.get("type") or body.get("code") or "")
            return self._error(f"stream error ({kind or 'unknown'}): {self._message(exc)}",
                               "PROVIDER_STREAM_ERROR",
                               retryable=kind in _RETRYABLE_ERROR_TYPES)
        return ProviderError(
            f"{self.name} failed: {type(exc).__name__}: {self._scrub(str(exc))}",
            reason="PROVIDER_FAILED", component=self.name, retryable=False)

    def _error(self, what: str, reason: str, *, retryable: bool) -> ProviderError:
        return ProviderError(f"{self.name} ({self.model}) {what}", reason=reason,
                             component=self.name, retryable=retryable)

    def _message(self, exc: Any) -> str:
        return self._scrub(str(getattr(exc, "message", "") or exc))[:300]

    def _scrub(self, text: str) -> str:
        # Servers may echo what they were sent; the key must never travel on in a message.
        if self._api_key is None:
            return text
        return text.replace(self._api_key.get_secret_value(), "**********")

    def _wire_message(self, message: ChatMessage) -> dict[str, Any]:
        wire: dict[str, Any] = {"role": message.role}
        if message.tool_calls:
            # Content is optional next to tool_calls; llama.cpp's server rejects null.
            if message.content:
                wire["content"] = message.content
            wire["tool_calls"] = [
                {"id": call.call_id, "type": "function",
                 "function": {"name": call.name, "arguments": call.arguments_json}}
                for call in message.tool_calls]
        else:
            wire["content"] = message.content
        if message.role == "tool":
            wire["tool_call_id"] = message.tool_call_id
        return wire

    async def _stream(
        self,
        messages: list[ChatMessage],
        tools: Sequence[ToolSpec],
        max_tokens: int,
        temperature: float,
        completion: Completion,
    ) -> AsyncGenerator[LLMOutput, None]:
        from openai import AsyncStream
        from openai.types.chat import ChatCompletion, ChatCompletionChunk

        body: dict[str, Any] = {
            "model": self.model,
            "messages": [self._wire_message(m) for m in messages],
            "stream": True,
            # Usage arrives in a last chunk with no choices; servers that ignore this
            # (llama.cpp's) leave the counts to be estimated below.
            "stream_options": {"include_usage": True},
            "temperature": temperature,
            self._max_tokens_param: max_tokens,
        }
        if tools and self.native_tools:
            body["tools"] = [{"type": "function", "function": {
                "name": tool.name, "description": tool.description,
                "parameters": tool.parameters}} for tool in tools]
        # The SDK's documented route for raw requests (client.post) rather than
        # chat.completions.create(): the body is already wire JSON, and create() walks it
        # against its TypedDicts first, 1.3 ms for a short chat and 5 ms for twenty messages
        # with tools on this machine, all of it before the request leaves. Auth, timeouts,
        # error classes and SSE parsing into ChatCompletionChunk are the SDK's either way.
        stream = await self._client.post(
            "/chat/completions", body=body, cast_to=ChatCompletion,
            options={"security": {"bearer_auth": True}}, stream=True,
            stream_cls=AsyncStream[ChatCompletionChunk])
        calls: dict[int, _PartialCall] = {}
        chunks = 0
        usage_seen = False
        async with stream:  # closing the stream closes the response, which stops generation
            async for chunk in stream:
                if chunk.usage is not None:
                    usage_seen = True
                    completion.prompt_tokens = chunk.usage.prompt_tokens
                    completion.completion_tokens = chunk.usage.completion_tokens
                for choice in chunk.choices or ():
                    delta = choice.delta
                    for part in delta.tool_calls or ():
                        call = calls.setdefault(part.index, _PartialCall())
                        call.call_id = part.id or call.call_id
                        if part.function is not None:
                            call.name += part.function.name or ""
                            call.arguments += part.function.arguments or ""
                    if delta.content:
                        chunks += 1
                        yield delta.content
                    if choice.finish_reason:
                        completion.finish_reason = choice.finish_reason
        if not usage_seen:
            completion.completion_tokens = chunks + len(calls)
            completion.prompt_tokens = sum(
                [await self.count_tokens(m.content) for m in messages])
        # Calls are complete only once the stream has ended; the worker runs them after the
        # step anyway.
        for index in sorted(calls):
            call = calls[index]
            yield ToolCallRequest(call.call_id, call.name.strip().rstrip(":"),
                                  call.arguments or "{}")


def _refused(exc: BaseException) -> bool:
    """Whether a "timeout" was really a failed connection (refused, reset, no route).

    The SDK's aiohttp transport maps every aiohttp connection error to a connect timeout; the
    cause chain still holds the socket error.
    """
    cause = exc.__cause__
    while cause is not None:
        if isinstance(cause, OSError) and not isinstance(cause, TimeoutError):
            return True
        cause = cause.__cause__
    return False
