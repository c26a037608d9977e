"""PII detection shared by trace redaction and the guardrails service.

:func:`find_pii` locates personal data precisely (typed spans, checksums where the format has
one); the guardrails service applies an agent's policy to those spans. :func:`redact` masks
text that leaves a session (traces, logs, audit events) and is deliberately conservative on
top of the precise detectors: a transcript may lose a harmless number, but never keeps a card
number.

Speech recognizers format spoken digits unpredictably ("4,111, 1111,111", "four one one one"),
so numbers are read as runs of digit groups: digits or spoken digit words ("zero", "oh",
"one"…"nine", "double five") separated by at most three spaces, commas, dots, dashes, slashes
or parentheses. Windows of consecutive groups are tried longest first, so a card number read
together with more digits is still found (and an unlucky extra group is masked with it rather
than a card digit left out).

Kinds, and the tag :func:`redact` puts in their place:

* ``card_number``: 13-19 digits starting 1-6 that pass the Luhn check, or that follow a word
  like "card" or "Visa" (a recognizer that drops or mishears one digit breaks the checksum, yet
  the other digits are still the caller's card) (``[CARD]``).
* ``national_id``: by locale, below (``[SSN]`` for a US SSN, ``[ID]`` for the others).
* ``phone``: ``+`` and 8-15 digits; US (NANP) 10 or 1 + 10 digits; UK 0 + 10 digits
  (``[PHONE]``).
* ``email``: ``name@domain.tld`` or spoken ``name at domain dot tld`` (``[EMAIL]``).
* ``street_address``: ``221 Baker Street``: a house number, capitalised words and a street
  suffix, with optional unit, town, state and ZIP code (``[ADDRESS]``).
* traces only: any other run of 7-15 digits (``[PHONE]``) or of 6 or more (``[NUMBER]``).

National ids by locale:

* ``US`` SSN ``ddd-dd-dddd`` (area not 000, 666 or 9xx; group not 00; serial not 0000); nine
  ungrouped digits count only after "social security" or "SSN".
* ``UK`` National Insurance number ``AB 12 34 56 C`` (HMRC prefix and suffix letters).
* ``DE`` Steuerliche Identifikationsnummer: 11 digits, ISO 7064 MOD 11,10 check digit, one digit
  repeated two or three times in the first ten.
* ``FR`` NIR (INSEE number): 15 digits, key = 97 - (first 13 digits mod 97). Corsican
  departments (2A/2B) are not recognised.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Literal

PiiKind = Literal["card_number", "phone", "email", "national_id", "street_address"]
NationalIdLocale = Literal["US", "UK", "DE", "FR"]

PII_KINDS: tuple[PiiKind, ...] = ("card_number", "phone", "email", "national_id",
                                  "street_address")
NATIONAL_ID_LOCALES: tuple[NationalIdLocale, ...] = ("US", "UK", "DE", "FR")


@dataclass(frozen=True, slots=True)
class PiiSpan:
    """One piece of personal data in a text.

    Attributes:
        kind: What it is.
        start: Offset of the first character (Python string index).
        end: Offset after the last character.
        scheme: For national ids, which one: ``US_SSN``, ``UK_NINO``, ``DE_TAX_ID``, ``FR_NIR``.
    """

    kind: PiiKind
    start: int
    end: int
    scheme: str = ""


_EMAIL = re.compile(
    r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+|\b[\w.+-]+\s+at\s+[\w-]+(?:\s+dot\s+\w+)+\b", re.IGNORECASE
)
_NINO = re.compile(
    r"\b(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]"
    r"\s?\d{2}\s?\d{2}\s?\d{2}\s?[A-D]\b",
    re.IGNORECASE,
)
# Capitalised street names only: "2 kids in the way" must not read as an address.
_STREET_SUFFIX = (r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|"
                  r"Way|Place|Pl|Terrace|Parkway|Pkwy|Circle|Highway|Hwy|Square|Sq)")
_ADDRESS = re.compile(
    r"\b\d{1,5}[A-Za-z]?\s+(?:[A-Z][A-Za-z'-]*\.?\s+){1,4}" + _STREET_SUFFIX + r"\b\.?"
    r"(?:,?\s+(?:Apt|Apartment|Suite|Unit|Flat|#)\.?\s*[\w-]+)?"
    r"(?:,\s*[A-Z][a-z]+(?:\s+[A-Z][a-z]+){0,2})?"
    r"(?:,?\s+[A-Z]{2}(?=[\s,.]|$))?(?:,?\s+\d{5}(?:-\d{4})?)?"
)
_DIGIT_WORDS = {"zero": "0", "oh": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9"}
_DIGIT_TOKEN = re.compile(
    r"\d+|\b(?:zero|oh|one|two|three|four|five|six|seven|eight|nine|double|triple)\b",
    re.IGNORECASE,
)
_GAP = re.compile(r"[\s,.\-()/]{0,3}")
_SSN_CONTEXT = re.compile(r"social\s+security|\bssn\b|\bsocial\b", re.IGNORECASE)
_CARD_CONTEXT = re.compile(
    r"\b(?:card|credit|debit|visa|master\s?card|amex|american\s+express|discover)\b",
    re.IGNORECASE)
# Trace redaction's catch-all: a digit, then digits and separators, ending on a digit.
_DIGIT_RUN = re.compile(r"\+?\(?\d[\d\s,.\-()]*\d\)?")


@dataclass(frozen=True, slots=True)
class _Group:
    digits: str
    start: int
    end: int
    spoken: bool


def luhn_valid(digits: str) -> bool:
    """True when ``digits`` passes the Luhn checksum used by payment cards."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def ssn_valid(digits: str) -> bool:
    """True when nine digits are a possible US Social Security number (SSA assignment rules)."""
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return (len(digits) == 9 and area not in ("000", "666") and area[0] != "9"
            and group != "00" and serial != "0000")


