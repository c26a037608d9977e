"""System prompt leaks: word n-gram (shingle) overlap between a sentence and the prompt.

The shingles of an agent's system prompt are computed once when its file is loaded. A sentence
leaks when the share of its own shingles found in the prompt reaches the policy's threshold;
a sentence shorter than one shingle is not checked (it cannot carry much of a prompt).
Passages listed in ``leak_protection.allow`` (facts the agent is meant to say, such as opening
hours) are taken out of the protected set, and so is the greeting, which callers hear anyway.
"""

from __future__ import annotations

from collections.abc import Iterable

from voxmesh_guardrails.checks.normalize import fold
from voxmesh_guardrails.findings import Finding

RULE = "leak.system_prompt"


def shingles(text: str, size: int) -> set[str]:
    """The word n-grams of folded ``text``, each as one space-joined string."""
    words = fold(text).split()
    return {" ".join(words[i:i + size]) for i in range(len(words) - size + 1)}


class PromptLeakCheck:
    """Precomputed shingles of one system prompt."""

    def __init__(self, system_prompt: str, *, size: int, threshold: float,
                 public: Iterable[str] = ()) -> None:
        """Builds the protected shingle set.

        Args:
            system_prompt: The agent's system prompt.
            size: Words per shingle.
            threshold: Overlap (0-1] at which a sentence is a leak.
            public: Passages the agent may say word for word; removed from the protected set.
        """
        self._size = size
        self._threshold = threshold
        protected = shingles(system_prompt, size)
        for passage in public:
            protected -= shingles(passage, size)
        self._protected = frozenset(protected)

    def score(self, sentence: str) -> float:
        """Share of the sentence's shingles that appear in the protected prompt (0 to 1)."""
        own = shingles(sentence, self._size)
        if not own or not self._protected:
            return 0.0
        return len(own & self._protected) / len(own)

    def check(self, sentence: str) -> Finding | None:
        """A finding covering the sentence when its overlap reaches the threshold."""
        score = self.score(sentence)
        if score >= self._threshold:
            return Finding(RULE, 0, len(sentence), round(score, 3))
        return None
