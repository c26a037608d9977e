"""PII redaction for text that leaves a session (traces, logs, audit events).

Rules are deliberately conservative: a transcript that leaves the session may lose a harmless
number, but never keeps a card number. Speech recognizers format spoken digits unpredictably
("4,111, 1111,111"), so digit runs are found across spaces, commas, dots, dashes and
parentheses and classified by how many digits they hold.

=============  ==================================================  ============
kind           rule                                                replacement
=============  ==================================================  ============
card           13-19 digits passing the Luhn check                 ``[CARD]``
US SSN         ``ddd-dd-dddd``                                     ``[SSN]``
phone          7-15 digits                                         ``[PHONE]``
long number    any other run of 6 or more digits                   ``[NUMBER]``
email          ``name@domain.tld`` or spoken ``name at domain dot tld``  ``[EMAIL]``
=============  ==================================================  ============
"""

from __future__ import annotations

import re

_EMAIL = re.compile(
    r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+|\b[\w.+-]+\s+at\s+[\w-]+(?:\s+dot\s+\w+)+\b", re.IGNORECASE
)
_SSN = re.compile(r"\b\d{3}-\d{2}-\d{4}\b")
# A digit, then digits and separators, ending on a digit: "415 555-0123", "4,111, 1111".
_DIGIT_RUN = re.compile(r"\+?\(?\d[\d\s,.\-()]*\d\)?")


def luhn_valid(digits: str) -> bool:
    """True when ``digits`` passes the Luhn checksum used by payment cards."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _classify(match: re.Match[str]) -> str:
    text = match.group()
    digits = re.sub(r"\D", "", text)
    if 13 <= len(digits) <= 19 and luhn_valid(digits):
        return "[CARD]"
    if 7 <= len(digits) <= 15:
        return "[PHONE]"
    if len(digits) >= 6:
        return "[NUMBER]"
    return text


def redact(text: str) -> str:
    """Returns ``text`` with card numbers, SSNs, phone numbers, long numbers and emails masked."""
    text = _EMAIL.sub("[EMAIL]", text)
    text = _SSN.sub("[SSN]", text)
    return _DIGIT_RUN.sub(_classify, text)
