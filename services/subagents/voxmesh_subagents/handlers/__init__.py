"""Task types. Each is a :class:`~voxmesh_subagents.handlers.base.TaskHandler` in its own module."""

from __future__ import annotations

from voxmesh_subagents.handlers.base import TaskContext, TaskHandler
from voxmesh_subagents.handlers.delay import Delay
from voxmesh_subagents.handlers.knowledge import KnowledgeLookup
from voxmesh_subagents.handlers.llm_client import LlmClient
from voxmesh_subagents.handlers.reasoning import Reasoning
from voxmesh_subagents.handlers.summarize import Summarize
from voxmesh_subagents.settings import SubagentsSettings

__all__ = ["TaskContext", "TaskHandler", "create_handlers"]


def create_handlers(settings: SubagentsSettings, llm: LlmClient) -> dict[str, TaskHandler]:
    """Every task type this service runs, by name."""
    handlers: list[TaskHandler] = [
        KnowledgeLookup(settings.kb_dir, settings.kb_chunk_chars,
                        preload=settings.preload_embeddings),
        Reasoning(llm, settings.reasoning_max_tokens),
        Summarize(llm, settings.summary_max_tokens),
        Delay(),
    ]
    return {handler.name: handler for handler in handlers}
