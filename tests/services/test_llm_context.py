"""LLM context: turn-completion marks, tool-call pairs, heard text, discarded turns, summaries.

The rules are checked as pure functions; the summary with the real model and a real context
store, in an LLM service started with a tiny token budget.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio

from voxmesh.cli.stack import Ports, Stack
from voxmesh.errors import InvalidInputError
from voxmesh.toolcalls import ToolCallParser
from voxmesh.v1 import common_pb2, llm_pb2, llm_pb2_grpc
from voxmesh_llm.facts import extract_facts
from voxmesh_llm.history import (
    TOOL_CALL_LINE,
    TOOL_CANCELLED,
    TOOL_IN_PROGRESS,
    StoredMessage,
    add_input,
    apply_tool_results,
    discard_turn,
    remove_user_message,
    set_heard,
    tool_step,
    trim,
)
from voxmesh_llm.reply import Reply, reply_events
from voxmesh_llm.service import build_messages
from voxmesh_llm.summary import carried_facts, compose_summary, split_point
from voxmesh_llm.turn_completion import (
    COMPLETE,
    INCOMPLETE_LONG,
    INCOMPLETE_SHORT,
    TURN_COMPLETION_PROMPT,
    TurnMarkParser,
)

CALL = {"call_id": "c1", "name": "lookup_order", "arguments": {"order_id": "1234"}}


def _feed(parser: TurnMarkParser, deltas: list[str]) -> str:
    text = "".join(parser.push(delta) for delta in deltas)
    return text + parser.finish()


@pytest.mark.parametrize(
    ("deltas", "verdict", "text"),
    [
        (["✓ Paris", " is the capital."], COMPLETE, "Paris is the capital."),
        (["\n ", "✓", " ", " Sure."], COMPLETE, "Sure."),  # mark and space in separate deltas
        (["✔️ Sure."], COMPLETE, "Sure."),  # heavy check mark with a variation selector
        (["○"], INCOMPLETE_SHORT, ""),
        ([" ◐"], INCOMPLETE_LONG, ""),
        (["Paris", " is the capital."], COMPLETE, "Paris is the capital."),  # no mark
        ([" Hi ✓ there"], COMPLETE, " Hi  there"),  # an echoed mark is never spoken
        (["", "  "], COMPLETE, "  "),  # nothing visible at all
    ],
)
def test_turn_mark_is_taken_off_the_reply(
    deltas: list[str], verdict: int, text: str
) -> None:
    parser = TurnMarkParser()
    assert _feed(parser, deltas) == text
    assert parser.verdict == verdict


def test_reply_without_mark_is_not_held_back() -> None:
    parser = TurnMarkParser()
    assert parser.push("  ") == ""  # only whitespace waits for the deciding character
    assert parser.push("Hello") == "  Hello"
    assert parser.verdict == COMPLETE
    assert parser.push(" there") == " there"


@pytest.mark.parametrize("chunk", [1, 5, 1000])
def test_tool_call_after_the_mark_is_still_parsed(chunk: int) -> None:
    output = '✓ {"name": "lookup_order", "arguments": {"order_id": "1234"}}'
    marks, calls = TurnMarkParser(), ToolCallParser()
    spoken = "".join(calls.push(marks.push(output[i:i + chunk]))
                     for i in range(0, len(output), chunk))
    spoken += calls.push(marks.finish()) + calls.finish()
    assert spoken == ""
    assert marks.verdict == COMPLETE
    assert [(c.name, c.arguments) for c in calls.calls] == [("lookup_order", {"order_id": "1234"})]


async def _model_output(deltas: list[str], read: list[str]) -> AsyncGenerator[str, None]:
    """Stands for the provider's stream: records how far it was read and when it was closed."""
    try:
        for delta in deltas:
            read.append(delta)
            yield delta
    finally:
        read.append("<closed>")


async def _reply(deltas: list[str], *, turn_marks: bool) -> tuple[list[Any], Reply, list[str]]:
    read: list[str] = []
    reply = Reply()
    events = [e async for e in reply_events(_model_output(deltas, read), reply,
                                            turn_marks=turn_marks)]
    return events, reply, read


