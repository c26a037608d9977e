"""A real OpenAI-compatible server on loopback for tests: llama.cpp with the local Qwen GGUF.

:func:`llama_server` starts ``python -m llama_cpp.server`` (llama-cpp-python's server) on a free
port with an API key, waits until ``GET /v1/models`` answers, and stops it. The GGUF's own chat
template is used (no ``--chat_format``): it renders ``tools`` the Qwen/Hermes way and the model
answers with its call as JSON text. ``chatml-function-calling`` is no use for Qwen: with
``tool_choice="auto"`` the 0.5B model writes ``functions.lookup_order:`` and no call (checked
here; llama-cpp-python issue #1772: no automatic tool calling for Qwen2.5).

llama-cpp-python's server needs its ``[server]`` extra (fastapi, uvicorn, sse-starlette,
starlette-context), which the ``dev`` extra installs. The server is CPU-heavy: start one at a
time.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from voxmesh.cli.stack import free_port
from voxmesh.models import llm_gguf

#: Model id the server lists (requests may name any model; there is only this one).
MODEL_ALIAS = "qwen2.5-coder-0.5b-instruct"
_SERVER_EXTRA = ("fastapi", "uvicorn", "sse_starlette", "starlette_context")


@dataclass
class LlamaServer:
    """A running server.

    Attributes:
        base_url: API root, ``http://127.0.0.1:<port>/v1``.
        api_key: The key it accepts.
        kind: What runs: ``llama_cpp.server``.
        log_path: Its output, with one access line per request.
    """

    base_url: str
    api_key: str
    kind: str
    log_path: Path

    def chat_requests(self) -> int:
        """Chat completion requests answered so far (from the access lines of its log)."""
        return self.log_path.read_text(errors="replace").count(
            '"POST /v1/chat/completions HTTP/1.1" 200')


def has_llama_cpp_server() -> bool:
    """Whether llama-cpp-python's ``[server]`` extra is installed."""
    return all(importlib.util.find_spec(name) is not None for name in _SERVER_EXTRA)


def _models_ok(url: str, api_key: str) -> bool:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {api_key}"})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310 - loopback
            return bool(response.status == 200)
    except OSError:
        return False


@contextlib.asynccontextmanager
async def llama_server(
    log_dir: Path, *, api_key: str, n_ctx: int = 2048, threads: int = 2,
    startup_timeout_s: float = 120,
) -> AsyncIterator[LlamaServer]:
    """Runs the server for the ``async with`` block.

    Args:
        log_dir: Where its log goes.
        api_key: The key it requires.
        n_ctx: Context window.
        threads: CPU threads for inference.
        startup_timeout_s: How long it may take to answer ``/v1/models``.

    Raises:
        RuntimeError: It exited or did not answer in time (with the end of its log).
    """
    port = free_port()
    model = str(llm_gguf())
    options = ["--model", model, "--model_alias", MODEL_ALIAS, "--host", "127.0.0.1",
               "--port", str(port), "--api_key", api_key, "--n_ctx", str(n_ctx),
               "--n_threads", str(threads)]
    if not has_llama_cpp_server():
        raise RuntimeError("llama-cpp-python's [server] extra is missing; run `make install`")
    kind, argv = "llama_cpp.server", [sys.executable, "-m", "llama_cpp.server", *options]
    log_path = log_dir / f"llama-server-{port}.log"
    base_url = f"http://127.0.0.1:{port}/v1"
    with log_path.open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=log, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not await asyncio.to_thread(_models_ok, f"{base_url}/models", api_key):
            if process.returncode is not None or time.monotonic() > deadline:
                tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
                raise RuntimeError(f"{kind} did not start:\n{tail}")
            await asyncio.sleep(0.2)
        yield LlamaServer(base_url=base_url, api_key=api_key, kind=kind, log_path=log_path)
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), timeout=10)
            except TimeoutError:
                process.kill()
                await process.wait()
