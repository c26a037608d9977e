"""Folds a session's older turns into one summary message when its history grows too long.

Every turn re-sends the whole history, so a long call gets slower per turn and eventually
overflows the model's context. Once the stored history passes ``context_token_budget`` tokens,
everything but the newest ``summary_keep_messages`` messages is replaced by one ``system``
message: a few sentences by the model plus the facts the caller gave, found by rules
(:mod:`voxmesh_llm.facts`) so that a name or an order number survives a weak summary.

It runs in the background after a Generate, one task per session at most, and only while no
Generate is running: the model does one thing at a time, and a live caller must not wait for
a summary. A Generate that starts cancels running summaries; the next Generate to finish
schedules them again.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import aclosing

from opentelemetry.trace import Link, SpanContext, Tracer

from voxmesh.errors import NotFoundError
from voxmesh_llm.chain import LLMChain
from voxmesh_llm.context_store import ContextStore
from voxmesh_llm.facts import extract_facts
from voxmesh_llm.history import TOOL_IN_PROGRESS, StoredMessage
from voxmesh_llm.providers.base import ChatMessage, Completion

log = logging.getLogger("voxmesh.llm")

SUMMARY_PREFIX = "Summary of the earlier conversation: "
FACTS_PREFIX = "Facts the caller gave: "
SUMMARY_MAX_TOKENS = 120
# Chat-template tokens around each message (<|im_start|>role\n ... <|im_end|>\n).
_PER_MESSAGE_TOKENS = 5


def split_point(messages: list[StoredMessage], keep: int) -> int:
    """How many of the oldest messages to summarize; the newest ``keep`` always stay.

    The cut moves back (keeping more) so that it never separates an assistant tool-call message
    from its tool messages, and stops before a tool call whose result is still pending (its
    placeholder must stay addressable by CommitToolResults).
    """
    split = max(0, len(messages) - keep)
    while 0 < split < len(messages) and messages[split].role == "tool":
        split -= 1
    for index, message in enumerate(messages[:split]):
        if message.role == "tool" and message.content == TOOL_IN_PROGRESS:
            owner = index
            while owner > 0 and messages[owner].role == "tool":
                owner -= 1
            return owner
    return split


def transcript(messages: list[StoredMessage]) -> str:
    """The messages as plain dialogue lines for the summarizing prompt."""
    lines = []
    for message in messages:
        if message.role == "system":
            lines.append(f"Earlier: {message.content.removeprefix(SUMMARY_PREFIX)}")
        elif message.role == "user":
            lines.append(f"Caller: {message.content}")
        elif message.role == "tool":
            lines.append(f"Tool result: {message.content}")
        else:
            if message.content:
                lines.append(f"Agent: {message.content}"
                             + (" (cut off by the caller)" if message.interrupted else ""))
            lines += [f"Agent (calls {call.get('name', '')}): {call.get('arguments', '')}"
                      for call in message.tool_calls]
    return "\n".join(lines)


def summary_prompt(messages: list[StoredMessage]) -> list[ChatMessage]:
    """The chat that asks the model for a summary of ``messages``."""
    return [
        ChatMessage("system", "You are a note taker."),
        ChatMessage("user", f"<conversation>\n{transcript(messages)}\n</conversation>\n"
                            "Summarize the conversation above in a few sentences."),
    ]


def compose_summary(text: str, facts: list[str]) -> str:
    """The stored summary: the model's sentences, then the facts on a line of their own."""
    content = SUMMARY_PREFIX + (text.strip() or "(none)")
    if facts:
        content += f"\n{FACTS_PREFIX}{'; '.join(facts)}"
    return content


def carried_facts(messages: list[StoredMessage]) -> list[str]:
    """Facts recorded by earlier summaries among ``messages``."""
    facts: list[str] = []
    for message in messages:
        if message.role != "system":
            continue
        for line in message.content.splitlines():
            if line.startswith(FACTS_PREFIX):
                facts += line.removeprefix(FACTS_PREFIX).split("; ")
    return facts


