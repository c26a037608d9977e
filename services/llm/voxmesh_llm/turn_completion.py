"""Turn-completion marks: the model opens its reply with ✓, ○ or ◐.

A capable model can tell "My number is 555." (the caller is reading the rest off a card) from a
finished question better than silence or text rules can, and it decides while it is answering
anyway, so asking it costs one token. :class:`TurnMarkParser` takes the mark off the front of
the streamed reply; the mark never reaches TTS or the stored context.
"""

from __future__ import annotations

from voxmesh.v1 import llm_pb2

COMPLETE: llm_pb2.TurnCompletion.Verdict = llm_pb2.TurnCompletion.VERDICT_COMPLETE
INCOMPLETE_SHORT: llm_pb2.TurnCompletion.Verdict = llm_pb2.TurnCompletion.VERDICT_INCOMPLETE_SHORT
INCOMPLETE_LONG: llm_pb2.TurnCompletion.Verdict = llm_pb2.TurnCompletion.VERDICT_INCOMPLETE_LONG

#: Appended to the system prompt when a Generate asks for marks.
TURN_COMPLETION_PROMPT = """

# Turn marks

Start every reply with one mark that says whether the caller has finished speaking:
✓ they finished: write ✓, a space, then your answer (or your tool call).
○ they stopped in the middle of a sentence or a number: write only ○.
◐ they asked you to wait or are still thinking: write only ◐.

Caller: "What are your hours?" You: "✓ We are open until six."
Caller: "My phone number is 555." You: "○"
Caller: "I'd like a table for" You: "○"
Caller: "Hold on, let me think." You: "◐"
Caller: "My phone number is 555 0199." You: "✓ Thank you, I have it."
"""

# Look-alikes models write for the same marks (heavy check mark, large circle, other halves).
MARKS: dict[str, llm_pb2.TurnCompletion.Verdict] = {
    "✓": COMPLETE, "✔": COMPLETE,
    "○": INCOMPLETE_SHORT, "◯": INCOMPLETE_SHORT,
    "◐": INCOMPLETE_LONG, "◑": INCOMPLETE_LONG,
}
# A mark may be followed by an emoji variation selector; it is part of the mark, not text.
_AFTER_MARK = " \t\r\n\ufe0f"


class TurnMarkParser:
    """Streams reply deltas in; finds the verdict and passes the rest of the text on.

    Only leading whitespace is held back while waiting for the first visible character, which
    decides: a mark sets :attr:`verdict` and is dropped with the whitespace after it; anything
    else means :data:`COMPLETE` with the text passed on as it came. Mark characters later in
    the reply are dropped too: small models sometimes echo the instructions, and a mark is
    never something to speak.
    """

    def __init__(self) -> None:
        """Creates a parser that has seen nothing yet."""
        self._buffer = ""
        self._after_mark = False
        #: None until the first visible character has arrived.
        self.verdict: llm_pb2.TurnCompletion.Verdict | None = None

    def push(self, delta: str) -> str:
        """Adds a delta; returns the text to pass on (possibly empty)."""
        if self.verdict is None:
            self._buffer += delta
            stripped = self._buffer.lstrip()
            if not stripped:
                return ""
            mark = MARKS.get(stripped[0])
            if mark is None:
                self.verdict = COMPLETE
                text, self._buffer = self._buffer, ""
                return _without_marks(text)
            self.verdict = mark
            self._after_mark = True
            delta, self._buffer = stripped[1:], ""
        if self._after_mark:
            delta = delta.lstrip(_AFTER_MARK)
            if not delta:
                return ""
            self._after_mark = False
        return _without_marks(delta)

    def finish(self) -> str:
        """Ends the stream: a reply with no visible character is :data:`COMPLETE`."""
        if self.verdict is None:
            self.verdict = COMPLETE
        rest, self._buffer = self._buffer, ""
        return rest


def _without_marks(text: str) -> str:
    if any(mark in text for mark in MARKS):
        return "".join(char for char in text if char not in MARKS)
    return text
