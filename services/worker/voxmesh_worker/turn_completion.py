"""Is the caller done? Text rules over the final transcript, sharing the LLM marks' verdicts.

The verdicts are those of the LLM turn-completion marks (seed guide 5.8.5).

Silence alone can't tell "My number is 555." (the caller is reading the rest off a card) from
"My number is 555 0199." Both end in a period: Whisper punctuates every pause. These rules catch
the common unfinished shapes in microseconds, before any model runs:

* a dangling last word: "a table for", "my order number is", "and", "um";
* a trailing comma or ellipsis;
* a phone number with fewer than 7 digits so far, a card number with fewer than 15;
* the caller asking for time: "hold on", "let me think", "give me a second".

The LLM marks (✓ ○ ◐) cover what rules can't, when the model is capable enough; the local
0.5B model is not (it answers ✓ for nearly everything), so the rules are on by default.
"""

from __future__ import annotations

import enum
import re


class Verdict(enum.Enum):
    """Whether to answer now, and if not, how long to wait for more."""

    COMPLETE = "✓"
    #: Stopped mid-sentence or mid-number: wait ``max_endpointing_ms`` (~5 s) for the rest.
    INCOMPLETE_SHORT = "○"
    #: Asked for time or is thinking: wait ``long_pause_ms`` (~10 s).
    INCOMPLETE_LONG = "◐"


# Conservative on purpose: a wrong "incomplete" costs the caller seconds of silence, a wrong
# "complete" only an early answer. So no "to" ("I'd love to."), "of" ("Kind of."), "so" ("I
# think so."), "that" ("I'd like that."), "on"/"in"/"about" ("Come on.", "What about?").
_DANGLING = frozenset("""
    a an the for with and or but because my your our their his her its is was at from um uh
    er than if i'm it's i'd i'll we're there's
""".split())

_ASKS_FOR_TIME = re.compile(
    r"\b(hold on|hang on|let me (think|see|check|find|look)|give me (a|one) "
    r"(sec|second|minute|moment)|just a (sec|second|minute|moment)|one (sec|second|moment)|"
    r"wait a (sec|second|minute|moment))\b")
_THINKING_ONLY = re.compile(r"^(hmm+|well|so|um+|uh+|let's see|good question)$")
# "My number is", "call me at", "my cell is" - but not order/reservation/account numbers.
_PHONE_CONTEXT = re.compile(
    r"\b(phone|cell|mobile|callback|call me at|reach me at|(?<!order )(?<!reservation )"
    r"(?<!confirmation )(?<!account )(?<!tracking )my number)\b")
_WORD = re.compile(r"[a-z0-9']+")
_DIGIT_WORDS = frozenset("zero oh one two three four five six seven eight nine".split())
PHONE_MIN_DIGITS = 7
# Card numbers are read in groups of four, with a pause after each.
_CARD_CONTEXT = re.compile(r"\b(card|card number|card no)\b( is)?")
CARD_MIN_DIGITS = 15


def classify(text: str) -> Verdict:
    """The verdict for a final transcript."""
    lowered = text.lower().strip()
    if not lowered:
        return Verdict.COMPLETE
    bare = lowered.rstrip(" .!")
    if _ASKS_FOR_TIME.search(lowered) or _THINKING_ONLY.match(bare.strip(" ,")):
        return Verdict.INCOMPLETE_LONG
    if lowered.endswith("?"):
        return Verdict.COMPLETE
    if lowered.endswith((",", "...", "…", "-", "—")):
        return Verdict.INCOMPLETE_SHORT
    if (card := _CARD_CONTEXT.search(lowered)) is not None:
        digits = _count_digits(lowered[card.end():])
        if 0 < digits < CARD_MIN_DIGITS:
            return Verdict.INCOMPLETE_SHORT
    if (phone := _PHONE_CONTEXT.search(lowered)) is not None:
        digits = _count_digits(lowered[phone.end():])
        if 0 < digits < PHONE_MIN_DIGITS or (digits == 0 and _ends_dangling(bare)):
            return Verdict.INCOMPLETE_SHORT
    if _ends_dangling(bare):
        return Verdict.INCOMPLETE_SHORT
    return Verdict.COMPLETE


def _count_digits(text: str) -> int:
    """Digits said so far, written ("555") or spelled ("five five five")."""
    words = _WORD.findall(text)
    return sum(ch.isdigit() for ch in text) + sum(word in _DIGIT_WORDS for word in words)


def _ends_dangling(text: str) -> bool:
    words = _WORD.findall(text)
    return bool(words) and words[-1] in _DANGLING


def merge_utterances(parts: list[str]) -> str:
    """The caller's words across pauses, as one utterance ("My number is 555." + "0199.")."""
    merged = ""
    for part in (p.strip() for p in parts):
        if not part:
            continue
        if merged:
            # Whisper closed the first piece with a period the caller never "said". Digits
            # read on after a pause are one number ("3782 8224" + "6310"), not a list.
            merged = merged.rstrip(".…")
            digits_go_on = merged[-1:].isdigit() and part[:1].isdigit()
            merged += " " if merged.endswith(",") or digits_go_on else ", "
        merged += part
    return merged
