"""gRPC servicer of ``voxmesh.v1.LanguageModel``."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator

import grpc
from opentelemetry.trace import SpanKind, Status, StatusCode

from voxmesh.errors import InvalidInputError, VoxmeshError, abort
from voxmesh.metrics import meter
from voxmesh.telemetry import extract, tracer
from voxmesh.toolcalls import ToolCallParser, tools_system_prompt
from voxmesh.v1 import llm_pb2, llm_pb2_grpc
from voxmesh_llm.context_store import ContextStore, StoredMessage, validate_session_id
from voxmesh_llm.providers.base import ChatMessage, Completion, LLMProvider
from voxmesh_llm.settings import LLMSettings

log = logging.getLogger("voxmesh.llm")
_tracer = tracer("llm")
_meter = meter("llm")
_FIRST_TOKEN = _meter.create_histogram(
    "voxmesh.llm.first_token", unit="ms", description="Generate request to first token")
_TOKENS = _meter.create_counter("voxmesh.llm.tokens", description="Tokens (attribute kind)")

_FINISH = {
    "stop": llm_pb2.GenerationDone.FINISH_REASON_STOP,
    "length": llm_pb2.GenerationDone.FINISH_REASON_LENGTH,
    "tool_calls": llm_pb2.GenerationDone.FINISH_REASON_TOOL_CALLS,
}


class LanguageModelServicer(llm_pb2_grpc.LanguageModelServicer):
    """Runs one turn per Generate call with context from the store."""

    def __init__(self, provider: LLMProvider, store: ContextStore, settings: LLMSettings) -> None:
        """Creates the servicer."""
        self._provider = provider
        self._store = store
        self._settings = settings

    def _validate(self, request: llm_pb2.GenerateRequest) -> None:
        validate_session_id(request.turn.session_id)
        if not request.user_text.strip() and not request.tool_results:
            raise InvalidInputError("user_text is empty", reason="EMPTY_TEXT",
                                    field="user_text", component="llm")
        if len(request.user_text) > self._settings.max_user_text_chars:
            raise InvalidInputError(
                f"user_text has {len(request.user_text)} characters; the limit is "
                f"{self._settings.max_user_text_chars}",
                reason="TEXT_TOO_LONG", field="user_text", component="llm")
        if request.max_tokens > self._settings.max_tokens_limit:
            raise InvalidInputError(
                f"max_tokens {request.max_tokens} exceeds the limit of "
                f"{self._settings.max_tokens_limit}",
                reason="MAX_TOKENS_TOO_LARGE", field="max_tokens", component="llm")
        if not 0.0 <= request.temperature <= 2.0:
            raise InvalidInputError(
                f"temperature must be within 0..2, got {request.temperature}",
                reason="TEMPERATURE_OUT_OF_RANGE", field="temperature", component="llm")

    async def Generate(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[llm_pb2.GenerateEvent]:
        """See ``llm.proto``."""
        try:
            self._validate(request)
            session_id, turn_index = request.turn.session_id, request.turn.turn_index
            history, _ = await self._store.load(session_id)
            new = [StoredMessage("user", request.user_text, turn_index)] if request.user_text else []
            new += [StoredMessage("tool", r.content_json, turn_index) for r in request.tool_results]
            await self._store.append(session_id, *new)
        except VoxmeshError as exc:
            await abort(context, exc)
        span = _tracer.start_span(
            "llm.generate", context=extract(context.invocation_metadata()), kind=SpanKind.SERVER,
            attributes={"voxmesh.session.id": session_id, "voxmesh.turn.index": turn_index,
                        "voxmesh.llm.provider": self._provider.name,
                        "voxmesh.llm.model": self._provider.model,
                        "voxmesh.llm.history_messages": len(history)})
        messages = build_messages(request, history, self._settings.warm_system_prompt)
        completion = Completion()
        parser = ToolCallParser()
        spoken = ""
        finished = False
        try:
            async for delta in self._provider.stream(
                messages,
                max_tokens=request.max_tokens or 160,
                temperature=request.temperature,
                completion=completion,
            ):
                if speakable := parser.push(delta):
                    spoken += speakable
                    yield llm_pb2.GenerateEvent(delta=llm_pb2.TextDelta(text=speakable))
            if rest := parser.finish():
                spoken += rest
                yield llm_pb2.GenerateEvent(delta=llm_pb2.TextDelta(text=rest))
            for call in parser.calls:
                yield llm_pb2.GenerateEvent(tool_call=llm_pb2.ToolCall(
                    call_id=uuid.uuid4().hex[:12], name=call.name,
                    arguments_json=call.raw if call.error else json.dumps(call.arguments)))
            if parser.calls:
                completion.finish_reason = "tool_calls"
            span.set_attribute("voxmesh.llm.tool_calls", len(parser.calls))
            finished = True
            yield llm_pb2.GenerateEvent(
                done=llm_pb2.GenerationDone(
                    finish_reason=_FINISH.get(completion.finish_reason,
                                              llm_pb2.GenerationDone.FINISH_REASON_STOP),
                    prompt_tokens=completion.prompt_tokens,
                    completion_tokens=completion.completion_tokens,
                    first_token_ms=completion.first_token_ms,
                    model=self._provider.model,
                )
            )
        except VoxmeshError as exc:
            span.set_status(Status(StatusCode.ERROR, exc.reason))
            await abort(context, exc)
        finally:
            span.set_attributes({
                "voxmesh.llm.first_token_ms": completion.first_token_ms,
                "voxmesh.llm.prompt_tokens": completion.prompt_tokens,
                "voxmesh.llm.completion_tokens": completion.completion_tokens,
                "voxmesh.llm.finish_reason": completion.finish_reason if finished else "cancelled",
            })
            span.end()
            if completion.first_token_ms:
                _FIRST_TOKEN.record(completion.first_token_ms)
            _TOKENS.add(completion.prompt_tokens, {"kind": "prompt"})
            _TOKENS.add(completion.completion_tokens, {"kind": "completion"})
            # Store what was generated, even when the client went away mid-answer (barge-in);
            # the worker replaces it with the heard text through CommitHeard.
            text = completion.text.strip()
            if text:
                await asyncio.shield(self._store.append(
                    session_id,
                    StoredMessage("assistant", text, turn_index, interrupted=not finished,
                                  tool_call=bool(parser.calls) and not spoken.strip()),
                ))

    async def CommitHeard(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.CommitHeardRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.CommitHeardResponse:
        """See ``llm.proto``."""
        try:
            await self._store.replace_assistant(
                request.turn.session_id, request.turn.turn_index, request.heard_text,
                request.interrupted,
            )
        except VoxmeshError as exc:
            await abort(context, exc)
        return llm_pb2.CommitHeardResponse()

    async def GetContext(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.GetContextRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.Context:
        """See ``llm.proto``."""
        try:
            messages = await self._store.require(request.session_id)
        except VoxmeshError as exc:
            await abort(context, exc)
        return llm_pb2.Context(
            session_id=request.session_id,
            messages=[
                llm_pb2.ContextMessage(role=m.role, content=m.content, turn_index=m.turn_index,
                                       interrupted=m.interrupted)
                for m in messages
            ],
        )

    async def EndSession(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.EndSessionRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.EndSessionResponse:
        """See ``llm.proto``."""
        try:
            await self._store.delete(request.session_id)
        except VoxmeshError as exc:
            await abort(context, exc)
        return llm_pb2.EndSessionResponse()


def build_messages(
    request: llm_pb2.GenerateRequest, history: list[StoredMessage], default_system: str
) -> list[ChatMessage]:
    """The chat for one Generate: system prompt (with tools), history, then the new input.

    Small local models answer a tool result by repeating the call when the tool listing is
    still in the prompt, so it is offered only for the first step of a turn (one tool round
    per turn), and earlier tool-call messages are shown as a neutral spoken line.
    """
    system = request.system_prompt or default_system
    if request.tools and not request.tool_results:
        system += tools_system_prompt([
            {"name": t.name, "description": t.description,
             "parameters": json.loads(t.parameters_json_schema or "{}")}
            for t in request.tools])
    messages = [ChatMessage("system", system)]
    for message in history:
        content = "Let me look that up." if message.tool_call else message.content
        messages.append(ChatMessage(message.role, content))
    if request.user_text:
        messages.append(ChatMessage("user", request.user_text))
    messages += [ChatMessage("tool", r.content_json) for r in request.tool_results]
    return messages
