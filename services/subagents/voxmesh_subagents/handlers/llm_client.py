"""The LLM service as the reasoning and summarize tasks use it: one private session per task."""

from __future__ import annotations

import grpc

from voxmesh.errors import ProviderError, UnavailableError, error_from_rpc
from voxmesh.telemetry import grpc_metadata
from voxmesh.v1 import common_pb2, llm_pb2, llm_pb2_grpc
from voxmesh_subagents.handlers.base import COMPONENT

_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
              grpc.StatusCode.RESOURCE_EXHAUSTED)


def task_session_id(task_id: str) -> str:
    """The LLM session of a task: its own context, never the caller's conversation."""
    return f"task-{task_id}"


class LlmClient:
    """Runs single-prompt generations on the LLM service's ``Generate``."""

    def __init__(self, address: str, timeout_s: float) -> None:
        """Creates the client; the channel connects on first use."""
        self._address = address
        self._timeout_s = timeout_s
        self._channel: grpc.aio.Channel | None = None

    @property
    def _stub(self) -> llm_pb2_grpc.LanguageModelStub:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self._address)
        return llm_pb2_grpc.LanguageModelStub(self._channel)

    async def close(self) -> None:
        """Closes the channel."""
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def generate(
        self, task_id: str, system_prompt: str, user_text: str, max_tokens: int
    ) -> str:
        """Generates one answer in the task's own session and deletes that session after.

        A retried task starts from an empty context: whatever an earlier attempt left in the
        session is deleted first.

        Raises:
            UnavailableError: The LLM service is down, draining or too slow (retryable).
            ProviderError: It refused the request or failed (not retryable).
        """
        session_id = task_session_id(task_id)
        stub = self._stub
        await self._end_session(stub, session_id)
        request = llm_pb2.GenerateRequest(
            turn=common_pb2.TurnRef(session_id=session_id, turn_index=1),
            user_text=user_text, system_prompt=system_prompt, max_tokens=max_tokens,
            temperature=0.2)
        parts: list[str] = []
        try:
            call = stub.Generate(request, timeout=self._timeout_s, metadata=grpc_metadata())
            async for event in call:
                if event.WhichOneof("event") == "delta":
                    parts.append(event.delta.text)
        except grpc.aio.AioRpcError as exc:
            raise _translate(exc) from exc
        finally:
            await self._end_session(stub, session_id)
        return "".join(parts).strip()

    async def _end_session(self, stub: llm_pb2_grpc.LanguageModelStub, session_id: str) -> None:
        try:
            await stub.EndSession(llm_pb2.EndSessionRequest(session_id=session_id),
                                  timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise _translate(exc) from exc


def _translate(exc: grpc.aio.AioRpcError) -> UnavailableError | ProviderError:
    detail = error_from_rpc(exc)
    message = f"LLM service: {detail.message or exc.code().name}"
    if exc.code() in _RETRYABLE or detail.retryable:
        return UnavailableError(message, reason="LLM_UNAVAILABLE", component=COMPONENT)
    return ProviderError(message, reason=detail.reason or "PROVIDER_FAILED", component=COMPONENT,
                         retryable=False)
