"""The OpenAI / OpenAI-compatible LLM provider, and falling over to the next provider.

Against a real OpenAI-compatible server (llama.cpp serving the local Qwen GGUF, see
``tests/support/llama_server.py``): streaming, tool calls through the real LLM gRPC service in
both tool formats, the tool-result round trip, a rejected key. Against a scripted server that
speaks the same wire format (``tests/support/fake_openai.py``): what a real server can't do on
demand (5xx, 429, 400, slow answers, native ``tool_calls`` deltas) and the fallback to
``llama-local`` before the first token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from fake_openai import FakeOpenAI, Scripted, error, text, tool_calls
from llama_server import LlamaServer, llama_server
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from order_system import LOOKUP_ORDER, ORDER_PROMPT
from otlp_receiver import SpanReceiver
from pydantic import SecretStr

from voxmesh.cli.stack import Child, Ports, Stack, free_port, nats_server_binary
from voxmesh.errors import ConfigError, ProviderError, error_from_rpc
from voxmesh.latency_model import DelayDistribution
from voxmesh.v1 import common_pb2, llm_pb2, llm_pb2_grpc
from voxmesh_llm.chain import LLMChain
from voxmesh_llm.providers import create_chain
from voxmesh_llm.providers.base import ChatMessage, Completion, LLMOutput, ToolCallRequest
from voxmesh_llm.providers.latency_model import LatencyModelLLM
from voxmesh_llm.providers.openai_compatible import OpenAICompatibleLLM
from voxmesh_llm.settings import LLMSettings

pytestmark = [pytest.mark.asyncio(loop_scope="session")]

KEY = "sk-test-" + uuid.uuid4().hex
WRONG_KEY = "sk-wrong-" + uuid.uuid4().hex
ORDER_RESULT = json.dumps({"status": "ok", "result": {"order_id": "1234", "status": "shipped",
                                                      "delivery": "Friday"}})


def _provider(base_url: str, *, key: str = KEY, timeout_s: float = 5.0, attempts: int = 2,
              model: str = "gpt-4o-mini") -> OpenAICompatibleLLM:
    provider = OpenAICompatibleLLM(api_key=SecretStr(key), base_url=base_url, model=model,
                                   request_timeout_s=timeout_s)
    provider.max_attempts = attempts
    provider.base_backoff_s = 0.01
    return provider


async def _collect(provider: OpenAICompatibleLLM, messages: list[ChatMessage],
                   **kwargs: Any) -> tuple[list[LLMOutput], Completion]:
    completion = Completion()
    outputs = [item async for item in provider.stream(
        messages, max_tokens=kwargs.pop("max_tokens", 40), temperature=0.0,
        completion=completion, **kwargs)]
    return outputs, completion


HELLO = [ChatMessage("system", "You are terse."), ChatMessage("user", "Say hello.")]


# --- the scripted server: wire format, retries, timeouts, keys --------------------------------

async def test_text_streams_with_usage_and_the_request_is_what_the_api_documents() -> None:
    async with FakeOpenAI(api_key=KEY) as server:
        server.script.append(text("Hello", " there", ".", usage=(31, 3)))
        provider = _provider(server.base_url)
        outputs, completion = await _collect(provider, HELLO, max_tokens=17)
        await provider.aclose()
    assert outputs == ["Hello", " there", "."]
    assert (completion.text, completion.prompt_tokens, completion.completion_tokens) == (
        "Hello there.", 31, 3)
    assert completion.first_token_ms >= 0 and completion.finish_reason == "stop"
    body, headers = server.requests[0], server.headers[0]
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert body["model"] == "gpt-4o-mini" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 17 and "max_completion_tokens" not in body
    assert body["messages"] == [{"role": "system", "content": "You are terse."},
                                {"role": "user", "content": "Say hello."}]
    assert "tools" not in body


async def test_native_tool_call_deltas_are_assembled_in_order() -> None:
    async with FakeOpenAI(api_key=KEY) as server:
        server.script.append(tool_calls(
            ("call_a1", "lookup_order", '{"order_id": "1234"}'),
            ("call_b2", "lookup_order", '{"order_id": "98765"}'),
            text_first="Let me check both.", pieces=4))
        provider = _provider(server.base_url)
        outputs, completion = await _collect(provider, HELLO)
        await provider.aclose()
    assert outputs == [
        "Let me check both.",
        ToolCallRequest("call_a1", "lookup_order", '{"order_id": "1234"}'),
        ToolCallRequest("call_b2", "lookup_order", '{"order_id": "98765"}'),
    ]
    assert completion.finish_reason == "tool_calls"


@pytest.mark.parametrize(("first", "reason"), [
    (error(500, "server_error", "The server had an error"), "PROVIDER_UNAVAILABLE"),
    (error(503, "server_error", "Overloaded"), "PROVIDER_UNAVAILABLE"),
    (error(429, "requests", "Rate limit reached for requests"), "PROVIDER_RATE_LIMITED"),
])
async def test_5xx_and_429_are_retried_before_the_first_token(
    first: Scripted, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="voxmesh.llm")
    async with FakeOpenAI(api_key=KEY) as server:
        server.script.extend([first, text("Recovered", ".")])
        provider = _provider(server.base_url, attempts=2)
        outputs, _ = await _collect(provider, HELLO)
        # Out of attempts, the last error is raised as it was classified.
        server.script.extend([first, first])
        with pytest.raises(ProviderError) as info:
            await _collect(provider, HELLO)
        await provider.aclose()
    assert outputs == ["Recovered", "."]
    assert len(server.requests) == 4
    assert info.value.reason == reason and info.value.retryable
    assert "retrying" in caplog.text and reason in caplog.text


async def test_an_error_event_in_the_stream_is_classified_by_its_type() -> None:
    async with FakeOpenAI(api_key=KEY) as server:
        overloaded = Scripted(error_event={"message": "The server is overloaded",
                                           "type": "server_error", "code": None})
        refused = Scripted(error_event={"message": "Invalid tool schema",
                                        "type": "invalid_request_error", "code": None})
        server.script.extend([overloaded, text("Fine", "."), refused])
        provider = _provider(server.base_url, attempts=2)
        outputs, _ = await _collect(provider, HELLO)
        with pytest.raises(ProviderError) as info:
            await _collect(provider, HELLO)
        await provider.aclose()
    assert outputs == ["Fine", "."]
    assert info.value.reason == "PROVIDER_STREAM_ERROR" and not info.value.retryable
    assert "Invalid tool schema" in info.value.message
    assert len(server.requests) == 3


async def test_an_unreachable_server_is_retryable() -> None:
    provider = _provider(f"http://127.0.0.1:{free_port()}/v1", attempts=2)
    with pytest.raises(ProviderError) as info:
        await _collect(provider, HELLO)
    await provider.load()  # an outage at startup is logged, not fatal
    await provider.aclose()
    assert info.value.reason == "PROVIDER_UNAVAILABLE" and info.value.retryable
    assert "unreachable" in info.value.message


@pytest.mark.parametrize(("status", "kind"), [(400, "invalid_request_error"),
                                              (404, "invalid_request_error"),
                                              (422, "invalid_request_error")])
async def test_client_errors_are_not_retried(status: int, kind: str) -> None:
    async with FakeOpenAI(api_key=KEY) as server:
        server.script.append(error(status, kind, "max_tokens is too large for this model"))
        provider = _provider(server.base_url, attempts=3)
        with pytest.raises(ProviderError) as info:
            await _collect(provider, HELLO)
        await provider.aclose()
    assert len(server.requests) == 1
    assert info.value.reason == "PROVIDER_REJECTED_REQUEST" and not info.value.retryable
    assert f"HTTP {status}" in info.value.message
    assert "max_tokens is too large" in info.value.message


@pytest.mark.parametrize("stall", ["before the response", "between chunks"])
async def test_the_request_timeout_is_honoured(stall: str) -> None:
    answer = (Scripted(headers_delay_s=30) if stall == "before the response"
              else Scripted(deltas=[{"content": "Hel"}, {"content": "lo"}], stall_after=2))
    async with FakeOpenAI(api_key=KEY) as server:
        server.script.append(answer)
        provider = _provider(server.base_url, timeout_s=0.4, attempts=1)
        started = time.monotonic()
        received: list[LLMOutput] = []
        with pytest.raises(ProviderError) as info:
            completion = Completion()
            async for item in provider.stream(HELLO, max_tokens=10, temperature=0.0,
                                              completion=completion):
                received.append(item)
        waited = time.monotonic() - started
        await provider.aclose()
    assert info.value.reason == "PROVIDER_TIMEOUT" and info.value.retryable
    assert 0.35 < waited < 5, waited
    assert received == ([] if stall == "before the response" else ["Hel"])


async def test_a_rejected_key_fails_load_naming_the_variables_never_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with FakeOpenAI(api_key=KEY) as server:
        provider = _provider(server.base_url, key=WRONG_KEY)
        with pytest.raises(ProviderError) as info:
            await provider.load()
        # The same key rejected on a request: classified alike, never retried.
        with pytest.raises(ProviderError) as on_request:
            await _collect(provider, HELLO)
        await provider.aclose()
        good = _provider(server.base_url)
        await good.load()
        await good.aclose()
    assert server.model_lists == 2 and len(server.requests) == 1
    for failure in (info.value, on_request.value):
        assert failure.reason == "PROVIDER_AUTH_FAILED" and not failure.retryable
        assert "openai" in failure.message
        assert "VOXMESH_LLM_API_KEY" in failure.message and "OPENAI_API_KEY" in failure.message
    shown = [caplog.text, info.value.message, repr(provider), str(info.value.to_detail())]
    assert caplog.text  # the SDK and the provider did log (at DEBUG)
    assert not any(WRONG_KEY in part or KEY in part for part in shown)


async def test_a_missing_key_fails_at_startup_unless_the_server_needs_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("VOXMESH_LLM_API_KEY", raising=False)
    with pytest.raises(ConfigError) as info:
        create_chain(LLMSettings(provider="openai"))
    assert "openai" in str(info.value)
    assert "VOXMESH_LLM_API_KEY" in str(info.value) and "OPENAI_API_KEY" in str(info.value)
    chain = create_chain(LLMSettings(provider="openai,latency-model", api_key_required=False,
                                     base_url="http://127.0.0.1:1/v1"))
    assert [p.name for p in chain.providers] == ["openai", "latency-model"]
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    assert isinstance(create_chain(LLMSettings(provider="openai")).primary, OpenAICompatibleLLM)
    with pytest.raises(ConfigError, match="unknown provider 'gpt'"):
        create_chain(LLMSettings(provider="gpt,llama-local"))


async def _chain_outputs(chain: LLMChain, span: Any, got: list[LLMOutput]) -> Completion:
    completion = Completion()
    async for output in chain.stream(lambda provider: (HELLO, ()), max_tokens=10,
                                     temperature=0.0, completion=completion, span=span):
        got.append(output)
    return completion


async def test_fallback_on_a_missed_first_byte_deadline_but_never_after_the_first_token() -> None:
    backup = LatencyModelLLM(first_token=DelayDistribution.parse("constant:ms=0"),
                             tokens_per_s=1000, text="Backup answer.")
    span = TracerProvider().get_tracer("test").start_span("llm.generate")
    async with FakeOpenAI(api_key=KEY) as server:
        server.script.append(Scripted(headers_delay_s=30))
        slow = LLMChain([_provider(server.base_url, timeout_s=30, attempts=1), backup],
                        first_byte_deadline_s=0.3)
        got: list[LLMOutput] = []
        started = time.monotonic()
        completion = await _chain_outputs(slow, span, got)
        waited = time.monotonic() - started
        span.end()
        # Once the answer has begun, a stalled stream is an error of its own: no retry, no
        # fallback (the caller already heard the start).
        server.script.append(Scripted(deltas=[{"content": "Par"}, {"content": "is"}],
                                      stall_after=2))
        stalled = LLMChain([_provider(server.base_url, timeout_s=0.5, attempts=2), backup],
                           first_byte_deadline_s=5)
        partial: list[LLMOutput] = []
        with pytest.raises(ProviderError) as info:
            await _chain_outputs(stalled, None, partial)
        # A rejected key never falls over: it is a fault to fix, not an outage.
        rejected = LLMChain([_provider(server.base_url, key=WRONG_KEY), backup])
        with pytest.raises(ProviderError) as auth:
            await _chain_outputs(rejected, None, [])
        for chain in (slow, stalled, rejected):
            await chain.aclose()
    assert isinstance(span, ReadableSpan)
    assert "".join(str(o) for o in got) == "Backup answer."
    assert (completion.provider, completion.text) == ("latency-model", "Backup answer.")
    assert 0.25 < waited < 3, waited
    assert [(e.name, dict(e.attributes or {})) for e in span.events] == [(
        "provider.fallback", {"voxmesh.fallback.component": "llm",
                              "voxmesh.fallback.from": "openai",
                              "voxmesh.fallback.to": "latency-model",
                              "voxmesh.fallback.reason": "FIRST_BYTE_DEADLINE"})]
    assert partial == ["Par"] and info.value.reason == "PROVIDER_TIMEOUT"
    assert auth.value.reason == "PROVIDER_AUTH_FAILED"
    assert len(server.requests) == 3


# --- helpers to run the LLM service as its own process ----------------------------------------

@asynccontextmanager
async def llm_service(state: Path, env: dict[str, str]) -> AsyncIterator[tuple[Stack, int]]:
    """nats-server and the LLM service (with ``env``); yields the stack and its metrics port."""
    stack = Stack(state_dir=state, ports=Ports.free(), drain_grace_s=1.0)
    logs = state / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    metrics_port = free_port()
    base = {**{k: v for k, v in os.environ.items()
               if not k.startswith(("OPENAI_", "VOXMESH_"))},
            "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "VOXMESH_NATS_URL": stack.nats_url}
    stack.children = {
        "nats": Child("nats", [nats_server_binary(), "-a", "127.0.0.1", "-p",
                               str(stack.ports.nats), "-js", "-sd", str(state / "js")],
                      base, logs / "nats.log", 5),
        "llm": Child("llm", [sys.executable, "-m", "voxmesh_llm"], {
            **base, "VOXMESH_LLM_PORT": str(stack.ports.llm), "VOXMESH_LLM_DRAIN_GRACE_S": "1",
            "VOXMESH_METRICS_PORT": str(metrics_port), "VOXMESH_METRICS_HOST": "127.0.0.1",
            **env}, logs / "llm.log", 5),
    }
    try:
        await stack.spawn("nats")
        await stack.wait_healthy("nats", timeout_s=20)
        await stack.spawn("llm")
        await stack.wait_healthy("llm", timeout_s=120)
        yield stack, metrics_port
    finally:
        await stack.stop()


def _openai_env(server_url: str, key: str, **extra: str) -> dict[str, str]:
    return {"VOXMESH_LLM_PROVIDER": "openai", "VOXMESH_LLM_BASE_URL": server_url,
            "VOXMESH_LLM_API_KEY": key, "VOXMESH_LLM_MODEL": "qwen2.5-coder-0.5b-instruct",
            # A CPU server shared with other tests may take seconds to its first token.
            "VOXMESH_LLM_REQUEST_TIMEOUT_S": "60", **extra}


async def _generate(port: int, request: llm_pb2.GenerateRequest) -> list[llm_pb2.GenerateEvent]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = llm_pb2_grpc.LanguageModelStub(channel)
        return [e async for e in stub.Generate(request, timeout=90)]


def _spoken(events: list[llm_pb2.GenerateEvent]) -> str:
    return "".join(e.delta.text for e in events if e.WhichOneof("event") == "delta")


def _calls(events: list[llm_pb2.GenerateEvent]) -> list[llm_pb2.ToolCall]:
    return [e.tool_call for e in events if e.WhichOneof("event") == "tool_call"]


async def _context(port: int, session: str) -> list[llm_pb2.ContextMessage]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        context = await llm_pb2_grpc.LanguageModelStub(channel).GetContext(
            llm_pb2.GetContextRequest(session_id=session))
    return list(context.messages)


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:  # noqa: S310
        return str(response.read().decode())


# --- native tool calls and fallback through the real service (scripted server) ----------------

async def test_native_tool_round_trip_keeps_a_valid_openai_context_and_a_stable_prefix(
    tmp_path: Path,
) -> None:
    async with FakeOpenAI(api_key=KEY, model="gpt-4o-mini") as server:
        server.script.extend([
            tool_calls(("call_Xy12", "lookup_order", '{"order_id": "1234"}')),
            text("Order 1234 has shipped", " and arrives Friday."),
        ])
        env = _openai_env(server.base_url, KEY, VOXMESH_LLM_MODEL="gpt-4o-mini")
        async with llm_service(tmp_path, env) as (stack, _):
            session = uuid.uuid4().hex
            turn = common_pb2.TurnRef(session_id=session, turn_index=1)
            first = await _generate(stack.ports.llm, llm_pb2.GenerateRequest(
                turn=turn, user_text="What's the status of order 1234?",
                system_prompt=ORDER_PROMPT, tools=[LOOKUP_ORDER], turn_completion=True,
                max_tokens=60))
            calls = _calls(first)
            assert [(c.call_id, c.name, json.loads(c.arguments_json)) for c in calls] == [
                ("call_Xy12", "lookup_order", {"order_id": "1234"})]
            assert first[-1].done.finish_reason == llm_pb2.GenerationDone.FINISH_REASON_TOOL_CALLS
            second = await _generate(stack.ports.llm, llm_pb2.GenerateRequest(
                turn=turn, system_prompt=ORDER_PROMPT, tools=[LOOKUP_ORDER], turn_completion=True,
                max_tokens=60, tool_results=[llm_pb2.ToolResultMessage(
                    call_id="call_Xy12", name="lookup_order", content_json=ORDER_RESULT)]))
            assert _spoken(second) == "Order 1234 has shipped and arrives Friday."
            assert second[-1].done.model == "gpt-4o-mini"
            context = await _context(stack.ports.llm, session)
    assert [(m.role, m.call_id) for m in context] == [
        ("user", ""), ("assistant", ""), ("tool", "call_Xy12"), ("assistant", "")]
    one, two = server.requests
    tool_param = [{"type": "function", "function": {
        "name": "lookup_order", "description": LOOKUP_ORDER.description,
        "parameters": json.loads(LOOKUP_ORDER.parameters_json_schema)}}]
    assert one["tools"] == two["tools"] == tool_param
    # Same system prompt on both steps (the provider's prompt cache), tools not in its text.
    assert one["messages"][0] == two["messages"][0]
    assert one["messages"][0]["content"].startswith(ORDER_PROMPT)
    assert "<tools>" not in one["messages"][0]["content"]
    assert two["messages"][1:] == [
        {"role": "user", "content": "What's the status of order 1234?"},
        {"role": "assistant", "tool_calls": [{"id": "call_Xy12", "type": "function", "function": {
            "name": "lookup_order", "arguments": '{"order_id": "1234"}'}}]},
        {"role": "tool", "content": ORDER_RESULT, "tool_call_id": "call_Xy12"},
    ]


async def test_falls_over_to_llama_local_before_the_first_token(tmp_path: Path) -> None:
    receiver = SpanReceiver()
    otlp = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, otlp)
    otlp_port = free_port()
    otlp.add_insecure_port(f"127.0.0.1:{otlp_port}")
    await otlp.start()
    try:
        async with FakeOpenAI(api_key=KEY) as server:
            server.default = error(503, "server_error", "The engine is currently overloaded")
            env = _openai_env(server.base_url, KEY,
                              VOXMESH_LLM_PROVIDER="openai,llama-local",
                              VOXMESH_LLM_REQUEST_ATTEMPTS="2",
                              OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{otlp_port}",
                              OTEL_EXPORTER_OTLP_INSECURE="true", OTEL_BSP_SCHEDULE_DELAY="100")
            async with llm_service(tmp_path, env) as (stack, metrics_port):
                events = await _generate(stack.ports.llm, llm_pb2.GenerateRequest(
                    turn=common_pb2.TurnRef(session_id=uuid.uuid4().hex, turn_index=1),
                    user_text="What is the capital of France?", max_tokens=24, temperature=0))
                metrics = _scrape(metrics_port)
                deadline = time.monotonic() + 10
                while not any(s["name"] == "llm.generate" for s in receiver.spans):
                    assert time.monotonic() < deadline, "no llm.generate span exported"
                    await asyncio.sleep(0.1)
    finally:
        await otlp.stop(None)
    assert "paris" in _spoken(events).lower()
    assert events[-1].done.model == "qwen2.5-coder-0.5b-instruct-q4"
    assert len(server.requests) == 2  # openai tried twice (one retry), then the fallback
    fallback = re.search(
        r'voxmesh_provider_fallbacks_total\{([^}]*)\} (\d+(?:\.\d+)?)', metrics)
    assert fallback is not None, metrics
    labels = {key: value for key, value in re.findall(r'(\w+)="([^"]*)"', fallback.group(1))
              if not key.startswith("otel_")}
    assert labels == {"component": "llm", "from": "openai", "to": "llama-local",
                      "reason": "PROVIDER_UNAVAILABLE"} and float(fallback.group(2)) == 1
    span = next(s for s in receiver.spans if s["name"] == "llm.generate")
    assert span["attributes"]["voxmesh.llm.provider"] == "llama-local"
    assert span["attributes"]["voxmesh.llm.providers"] == "openai,llama-local"
    assert ("provider.fallback", {"voxmesh.fallback.component": "llm",
                                  "voxmesh.fallback.from": "openai",
                                  "voxmesh.fallback.to": "llama-local",
                                  "voxmesh.fallback.reason": "PROVIDER_UNAVAILABLE"}
            ) in span["events"]


async def test_bad_tool_schema_is_rejected_with_the_field(tmp_path: Path) -> None:
    async with FakeOpenAI(api_key=KEY) as server:
        async with llm_service(tmp_path, _openai_env(server.base_url, KEY)) as (stack, _):
            broken = llm_pb2.ToolDefinition(name="lookup_order", parameters_json_schema="{nope")
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await _generate(stack.ports.llm, llm_pb2.GenerateRequest(
                    turn=common_pb2.TurnRef(session_id=uuid.uuid4().hex, turn_index=1),
                    user_text="hi", tools=[LOOKUP_ORDER, broken]))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    detail = error_from_rpc(info.value)
    assert (detail.reason, detail.field) == ("TOOL_SCHEMA_INVALID",
                                             "tools[1].parameters_json_schema")
    assert not server.requests


# --- the real OpenAI-compatible server ---------------------------------------------------------

@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def real_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LlamaServer]:
    """llama.cpp's OpenAI-compatible server with the local Qwen model, one per module."""
    async with llama_server(tmp_path_factory.mktemp("llama-server"), api_key=KEY) as server:
        yield server