@pytest.mark.parametrize(("mark", "verdict"), [("○", INCOMPLETE_SHORT), ("◐", INCOMPLETE_LONG)])
async def test_an_unfinished_caller_stops_the_reply_at_the_mark(mark: str, verdict: int) -> None:
    events, reply, read = await _reply([" ", mark, " Sure,", " go on."], turn_marks=True)
    assert [e.WhichOneof("event") for e in events] == ["turn_completion"]
    assert events[0].turn_completion.verdict == verdict
    assert reply.incomplete and reply.spoken == "" and not reply.calls
    assert read == [" ", mark, "<closed>"]  # not one delta more: the generation stops


async def test_a_client_that_hangs_up_on_the_verdict_still_drops_the_turn() -> None:
    read: list[str] = []
    reply = Reply()
    events = reply_events(_model_output(["○", " more"], read), reply, turn_marks=True)
    first = await anext(events)
    await events.aclose()  # the worker cancels its call as soon as it reads ○
    assert first.turn_completion.verdict == INCOMPLETE_SHORT
    assert reply.incomplete and read == ["○", "<closed>"]


async def test_the_verdict_comes_before_speech_and_tool_calls() -> None:
    events, reply, read = await _reply(
        ["✓ ", "Let me check. ", '<tool_call>{"name": "lookup_order", ',
         '"arguments": {"order_id": "1234"}}</tool_call>'], turn_marks=True)
    assert [e.WhichOneof("event") for e in events] == ["turn_completion", "delta", "tool_call"]
    assert events[0].turn_completion.verdict == COMPLETE
    assert events[1].delta.text == "Let me check. " == reply.spoken
    assert reply.calls == [{"call_id": events[2].tool_call.call_id, "name": "lookup_order",
                            "arguments": {"order_id": "1234"}}]
    assert not reply.incomplete and read[-1] == "<closed>"


async def test_no_verdict_unless_asked() -> None:
    events, reply, _ = await _reply(["✓ Paris", "."], turn_marks=False)
    assert [e.delta.text for e in events] == ["✓ Paris", "."]
    assert reply.verdict is None


def test_turn_completion_prompt_has_every_mark_and_a_paused_phone_number() -> None:
    for mark in "✓○◐":
        assert mark in TURN_COMPLETION_PROMPT
    assert '"My phone number is 555." You: "○"' in TURN_COMPLETION_PROMPT


@pytest.mark.parametrize(
    ("said", "facts"),
    [
        (["Hi, my name is Alice Johnson."], ["name Alice Johnson"]),
        (["This is Bob. My order number is 48213."], ["name Bob", "order number 48213"]),
        (["I'm Looking for my order, I'm calling about it."], []),
        (["My number is 555 0199 and my email is alice.j@example.com"],
         ["email alice.j@example.com", "phone number 555 0199"]),
        (["A table at 7:30 pm on Friday, May 5th."],
         ["time 7:30 pm", "date Friday", "date May 5th"]),
        (["My confirmation is 7781.", "Again, confirmation 7781."], ["confirmation number 7781"]),
        (["We are 12 people. Reservation 90210 please."], ["reservation number 90210"]),
    ],
)
def test_facts_the_caller_gave(said: list[str], facts: list[str]) -> None:
    assert extract_facts(said) == facts


def _turn(index: int, *, tool: bool = False, pending: bool = False) -> list[StoredMessage]:
    messages = [StoredMessage("user", f"question {index}", index)]
    if tool:
        messages += tool_step(index, "", [{**CALL, "call_id": f"c{index}"}], interrupted=False)
        if not pending:
            messages[-1].content = json.dumps({"status": "ok"})
    return [*messages, StoredMessage("assistant", f"answer {index}", index)]


def test_split_point_keeps_the_newest_messages() -> None:
    messages = _turn(1) + _turn(2) + _turn(3) + _turn(4)
    assert split_point(messages, 6) == 2
    assert split_point(messages, 8) == 0
    assert split_point(messages, 20) == 0


def test_split_point_never_separates_a_tool_call_from_its_results() -> None:
    # user, assistant(call), tool, assistant, then two plain turns
    messages = _turn(1, tool=True) + _turn(2) + _turn(3)
    assert [m.role for m in messages[:4]] == ["user", "assistant", "tool", "assistant"]
    # keep=6 would cut between the tool-call message (index 1) and its tool message (index 2)
    assert split_point(messages, 6) == 1
    assert split_point(messages, 7) == 1
    assert split_point(messages, 5) == 3


