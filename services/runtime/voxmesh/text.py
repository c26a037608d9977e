"""Text helpers: sentence aggregation for streaming TTS, and word error rate."""

from __future__ import annotations

import re

_ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "approx", "no"}
)
_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*(?=\s)")
# A terminator that ends the text received so far. "?", "!" and "…" end a sentence at once; a
# full stop only after a plain word (not "3." of "3.5", "Dr." or an initial). Waiting for the
# next token instead costs one token interval (40 ms at 25 tokens/s) on every answer's first
# sentence, which is on the voice-to-voice critical path.
_SENTENCE_END_AT_TAIL = re.compile(r"(?:[!?…]+|(?<=[A-Za-z]{2})\.)[\"')\]]*$")
_CLAUSE_END = re.compile(r"[,;:—–](?=\s)")


class SentenceAggregator:
    """Turns a stream of text deltas into speakable sentences.

    Sentences are released as soon as their terminator arrives: at once for a terminator that
    cannot continue ("?", "!", a full stop after a word), otherwise once whitespace follows it
    ("3." may become "3.5"). Optionally the
    first piece of a reply is released at a clause boundary (comma, semicolon) once it has
    ``first_clause_min_words`` words, so TTS can start before the first full stop.
    """

    def __init__(self, *, first_clause_min_words: int = 0, max_chars: int = 400) -> None:
        """Creates an aggregator.

        Args:
            first_clause_min_words: 0 disables early release of the first clause.
            max_chars: A run of text this long without a boundary is released at a word break.
        """
        self._buffer = ""
        self._first_clause_min_words = first_clause_min_words
        self._max_chars = max_chars
        self._released_any = False

    def push(self, delta: str) -> list[str]:
        """Adds a text delta and returns the sentences it completed."""
        self._buffer += delta
        out: list[str] = []
        while True:
            piece = self._take_sentence()
            if piece is None:
                break
            out.append(piece)
        return out

    def flush(self) -> str:
        """Returns whatever is left (the end of the reply), stripped."""
        rest, self._buffer = self._buffer.strip(), ""
        return rest

    def _take_sentence(self) -> str | None:
        for match in _SENTENCE_END.finditer(self._buffer):
            before = self._buffer[: match.start()]
            last_word = before.rsplit(None, 1)[-1].lower() if before.strip() else ""
            if match.group().startswith(".") and (
                last_word in _ABBREVIATIONS or (last_word.isdigit() and len(match.group()) == 1
                                               and self._buffer[match.end():].lstrip()[:1].isdigit())
            ):
                continue
            return self._cut(match.end())
        tail = _SENTENCE_END_AT_TAIL.search(self._buffer)
        if tail is not None:
            last_word = self._buffer[: tail.start()].rsplit(None, 1)[-1].lower()
            if last_word not in _ABBREVIATIONS:
                return self._cut(tail.end())
        if not self._released_any and self._first_clause_min_words:
            for match in _CLAUSE_END.finditer(self._buffer):
                if len(self._buffer[: match.start()].split()) >= self._first_clause_min_words:
                    return self._cut(match.end())
        if len(self._buffer) > self._max_chars:
            cut = self._buffer.rfind(" ", 0, self._max_chars)
            return self._cut(cut if cut > 0 else self._max_chars)
        return None

    def _cut(self, end: int) -> str | None:
        piece, self._buffer = self._buffer[:end].strip(), self._buffer[end:]
        if not piece:
            return None
        self._released_any = True
        return piece


_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
         "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def _number_words(token: str) -> list[str]:
    value = int(token)
    if value < 20:
        return [_ONES[value]]
    if value < 100:
        return [_TENS[value // 10]] + ([_ONES[value % 10]] if value % 10 else [])
    return [_ONES[int(digit)] for digit in token]  # "4567" read out as "four five six seven"


def normalize_words(text: str) -> list[str]:
    """Lower-cases, strips punctuation and spells out numbers, for word error rate.

    STT writes "2" where the caller said "two"; both count as the same word.
    """
    words: list[str] = []
    for token in re.findall(r"[a-z0-9]+", text.lower().replace("'", "")):
        if token.isdigit():
            words += _number_words(token)
        else:
            words.append(token)
    return words


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word error rate (substitutions + deletions + insertions) / reference words."""
    ref, hyp = normalize_words(reference), normalize_words(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    previous = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, start=1):
        current = [i] + [0] * len(hyp)
        for j, hyp_word in enumerate(hyp, start=1):
            current[j] = min(
                previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_word != hyp_word)
            )
        previous = current
    return previous[-1] / len(ref)
