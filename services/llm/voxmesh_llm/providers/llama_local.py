"""Local llama.cpp with Qwen2.5-Coder 0.5B Instruct (Q4 GGUF assembled from its PyPI chunks)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from voxmesh.models import llm_gguf
from voxmesh_llm.providers.base import ChatMessage, Completion, LLMProvider, ToolSpec

_DONE = object()


class LlamaLocalLLM(LLMProvider):
    """llama.cpp in-process. One model per process, one generation at a time.

    The system prompt is evaluated at startup. llama.cpp keeps the evaluated tokens, and each
    request reuses the longest common prefix, so turns only pay for the new messages.
    """

    name = "llama-local"
    model = "qwen2.5-coder-0.5b-instruct-q4"

    def __init__(self, *, context_window: int, cpu_threads: int, warm_system_prompt: str) -> None:
        """Creates the provider; the model loads in :meth:`load`."""
        super().__init__()
        self._context_window = context_window
        self._cpu_threads = cpu_threads
        self._warm_system_prompt = warm_system_prompt
        self._llama: Any = None
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        """Assembles the GGUF if needed, loads it, and evaluates the system prompt."""

        def _load() -> Any:
            from llama_cpp import Llama

            llama = Llama(
                model_path=str(llm_gguf()),
                n_ctx=self._context_window,
                n_threads=self._cpu_threads,
                n_threads_batch=self._cpu_threads,
                verbose=False,
            )
            llama.create_chat_completion(
                messages=[
                    {"role": "system", "content": self._warm_system_prompt},
                    {"role": "user", "content": "Hi"},
                ],
                max_tokens=1,
            )
            return llama

        self._llama = await self.run_blocking(_load)

    async def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` with the model's own tokenizer."""
        if self._llama is None:
            return await super().count_tokens(text)
        # Fast C, but on the inference thread: llama.cpp does not promise thread safety.
        tokens = await self.run_blocking(self._llama.tokenize, text.encode(), False, True)
        return len(tokens)

    async def _stream(
        self,
        messages: list[ChatMessage],
        tools: Sequence[ToolSpec],
        max_tokens: int,
        temperature: float,
        completion: Completion,
    ) -> AsyncGenerator[str, None]:
        assert self._llama is not None, "load() was not awaited"
        async with self._lock:
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue[object] = asyncio.Queue()
            stop = threading.Event()

            def produce() -> None:
                try:
                    chunks = self._llama.create_chat_completion(
                        messages=[{"role": m.role, "content": m.content} for m in messages],
                        max_tokens=max_tokens,
                        temperature=temperature,
                        stream=True,
                    )
                    count = 0
                    for chunk in chunks:
                        if stop.is_set():
                            completion.finish_reason = "cancelled"
                            break
                        choice = chunk["choices"][0]
                        text = choice["delta"].get("content") or ""
                        if text:
                            count += 1
                            loop.call_soon_threadsafe(queue.put_nowait, text)
                        if choice.get("finish_reason"):
                            completion.finish_reason = choice["finish_reason"]
                    completion.completion_tokens = count
                    completion.prompt_tokens = int(self._llama.n_tokens) - count
                    loop.call_soon_threadsafe(queue.put_nowait, _DONE)
                except Exception as exc:  # noqa: BLE001 - handed to the event loop
                    loop.call_soon_threadsafe(queue.put_nowait, exc)

            future = loop.run_in_executor(self._executor, produce)
            try:
                while True:
                    item = await queue.get()
                    if item is _DONE:
                        break
                    if isinstance(item, Exception):
                        raise item
                    yield str(item)
            finally:
                # On cancellation the generation thread stops at the next token; the lock is
                # held until it has, so the next request never races it for the model.
                stop.set()
                await asyncio.shield(future)