def test_split_point_stops_before_a_pending_tool_call() -> None:
    messages = _turn(1) + _turn(2, tool=True, pending=True) + _turn(3) + _turn(4)
    assert split_point(messages, 2) == 3  # turn 2's call still waits for CommitToolResults


def test_tool_results_replace_their_placeholders() -> None:
    messages = add_input([], 1, "where is order 1234?", [])
    messages += tool_step(1, "Let me check.", [CALL, {**CALL, "call_id": "c2"}], interrupted=False)
    assert [(m.role, m.call_id, m.content) for m in messages[2:]] == [
        ("tool", "c1", TOOL_IN_PROGRESS), ("tool", "c2", TOOL_IN_PROGRESS)]
    messages = add_input(messages, 1, "", [("c2", '{"status": "ok"}'), ("c9", "{}")])
    assert [(m.call_id, m.content) for m in messages[2:]] == [
        ("c1", TOOL_IN_PROGRESS), ("c2", '{"status": "ok"}'), ("c9", "{}")]
    committed = apply_tool_results(messages, 1, [("c1", '{"status": "CANCELLED"}')], strict=True)
    assert committed[2].content == '{"status": "CANCELLED"}' and len(committed) == len(messages)
    with pytest.raises(InvalidInputError, match="nope") as info:
        apply_tool_results(messages, 1, [("nope", "{}")], strict=True)
    assert info.value.reason == "TOOL_CALL_NOT_FOUND"


def test_calls_of_a_step_cut_before_done_are_closed_as_cancelled() -> None:
    messages = tool_step(1, "", [CALL], interrupted=True)
    assert messages[0].interrupted and messages[0].tool_calls == [CALL]
    assert [(m.call_id, m.content) for m in messages[1:]] == [("c1", TOOL_CANCELLED)]
    assert json.loads(TOOL_CANCELLED)["status"] == "cancelled"


def test_heard_text_becomes_the_turns_assistant_text() -> None:
    messages = [*_turn(1, tool=True), StoredMessage("user", "next", 2)]
    messages[1].content = "Let me check."
    heard = set_heard(messages, 1, "Let me check. Your order", True)
    assert [(m.role, m.content, m.interrupted, bool(m.tool_calls)) for m in heard] == [
        ("user", "question 1", False, False),
        ("assistant", "", False, True),  # the call stays, its text moved to the heard message
        ("tool", '{"status": "ok"}', False, False),
        ("assistant", "Let me check. Your order", True, False),
        ("user", "next", False, False),
    ]
    # Turn 0: the greeting, into an empty context.
    assert set_heard([], 0, "Hello!", False) == [StoredMessage("assistant", "Hello!", 0)]
    # Cut off before a word was heard: the model still sees that it was interrupted.
    assert set_heard(_turn(1), 1, "", True)[-1] == StoredMessage("assistant", "", 1, True)
    assert set_heard(_turn(1), 1, "", False) == _turn(1)[:1]


def test_discarding_a_turn_removes_its_messages_but_not_a_summary() -> None:
    summary = StoredMessage("system", compose_summary("Earlier.", []), 1)
    messages = [summary, *_turn(1, tool=True), *_turn(2)]
    assert discard_turn(messages, 1) == [summary, *_turn(2)]
    assert remove_user_message(_turn(2), 2, "question 2") == _turn(2)[1:]


def test_hard_cap_keeps_the_summary_and_never_starts_with_a_tool_result() -> None:
    summary = StoredMessage("system", "Summary of the earlier conversation: x", 0)
    messages = [summary, *_turn(1, tool=True), *_turn(2)]
    # The newest four would start with turn 1's tool result, whose call was cut.
    assert trim(messages, 5) == [summary, *_turn(1, tool=True)[-1:], *_turn(2)]
    assert trim(messages, 3) == [summary, *_turn(2)]
    assert trim(messages[1:], 4) == [*_turn(1, tool=True)[-1:], *_turn(2)]
    assert trim(messages, 7) == messages


