"""Text folding so that trivial obfuscation does not slip past the pattern rules.

``Ignore  PREVIOUS-instructions``, ``1gn0re pr3vious instructions``, ``i g n o r e`` and
``ignоre`` (Cyrillic о) all fold to ``ignore previous instructions``: lowercase, Unicode
compatibility forms, common homoglyphs and leetspeak mapped to letters, zero-width characters
dropped, apostrophes dropped (``you're`` → ``youre``), other punctuation turned into spaces,
whitespace collapsed, and runs of four or more single letters joined into a word.

:func:`fold` is the fast path (plain string operations on ASCII text); :func:`fold_with_offsets`
does the same character by character and also maps every folded character back to its offset
in the original, for the finding spans of text that matched. Both give the same folded text.
"""

from __future__ import annotations

import re
import unicodedata

_LEET = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s",
         "|": "l"}
_HOMOGLYPHS = {"а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "і": "i",
               "ѕ": "s", "ј": "j", "ԁ": "d", "к": "k", "м": "m", "т": "t", "н": "h", "в": "b",
               "ο": "o", "α": "a", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "τ": "t", "υ": "u",
               "ρ": "p"}
_DROP = "'\u2019\u2018`\u00ad\u200b\u200c\u200d\u200e\u200f\u2060\ufeff"
_SPACED = re.compile(r"(?<![^ ])[a-z](?: [a-z]){3,}(?![^ ])")


def _ascii_table() -> dict[int, str | None]:
    table: dict[int, str | None] = {}
    for code in range(128):
        char = chr(code)
        if char in _LEET:
            table[code] = _LEET[char]
        elif char in _DROP:
            table[code] = None
        elif not char.isalnum():
            table[code] = " "
    return table


_ASCII = _ascii_table()


def _fold_char(char: str) -> str:
    if char.isascii():
        return char.lower().translate(_ASCII)
    if char in _DROP:
        return ""
    out = []
    for piece in unicodedata.normalize("NFKC", char).lower():
        piece = _HOMOGLYPHS.get(piece, piece)
        if piece.isascii():
            out.append(piece.translate(_ASCII))
        elif piece in _DROP:
            continue
        else:
            out.append(piece if piece.isalnum() else " ")
    return "".join(out)


def _join_spaced(match: re.Match[str]) -> str:
    return match.group().replace(" ", "")


def fold(text: str) -> str:
    """Folds ``text`` for matching (see the module docstring)."""
    if not text.isascii():
        return fold_with_offsets(text)[0]
    folded = " ".join(text.lower().translate(_ASCII).split())
    return _SPACED.sub(_join_spaced, folded)


def fold_with_offsets(text: str) -> tuple[str, list[int]]:
    """Folds ``text`` and maps each folded character to its offset in ``text``.

    Returns:
        The folded text (equal to :func:`fold`) and, per folded character, the index of the
        original character it came from.
    """
    chars: list[str] = []
    origin: list[int] = []
    for index, char in enumerate(text):
        for piece in _fold_char(char):
            if piece.isspace():
                if not chars or chars[-1] == " ":
                    continue
                piece = " "
            chars.append(piece)
            origin.append(index)
    if chars and chars[-1] == " ":
        chars.pop()
        origin.pop()
    folded = "".join(chars)
    for match in reversed(list(_SPACED.finditer(folded))):
        keep = [i for i in range(match.start(), match.end()) if folded[i] != " "]
        origin[match.start():match.end()] = [origin[i] for i in keep]
        chars[match.start():match.end()] = [folded[i] for i in keep]
    return "".join(chars), origin


def span_in_original(origin: list[int], start: int, end: int) -> tuple[int, int]:
    """Maps a ``[start, end)`` span of folded text back to the original text."""
    return origin[start], origin[end - 1] + 1