async def test_streams_text_from_the_real_server(real_server: LlamaServer) -> None:
    provider = _provider(real_server.base_url, model="qwen2.5-coder-0.5b-instruct")
    await provider.load()
    outputs, completion = await _collect(
        provider, [ChatMessage("system", "Answer in one short sentence."),
                   ChatMessage("user", "What is the capital of France?")], max_tokens=24)
    await provider.aclose()
    assert len(outputs) > 1 and all(isinstance(o, str) for o in outputs)
    assert "paris" in completion.text.lower()
    assert completion.completion_tokens == len(outputs) and completion.prompt_tokens > 0
    assert completion.finish_reason in ("stop", "length")


async def test_tools_sent_natively_to_the_real_server_produce_a_tool_call(
    real_server: LlamaServer, tmp_path: Path,
) -> None:
    # llama.cpp's server passes `tools` to Qwen's template; the model writes the call as JSON
    # text, which the service parses: a ToolCall event either way.
    env = _openai_env(real_server.base_url, KEY, VOXMESH_LLM_TOOL_FORMAT="native")
    async with llm_service(tmp_path, env) as (stack, _):
        session = uuid.uuid4().hex
        events = await _generate(stack.ports.llm, llm_pb2.GenerateRequest(
            turn=common_pb2.TurnRef(session_id=session, turn_index=1),
            user_text="What's the status of order 1234?", system_prompt=ORDER_PROMPT,
            tools=[LOOKUP_ORDER], max_tokens=60, temperature=0))
        context = await _context(stack.ports.llm, session)
    calls = _calls(events)
    assert [(c.name, json.loads(c.arguments_json)) for c in calls] == [
        ("lookup_order", {"order_id": "1234"})]
    assert not _spoken(events).strip()  # nothing of the call is spoken
    assert [(m.role, m.call_id) for m in context] == [
        ("user", ""), ("assistant", ""), ("tool", calls[0].call_id)]


