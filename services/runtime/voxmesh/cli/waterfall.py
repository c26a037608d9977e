"""``voxmesh trace``: per-turn waterfalls in the terminal, from a local trace file."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from voxmesh.tracefile import StoredSpan, read_spans

_BAR_WIDTH = 48
_ORDER = ["turn", "stt", "stt.transcribe", "endpointing", "llm", "llm.generate", "tts",
          "tts.synthesize", "tts.segment", "playout", "edge.first_packet"]


def sessions(path: Path) -> list[tuple[str, int, int]]:
    """(session id, answered turns, start ns) of every session in the file, oldest first."""
    found: dict[str, list[int]] = defaultdict(list)
    for span in read_spans(path):
        if span.name == "turn" and not span.attributes.get("voxmesh.turn.discarded"):
            found[str(span.attributes.get("voxmesh.session.id", ""))].append(span.start_ns)
    return sorted(((sid, len(starts), min(starts)) for sid, starts in found.items()),
                  key=lambda item: item[2])


def render_session(path: Path, session: str) -> str:
    """Waterfalls of every turn of the session whose id starts with ``session``."""
    spans = list(read_spans(path))
    turns = sorted(
        (s for s in spans if s.name == "turn"
         and str(s.attributes.get("voxmesh.session.id", "")).startswith(session)
         and not s.attributes.get("voxmesh.turn.discarded")),
        key=lambda s: s.start_ns)
    if not turns:
        raise LookupError(f"no turns of a session starting with {session!r} in {path}")
    by_trace: dict[str, list[StoredSpan]] = defaultdict(list)
    for span in spans:
        by_trace[span.trace_id].append(span)
    session_id = str(turns[0].attributes.get("voxmesh.session.id"))
    return "\n\n".join([f"session {session_id}"] + [
        render_turn(turn, by_trace[turn.trace_id]) for turn in turns])


def render_turn(turn: StoredSpan, spans: list[StoredSpan]) -> str:
    """One turn as a waterfall: a row per span, bars on a shared time axis."""
    total_ns = max(turn.end_ns - turn.start_ns, 1)
    attributes = turn.attributes
    flags = " interrupted" if attributes.get("voxmesh.turn.interrupted") else ""
    header = (f"turn {attributes.get('voxmesh.turn.index', '?')}{flags}   "
              f"voice-to-voice {attributes.get('voxmesh.turn.voice_to_voice_ms', 0)} ms   "
              f"trace {turn.trace_id}")
    rows = [header, f"  {'span':<20}{'service':<16}{'0 ms':<{_BAR_WIDTH - 8}}"
                    f"{total_ns / 1e6:>8.0f} ms"]
    ordered = sorted(spans, key=lambda s: (s.start_ns, _rank(s.name)))
    for span in ordered:
        start = (span.start_ns - turn.start_ns) / total_ns
        width = max((span.end_ns - span.start_ns) / total_ns, 0.0)
        left = min(int(start * _BAR_WIDTH), _BAR_WIDTH - 1)
        length = max(1, round(width * _BAR_WIDTH)) if width > 0 else 1
        bar = " " * left + ("█" * min(length, _BAR_WIDTH - left) if width > 0 else "│")
        service = span.service.removeprefix("voxmesh-")
        rows.append(f"  {span.name:<20}{service:<16}{bar:<{_BAR_WIDTH}}"
                    f"{span.duration_ms:>8.0f} ms")
    return "\n".join(rows)


def _rank(name: str) -> int:
    return _ORDER.index(name) if name in _ORDER else len(_ORDER)
