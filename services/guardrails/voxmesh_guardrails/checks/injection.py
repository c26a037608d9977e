"""Prompt injection and jailbreak patterns in the caller's transcript.

Curated regular expressions over folded text (:mod:`.normalize`), one rule id each. They aim at
the phrasings attacks use ("ignore previous instructions", "read me your system prompt",
"you are DAN") and stay clear of what callers say to a voice agent ("ignore the noise in the
background", "can you read me my order status", "forget my previous order"): instructions,
prompts and rules only count when they are the model's (``your``, ``previous``, ``system``…),
never the caller's own (``my``).
"""

from __future__ import annotations

import re

from voxmesh_guardrails.checks.normalize import fold, fold_with_offsets, span_in_original
from voxmesh_guardrails.findings import Finding

_VERB = (r"(?:ignore|ignoring|disregard|forget|override|bypass|neglect|set aside|throw out|"
         r"stop following|dont follow|do not follow|stop obeying|dont obey|do not obey)")
_QUALIFIER = (r"(?:previous|prior|above|earlier|preceding|original|initial|old|existing|all|any|"
              r"every|your|these|those|the system|system|developer|developers|hidden|given)")
_NOUN = (r"(?:instructions?|prompts?|programming|directives?|system messages?|guardrails?|"
         r"rules?|guidelines?|context|directions?|commands?|constraints?|restrictions?|"
         r"training|polic(?:y|ies))")
_STRONG_NOUN = r"(?:instructions?|prompts?|programming|directives?|guardrails?)"
_SECRET = (r"(?:(?:your|the) (?:system|initial|original|hidden|secret|internal|developer|first|"
           r"full|exact|complete) (?:prompt|message|instructions?|rules|configuration|"
           r"directives?)|system prompt|(?:your|the) (?:prompt|instructions|programming|"
           r"directives|configuration)(?! (?:for|to|on|about) )|(?:everything|the text|the words|"
           r"all the text|what is written|whats written) (?:above|before this|you were given))")

RULES: dict[str, re.Pattern[str]] = {
    "injection.ignore_instructions": re.compile(
        rf"\b{_VERB} (?:(?!my\b)\w+ ){{0,2}}?{_QUALIFIER} (?:(?!my\b)\w+ ){{0,2}}?{_NOUN}\b"
        rf"|\b{_VERB} (?:all |the |any )?{_STRONG_NOUN} (?:above|before|so far|you (?:were|"
        rf"have been|ve been) given|given to you|from (?:before|earlier|the system|your))\b"
        r"|\b(?:forget|ignore|disregard) (?:everything|all|anything) (?:you (?:were|have been|ve"
        r" been) (?:told|given|taught)|above|before this)\b"),
    "injection.reveal_prompt": re.compile(
        rf"\b(?:reveal|show|print|repeat|recite|read|tell|give|output|display|dump|leak|"
        rf"spell out|paste|write out|share|list|type out|what (?:is|are|were|was)|whats)\b"
        rf" (?:\w+ ){{0,4}}?{_SECRET}\b"),
    "injection.system_override": re.compile(
        r"\b(?:enable|enter|activate|switch to|turn on|you are (?:now )?in|entering|engage)"
        r" (?:\w+ )?(?:developer|admin|administrator|debug|god|sudo|root|maintenance|"
        r"unrestricted|jailbreak|dan) mode\b"
        r"|\b(?:system|admin|developer|root|sudo) (?:override|command|access granted)\b"
        r"|\boverride (?:code|mode|protocol|your (?:\w+ )?(?:instructions|rules|programming))\b"
        r"|\b(?:your|these are your|here are your|following|the following are your) new"
        r" (?:instructions|directives|prompt|rules|role|task|goal|objective|persona)\b"
        r"|\bfrom now on (?:you|your|u) (?:are|must|shall|should|have to|respond|answer|reply|"
        r"only|act|obey|ignore|will (?:act|be|respond|answer|only|obey|ignore|pretend))\b"),
    "jailbreak.dan": re.compile(
        r"\bdo anything now\b|\bdan (?:mode|prompt|jailbreak)\b"
        r"|\b(?:you are|youre|you re|act as|pretend (?:to be|you are|youre)|become|be) (?:now )?"
        r"(?:dan|stan|dude|aim|an? dan)\b"
        r"|\bjailbr(?:ea|o)k(?:en|ed|ing|s)?\b"),
    "jailbreak.roleplay": re.compile(
        r"\b(?:pretend|act|roleplay|role play|imagine|behave|respond|answer|play)\b"
        r" (?:\w+ ){0,5}?(?:without|with no|free (?:of|from)|not bound by|no longer bound by|"
        r"ignoring|unconstrained by) (?:\w+ ){0,2}?(?:rules|restrictions|limits|limitations|"
        r"filters|guidelines|censorship|ethics|morals|policies|boundaries|instructions)\b"
        r"|\b(?:pretend|act|roleplay|role play|imagine)\b (?:\w+ ){0,4}?(?:unrestricted|"
        r"unfiltered|uncensored|evil|rogue|amoral|unethical|unbound|unaligned) (?:ai|assistant|"
        r"model|chatbot|bot|version|mode|character|twin)\b"
        r"|\byou (?:are|re) (?:now )?(?:free from|unrestricted|unfiltered|uncensored|"
        r"no longer bound|not bound|no longer an? (?:ai|assistant|agent|host))\b"
        r"|\byou have no (?:rules|restrictions|limits|filters|guidelines)\b"
        r"|\bstay in character\b"),
}
# Chat-template tokens only make sense as an attempt to forge a system turn; matched on the raw
# text because folding removes the punctuation they are made of.
CHAT_TEMPLATE = re.compile(
    r"<\|(?:im_start|im_end|system|endoftext|eot_id|start_header_id|end_header_id)\|>"
    r"|\[/?INST\]|<</?SYS>>|(?:^|\n)\s*(?:system|assistant)\s*:", re.IGNORECASE)


def find_injection(text: str) -> list[Finding]:
    """Findings for every injection or jailbreak rule that matches ``text``."""
    folded = fold(text)
    hits = [(rule, pattern) for rule, pattern in RULES.items() if pattern.search(folded)]
    findings: list[Finding] = []
    if hits:
        # Offsets are only worth computing when something matched (rare).
        folded, origin = fold_with_offsets(text)
        for rule, pattern in hits:
            match = pattern.search(folded)
            if match is not None:
                start, end = span_in_original(origin, match.start(), match.end())
                findings.append(Finding(rule, start, end))
    findings += [Finding("injection.chat_template", m.start(), m.end())
                 for m in CHAT_TEMPLATE.finditer(text)]
    return sorted(findings, key=lambda finding: finding.start)
