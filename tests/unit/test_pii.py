import pytest

from voxmesh.pii import luhn_valid, redact


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
         "My card number is [NUMBER] and my phone number is [PHONE]."),
        ("a table for 2 at 7:30 in 2026", "a table for 2 at 7:30 in 2026"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_luhn() -> None:
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")