async def test_tool_result_round_trip_with_the_real_server(
    real_server: LlamaServer, tmp_path: Path,
) -> None:
    env = _openai_env(real_server.base_url, KEY, VOXMESH_LLM_TOOL_FORMAT="text")
    async with llm_service(tmp_path, env) as (stack, _):
        session = uuid.uuid4().hex
        turn = common_pb2.TurnRef(session_id=session, turn_index=1)
        first = await _generate(stack.ports.llm, llm_pb2.GenerateRequest(
            turn=turn, user_text="What's the status of order 1234?", system_prompt=ORDER_PROMPT,
            tools=[LOOKUP_ORDER], max_tokens=60, temperature=0))
        calls = _calls(first)
        assert [(c.name, json.loads(c.arguments_json)) for c in calls] == [
            ("lookup_order", {"order_id": "1234"})]
        second = await _generate(stack.ports.llm, llm_pb2.GenerateRequest(
            turn=turn, system_prompt=ORDER_PROMPT, tools=[LOOKUP_ORDER], max_tokens=50,
            temperature=0, tool_results=[llm_pb2.ToolResultMessage(
                call_id=calls[0].call_id, name="lookup_order", content_json=ORDER_RESULT)]))
        context = await _context(stack.ports.llm, session)
    answer = _spoken(second)
    assert not _calls(second), answer
    assert "shipped" in answer.lower() or "friday" in answer.lower(), answer
    assert [(m.role, m.call_id) for m in context] == [
        ("user", ""), ("assistant", ""), ("tool", calls[0].call_id), ("assistant", "")]
    assert context[2].content == ORDER_RESULT and context[3].content == answer.strip()


async def test_a_key_the_real_server_rejects_stops_the_service_with_a_clear_line(
    real_server: LlamaServer, tmp_path: Path,
) -> None:
    env = _openai_env(real_server.base_url, WRONG_KEY)
    with pytest.raises(RuntimeError, match="exited during startup") as info:
        async with llm_service(tmp_path, env):
            pass
    log = (tmp_path / "logs" / "llm.log").read_text()
    assert ("openai rejected the API key (HTTP 401/403); check VOXMESH_LLM_API_KEY or "
            "OPENAI_API_KEY") in log
    assert "Traceback" not in log
    assert WRONG_KEY not in log and WRONG_KEY not in str(info.value)
