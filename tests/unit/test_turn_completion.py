"""Text rules that spot unfinished caller turns, and merging of carried-over utterances."""

from __future__ import annotations

import pytest

from voxmesh_worker.turn_completion import Verdict, classify, merge_utterances

SHORT, LONG, COMPLETE = Verdict.INCOMPLETE_SHORT, Verdict.INCOMPLETE_LONG, Verdict.COMPLETE


@pytest.mark.parametrize(("text", "verdict"), [
    # A paused phone number: Whisper closes each piece with a period.
    ("My number is 555.", SHORT),
    ("My phone number is 415 555.", SHORT),
    ("My number is 555, 0199.", COMPLETE),
    ("My number is five five five.", SHORT),
    ("My number is five five five, oh one nine nine.", COMPLETE),
    ("It's 415 555 0199.", COMPLETE),
    # Card numbers are read in groups, with pauses.
    ("My card number is 3782 8224 6310.", SHORT),
    ("My card number is 3782 8224 6310 005.", COMPLETE),
    # Order numbers are not phone numbers.
    ("My order number is 1234.", COMPLETE),
    ("What's the status of order 1234?", COMPLETE),
    # Dangling words and trailing commas.
    ("I'd like to book a table for", SHORT),
    ("Um, so, my order number is", SHORT),
    ("My name is", SHORT),
    ("Table for two at seven,", SHORT),
    ("And then...", SHORT),
    # Asking for time.
    ("Hold on, let me check my calendar.", LONG),
    ("Give me a second.", LONG),
    ("Hmm.", LONG),
    # Complete, including endings that look like function words.
    ("What time do you open?", COMPLETE),
    ("I think so.", COMPLETE),
    ("Kind of.", COMPLETE),
    ("I'd love to.", COMPLETE),
    ("Wait, stop.", COMPLETE),
    ("", COMPLETE),
])
def test_classify(text: str, verdict: Verdict) -> None:
    assert classify(text) is verdict


def test_merge_joins_pieces_without_the_period_whisper_added() -> None:
    assert merge_utterances(["My number is 555.", "0199."]) == "My number is 555 0199."
    assert merge_utterances(["Card 3782 8224.", "6310 005."]) == "Card 3782 8224 6310 005."
    assert merge_utterances(["Yes.", "At seven."]) == "Yes, At seven."
    assert merge_utterances(["Table for two,", "at seven."]) == "Table for two, at seven."
    assert merge_utterances(["", "Hello.", ""]) == "Hello."
    assert merge_utterances([]) == ""
    # The merged number reads as complete.
    assert classify(merge_utterances(["My number is 555.", "0199."])) is COMPLETE
