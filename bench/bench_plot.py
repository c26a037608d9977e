"""Dependency-free SVG pictures of benchmark results.

A latency histogram and the median turn as a waterfall of stages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_STAGE_COLORS = {
    "endpointing_ms": "#8e9aaf",
    "llm_first_token_ms": "#6c8ebf",
    "first_sentence_ms": "#4f6fa8",
    "tts_first_audio_ms": "#d79b00",
    "edge_first_packet_ms": "#82b366",
}


def write_latency_svg(path: Path, section: dict[str, Any]) -> None:
    """Writes a histogram of voice-to-voice samples and a waterfall of median stage times."""
    samples: list[float] = section.get("samples_ms", [])
    width, height, left, bottom = 720, 420, 60, 200
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             'font-family="sans-serif" font-size="12">',
             '<rect width="100%" height="100%" fill="white"/>',
             f'<text x="{left}" y="20" font-size="15" font-weight="bold">Voice-to-voice latency '
             f'(p50 {section.get("p50_ms")} ms, p95 {section.get("p95_ms")} ms, '
             f'{len(samples)} turns)</text>']
    if samples:
        bin_ms = 100
        top = max(int(max(samples) // bin_ms) + 1, 10)
        counts = [0] * top
        for value in samples:
            counts[min(int(value // bin_ms), top - 1)] += 1
        plot_w = width - left - 20
        bar_w = plot_w / top
        scale = 140 / max(counts)
        for index, count in enumerate(counts):
            h = count * scale
            parts.append(f'<rect x="{left + index * bar_w:.1f}" y="{bottom - h:.1f}" '
                         f'width="{bar_w - 2:.1f}" height="{h:.1f}" fill="#6c8ebf"/>')
            if index % 2 == 0:
                parts.append(f'<text x="{left + index * bar_w:.1f}" y="{bottom + 15}">'
                             f'{index * bin_ms / 1000:.1f}s</text>')
        parts.append(f'<line x1="{left}" y1="{bottom}" x2="{width - 20}" y2="{bottom}" '
                     'stroke="black"/>')
    # Waterfall of the median turn: each stage from the end of caller speech.
    stages = section.get("stages", {})
    y = 250
    parts.append(f'<text x="{left}" y="{y - 10}" font-weight="bold">Median stage times '
                 '(from the end of caller speech)</text>')
    end = max([1.0, *[float(v) for v in stages.values()]])
    px = (width - left - 200) / end
    endpoint = float(stages.get("endpointing_ms", 0))
    rows = [
        ("endpointing", 0.0, endpoint, "endpointing_ms"),
        ("LLM first token", endpoint, endpoint + float(stages.get("llm_first_token_ms", 0)),
         "llm_first_token_ms"),
        ("first sentence", endpoint, endpoint + float(stages.get("first_sentence_ms", 0)),
         "first_sentence_ms"),
        ("TTS first audio", endpoint + float(stages.get("first_sentence_ms", 0)),
         endpoint + float(stages.get("first_sentence_ms", 0))
         + float(stages.get("tts_first_audio_ms", 0)), "tts_first_audio_ms"),
        ("edge first packet", 0.0, float(stages.get("edge_first_packet_ms", 0)),
         "edge_first_packet_ms"),
    ]
    for label, start, stop, key in rows:
        parts.append(f'<text x="{left}" y="{y + 14}">{label}</text>')
        parts.append(f'<rect x="{left + 120 + start * px:.1f}" y="{y + 3}" '
                     f'width="{max(stop - start, 1) * px:.1f}" height="14" '
                     f'fill="{_STAGE_COLORS[key]}"/>')
        parts.append(f'<text x="{left + 124 + stop * px:.1f}" y="{y + 14}">'
                     f'{stop:.0f} ms</text>')
        y += 28
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n")
