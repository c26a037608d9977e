"""Knowledge bases: folders of ``.md``/``.txt`` documents, searched by sentence embeddings.

Each document is cut into paragraphs (long ones at sentence ends); a paragraph is embedded with
the heading above it, so "How long do I have to send it back?" finds the paragraph under
"Returns". The index is cached per file, keyed by modification time and size: an edited
document is re-embedded on the next search, the others are not. Blocking: run in a thread.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voxmesh_subagents.embeddings import Array, MiniLMEmbedder

SUFFIXES = (".md", ".txt")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class Passage:
    """One searchable paragraph."""

    text: str
    source: str
    heading: str = ""


@dataclass(frozen=True)
class Hit:
    """A passage and its cosine similarity to the query."""

    passage: Passage
    score: float


def chunk_document(text: str, source: str, max_chars: int) -> list[Passage]:
    """Cuts a document into paragraphs of at most ``max_chars`` characters.

    Lines starting with ``#`` are headings: they are not passages themselves but are kept
    with the paragraphs below them. Wrapped lines of a paragraph are joined.
    """
    passages: list[Passage] = []
    heading = ""
    for block in _PARAGRAPH_BREAK.split(text):
        lines = []
        for line in block.strip().splitlines():
            if line.lstrip().startswith("#"):
                heading = line.strip().lstrip("#").strip()
            elif line.strip():
                lines.append(line.strip())
        paragraph = " ".join(lines)
        for piece in _split_long(paragraph, max_chars):
            passages.append(Passage(piece, source, heading))
    return passages


def _split_long(paragraph: str, max_chars: int) -> list[str]:
    if len(paragraph) <= max_chars:
        return [paragraph] if paragraph else []
    pieces: list[str] = []
    current = ""
    for sentence in _SENTENCE_END.split(paragraph):
        if current and len(current) + 1 + len(sentence) > max_chars:
            pieces.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}".strip()
    if current:
        pieces.append(current)
    return pieces


@dataclass
class _FileEntry:
    stamp: tuple[int, int]  # (mtime_ns, size)
    passages: list[Passage]
    vectors: Array


class KnowledgeIndex:
    """Embedding indexes of knowledge-base folders, cached per file.

    Thread-safe; meant to be used from one executor thread (the embedder is CPU-bound and
    numpy already uses every core for one batch).
    """

    def __init__(self, embedder: Callable[[], MiniLMEmbedder], chunk_chars: int) -> None:
        """Creates an empty index.

        Args:
            embedder: Returns the (lazily loaded) embedder.
            chunk_chars: Longest passage, in characters.
        """
        self._embedder = embedder
        self._chunk_chars = chunk_chars
        self._files: dict[Path, _FileEntry] = {}
        self._lock = threading.Lock()

    def search(self, folder: Path, query: str, top_k: int) -> list[Hit]:
        """The ``top_k`` passages of ``folder`` closest to ``query``, best first."""
        with self._lock:
            passages, vectors = self._refresh(folder)
            if not passages:
                return []
            query_vector = self._embedder().encode([query])[0]
            scores = vectors @ query_vector
            best = np.argsort(-scores)[:top_k]
            return [Hit(passages[i], float(scores[i])) for i in best]

    def _refresh(self, folder: Path) -> tuple[list[Passage], Array]:
        files = sorted(p for p in folder.rglob("*") if p.suffix in SUFFIXES and p.is_file())
        passages: list[Passage] = []
        vectors: list[Array] = []
        for path in files:
            stat = path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
            entry = self._files.get(path)
            if entry is None or entry.stamp != stamp:
                chunks = chunk_document(path.read_text(encoding="utf-8", errors="replace"),
                                        str(path.relative_to(folder)), self._chunk_chars)
                texts = [f"{c.heading}: {c.text}" if c.heading else c.text for c in chunks]
                entry = _FileEntry(stamp, chunks, self._embedder().encode(texts))
                self._files[path] = entry
            passages.extend(entry.passages)
            vectors.append(entry.vectors)
        # Files deleted from this folder leave the cache too.
        for stale in [p for p in self._files if p.is_relative_to(folder) and p not in files]:
            del self._files[stale]
        if not passages:
            return [], np.zeros((0, 0), dtype=np.float32)
        return passages, np.concatenate(vectors)