def test_old_stored_messages_still_load() -> None:
    old = StoredMessage.from_dict({"role": "assistant", "content": '{"name": "f"}',
                                   "turn_index": 3, "interrupted": False, "tool_call": True})
    assert (old.content, old.tool_calls, old.call_id) == (TOOL_CALL_LINE, [], "")
    newer = StoredMessage.from_dict({"role": "user", "content": "hi", "from_the_future": 1})
    assert newer == StoredMessage("user", "hi")


def test_summary_joins_the_system_prompt_and_tool_steps_read_neutrally() -> None:
    summary = StoredMessage("system", compose_summary("Alice asked about an order.",
                                                      ["order number 48213"]), 2)
    history = [summary, *_turn(3, tool=True), StoredMessage("user", "thanks", 4)]
    request = llm_pb2.GenerateRequest(system_prompt="You are Vox.", user_text="thanks")
    messages = build_messages(request, history, "default", turn_marks=True)
    assert [m.role for m in messages] == ["system", "user", "assistant", "tool", "assistant",
                                          "user"]
    system = messages[0].content
    assert system.startswith("You are Vox.\n\nSummary of the earlier conversation: Alice")
    assert system.endswith(TURN_COMPLETION_PROMPT)
    assert messages[2].content == TOOL_CALL_LINE
    assert carried_facts([summary]) == ["order number 48213"]


# --- with the real model -------------------------------------------------------------------

# Four short turns come to about 115 tokens; three to about 85.
BUDGET_TOKENS = 80
KEEP_MESSAGES = 4


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def small_budget_llm(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """nats-server and the LLM service only, with a token budget a few turns exceed."""
    platform = Stack(state_dir=tmp_path_factory.mktemp("llm-summary"), ports=Ports.free(), env={
        "VOXMESH_LLM_CONTEXT_TOKEN_BUDGET": str(BUDGET_TOKENS),
        "VOXMESH_LLM_SUMMARY_KEEP_MESSAGES": str(KEEP_MESSAGES)})
    # Only the processes this needs: the worker, STT and TTS play no part in summaries.
    platform.children = {name: child for name, child in platform._specs().items()
                         if name in ("nats", "llm")}
    try:
        for name in platform.children:
            await platform.spawn(name)
            await platform.wait_healthy(name)
        yield platform
    finally:
        await platform.stop()


async def _say(llm: llm_pb2_grpc.LanguageModelStub, session: str, turn: int, text: str) -> str:
    events = [e async for e in llm.Generate(llm_pb2.GenerateRequest(
        turn=common_pb2.TurnRef(session_id=session, turn_index=turn), user_text=text,
        max_tokens=24, temperature=0), timeout=60)]
    assert events[-1].WhichOneof("event") == "done"
    return "".join(e.delta.text for e in events if e.WhichOneof("event") == "delta")


@pytest.mark.e2e
async def test_older_turns_are_summarized_keeping_the_callers_facts(
    small_budget_llm: Stack,
) -> None:
    session = uuid.uuid4().hex
    said = ["Hi, my name is Alice Johnson.", "My order number is 48213.",
            "It has not arrived yet.", "Can you help me with that?"]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{small_budget_llm.ports.llm}") as channel:
        llm = llm_pb2_grpc.LanguageModelStub(channel)
        for turn, text in enumerate(said, start=1):
            await _say(llm, session, turn, text)
        request = llm_pb2.GetContextRequest(session_id=session)
        before = (await llm.GetContext(request)).messages
        deadline = time.monotonic() + 30
        while True:
            context = (await llm.GetContext(request)).messages
            # Turns 1 and 2 are summarized (possibly turn 1 first, then again with turn 2).
            if context[0].role == "system" and context[0].turn_index >= 2:
                break
            assert time.monotonic() < deadline, f"no summary of turns 1-2: {context}"
            await asyncio.sleep(0.2)
        summary = context[0].content
        assert summary.startswith("Summary of the earlier conversation: ")
        assert "48213" in summary and "Alice" in summary
        assert "Facts the caller gave: " in summary
        assert list(context[1:]) == list(before[-KEEP_MESSAGES:])
        answer = await _say(llm, session, 5, "What is my order number?")
        assert "48213" in answer, "the summary did not reach the prompt"
        after = (await llm.GetContext(request)).messages
        assert [(m.role, m.turn_index) for m in after[-2:]] == [("user", 5), ("assistant", 5)]
