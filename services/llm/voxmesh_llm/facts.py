"""Facts a caller gave (name, numbers, email, times), found by rules in what they said.

A summary written by a small model may drop exactly what the rest of the call needs (the order
number, the caller's name), so these are extracted deterministically and kept next to it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_NAME = re.compile(
    r"\b(?i:my name is|my name's|this is|i'm|i am|call me)\s+"
    r"([A-Z][A-Za-z'’-]*[a-z](?:[ ][A-Z][A-Za-z'’-]*[a-z])?)\b")
# Capitalised words that follow "this is" / "I'm" without being a name.
_NOT_NAMES = frozenset("""
    A An The It That This What Not Just Here There Calling Looking Trying Sorry Fine Good Great
    Okay Ok Still So Very Really Happy Glad Interested Wondering Back Done Ready Sure
""".split())
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_TIME = re.compile(r"(?i)\b\d{1,2}(?::\d{2})?\s*(?:a\.?m\b\.?|p\.?m\b\.?)|\b\d{1,2}:\d{2}\b")
_MONTHS = (r"(?:January|February|March|April|May|June|July|August|September|October|November|"
           r"December)")
_DATE = re.compile(
    rf"\b{_MONTHS}\s+\d{{1,2}}(?:st|nd|rd|th)?\b|\b\d{{1,2}}(?:st|nd|rd|th)?\s+of\s+{_MONTHS}\b|"
    r"(?i:\b(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday|today|tomorrow|"
    r"tonight)\b)")
# Digit groups read with spaces or dashes ("555 0199", "555-0199") are one number.
_DIGITS = re.compile(r"(?<![\w.])\d(?:[ -]?\d)*(?![\w])")
_LABEL = re.compile(
    r"(?i)\b(order|phone|cell|mobile|reservation|confirmation|account|booking|tracking|ticket|"
    r"member(?:ship)?|policy|case|invoice|zip)\b|\b(call me at|reach me at|my number)\b")
_MIN_DIGITS = 3
# How far before a number its label may be ("my order number is 48213").
_LABEL_WINDOW = 40


def extract_facts(texts: Iterable[str]) -> list[str]:
    """Facts in the caller's words, e.g. ``["name Alice Johnson", "order number 48213"]``.

    Args:
        texts: What the caller said, oldest first.

    Returns:
        Facts in order of first mention, without repeats.
    """
    facts: list[str] = []
    for text in texts:
        for match in _NAME.finditer(text):
            name = match.group(1)
            if name.split()[0] not in _NOT_NAMES:
                facts.append(f"name {name}")
        facts += [f"email {m.group(0)}" for m in _EMAIL.finditer(text)]
        facts += [f"time {m.group(0)}" for m in _TIME.finditer(text)]
        facts += [f"date {m.group(0)}" for m in _DATE.finditer(text)]
        # Digits that are part of an email or a time are not numbers of their own.
        rest = text
        for pattern in (_EMAIL, _TIME):
            rest = pattern.sub(lambda m: " " * len(m.group(0)), rest)
        for match in _DIGITS.finditer(rest):
            number = match.group(0)
            if sum(char.isdigit() for char in number) >= _MIN_DIGITS:
                facts.append(f"{_label(rest[max(0, match.start() - _LABEL_WINDOW):match.start()])}"
                             f" {number}")
    return _unique(facts)


def _label(before: str) -> str:
    # The same sentence only: "It's 12. My order is 48213" labels 48213, not 12.
    before = re.split(r"[.!?]\s", before)[-1]
    labels = list(_LABEL.finditer(before))
    if not labels:
        return "number"
    last = labels[-1]
    if last.group(2):
        return "phone number"
    word = last.group(1).lower()
    if word in ("cell", "mobile"):
        return "phone number"
    if word == "zip":
        return "zip code"
    return f"{word} number"


def _unique(facts: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for fact in facts:
        if fact.lower() not in seen:
            seen.add(fact.lower())
            out.append(fact)
    return out
