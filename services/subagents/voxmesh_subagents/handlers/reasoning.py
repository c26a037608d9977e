"""``reasoning``: a slower, more careful LLM answer, computed while the conversation goes on."""

from __future__ import annotations

from typing import Any

from voxmesh_subagents.handlers.base import TaskContext, TaskHandler
from voxmesh_subagents.handlers.llm_client import LlmClient

SYSTEM_PROMPT = (
    "You work in the background for a voice assistant on a phone call. Think the question "
    "through carefully using the context, then answer in at most three short, plain sentences "
    "the assistant can read out. If the context does not contain the answer, say so."
)


class Reasoning(TaskHandler):
    """Answers a question with context through the LLM service, in a session of its own."""

    name = "reasoning"
    description = "Think a hard question through in the background and return a short answer."
    schema = {
        "type": "object",
        "properties": {
            "question": {"type": "string", "minLength": 1, "maxLength": 2000},
            "context": {"type": "string", "maxLength": 3000, "default": ""},
        },
        "required": ["question"],
        "additionalProperties": False,
    }

    def __init__(self, llm: LlmClient, max_tokens: int) -> None:
        """Creates the handler on a shared LLM client."""
        self._llm = llm
        self._max_tokens = max_tokens

    async def run(self, args: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
        """Returns ``{"answer"}``."""
        context = str(args.get("context", "")).strip()
        prompt = f"Context:\n{context}\n\nQuestion: {args['question']}" if context else str(
            args["question"])
        answer = await self._llm.generate(ctx.task_id, SYSTEM_PROMPT, prompt, self._max_tokens)
        return {"answer": answer}