def german_tax_id_valid(digits: str) -> bool:
    """True for a well-formed German tax id (Steuer-IdNr): 11 digits, ISO 7064 MOD 11,10."""
    if len(digits) != 11 or digits[0] == "0":
        return False
    repeated = [count for count in map(digits[:10].count, set(digits[:10])) if count > 1]
    if len(repeated) != 1 or repeated[0] > 3:
        return False
    product = 10
    for char in digits[:10]:
        total = (ord(char) - 48 + product) % 10 or 10
        product = total * 2 % 11
    return (11 - product) % 10 == ord(digits[10]) - 48


def french_nir_valid(digits: str) -> bool:
    """True for a well-formed French NIR (INSEE number): 13 digits and a mod-97 key."""
    if len(digits) != 15 or digits[0] not in "12378" or digits[3:5] == "00":
        return False
    if "13" <= digits[3:5] <= "19":
        return False
    return 97 - int(digits[:13]) % 97 == int(digits[13:])


def nino_valid(text: str) -> bool:
    """True when ``text`` is exactly a UK National Insurance number (spaces allowed)."""
    match = _NINO.fullmatch(text.strip())
    return match is not None


def _digit_groups(text: str) -> Iterator[list[_Group]]:
    """Yields runs of digit groups that a transcript may have split one number into."""
    run: list[_Group] = []
    repeat = 0
    last_end = -1
    for match in _DIGIT_TOKEN.finditer(text):
        token = match.group().lower()
        if run or repeat:
            gap = text[last_end:match.start()]
            if len(gap) > 3 or _GAP.fullmatch(gap) is None:
                if run:
                    yield run
                run, repeat = [], 0
        last_end = match.end()
        if token == "double" or token == "triple":
            repeat = 2 if token == "double" else 3
            continue
        spoken = not token[0].isdigit()
        digits = _DIGIT_WORDS[token] if spoken else token
        if repeat and len(digits) == 1:
            digits *= repeat
        repeat = 0
        run.append(_Group(digits, match.start(), match.end(), spoken))
    if run:
        yield run


def _national_id(digits: str, groups: list[_Group], text: str,
                 locales: Collection[str]) -> str:
    if len(digits) == 9 and "US" in locales and ssn_valid(digits):
        if [len(g.digits) for g in groups] == [3, 2, 4] and not any(g.spoken for g in groups):
            return "US_SSN"
        # Nine digits without the 3-2-4 grouping are as likely an order number: need context.
        if _SSN_CONTEXT.search(text, max(0, groups[0].start - 48), groups[0].start):
            return "US_SSN"
    if len(digits) == 11 and "DE" in locales and german_tax_id_valid(digits):
        return "DE_TAX_ID"
    if len(digits) == 15 and "FR" in locales and french_nir_valid(digits):
        return "FR_NIR"
    return ""


def _is_phone(digits: str, plus: bool) -> bool:
    if plus:
        return 8 <= len(digits) <= 15
    if len(digits) == 11 and digits[0] == "1":
        digits = digits[1:]
    if len(digits) == 10 and digits[0] in "23456789" and digits[3] in "23456789":
        return True  # NANP: area code and exchange never start with 0 or 1
    return len(digits) == 11 and digits[0] == "0" and digits[1] in "12378"


def _classify(digits: str, groups: list[_Group], text: str,
              locales: Collection[str]) -> tuple[PiiKind, str] | None:
    # A card outranks the other kinds: a 15-digit NIR that also passes Luhn is masked either way.
    if 13 <= len(digits) <= 19 and digits[0] in "123456" and luhn_valid(digits):
        return "card_number", ""
    scheme = _national_id(digits, groups, text, locales)
    if scheme:
        return "national_id", scheme
    plus = text[max(0, groups[0].start - 2):groups[0].start].rstrip("( ").endswith("+")
    if _is_phone(digits, plus):
        return "phone", ""
    return None


