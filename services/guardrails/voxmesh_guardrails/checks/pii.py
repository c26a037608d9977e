"""PII in either direction, handled per kind as the agent's policy says.

Detection is :func:`voxmesh.pii.find_pii`, the same detectors that redact traces; this module
only applies the policy: ``redact`` replaces the span with a spoken-friendly tag
(``[card number]``), ``block`` blocks the text, ``allow`` does not look.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from voxmesh.guardrail_policy import PiiAction, PiiPolicy
from voxmesh.pii import PII_KINDS, PiiKind, find_pii
from voxmesh_guardrails.findings import Action, Finding

TAGS: dict[str, str] = {
    "card_number": "[card number]",
    "national_id": "[national id]",
    "phone": "[phone number]",
    "email": "[email address]",
    "street_address": "[address]",
}


@dataclass(frozen=True, slots=True)
class PiiOutcome:
    """What the policy does with the PII in one text.

    Attributes:
        action: ALLOW (nothing to act on), REDACT or BLOCK.
        text: ``text`` with the redacted spans replaced by their tags.
        findings: One ``pii.<kind>`` finding per span acted on.
    """

    action: Action
    text: str
    findings: list[Finding]


class PiiCheck:
    """PII handling of one policy in one direction, resolved once."""

    def __init__(self, policy: PiiPolicy, direction: Literal["input", "output"]) -> None:
        """Resolves the action of every kind for ``direction``."""
        self._actions: dict[str, PiiAction] = {
            kind: policy.action(kind, direction) for kind in PII_KINDS}
        self._kinds: tuple[PiiKind, ...] = tuple(
            kind for kind in PII_KINDS if self._actions[kind] != "allow")
        self._locales = tuple(policy.national_id_locales)

    @property
    def active(self) -> bool:
        """False when every kind is allowed (nothing to look for)."""
        return bool(self._kinds)

    def check(self, text: str) -> PiiOutcome:
        """Finds the PII the policy acts on and applies the strictest action."""
        if not self._kinds:
            return PiiOutcome(Action.ALLOW, text, [])
        spans = find_pii(text, self._kinds, self._locales)
        if not spans:
            return PiiOutcome(Action.ALLOW, text, [])
        findings = [Finding(f"pii.{span.kind}", span.start, span.end) for span in spans]
        action = Action.REDACT
        pieces: list[str] = []
        position = 0
        for span in spans:
            if self._actions[span.kind] == "block":
                action = Action.BLOCK
            pieces += [text[position:span.start], TAGS[span.kind]]
            position = span.end
        pieces.append(text[position:])
        return PiiOutcome(action, "".join(pieces), findings)
