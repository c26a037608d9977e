"""A scripted OpenAI chat-completions server on loopback, for what a real server can't do on
demand: 5xx, 429, 400, a slow or stalled response, native ``tool_calls`` deltas, usage chunks.

It speaks the documented wire format, so the official ``openai`` SDK talks to it unmodified
through its ``base_url``:

* ``GET /v1/models`` lists models (API reference, "Models: list").
* ``POST /v1/chat/completions`` with ``"stream": true`` answers ``text/event-stream``: one
  ``data: {chat.completion.chunk}`` event per chunk, then ``data: [DONE]``. The first chunk's
  delta carries ``role: "assistant"``; tool calls stream as ``delta.tool_calls`` items with an
  ``index``, the first piece with ``id``, ``type`` and ``function.name``, later pieces with
  ``function.arguments`` fragments; the last choice chunk has ``finish_reason``; with
  ``stream_options.include_usage`` a final chunk has ``"choices": []`` and ``usage``
  (https://platform.openai.com/docs/api-reference/chat-streaming/streaming and
  https://platform.openai.com/docs/guides/function-calling#streaming).
* Errors are ``{"error": {"message", "type", "param", "code"}}`` with the HTTP status
  (https://platform.openai.com/docs/guides/error-codes): 401 ``invalid_api_key`` for a wrong
  bearer key, and whatever a test scripts (400, 429, 500, 503).

Every chat request body and its headers are recorded for the test to inspect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from voxmesh.cli.stack import free_port


@dataclass
class Scripted:
    """One scripted answer to a chat request.

    Attributes:
        status: HTTP status; not 200 answers with an error body.
        error_type: ``error.type`` of an error body.
        message: ``error.message`` of an error body.
        headers_delay_s: Wait before the response starts (a slow server).
        chunk_delay_s: Wait before each chunk.
        deltas: ``choices[0].delta`` of each chunk after the role chunk.
        finish_reason: Of the last choice chunk.
        stall_after: Stop sending (hold the connection open) after this many chunks.
        usage: ``(prompt_tokens, completion_tokens)`` for the usage chunk, if asked for.
        error_event: Sent as ``data: {"error": ...}`` in place of the stream (an upstream
            failure after the 200 status line).
    """

    status: int = 200
    error_type: str = ""
    message: str = ""
    headers_delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    deltas: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str = "stop"
    stall_after: int | None = None
    usage: tuple[int, int] | None = None
    error_event: dict[str, Any] | None = None


def text(*pieces: str, usage: tuple[int, int] | None = None, **kwargs: Any) -> Scripted:
    """A text answer streamed in ``pieces``."""
    return Scripted(deltas=[{"content": piece} for piece in pieces],
                    usage=usage or (42, len(pieces)), **kwargs)


def tool_calls(*calls: tuple[str, str, str], text_first: str = "", pieces: int = 3) -> Scripted:
    """Native tool calls ``(id, name, arguments_json)``, each call's arguments in ``pieces``."""
    deltas: list[dict[str, Any]] = [{"content": text_first}] if text_first else []
    for index, (call_id, name, arguments) in enumerate(calls):
        deltas.append({"tool_calls": [{"index": index, "id": call_id, "type": "function",
                                       "function": {"name": name, "arguments": ""}}]})
        step = max(1, -(-len(arguments) // pieces))
        for start in range(0, len(arguments), step):
            deltas.append({"tool_calls": [{"index": index, "function": {
                "arguments": arguments[start:start + step]}}]})
    return Scripted(deltas=deltas, finish_reason="tool_calls", usage=(50, 12))


def error(status: int, error_type: str, message: str) -> Scripted:
    """An error answer."""
    return Scripted(status=status, error_type=error_type, message=message)


class FakeOpenAI:
    """The server. Use as ``async with FakeOpenAI(api_key=...) as server``.

    Attributes:
        requests: Bodies of the chat requests, in order.
        headers: Their headers.
        model_lists: ``GET /v1/models`` requests seen.
        script: Answers still to give, in order; :attr:`default` once it is empty.
        default: The answer when the script is empty.
    """

    def __init__(self, *, api_key: str, model: str = "gpt-4o-mini") -> None:
        """Creates the server; it listens once entered."""
        self.api_key = api_key
        self.model = model
        self.port = free_port()
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.model_lists = 0
        self.script: deque[Scripted] = deque()
        self.default = text("Hello", " there.")
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()

    @property
    def base_url(self) -> str:
        """API root for the SDK's ``base_url``."""
        return f"http://127.0.0.1:{self.port}/v1"

    async def __aenter__(self) -> FakeOpenAI:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing.set()  # slow and stalled answers end now
        if self._runner is not None:
            await self._runner.cleanup()

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    def _key_rejected(self, request: web.Request) -> web.Response:
        # OpenAI names the key it got (masked); this server echoes it whole, so a test can
        # prove the provider never passes a server's auth message on.
        sent = request.headers.get("Authorization", "").removeprefix("Bearer ")
        return _error_response(401, "invalid_request_error",
                               f"Incorrect API key provided: {sent}.", code="invalid_api_key")

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    async def _models(self, request: web.Request) -> web.Response:
        self.model_lists += 1
        if not self._authorized(request):
            return self._key_rejected(request)
        return web.json_response({"object": "list", "data": [
            {"id": self.model, "object": "model", "created": 1686935002, "owned_by": "system"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        if not self._authorized(request):
            return self._key_rejected(request)
        answer = self.script.popleft() if self.script else self.default
        if answer.headers_delay_s:
            await self._pause(answer.headers_delay_s)
            if request.transport is None or request.transport.is_closing():
                return web.Response(status=499)  # the client gave up; nobody to answer
        if answer.status != 200:
            return _error_response(answer.status, answer.error_type, answer.message)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        created = int(time.time())
        if answer.error_event is not None:
            await response.write(f"data: {json.dumps({'error': answer.error_event})}\n\n".encode())
            return response

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            data = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": created,
                    "model": body.get("model", self.model), "system_fingerprint": "fp_fake",
                    "choices": choices, **extra}
            return f"data: {json.dumps(data)}\n\n".encode()

        deltas = [{"role": "assistant", "content": ""}, *answer.deltas]
        for number, delta in enumerate(deltas):
            if answer.stall_after is not None and number >= answer.stall_after:
                await self._closing.wait()  # hold the connection open until the server stops
                return response
            if answer.chunk_delay_s:
                await self._pause(answer.chunk_delay_s)
            await response.write(chunk([{"index": 0, "delta": delta, "logprobs": None,
                                         "finish_reason": None}]))
        await response.write(chunk([{"index": 0, "delta": {}, "logprobs": None,
                                     "finish_reason": answer.finish_reason}]))
        if (body.get("stream_options") or {}).get("include_usage") and answer.usage:
            prompt, completion = answer.usage
            await response.write(chunk([], usage={
                "prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion}))
        await response.write(b"data: [DONE]\n\n")
        return response


def _error_response(status: int, error_type: str, message: str, code: str | None = None
                    ) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": error_type, "param": None, "code": code}},
        status=status)
