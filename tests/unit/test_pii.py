import pytest

from voxmesh.pii import (
    find_pii,
    french_nir_valid,
    german_tax_id_valid,
    luhn_valid,
    nino_valid,
    redact,
    ssn_valid,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("card 4111 1111 1111 1111 thanks", "card [CARD] thanks"),
        ("card 4111-1111-1111-1111.", "card [CARD]."),
        ("call 415-555-0123 today", "call [PHONE] today"),
        ("call (415) 555 0123", "call [PHONE]"),
        ("my ssn is 078-05-1120", "my ssn is [SSN]"),
        ("mail john.doe@example.com now", "mail [EMAIL] now"),
        ("mail john at example dot com now", "mail [EMAIL] now"),
        # What Whisper tiny wrote for a spoken card number and phone number:
        ("My card number is 4,111, 1111,111, 1111,111 and my phone number is 450550123.",
         "My card number is [CARD] and my phone number is [PHONE]."),
        ("a table for 2 at 7:30 in 2026", "a table for 2 at 7:30 in 2026"),
        # Whisper heard an extra digit group: it goes with the card, not left in the clear.
        ("My card number is 4111 1111 1111 1111,111.", "My card number is [CARD]."),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_luhn() -> None:
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")


# find_pii: the precise detectors the guardrails service applies policy to.

@pytest.mark.parametrize(
    ("text", "kind", "covered"),
    [
        ("card 4111 1111 1111 1111 thanks", "card_number", "4111 1111 1111 1111"),
        ("amex 3782-822463-10005", "card_number", "3782-822463-10005"),
        # Whisper writes spoken digits with spaces, or leaves them as words.
        ("it's four one one one one one one one one one one one one one one one ok",
         "card_number", "four one one one one one one one one one one one one one one one"),
        # A digit lost in transcription breaks Luhn; "card" before it still marks it.
        ("My card number is 37828246310005.", "card_number", "37828246310005"),
        # Transposed digits (CI heard this): its first ten digits look like a phone number.
        ("My card number is 37 82824 633 10005.", "card_number", "37 82824 633 10005"),
        ("card 4111 1111 1111 1111, 415 555 0123", "phone", "415 555 0123"),
        ("call +44 20 7946 0958 please", "phone", "+44 20 7946 0958"),
        ("call +1 (415) 555-0123", "phone", "+1 (415) 555-0123"),
        ("call 07700 900123", "phone", "07700 900123"),
        ("mail jane.doe@example.co.uk", "email", "jane.doe@example.co.uk"),
        ("ssn 078-05-1120.", "national_id", "078-05-1120"),
        ("my social security number is 219 09 9999", "national_id", "219 09 9999"),
        ("NI number JG 10 37 59 A", "national_id", "JG 10 37 59 A"),
        ("NI number AB123456C", "national_id", "AB123456C"),
        ("Steuer-ID 86095742719", "national_id", "86095742719"),
        ("NIR 1 84 12 76 451 089 46", "national_id", "1 84 12 76 451 089 46"),
        ("it goes to 42 Elm Street, Springfield tomorrow", "street_address",
         "42 Elm Street, Springfield"),
    ],
)
def test_find_pii_spans(text: str, kind: str, covered: str) -> None:
    spans = [span for span in find_pii(text) if span.kind == kind]
    assert [text[span.start:span.end] for span in spans] == [covered]


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("ref 4111 1111 1111 1112", "card_number"),  # Luhn fails, nothing says "card"
        ("order 123456789", "national_id"),  # nine digits, neither SSN context nor 3-2-4
        ("ssn 666-12-3456", "national_id"),  # area 666 is never assigned
        ("ssn 078-00-1120", "national_id"),  # group 00 is never assigned
        ("NI number AB 12 34 56 E", "national_id"),  # suffix must be A-D
        ("NI number BG 12 34 56 A", "national_id"),  # BG is not an allocated prefix
        ("NI number QQ 12 34 56 A", "national_id"),  # Q is never a first letter
        ("Steuer-ID 86095742718", "national_id"),  # wrong check digit
        ("Steuer-ID 92345678901", "national_id"),  # no repeated digit
        ("NIR 1 84 12 76 451 089 47", "national_id"),  # wrong key
        ("call 555-0123", "phone"),  # too short to be anyone's number in full
        ("I have 2 kids in the way", "street_address"),  # not capitalised
        ("a table for 2 at 7:30 in 2026", None),
        ("order 12345 shipped", None),
    ],
)
def test_find_pii_rejects_lookalikes(text: str, kind: str | None) -> None:
    spans = find_pii(text)
    assert [span for span in spans if kind is None or span.kind == kind] == []


def test_national_ids_follow_locales() -> None:
    text = "NI AB 12 34 56 C, ssn 078-05-1120, Steuer-ID 86095742719"
    assert [s.scheme for s in find_pii(text, locales=["US"])] == ["US_SSN"]
    assert [s.scheme for s in find_pii(text, locales=["UK", "DE"])] == ["UK_NINO", "DE_TAX_ID"]


def test_a_card_is_never_reported_as_a_phone() -> None:
    assert find_pii("4111 1111 1111 1111", kinds=["phone"]) == []


def test_checksum_validators() -> None:
    assert german_tax_id_valid("86095742719") and not german_tax_id_valid("86095742710")
    assert french_nir_valid("184127645108946") and not french_nir_valid("184127645108947")
    assert ssn_valid("078051120") and not ssn_valid("900051120")
    assert nino_valid("AB 12 34 56 C") and not nino_valid("DA 12 34 56 C")


def test_redact_masks_every_kind_for_traces() -> None:
    assert redact("NI AB 12 34 56 C, Steuer-ID 86095742719, 42 Elm Street") == (
        "NI [ID], Steuer-ID [ID], [ADDRESS]")
