"""``knowledge_lookup``: semantic search over a knowledge-base folder with local embeddings."""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from voxmesh.errors import InvalidInputError, ProviderError
from voxmesh.models import ModelMissingError, minilm_model_dir
from voxmesh_subagents.embeddings import MiniLMEmbedder
from voxmesh_subagents.handlers.base import COMPONENT, TaskContext, TaskHandler
from voxmesh_subagents.kb import KnowledgeIndex

log = logging.getLogger("voxmesh.subagents.knowledge")


class KnowledgeLookup(TaskHandler):
    """Finds the passages of a knowledge base that answer a question (all-MiniLM-L6-v2)."""

    name = "knowledge_lookup"
    description = (
        "Search the agent's knowledge base (policies, FAQs) for passages that answer a question.")
    schema = {
        "type": "object",
        "properties": {
            "query": {"type": "string", "minLength": 1, "maxLength": 1000},
            "kb": {"type": "string", "minLength": 1, "maxLength": 512,
                   "description": "knowledge-base name (a folder under the kb_dir setting)"},
            "top_k": {"type": "integer", "minimum": 1, "maximum": 20, "default": 3},
        },
        "required": ["query", "kb"],
        "additionalProperties": False,
    }

    def __init__(self, kb_dir: Path, chunk_chars: int, *, preload: bool = True) -> None:
        """Creates the handler; the model loads in the background at :meth:`start`.

        Args:
            kb_dir: Folder whose subfolders are the knowledge bases; ``kb`` paths must stay in
                it.
            chunk_chars: Longest passage.
            preload: Load the model at start instead of on the first lookup.
        """
        self._kb_dir = kb_dir
        self._preload = preload
        # One thread: the model is CPU-bound and numpy already spreads one batch over the cores.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embeddings")
        self._model: MiniLMEmbedder | None = None
        self._model_lock = threading.Lock()
        self._index = KnowledgeIndex(self._embedder, chunk_chars)

    def _embedder(self) -> MiniLMEmbedder:
        with self._model_lock:
            if self._model is None:
                self._model = MiniLMEmbedder(minilm_model_dir())
            return self._model

    async def start(self) -> None:
        """Loads the model in the executor thread, without waiting for it."""
        if not self._preload:
            return

        def warm() -> None:
            try:
                self._embedder()
                log.info("MiniLM embeddings loaded")
            except ModelMissingError as exc:
                log.warning("knowledge_lookup tasks will fail: %s", exc)
            except Exception:  # a lookup will report it; the service must still start
                log.exception("loading the MiniLM embeddings failed")

        # The executor owns this work; close() shuts it down. Lookups queue behind it.
        self._executor.submit(warm)

    async def close(self) -> None:
        """Stops the executor thread (a running batch finishes in the background)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def run(self, args: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
        """Returns ``{"passages": [{"text", "source", "score"}]}``, best first."""
        top_k = int(args.get("top_k", 3))
        loop = asyncio.get_running_loop()
        hits = await loop.run_in_executor(
            self._executor, self._search, args["kb"], args["query"], top_k)
        ctx.span.set_attribute("voxmesh.task.kb", args["kb"])
        ctx.span.set_attribute("voxmesh.task.passages", len(hits))
        return {"passages": hits}

    def _search(self, kb: str, query: str, top_k: int) -> list[dict[str, Any]]:
        folder = self._resolve(kb)
        try:
            hits = self._index.search(folder, query, top_k)
        except ModelMissingError as exc:
            raise ProviderError(str(exc), reason="MODEL_MISSING", component=COMPONENT,
                                retryable=False) from exc
        return [{"text": h.passage.text, "source": h.passage.source, "score": round(h.score, 4)}
                for h in hits]

    def _resolve(self, kb: str) -> Path:
        root = self._kb_dir.resolve()
        candidates = [root / kb] if not Path(kb).is_absolute() else []
        candidates.append(Path(kb))
        for candidate in (c.resolve() for c in candidates):
            # A name or path outside the configured folder is refused: task arguments come
            # from a model's tool call and must not read arbitrary files.
            if candidate.is_dir() and candidate.is_relative_to(root):
                return candidate
        raise InvalidInputError(
            f"unknown knowledge base {kb!r}: not a folder under {root}",
            reason="KB_NOT_FOUND", field="arguments_json.kb", component=COMPONENT)
