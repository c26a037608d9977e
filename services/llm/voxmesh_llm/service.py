"""gRPC servicer of ``voxmesh.v1.LanguageModel``."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing

import grpc
from opentelemetry.trace import SpanKind, Status, StatusCode

from voxmesh.errors import InvalidInputError, VoxmeshError, abort
from voxmesh.metrics import meter
from voxmesh.telemetry import extract, tracer
from voxmesh.v1 import llm_pb2, llm_pb2_grpc
from voxmesh_llm import history as ops
from voxmesh_llm.chain import LLMChain, Prompt
from voxmesh_llm.context_store import ContextStore, StoredMessage, validate_session_id
from voxmesh_llm.prompt import build_messages, tool_specs
from voxmesh_llm.providers.base import Completion, LLMProvider
from voxmesh_llm.reply import Reply, reply_events, verdict_event
from voxmesh_llm.settings import LLMSettings
from voxmesh_llm.summary import Summarizer
from voxmesh_llm.turn_completion import COMPLETE

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

    def __init__(self, chain: LLMChain, store: ContextStore, settings: LLMSettings) -> None:
        """Creates the servicer."""
        self._chain = chain
        self._store = store
        self._settings = settings
        self._summarizer = Summarizer(
            chain, store, token_budget=settings.context_token_budget,
            keep_messages=settings.summary_keep_messages, tracer=_tracer)

    async def close(self) -> None:
        """Cancels background work (summaries); called on shutdown."""
        await self._summarizer.close()

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
        tool_specs(request)

    async def Generate(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[llm_pb2.GenerateEvent]:
        """See ``llm.proto``."""
        try:
            self._validate(request)
            session_id, turn_index = request.turn.session_id, request.turn.turn_index
            results = [(r.call_id, r.content_json) for r in request.tool_results]
            # The provider starts on the new context while it is being written (see below).
            history, written = await self._store.modify_ahead(session_id, lambda current: (
                ops.add_input(current, turn_index, request.user_text, results)))
        except VoxmeshError as exc:
            await abort(context, exc)
        span = _tracer.start_span(
            "llm.generate", context=extract(context.invocation_metadata()), kind=SpanKind.SERVER,
            attributes={"voxmesh.session.id": session_id, "voxmesh.turn.index": turn_index,
                        "voxmesh.llm.providers": self._chain.names,
                        "voxmesh.llm.provider": self._chain.primary.name,
                        "voxmesh.llm.model": self._chain.primary.model,
                        "voxmesh.llm.history_messages": len(history)})
        # Marks are asked for on the caller's words only: a tool-result step continues a turn
        # the caller has already finished.
        turn_marks = request.turn_completion and bool(request.user_text)
        tools = tool_specs(request)

        def prompt_for(provider: LLMProvider) -> Prompt:
            messages = build_messages(request, history, self._settings.warm_system_prompt,
                                      turn_marks=turn_marks, native_tools=provider.native_tools)
            return messages, tools if provider.native_tools else ()

        completion = Completion()
        reply = Reply()
        finished = stored = confirmed = False
        self._summarizer.generation_started()
        try:
            if request.turn_completion and not turn_marks:
                history, confirmed = await asyncio.shield(written), True
                reply.verdict = COMPLETE
                yield verdict_event(COMPLETE)
            while True:
                deltas = self._chain.stream(
                    prompt_for,
                    max_tokens=request.max_tokens or 160,
                    temperature=request.temperature,
                    completion=completion,
                    span=span,
                )
                restart = False
                # Marks are parsed on tool-result steps too: a native-tools prompt keeps the
                # mark instructions on every step (a stable prefix), and a mark is never speech.
                async with aclosing(reply_events(
                        deltas, reply, turn_marks=request.turn_completion)) as events:
                    async for event in events:
                        if not confirmed:
                            # The context write ran during the model's time to first token;
                            # nothing leaves before it is stored.
                            stored_history, confirmed = await asyncio.shield(written), True
                            if stored_history != history:
                                # Another replica changed the context meanwhile: answer from
                                # what is stored.
                                history, restart = stored_history, True
                                break
                        yield event
                if not restart:
                    break
                completion, reply = Completion(), Reply()
            if not confirmed:
                await asyncio.shield(written)  # a reply without a single event
            if reply.incomplete:
                completion.finish_reason = "stop"  # not "cancelled": the model's own decision
            elif reply.calls:
                completion.finish_reason = "tool_calls"
            span.set_attribute("voxmesh.llm.tool_calls", len(reply.calls))
            if reply.verdict is not None:
                span.set_attribute("voxmesh.llm.turn_completion",
                                   llm_pb2.TurnCompletion.Verdict.Name(reply.verdict))
            finished = True
            # Stored before `done`: the worker runs a tool once the stream ends, and a fast
            # tool's result (next Generate) must find the call and its placeholder in place.
            await self._store_reply(request, reply, interrupted=False)
            stored = True
            yield llm_pb2.GenerateEvent(
                done=llm_pb2.GenerationDone(
                    finish_reason=_FINISH.get(completion.finish_reason,
                                              llm_pb2.GenerationDone.FINISH_REASON_STOP),
                    prompt_tokens=completion.prompt_tokens,
                    completion_tokens=completion.completion_tokens,
                    first_token_ms=completion.first_token_ms,
                    model=completion.model or self._chain.primary.model,
                )
            )
        except VoxmeshError as exc:
            span.set_status(Status(StatusCode.ERROR, exc.reason))
            await abort(context, exc)
        finally:
            if completion.provider:
                span.set_attributes({"voxmesh.llm.provider": completion.provider,
                                     "voxmesh.llm.model": completion.model})
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
            try:
                # Store what was generated, even when the client went away mid-answer
                # (barge-in); the worker replaces it with the heard text through CommitHeard.
                if not stored:
                    await asyncio.shield(
                        self._store_reply(request, reply, interrupted=True, after=written))
            finally:
                self._summarizer.generation_finished(session_id, span.get_span_context())

    async def _store_reply(
        self,
        request: llm_pb2.GenerateRequest,
        reply: Reply,
        *,
        interrupted: bool,
        after: asyncio.Future[list[StoredMessage]] | None = None,
    ) -> None:
        session_id, turn_index = request.turn.session_id, request.turn.turn_index
        if after is not None:
            try:
                await after  # the caller's words are written before the reply to them
            except Exception:  # noqa: BLE001 - logged by the store; nothing to reply to
                return
        text = reply.spoken.strip()
        if reply.incomplete:
            # The caller had not finished: the worker sends their merged words as a later turn.
            await self._store.modify(session_id, lambda current: ops.remove_user_message(
                current, turn_index, request.user_text))
        elif reply.calls:
            await self._store.append(session_id, *ops.tool_step(
                turn_index, text, reply.calls, interrupted=interrupted))
        elif text:
            await self._store.append(
                session_id, StoredMessage("assistant", text, turn_index, interrupted))

    async def CommitHeard(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.CommitHeardRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.CommitHeardResponse:
        """See ``llm.proto``."""
        turn = request.turn
        try:
            await self._store.modify(turn.session_id, lambda current: ops.set_heard(
                current, turn.turn_index, request.heard_text, request.interrupted))
        except VoxmeshError as exc:
            await abort(context, exc)
        return llm_pb2.CommitHeardResponse()

    async def DiscardTurn(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.DiscardTurnRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.DiscardTurnResponse:
        """See ``llm.proto``."""
        removed = 0

        def change(current: list[StoredMessage]) -> list[StoredMessage] | None:
            nonlocal removed
            kept = ops.discard_turn(current, request.turn.turn_index)
            removed = len(current) - len(kept)
            return kept if removed else None

        try:
            await self._store.modify(request.turn.session_id, change, must_exist=True)
        except VoxmeshError as exc:
            await abort(context, exc)
        return llm_pb2.DiscardTurnResponse(removed=removed)

    async def CommitToolResults(  # noqa: N802 - gRPC method name
        self, request: llm_pb2.CommitToolResultsRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.CommitToolResultsResponse:
        """See ``llm.proto``."""
        results = [(r.call_id, r.content_json) for r in request.results]
        try:
            await self._store.modify(request.turn.session_id, lambda current: (
                ops.apply_tool_results(current, request.turn.turn_index, results, strict=True)),
                must_exist=True)
        except VoxmeshError as exc:
            await abort(context, exc)
        return llm_pb2.CommitToolResultsResponse()

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
                llm_pb2.ContextMessage(
                    role=m.role, content=m.content, turn_index=m.turn_index,
                    interrupted=m.interrupted, call_id=m.call_id,
                    tool_calls_json=json.dumps(m.tool_calls) if m.tool_calls else "")
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
        self._summarizer.forget(request.session_id)
        return llm_pb2.EndSessionResponse()