class Summarizer:
    """Owns the background summary tasks of one LLM service process."""

    def __init__(
        self, chain: LLMChain, store: ContextStore, *, token_budget: int,
        keep_messages: int, tracer: Tracer,
    ) -> None:
        """Creates a summarizer; it does nothing until :meth:`schedule` is called."""
        self._chain = chain
        self._store = store
        self._budget = token_budget
        self._keep = keep_messages
        self._tracer = tracer
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # Sessions asked for again while their task was still winding down.
        self._again: dict[str, SpanContext | None] = {}
        self._generating = 0
        self._closed = False

    def generation_started(self) -> None:
        """A Generate begins: running summaries give the model up."""
        self._generating += 1
        for task in self._tasks.values():
            task.cancel()

    def generation_finished(self, session_id: str, link: SpanContext | None) -> None:
        """A Generate stored its messages: check the session's history in the background."""
        self._generating -= 1
        self.schedule(session_id, link)

    def schedule(self, session_id: str, link: SpanContext | None = None) -> None:
        """Starts a summary check for a session unless one is already running."""
        if self._closed:
            return
        running = self._tasks.get(session_id)
        if running is not None and not running.done():
            self._again[session_id] = link
            return
        task = asyncio.create_task(self._run(session_id, link), name=f"summarize-{session_id}")
        self._tasks[session_id] = task
        task.add_done_callback(lambda done: self._finished(session_id, done))

    def forget(self, session_id: str) -> None:
        """The session ended: its summary is no longer wanted."""
        self._again.pop(session_id, None)
        if (task := self._tasks.get(session_id)) is not None:
            task.cancel()

    async def _wait_idle(self) -> None:
        """Waits until no summary is running."""
        while self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def close(self) -> None:
        """Cancels every summary and waits for them to end."""
        self._closed = True
        self._again.clear()
        for task in self._tasks.values():
            task.cancel()
        await self._wait_idle()

    def _finished(self, session_id: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(session_id) is task:
            del self._tasks[session_id]
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("summary of session %s failed: %s", session_id, exc)
        if session_id in self._again:
            self.schedule(session_id, self._again.pop(session_id))

    async def _count(self, messages: list[StoredMessage]) -> int:
        text = "\n".join(m.content for m in messages)
        return await self._chain.count_tokens(text) + _PER_MESSAGE_TOKENS * len(messages)

    async def _run(self, session_id: str, link: SpanContext | None) -> None:
        if self._generating:
            return  # the running Generate schedules another check when it ends
        messages, revision = await self._store.load(session_id)
        if revision is None:
            return
        before = await self._count(messages)
        log.debug("session %s: history of %d tokens (budget %d)", session_id, before,
                  self._budget)
        if before <= self._budget:
            return
        split = split_point(messages, self._keep)
        older = messages[:split]
        if not older or (len(older) == 1 and older[0].role == "system"):
            return
        with self._tracer.start_as_current_span(
            "llm.summarize", links=[Link(link)] if link is not None else None,
            attributes={"voxmesh.session.id": session_id,
                        "voxmesh.llm.summarized_messages": len(older),
                        "voxmesh.llm.tokens_before": before},
        ) as span:
            completion = Completion()
            prompt = summary_prompt(older)
            async with aclosing(self._chain.stream(
                lambda provider: (prompt, ()), max_tokens=SUMMARY_MAX_TOKENS, temperature=0.0,
                completion=completion,
            )) as deltas:
                text = "".join([delta async for delta in deltas if isinstance(delta, str)])
            facts = extract_facts(m.content for m in older if m.role == "user")
            summary = StoredMessage(
                "system", compose_summary(text, list(dict.fromkeys(carried_facts(older) + facts))),
                older[-1].turn_index)
            replaced = False

            def change(current: list[StoredMessage]) -> list[StoredMessage] | None:
                nonlocal replaced
                # Only if what was summarized is still the start of the context: a message
                # appended meanwhile is kept, and an edit of an old turn wins over the summary.
                replaced = current[:split] == older
                return [summary, *current[split:]] if replaced else None

            try:
                after = await self._store.modify(session_id, change, must_exist=True)
            except NotFoundError:
                return  # the call ended meanwhile
            span.set_attributes({"voxmesh.llm.summary_applied": replaced,
                                 "voxmesh.llm.tokens_after": await self._count(after)})
            log.info("session %s: %d messages summarized (%s)", session_id, len(older),
                     "applied" if replaced else "skipped, context changed")
