"""What counts as an interruption.

When the caller makes a sound while the agent talks, the agent's audio is paused at once (that
is what keeps barge-in fast), and the sound is judged once the caller stops:

* shorter than ``min_interruption_ms`` of speech: a cough, a door, a noise burst;
* only backchannel words ("uh-huh", "yeah", "right"): the caller is listening, not taking over;
* an empty transcript: Whisper heard no words.

Any of those resumes the agent where it paused (a false interruption). Anything else is a
barge-in: the answer is cancelled and the context keeps what was heard before the pause.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BACKCHANNEL_WORDS = frozenset("""
    uh-huh uh huh mm-hmm mhm mm hmm hm yeah yep yup yes ok okay right sure aha ah oh um uh
    i see got it alright all
""".split())
_TOKEN = re.compile(r"[a-z]+(?:-[a-z]+)*")


def is_backchannel(text: str) -> bool:
    """True when a transcript holds no words, or only listening noises ("Uh-huh, yeah.")."""
    words = _TOKEN.findall(text.lower())
    return all(word in BACKCHANNEL_WORDS for word in words)


@dataclass
class HeldPlayout:
    """Agent audio paused by caller sound that has not been judged yet."""

    #: Turn whose audio is paused.
    turn_index: int
    #: Milliseconds of the turn's audio the caller had heard at the pause.
    heard_ms: int
    #: monotonic time of the caller's speech onset (the pause followed it at once).
    onset: float
    #: Speech measured so far in the caller's sound.
    speech_ms: int = 0
    #: Paused on the first window(s) of speech, before the sound counted as a caller turn.
    tentative: bool = True
