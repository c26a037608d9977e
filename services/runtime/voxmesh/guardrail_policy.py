"""Guardrail policy of an agent: the ``guardrails:`` section of an agent file.

The guardrails service (``services/guardrails``) applies it inline, with cheap rules only, to
what the caller says (input) and to each sentence the agent is about to say (output). Every
field has a default, so an agent file without the section gets: injection and PII checks on
input, card numbers and national ids redacted from input and never spoken, system prompt leak
protection on. See ``docs/guardrails.md``.

.. code-block:: yaml

    guardrails:
      input: {injection: true, pii: true}
      pii:
        card_number: {input: redact, output: block}
        street_address: {output: redact}
        national_id_locales: [US, UK]
      blocked_topics:
        - name: competitor_prices
          phrases: [cheaper at, price match]
          replacement: I can only speak to our own prices.
      safe_line: Sorry, I can't help with that.
      leak_protection: {enabled: true, threshold: 0.6}
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from voxmesh.pii import PII_KINDS, NationalIdLocale

PiiAction = Literal["redact", "block", "allow"]

#: What each PII kind gets when the agent file does not say (per direction).
PII_DEFAULTS: dict[str, dict[str, PiiAction]] = {
    "card_number": {"input": "redact", "output": "block"},
    "national_id": {"input": "redact", "output": "block"},
    "phone": {"input": "allow", "output": "allow"},
    "email": {"input": "allow", "output": "allow"},
    "street_address": {"input": "allow", "output": "allow"},
}
DEFAULT_SAFE_LINE = "Sorry, I can't help with that. Is there anything else I can do for you?"


def _us_only() -> list[NationalIdLocale]:
    return ["US"]


class _Strict(BaseModel):
    # Same contract as the agent file: an unknown key is an error, not silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputChecks(_Strict):
    """Which checks run on the caller's transcript."""

    #: Prompt injection and jailbreak patterns; a hit blocks the turn.
    injection: bool = True
    #: PII in the transcript, handled per kind by ``pii.<kind>.input``.
    pii: bool = True


class PiiHandling(_Strict):
    """What happens to one kind of PII in each direction."""

    #: Caller transcript: ``redact`` replaces it before the LLM sees it, ``block`` blocks the turn.
    input: PiiAction = "allow"
    #: Agent sentence: ``redact`` masks it in speech, ``block`` replaces the sentence.
    output: PiiAction = "allow"


class PiiPolicy(_Strict):
    """PII handling per kind, and which national ids to recognise."""

    card_number: PiiHandling = PiiHandling(**PII_DEFAULTS["card_number"])
    national_id: PiiHandling = PiiHandling(**PII_DEFAULTS["national_id"])
    phone: PiiHandling = PiiHandling()
    email: PiiHandling = PiiHandling()
    street_address: PiiHandling = PiiHandling()
    #: National id schemes: US SSN, UK National Insurance number, German tax id, French NIR.
    national_id_locales: list[NationalIdLocale] = Field(default_factory=_us_only)

    @model_validator(mode="before")
    @classmethod
    def _kind_defaults(cls, data: Any) -> Any:
        # ``card_number: {output: redact}`` keeps the card's own input default (redact), not
        # the generic ``allow``.
        if not isinstance(data, dict):
            return data
        merged = dict(data)
        for kind in PII_KINDS:
            if isinstance(merged.get(kind), dict):
                merged[kind] = {**PII_DEFAULTS[kind], **merged[kind]}
        return merged

    def action(self, kind: str, direction: Literal["input", "output"]) -> PiiAction:
        """The action for ``kind`` (one of :data:`voxmesh.pii.PII_KINDS`) in ``direction``."""
        handling: PiiHandling = getattr(self, kind)
        return handling.input if direction == "input" else handling.output


class BlockedTopic(_Strict):
    """A topic the agent must not talk about; a sentence that touches it is replaced."""

    #: Rule id suffix: findings are reported as ``topic.<name>``.
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")
    #: Phrases matched as whole words, ignoring case, punctuation and spacing.
    phrases: list[str] = Field(default_factory=list)
    #: A regular expression matched on the sentence, ignoring case.
    pattern: str | None = None
    #: Said instead of the sentence; empty means the policy's ``safe_line``.
    replacement: str = Field(default="", max_length=500)

    @field_validator("phrases")
    @classmethod
    def _phrases(cls, phrases: list[str]) -> list[str]:
        if any(not phrase.strip() for phrase in phrases):
            raise ValueError("phrases must not be empty")
        return phrases

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return pattern

    @model_validator(mode="after")
    def _something_to_match(self) -> BlockedTopic:
        if not self.phrases and self.pattern is None:
            raise ValueError("a blocked topic needs 'phrases' or a 'pattern'")
        return self


class LeakProtection(_Strict):
    """Blocks agent sentences that repeat the system prompt."""

    enabled: bool = True
    #: Share of a sentence's word n-grams found in the system prompt that blocks it.
    threshold: float = Field(default=0.6, gt=0, le=1)
    #: n of the word n-grams (shingles); sentences with fewer words are not checked.
    shingle_words: int = Field(default=5, ge=3, le=12)
    #: Passages of the system prompt the agent may say word for word (opening hours, address).
    allow: list[str] = Field(default_factory=list)


class GuardrailPolicy(_Strict):
    """Inline guardrails of one agent (the ``guardrails:`` section of its file)."""

    input: InputChecks = Field(default_factory=InputChecks)
    pii: PiiPolicy = Field(default_factory=PiiPolicy)
    blocked_topics: list[BlockedTopic] = Field(default_factory=list)
    #: Said instead of a blocked sentence or answer when nothing more specific is configured.
    safe_line: str = Field(default=DEFAULT_SAFE_LINE, min_length=1, max_length=500)
    leak_protection: LeakProtection = Field(default_factory=LeakProtection)

    @field_validator("blocked_topics")
    @classmethod
    def _unique_topics(cls, topics: list[BlockedTopic]) -> list[BlockedTopic]:
        names = [topic.name for topic in topics]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"topic names must be unique; repeated: {', '.join(duplicates)}")
        return topics
