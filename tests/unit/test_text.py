import pytest

from voxmesh.text import SentenceAggregator, word_error_rate


def _feed(aggregator: SentenceAggregator, text: str) -> list[str]:
    out: list[str] = []
    for token in text.split(" "):
        out += aggregator.push(token + " ")
    rest = aggregator.flush()
    return out + ([rest] if rest else [])


def test_sentences_release_as_soon_as_complete() -> None:
    aggregator = SentenceAggregator()
    # A full stop after a word ends the sentence without waiting for the next token.
    assert aggregator.push("Hello there.") == ["Hello there."]
    assert aggregator.push(" How are") == []
    assert aggregator.push(" you?") == ["How are you?"]
    assert aggregator.flush() == ""


@pytest.mark.parametrize("held", ["It costs 3.", "Ask Dr.", "Well..", "Call J.", "Visit us at 9."])
def test_a_stop_that_may_continue_waits_for_whitespace(held: str) -> None:
    aggregator = SentenceAggregator()
    assert aggregator.push(held) == []


def test_abbreviations_and_decimals_do_not_split() -> None:
    got = _feed(SentenceAggregator(), "Dr. Smith paid 3.5 dollars. Thanks!")
    assert got == ["Dr. Smith paid 3.5 dollars.", "Thanks!"]


def test_first_clause_released_early_only_once() -> None:
    got = _feed(SentenceAggregator(first_clause_min_words=4),
                "Sure thing my friend, I can book that, no problem at all.")
    assert got == ["Sure thing my friend,", "I can book that, no problem at all."]


def test_long_text_without_punctuation_is_cut_at_a_word() -> None:
    got = SentenceAggregator(max_chars=20).push("one two three four five six seven eight")
    assert got and all(len(piece) <= 20 for piece in got)


@pytest.mark.parametrize(
    ("ref", "hyp", "wer"),
    [("Hello, world!", "hello world", 0.0), ("a b c d", "a x c", 0.5), ("a", "", 1.0),
     ("What is two plus two?", "What is 2 plus 2?", 0.0),
     ("order four five six seven", "Order 4567.", 0.0), ("forty two", "42", 0.0)],
)
def test_word_error_rate(ref: str, hyp: str, wer: float) -> None:
    assert word_error_rate(ref, hyp) == pytest.approx(wer)
