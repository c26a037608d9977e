"""Blocked topics and phrases in what the agent is about to say."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from voxmesh.guardrail_policy import BlockedTopic
from voxmesh_guardrails.checks.normalize import fold, fold_with_offsets, span_in_original
from voxmesh_guardrails.findings import Finding


@dataclass(frozen=True, slots=True)
class _Compiled:
    rule: str
    replacement: str
    phrases: re.Pattern[str] | None
    pattern: re.Pattern[str] | None


@dataclass(frozen=True, slots=True)
class TopicHit:
    """A blocked topic that matched.

    Attributes:
        finding: ``topic.<name>`` and where it matched.
        replacement: The topic's replacement line; empty means the policy's safe line.
    """

    finding: Finding
    replacement: str


class TopicCheck:
    """The blocked topics of one policy, compiled once."""

    def __init__(self, topics: Sequence[BlockedTopic]) -> None:
        """Compiles phrases (folded, whole words) and patterns (case-insensitive)."""
        self._topics: list[_Compiled] = []
        for topic in topics:
            phrases = sorted({fold(phrase) for phrase in topic.phrases} - {""}, key=len,
                             reverse=True)
            self._topics.append(_Compiled(
                rule=f"topic.{topic.name}",
                replacement=topic.replacement,
                phrases=re.compile(
                    r"(?<![a-z0-9])(?:" + "|".join(map(re.escape, phrases)) + r")(?![a-z0-9])"
                ) if phrases else None,
                pattern=re.compile(topic.pattern, re.IGNORECASE) if topic.pattern else None,
            ))

    def check(self, text: str) -> list[TopicHit]:
        """Every topic that ``text`` touches, in policy order."""
        if not self._topics:
            return []
        folded = fold(text)
        origin: list[int] | None = None
        hits: list[TopicHit] = []
        for topic in self._topics:
            if topic.pattern is not None and (match := topic.pattern.search(text)):
                hits.append(TopicHit(Finding(topic.rule, match.start(), match.end()),
                                     topic.replacement))
            elif topic.phrases is not None and topic.phrases.search(folded):
                if origin is None:
                    folded, origin = fold_with_offsets(text)
                phrase = topic.phrases.search(folded)
                if phrase is not None:
                    start, end = span_in_original(origin, phrase.start(), phrase.end())
                    hits.append(TopicHit(Finding(topic.rule, start, end), topic.replacement))
        return hits
