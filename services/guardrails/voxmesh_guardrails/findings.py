"""What a check reports: actions and findings, independent of the wire format."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum


class Action(IntEnum):
    """Outcome of a check, ordered by severity (the strictest finding wins)."""

    ALLOW = 1
    REDACT = 2
    BLOCK = 3


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule that fired.

    Attributes:
        rule: Stable id, e.g. ``pii.card_number``, ``injection.ignore_instructions``.
        start: Offset of the first character in the checked text.
        end: Offset after the last character.
        score: 1.0 for pattern rules; the measured overlap for ``leak.system_prompt``.
    """

    rule: str
    start: int
    end: int
    score: float = 1.0


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The verdict on one text.

    Attributes:
        action: ALLOW, REDACT (use ``text``) or BLOCK (``text`` is the line to say instead).
        text: The rewritten text for REDACT, the replacement line for BLOCK, empty for ALLOW.
        findings: Every rule that fired, sorted by position.
    """

    action: Action
    text: str = ""
    findings: tuple[Finding, ...] = field(default_factory=tuple)

    @property
    def rules(self) -> list[str]:
        """Distinct rule ids, in order of first appearance."""
        return list(dict.fromkeys(finding.rule for finding in self.findings))
