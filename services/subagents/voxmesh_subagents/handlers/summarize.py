"""``summarize``: a short summary of a text, through the LLM service."""

from __future__ import annotations

from typing import Any

from voxmesh_subagents.handlers.base import TaskContext, TaskHandler
from voxmesh_subagents.handlers.llm_client import LlmClient

SYSTEM_PROMPT = (
    "Summarize the user's text in two or three plain sentences. Keep every name, number, date "
    "and amount it contains. Do not add anything that is not in the text."
)


class Summarize(TaskHandler):
    """Summarizes a text through the LLM service, in a session of its own."""

    name = "summarize"
    description = "Summarize a long text (a document, an email, a transcript) in a few sentences."
    schema = {
        "type": "object",
        "properties": {"text": {"type": "string", "minLength": 1, "maxLength": 3500}},
        "required": ["text"],
        "additionalProperties": False,
    }

    def __init__(self, llm: LlmClient, max_tokens: int) -> None:
        """Creates the handler on a shared LLM client."""
        self._llm = llm
        self._max_tokens = max_tokens

    async def run(self, args: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
        """Returns ``{"summary"}``."""
        summary = await self._llm.generate(ctx.task_id, SYSTEM_PROMPT, args["text"],
                                           self._max_tokens)
        return {"summary": summary}