def _misheard_card(windows: list[tuple[int, str]], run: list[_Group], first: int,
                   text: str) -> int | None:
    """The end of a card number that fails Luhn but follows a word like "card", if any.

    A lost or extra digit breaks the checksum of a real card. The whole run is the card when
    it is 13-19 digits; a longer run (a phone number said right after) gives the card 16.
    """
    start = run[first].start
    if not _CARD_CONTEXT.search(text, max(0, start - 48), start):
        return None
    whole = bool(windows) and windows[-1][0] == len(run) - 1
    for end, digits in reversed(windows):
        if 13 <= len(digits) <= (19 if whole else 16) and digits[0] in "123456":
            return end
    return None


def _absorb_stray_digits(run: list[_Group], skipped_from: int, first: int,
                         end: int) -> tuple[int, int]:
    """Widens a card span over stray digits in the same run ("4111 ... 1111, 111").

    A recognizer that adds a digit group leaves a few digits beside the card that no other
    kind can claim; masking them with the card keeps them from leaking. Fewer than 7 only,
    so a phone number said right after a card stays a phone number.
    """
    before = sum(len(group.digits) for group in run[skipped_from:first])
    after = sum(len(group.digits) for group in run[end + 1:])
    return (skipped_from if 0 < before < 7 else first,
            len(run) - 1 if 0 < after < 7 else end)


def _number_spans(text: str, locales: Collection[str]) -> Iterator[PiiSpan]:
    for run in _digit_groups(text):
        index = skipped_from = 0
        while index < len(run):
            windows: list[tuple[int, str]] = []
            digits = ""
            for end in range(index, len(run)):
                digits += run[end].digits
                if len(digits) > 19:
                    break
                if len(digits) >= 8:
                    windows.append((end, digits))
            found: tuple[int, PiiKind, str] | None = None
            for end, digits in reversed(windows):
                classified = _classify(digits, run[index:end + 1], text, locales)
                if classified is not None:
                    found = end, *classified
                    break
            if found is None or found[1] == "phone":
                # After "card", 13-19 digits are a card even when a misheard digit breaks Luhn,
                # and its first ten digits must not pass for a phone number ("37 82824 633
                # 10005" would leave "10005" visible).
                card_end = _misheard_card(windows, run, index, text)
                found = found if card_end is None else (card_end, "card_number", "")
            if found is None:
                index += 1
                continue
            end, kind, scheme = found
            first = index
            if kind == "card_number":
                first, end = _absorb_stray_digits(run, skipped_from, index, end)
            start = run[first].start
            while start > 0 and text[start - 1] in "+(":
                start -= 1
            yield PiiSpan(kind, start, run[end].end, scheme)
            index = skipped_from = end + 1


def find_pii(
    text: str,
    kinds: Collection[PiiKind] = PII_KINDS,
    locales: Collection[str] = NATIONAL_ID_LOCALES,
) -> list[PiiSpan]:
    """Finds personal data in ``text``.

    Args:
        text: Transcript or sentence.
        kinds: Kinds to report. Every kind is still recognised, so a card number is never
            reported as a phone number when only phones are asked for.
        locales: National id schemes to recognise (``US``, ``UK``, ``DE``, ``FR``).

    Returns:
        Non-overlapping spans sorted by start.
    """
    spans: list[PiiSpan] = [PiiSpan("email", m.start(), m.end()) for m in _EMAIL.finditer(text)]
    if "street_address" in kinds:
        spans += [PiiSpan("street_address", m.start(), m.end()) for m in _ADDRESS.finditer(text)]
    if "UK" in locales:
        spans += [PiiSpan("national_id", m.start(), m.end(), "UK_NINO")
                  for m in _NINO.finditer(text)]
    taken = sorted(spans, key=lambda span: span.start)
    for span in _number_spans(text, locales):
        if not any(span.start < other.end and other.start < span.end for other in taken):
            taken.append(span)
    return sorted((span for span in taken if span.kind in kinds), key=lambda span: span.start)


_TRACE_TAGS = {"card_number": "[CARD]", "phone": "[PHONE]", "email": "[EMAIL]",
               "street_address": "[ADDRESS]"}


def _trace_tag(span: PiiSpan) -> str:
    if span.kind == "national_id":
        return "[SSN]" if span.scheme == "US_SSN" else "[ID]"
    return _TRACE_TAGS[span.kind]


def _catch_all(match: re.Match[str]) -> str:
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
    """Returns ``text`` with every kind of PII masked, and any other long number too."""
    replacements = [(span.start, span.end, _trace_tag(span)) for span in find_pii(text)]
    masked = list(text)
    for start, end, _ in replacements:
        masked[start:end] = "\0" * (end - start)
    # Whatever the precise detectors left, a mis-heard card number included, is still masked.
    for match in _DIGIT_RUN.finditer("".join(masked)):
        tag = _catch_all(match)
        if tag != match.group():
            replacements.append((match.start(), match.end(), tag))
    out = []
    position = 0
    for start, end, tag in sorted(replacements):
        out.append(text[position:start])
        out.append(tag)
        position = end
    out.append(text[position:])
    return "".join(out)
